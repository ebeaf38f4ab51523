//! `seckill doctor`'s data dir check, made without changing the host.
//!
//! `serve` creates the data dir and writes its journal there with `O_DIRECT`. Doctor answers
//! whether that will work without creating the directory or leaving a probe file behind: it
//! probes the data dir, or the nearest directory above it that exists (where `serve` would
//! create it), with an unnamed `O_TMPFILE` opened for `O_DIRECT`. Such a file has no name and
//! vanishes when closed, so nothing is left even if doctor is killed mid-check. An operator runs
//! doctor before the service user, the unit's `StateDirectory=` or the mount exists; a check
//! that created `/var/lib/seckill` as root would then hand the service a directory it cannot
//! write.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::Check;
use crate::store::journal::recovery;

/// The check's name in doctor's output.
const NAME: &str = "data_dir";

/// Checks that `serve` can create (if need be) and journal in `dir`.
pub fn check(dir: &Path) -> Check {
    let exists = dir.is_dir();
    // The nearest existing directory; a relative path's ancestors end in "", the working
    // directory.
    let probed = dir
        .ancestors()
        .map(|ancestor| {
            if ancestor.as_os_str().is_empty() {
                Path::new(".")
            } else {
                ancestor
            }
        })
        .find(|ancestor| ancestor.is_dir());
    let Some(probed) = probed else {
        return Check::fail(
            NAME,
            format!("{}: no directory above it exists", dir.display()),
            "set data_dir to an existing directory, or one under it",
        );
    };
    if dir.exists() && !exists {
        return Check::fail(
            NAME,
            format!("{}: exists but is not a directory", dir.display()),
            "point data_dir at a directory",
        );
    }
    // A statfs failure says nothing: the probe below decides.
    if recovery::on_tmpfs(probed).unwrap_or(false) {
        return Check::fail(
            NAME,
            format!("{}: on tmpfs, which has no O_DIRECT", dir.display()),
            "put data_dir on a real disk (ext4 or xfs), not tmpfs",
        );
    }
    let whereabouts = if exists {
        format!("{}:", dir.display())
    } else {
        format!(
            "{} (not there yet; `serve` creates it in {}):",
            dir.display(),
            probed.display()
        )
    };
    match unnamed_direct_file(probed) {
        Ok(()) => Check::pass(
            NAME,
            format!("{whereabouts} writable, on a disk with O_DIRECT"),
        ),
        Err(error) if error.raw_os_error() == Some(nix::libc::EINVAL) => Check::fail(
            NAME,
            format!("{whereabouts} on a filesystem without O_DIRECT"),
            "put data_dir on a real disk (ext4 or xfs), not tmpfs",
        ),
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            Check::fail(
                NAME,
                format!("{whereabouts} not writable: {error}"),
                "give the service user write access (StateDirectory= under systemd)",
            )
        }
        // O_TMPFILE is unsupported on this filesystem (EOPNOTSUPP, or EISDIR from kernels
        // before 3.11): the only other probe would leave a file, so say what was not checked.
        Err(error) => Check::warn(
            NAME,
            format!("{whereabouts} O_DIRECT not checked: no unnamed probe file here ({error})"),
            "run `seckill serve` once: it refuses to start on a data dir without O_DIRECT",
        ),
    }
}

/// Opens, then closes, a file without a name in `dir`, writable with O_DIRECT.
fn unnamed_direct_file(dir: &Path) -> std::io::Result<()> {
    OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_TMPFILE | nix::libc::O_DIRECT)
        .open(dir)
        .map(drop)
}
