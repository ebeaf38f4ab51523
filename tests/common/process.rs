//! Child processes started outside the harness's `Server` (the CLI, `doctor`, `load`, scripts,
//! servers with hand-built command lines). Each keeps everything the child printed in a log file
//! and prints it when the test fails, so a failure on a loaded machine is never a bare "never
//! became ready". Deadlines here are only "gave up" bounds, generous enough for a busy box.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::net::TcpStream;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a spawned server may take to answer `/readyz` 200 before the test gives up.
pub const READY_BOUND: Duration = Duration::from_secs(60);
/// How long a process may take to exit (after a signal, or by itself) before the test gives up.
pub const EXIT_BOUND: Duration = Duration::from_secs(60);

/// A fresh log path under the target's temp dir, named after `what`.
fn log_path(what: &str, stream: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("child-{}-{n}-{name}.{stream}", std::process::id()))
}

/// The last `max` bytes of `text` (on a char boundary), led by `...` when cut: what a failure
/// message shows of a long log.
pub fn log_tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut i = text.len() - max;
    while !text.is_char_boundary(i) {
        i += 1;
    }
    format!("...{}", &text[i..])
}

/// Variables that change how `seckill` behaves, so no test inherits them: every `SECKILL_*`
/// setting, `RUST_LOG` (it beats a config file's `log_level`) and `NOTIFY_SOCKET` (a test run
/// under systemd must not notify the test's own unit).
fn is_inherited_setting(key: &str) -> bool {
    key.starts_with("SECKILL_") || key == "RUST_LOG" || key == "NOTIFY_SOCKET"
}

