//! An in-memory FUSE filesystem that models a disk with a volatile write cache, for the
//! power-cut test (`tests/powercut.rs`).
//!
//! Every file and directory has two states: what readers see now, and what would survive a
//! power cut (the synced state).
//! - A file's data and size reach the synced state only on `fsync`/`fdatasync` of that file.
//! - A directory's entries (create, unlink, mkdir, rmdir, rename) reach it only on `fsync` of
//!   that directory.
//!
//! [`PowerCutFs::cut`] is the power cut. Every file and directory goes back to its synced
//! state, and every request fails with `EIO` until [`PowerCutFs::power_on`].
//!
//! Every open is answered with `FOPEN_DIRECT_IO`. So `O_DIRECT` opens (glommio's DMA files)
//! work, and the kernel keeps no page cache that could outlive a cut. Entries and attributes are
//! given a zero TTL for the same reason.
//!
//! Requests are served by one thread, so each request sees the disk either before or after a
//! cut. Handles opened before a cut stay dead after it: a late write from the dead process
//! (io_uring may still have one queued in the kernel) can never land on the restored disk.
//!
//! Why this is a faithful enough model is argued in the header of `tests/powercut.rs`.

mod disk;
mod fuse;

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fuser::{BackgroundSession, Config, MountOption};

pub use disk::Stats;
use disk::{Disk, POWER_ON};
use fuse::lock;

/// The mounted filesystem; unmounted when dropped.
pub struct PowerCutFs {
    disk: Arc<Mutex<Disk>>,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
}

impl PowerCutFs {
    /// Mounts an empty disk at `mountpoint` (an existing empty directory), served by a thread
    /// of this process. As root this is a plain mount(2); otherwise fuser runs `fusermount3`.
    pub fn mount(mountpoint: &Path) -> io::Result<Self> {
        // Files belong to whoever owns the mountpoint: the user running the test.
        let owner = std::fs::metadata(mountpoint)?;
        let disk = Arc::new(Mutex::new(Disk::new(owner.uid(), owner.gid())));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("seckill-powercut".into()),
            MountOption::RW,
            MountOption::NoAtime,
        ];
        let session = fuser::spawn_mount(
            fuse::Server {
                disk: Arc::clone(&disk),
            },
            mountpoint,
            &config,
        )?;
        Ok(Self {
            disk,
            mountpoint: mountpoint.to_path_buf(),
            session: Some(session),
        })
    }

    /// Where the disk is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Cuts the power: everything not synced is lost, and every request fails with `EIO` until
    /// [`PowerCutFs::power_on`].
    pub fn cut(&self) {
        lock(&self.disk).cut();
    }

    /// Arms a cut for the next write to a file whose name starts with `prefix`: the write lands
    /// in the live state, then the power goes, before anything can sync it. The write itself
    /// fails with `EIO`.
    pub fn cut_on_write(&self, prefix: &str) {
        lock(&self.disk).cut_on_write = Some(prefix.to_owned());
    }

    /// Names of the files whose unsynced data the last cut threw away, sorted.
    pub fn last_cut(&self) -> Vec<String> {
        lock(&self.disk).last_cut.clone()
    }

    /// Turns the power back on. Call it once every process that used the disk before the cut
    /// has been reaped: the switch is a lookup through the kernel's request queue, so the dead
    /// processes' queued requests are all refused before it.
    pub fn power_on(&self) -> io::Result<()> {
        let _ = std::fs::symlink_metadata(self.mountpoint.join(POWER_ON));
        if lock(&self.disk).powered {
            Ok(())
        } else {
            Err(io::Error::other(
                "the power-on lookup did not reach the filesystem",
            ))
        }
    }

    /// What the disk has seen so far.
    pub fn stats(&self) -> Stats {
        lock(&self.disk).stats
    }
}

/// Unmounts, best effort, every `powercut-<pid>-<n>` mount directly under `parent` left by an
/// earlier test run that was killed before its drop could unmount (its pid no longer runs). Such
/// a mount's server is gone, so any access to it fails with `ENOTCONN`. Live runs' mounts, ours
/// included, are left alone.
pub fn unmount_stale(parent: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    for line in mountinfo.lines() {
        // Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
        let Some(escaped) = line.split(' ').nth(4) else {
            continue;
        };
        let mountpoint = PathBuf::from(unescape_mountinfo(escaped));
        if mountpoint.parent() != Some(parent) {
            continue;
        }
        let Some(name) = mountpoint.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("powercut-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // fusermount3 works unprivileged; as root, a lazy umount does too. Either may be
        // missing or refuse: the mount below then fails or skips with its own message.
        let unmounted = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&mountpoint)
            .output()
            .is_ok_and(|out| out.status.success())
            || std::process::Command::new("umount")
                .arg("-l")
                .arg(&mountpoint)
                .output()
                .is_ok_and(|out| out.status.success());
        if unmounted {
            eprintln!(
                "unmounted a stale power-cut disk at {}",
                mountpoint.display()
            );
            let _ = std::fs::remove_dir(&mountpoint);
        } else {
            eprintln!(
                "could not unmount the stale power-cut disk at {}",
                mountpoint.display()
            );
        }
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let digits = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(digits, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        // fuser unmounts with umount2(MNT_DETACH), or `fusermount3 -u` when not root. The serving
        // thread is not joined: it ends once the kernel drops the connection.
        if let Some(session) = self.session.take() {
            drop(session);
        }
        // The mountpoint is empty again once unmounted.
        let _ = std::fs::remove_dir(&self.mountpoint);
    }
}
