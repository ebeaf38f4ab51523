//! Loud, counted skips. A test that cannot run here (a tool missing, no such interface) calls
//! [`skip`]: it prints `SKIPPED: <test>: <why>` to stderr, which `cargo test` shows only for
//! failures, so it also appends the same line to [`skipped_file`], where `.ci/skipped-summary`
//! counts and lists them after the run. A skip is never a silent "ok".

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Where skips are recorded: `skipped.txt` in the target's temp dir, shared by every test binary
/// of the workspace. `.ci/skipped-summary --reset` empties it before a run.
pub fn skipped_file() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("skipped.txt")
}

/// `binary::test`, from the test thread's name (libtest names each test's thread after it).
pub fn current_test() -> String {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed thread>");
    format!("{}::{test}", env!("CARGO_CRATE_NAME"))
}

/// Records that the current test skips its checks because of `why`, then returns: the caller
/// returns right after. Panics instead when `required_by` names an environment variable that is
/// set (CI sets those for tools it installs, so a skip there means a broken CI machine).
#[track_caller]
pub fn skip_unless_required(required_by: &str, why: &str) {
    assert!(
        std::env::var_os(required_by).is_none(),
        "{required_by} is set, so this must run here, but: {why}"
    );
    skip(why);
}

/// Records that the current test skips its checks because of `why`: prints
/// `SKIPPED: <test>: <why>` to stderr and appends it to [`skipped_file`]. The caller returns
/// right after.
pub fn skip(why: &str) {
    let line = format!("{}: {why}", current_test());
    eprintln!("SKIPPED: {line}");
    // One write of one short line with O_APPEND, so lines from parallel tests do not interleave.
    let record = format!("{}\n", line.replace('\n', " "));
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skipped_file())
        .and_then(|mut file| file.write_all(record.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "SKIPPED (not recorded in {}: {e}): {line}",
            skipped_file().display()
        );
    }
}

/// Whether `program --version` runs here. When it does not, records a skip naming `install`
/// (or fails, when `required_by` is set: see [`skip_unless_required`]) and returns false; the
/// caller returns right after.
#[track_caller]
pub fn tool_present(program: &str, required_by: &str, install: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        skip_unless_required(
            required_by,
            &format!("{program} is not installed ({install})"),
        );
    }
    found
}