/// Removes from `cmd`'s environment every variable [`is_inherited_setting`] names: for a command
/// that runs `seckill` itself (a shell script, say) and must not inherit the test's settings.
pub fn without_inherited_settings(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if is_inherited_setting(&key.to_string_lossy()) {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// The one `seckill` command builder of the tests: the built binary with nothing inherited
/// that changes its behaviour (see above), stdin null, and the harness's environment: its
/// admin token and token secret, and `RUST_LOG=warn`. A test that needs dev mode or a config
/// file's log level removes those with `env_remove`.
pub fn seckill_cmd() -> Command {
    let mut cmd = Command::new(super::BIN);
    without_inherited_settings(&mut cmd);
    cmd.env("SECKILL_ADMIN_TOKEN", super::ADMIN_TOKEN)
        .env("SECKILL_TOKEN_SECRET", super::SECRET)
        .env("SECKILL_PAYMENT_TOKEN", super::PAYMENT_TOKEN)
        .env("SECKILL_WEBHOOK_SECRET", super::WEBHOOK_SECRET)
        .env("RUST_LOG", "warn")
        // The 300 ms default Redis budget is met easily in production, but a debug build on a
        // machine loaded many times over misses it now and then; tests of the budget itself
        // pass `--redis-budget-ms`, which wins over this.
        .env("SECKILL_REDIS_BUDGET_MS", "2000")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` (built from [`seckill_cmd`]) as `serve ARGS`, on a fresh loopback port and in a
/// scratch data dir (each unless `args` sets it), to completion: for a server that should
/// refuse to start. Panics with its output if it is still running after [`EXIT_BOUND`] (it
/// started when it should not have); the scratch dir is removed before this returns.
#[track_caller]
pub fn run_serve(mut cmd: Command, args: &[&str]) -> Ran {
    let data_dir = super::ScratchDir::new();
    cmd.arg("serve");
    if !args.contains(&"--listen") {
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{}", super::pick_port()));
    }
    if !args.contains(&"--data-dir") {
        cmd.arg("--data-dir").arg(data_dir.path());
    }
    let ran = run(cmd.args(args));
    if ran.status.code().is_none() {
        panic!(
            "seckill serve {args:?} did not exit by itself within {EXIT_BOUND:?} ({})",
            ran.status
        );
    }
    ran
}

fn describe(cmd: &Command) -> String {
    let mut out = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args().map(OsStr::to_string_lossy) {
        let _ = write!(out, " {arg}");
    }
    out
}

/// A running child whose stdout and stderr go to files. Dropping it kills and reaps the child;
/// if the test is panicking, it also prints what the child printed.
pub struct Spawned {
    child: Child,
    what: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    /// Set once the output was shown in a panic message, so Drop does not print it twice.
    shown: bool,
}

impl Spawned {
    /// Spawns `cmd` (stdin null) with its stdout and stderr kept in files. Panics if it cannot
    /// be spawned.
    #[track_caller]
    pub fn spawn(cmd: &mut Command) -> Spawned {
        let what = describe(cmd);
        let stdout_path = log_path(&what, "stdout");
        let stderr_path = log_path(&what, "stderr");
        let stdout = File::create(&stdout_path).expect("create child stdout file");
        let stderr = File::create(&stderr_path).expect("create child stderr file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Spawned {
            child,
            what,
            stdout_path,
            stderr_path,
            shown: false,
        }
    }

    /// What the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_else(|e| format!("<unreadable: {e}>"))
    }

    /// What the child wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_else(|e| format!("<unreadable: {e}>"))
    }

    /// The command line and everything it printed, for a failure message (long output is cut to
    /// its last 8,000 bytes per stream).
    pub fn report(&self) -> String {
        format!(
            "---- {} ----\n-- stderr:\n{}\n-- stdout:\n{}\n---- end ----",
            self.what,
            log_tail(&self.stderr(), 8000),
            log_tail(&self.stdout(), 8000)
        )
    }

    /// Panics with `msg` and the child's output.
    #[track_caller]
    pub fn fail(&mut self, msg: &str) -> ! {
        self.shown = true;
        panic!("{msg}\n{}", self.report())
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child itself.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `sig` to the child.
    #[track_caller]
    pub fn signal(&mut self, sig: Signal) {
        if let Err(e) = kill(Pid::from_raw(self.child.id() as i32), sig) {
            self.fail(&format!("send {sig:?}: {e}"));
        }
    }

    /// Whether the child still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Polls `GET /readyz` on `port` until it answers 200. Panics with the child's output if it
    /// exits first or [`READY_BOUND`] passes.
    #[track_caller]
    pub fn wait_ready(&mut self, port: u16) {
        if let Err(why) = self.try_wait_ready(port) {
            self.fail(&why);
        }
    }

    /// Like [`Spawned::wait_ready`], but says why instead of panicking (to retry on another
    /// port, say).
    pub fn try_wait_ready(&mut self, port: u16) -> Result<(), String> {
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        while started.elapsed() < READY_BOUND {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status} before /readyz answered 200"));
            }
            match readyz(port) {
                Ok(200) => return Ok(()),
                Ok(status) => last = format!("status {status}"),
                Err(e) => last = format!("error {e}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "port {port} never answered /readyz 200 within {READY_BOUND:?} (last: {last})"
        ))
    }

    /// Waits for the child to exit by itself, up to `within`; `None` if it still runs.
    pub fn try_wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if started.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the child to exit, up to [`EXIT_BOUND`]; panics with its output otherwise.
    #[track_caller]
    pub fn wait_exit(&mut self) -> ExitStatus {
        match self.try_wait_exit(EXIT_BOUND) {
            Some(status) => status,
            None => self.fail(&format!("did not exit within {EXIT_BOUND:?}")),
        }
    }

    /// Waits for the exit (killing the child after [`EXIT_BOUND`]) and returns its output, kept
    /// for a failure message like [`run`]'s.
    pub fn finish(mut self) -> Ran {
        let status = match self.try_wait_exit(EXIT_BOUND) {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                self.child
                    .wait()
                    .unwrap_or_else(|e| panic!("reap {}: {e}", self.what))
            }
        };
        let output = Output {
            status,
            stdout: std::fs::read(&self.stdout_path).unwrap_or_default(),
            stderr: std::fs::read(&self.stderr_path).unwrap_or_default(),
        };
        Ran {
            output,
            what: self.what.clone(),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() && !self.shown {
            eprintln!("{}", self.report());
        }
        let _ = std::fs::remove_file(&self.stdout_path);
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// `GET /readyz` on a fresh connection; the status code.
fn readyz(port: u16) -> io::Result<u16> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut client = super::Client::from_stream(stream, port);
    Ok(client.try_request("GET", "/readyz", &[], None)?.status)
}

/// A finished child's output. If the test panics while it is alive, its drop prints the command
/// line, stdout and stderr, so any failed assertion about it shows what it said.
pub struct Ran {
    /// Exit status, stdout and stderr.
    pub output: Output,
    what: String,
}

impl Ran {
    /// Stdout as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// Stderr as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

impl Deref for Ran {
    type Target = Output;
    fn deref(&self) -> &Output {
        &self.output
    }
}

impl Drop for Ran {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} exited {} ----\n-- stderr:\n{}\n-- stdout:\n{}\n---- end ----",
                self.what,
                self.output.status,
                log_tail(&self.stderr(), 8000),
                log_tail(&self.stdout(), 8000)
            );
        }
    }
}

/// Runs `cmd` to completion (stdin null; killed after [`EXIT_BOUND`] so a hang fails instead of
/// blocking the suite) and keeps its output for a failure message.
#[track_caller]
pub fn run(cmd: &mut Command) -> Ran {
    Spawned::spawn(cmd).finish()
}
