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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

/// Unit of copy-on-write between the live and the synced state of a file.
const BLOCK: u64 = 4096;
/// Looking this name up in the root turns the power back on (see [`PowerCutFs::power_on`]).
const POWER_ON: &str = ".powercut-power-on";
/// Nothing may be cached by the kernel: a cut must be visible at once.
const TTL: Duration = Duration::ZERO;

/// A file's bytes: `len`, and the blocks written so far (a missing block reads as zeros; bytes
/// past `len` are always zero).
#[derive(Clone, Default)]
struct Data {
    len: u64,
    blocks: BTreeMap<u64, Arc<[u8; BLOCK as usize]>>,
}

impl Data {
    fn read(&self, offset: u64, size: u32) -> Vec<u8> {
        let end = self.len.min(offset.saturating_add(u64::from(size)));
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0; (end - offset) as usize];
        let mut pos = offset;
        while pos < end {
            let within = (pos % BLOCK) as usize;
            let n = (BLOCK - within as u64).min(end - pos) as usize;
            if let Some(block) = self.blocks.get(&(pos / BLOCK)) {
                let at = (pos - offset) as usize;
                out[at..at + n].copy_from_slice(&block[within..within + n]);
            }
            pos += n as u64;
        }
        out
    }

    fn write(&mut self, offset: u64, bytes: &[u8], dirty: &mut BTreeSet<u64>) {
        let mut done = 0;
        while done < bytes.len() {
            let pos = offset + done as u64;
            let within = (pos % BLOCK) as usize;
            let n = (BLOCK as usize - within).min(bytes.len() - done);
            let block = self
                .blocks
                .entry(pos / BLOCK)
                .or_insert_with(|| Arc::new([0; BLOCK as usize]));
            Arc::make_mut(block)[within..within + n].copy_from_slice(&bytes[done..done + n]);
            dirty.insert(pos / BLOCK);
            done += n;
        }
        self.len = self.len.max(offset + bytes.len() as u64);
    }

    fn set_len(&mut self, len: u64, dirty: &mut BTreeSet<u64>) {
        if len < self.len {
            let gone: Vec<u64> = self
                .blocks
                .range(len.div_ceil(BLOCK)..)
                .map(|(index, _)| *index)
                .collect();
            for index in gone {
                self.blocks.remove(&index);
                dirty.insert(index);
            }
            let within = (len % BLOCK) as usize;
            if let Some(block) = self.blocks.get_mut(&(len / BLOCK)).filter(|_| within > 0) {
                Arc::make_mut(block)[within..].fill(0);
                dirty.insert(len / BLOCK);
            }
        }
        self.len = len;
    }
}

/// A regular file: its name (for the cut trigger and the report), its live data, its synced
/// data, and the blocks that differ.
struct File {
    name: OsString,
    live: Data,
    synced: Data,
    dirty: BTreeSet<u64>,
}

impl File {
    fn new(name: &OsStr) -> Self {
        Self {
            name: name.to_owned(),
            live: Data::default(),
            synced: Data::default(),
            dirty: BTreeSet::new(),
        }
    }

    fn sync(&mut self) {
        for index in std::mem::take(&mut self.dirty) {
            match self.live.blocks.get(&index) {
                Some(block) => self.synced.blocks.insert(index, Arc::clone(block)),
                None => self.synced.blocks.remove(&index),
            };
        }
        self.synced.len = self.live.len;
    }
}

/// A directory: its live entries and its synced entries, by name.
#[derive(Default)]
struct Dir {
    live: BTreeMap<OsString, u64>,
    synced: BTreeMap<OsString, u64>,
}

enum Node {
    File(File),
    Dir(Dir),
}

/// What an open handle refers to; a directory handle lists the entries as of `opendir`, so
/// entries removed while a reader iterates cannot make it skip others.
enum Handle {
    File(u64),
    Dir(u64, Vec<(u64, FileType, OsString)>),
}

/// What the power cuts did, for the test's report.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// `fsync`/`fdatasync` calls on files.
    pub file_syncs: u64,
    /// `fsync` calls on directories.
    pub dir_syncs: u64,
    /// Power cuts so far.
    pub cuts: u64,
    /// Files whose unsynced blocks or size a cut threw away.
    pub files_reverted: u64,
    /// Directories whose unsynced entries a cut threw away.
    pub dirs_reverted: u64,
    /// Requests refused because the power was off or their handle predated a cut.
    pub refused: u64,
}

/// The whole disk. Nodes are never freed: an unlinked file may come back with a cut.
struct Disk {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    powered: bool,
    /// Cut the power right after the next write to a file whose name starts with this.
    cut_on_write: Option<String>,
    /// Files whose unsynced data the last cut threw away.
    last_cut: Vec<String>,
    stats: Stats,
    uid: u32,
    gid: u32,
}

type Result<T> = std::result::Result<T, Errno>;

impl Disk {
    fn new(uid: u32, gid: u32) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(INodeNo::ROOT.0, Node::Dir(Dir::default()));
        Self {
            nodes,
            next_ino: INodeNo::ROOT.0 + 1,
            handles: HashMap::new(),
            next_fh: 1,
            powered: true,
            cut_on_write: None,
            last_cut: Vec::new(),
            stats: Stats::default(),
            uid,
            gid,
        }
    }

    /// Fails every request while the power is off.
    fn powered(&mut self) -> Result<()> {
        if self.powered {
            Ok(())
        } else {
            self.stats.refused += 1;
            Err(Errno::EIO)
        }
    }

    fn cut(&mut self) {
        self.last_cut.clear();
        self.cut_on_write = None;
        for node in self.nodes.values_mut() {
            match node {
                Node::File(file) => {
                    if !file.dirty.is_empty() || file.live.len != file.synced.len {
                        self.stats.files_reverted += 1;
                        self.last_cut.push(file.name.to_string_lossy().into_owned());
                    }
                    file.live = file.synced.clone();
                    file.dirty.clear();
                }
                Node::Dir(dir) => {
                    if dir.live != dir.synced {
                        self.stats.dirs_reverted += 1;
                    }
                    dir.live = dir.synced.clone();
                }
            }
        }
        self.last_cut.sort();
        // Every handle dies with the power, including those a dead process still has queued.
        self.handles.clear();
        self.powered = false;
        self.stats.cuts += 1;
    }

    fn attr(&self, ino: u64) -> Result<FileAttr> {
        let (kind, size, perm, nlink) = match self.nodes.get(&ino) {
            Some(Node::File(file)) => (FileType::RegularFile, file.live.len, 0o644, 1),
            Some(Node::Dir(_)) => (FileType::Directory, 0, 0o755, 2),
            None => return Err(Errno::ENOENT),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: BLOCK as u32,
        })
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut Dir> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(dir)) => Ok(dir),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut File> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(file)) => Ok(file),
            Some(Node::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    /// The inode a live file handle refers to; handles from before a cut are refused.
    fn open_file(&mut self, fh: FileHandle) -> Result<u64> {
        self.powered()?;
        match self.handles.get(&fh.0) {
            Some(Handle::File(ino)) => Ok(*ino),
            _ => {
                self.stats.refused += 1;
                Err(Errno::EIO)
            }
        }
    }

    fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr> {
        if parent == INodeNo::ROOT.0 && name == POWER_ON {
            // One request thread serves the kernel's queue in order, so every request the dead
            // process still had queued has been refused by now.
            self.powered = true;
            return Err(Errno::ENOENT);
        }
        self.powered()?;
        let ino = *self.dir_mut(parent)?.live.get(name).ok_or(Errno::ENOENT)?;
        self.attr(ino)
    }

    fn new_node(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64> {
        self.powered()?;
        let ino = self.next_ino;
        let dir = self.dir_mut(parent)?;
        if dir.live.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        dir.live.insert(name.to_owned(), ino);
        self.nodes.insert(ino, node);
        self.next_ino += 1;
        Ok(ino)
    }

    fn new_handle(&mut self, handle: Handle) -> FileHandle {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, handle);
        FileHandle(fh)
    }

    fn remove(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<()> {
        self.powered()?;
        let ino = *self.dir_mut(parent)?.live.get(name).ok_or(Errno::ENOENT)?;
        match (self.nodes.get(&ino), want_dir) {
            (Some(Node::Dir(_)), false) => return Err(Errno::EISDIR),
            (Some(Node::File(_)), true) => return Err(Errno::ENOTDIR),
            (Some(Node::Dir(dir)), true) if !dir.live.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        self.dir_mut(parent)?.live.remove(name);
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<()> {
        self.powered()?;
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return Err(Errno::EINVAL);
        }
        let ino = *self.dir_mut(parent)?.live.get(name).ok_or(Errno::ENOENT)?;
        if let Some(&target) = self.dir_mut(new_parent)?.live.get(new_name) {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            match (self.nodes.get(&ino), self.nodes.get(&target)) {
                (Some(Node::File(_)), Some(Node::Dir(_))) => return Err(Errno::EISDIR),
                (Some(Node::Dir(_)), Some(Node::File(_))) => return Err(Errno::ENOTDIR),
                (_, Some(Node::Dir(dir))) if !dir.live.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
        }
        if let Some(Node::File(file)) = self.nodes.get_mut(&ino) {
            file.name = new_name.to_owned();
        }
        self.dir_mut(parent)?.live.remove(name);
        self.dir_mut(new_parent)?
            .live
            .insert(new_name.to_owned(), ino);
        Ok(())
    }

    fn opendir(&mut self, ino: u64) -> Result<FileHandle> {
        self.powered()?;
        let mut entries = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (ino, FileType::Directory, OsString::from("..")),
        ];
        let names: Vec<(OsString, u64)> = self
            .dir_mut(ino)?
            .live
            .iter()
            .map(|(name, child)| (name.clone(), *child))
            .collect();
        for (name, child) in names {
            let kind = match self.nodes.get(&child) {
                Some(Node::Dir(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            entries.push((child, kind, name));
        }
        Ok(self.new_handle(Handle::Dir(ino, entries)))
    }
}

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
            Server {
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

fn lock(disk: &Mutex<Disk>) -> MutexGuard<'_, Disk> {
    disk.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The FUSE request handlers; each takes the disk's lock for the whole request.
struct Server {
    disk: Arc<Mutex<Disk>>,
}

impl Server {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        lock(&self.disk)
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(errno) => reply.error(errno),
    }
}

fn reply_entry(reply: ReplyEntry, result: Result<FileAttr>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(errno) => reply.error(errno),
    }
}

impl Filesystem for Server {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.disk().lookup(parent.0, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut disk = self.disk();
        match disk.powered().and_then(|()| disk.attr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(errno) => reply.error(errno),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut disk = self.disk();
        let result = (|| {
            disk.powered()?;
            if let Some(fh) = fh {
                disk.open_file(fh)?;
            }
            if let Some(size) = size {
                let file = disk.file_mut(ino.0)?;
                file.live.set_len(size, &mut file.dirty);
            }
            disk.attr(ino.0)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(errno) => reply.error(errno),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let mut disk = self.disk();
        let result = disk
            .new_node(parent.0, name, Node::File(File::new(name)))
            .and_then(|ino| disk.attr(ino));
        reply_entry(reply, result);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut disk = self.disk();
        let result = disk
            .new_node(parent.0, name, Node::Dir(Dir::default()))
            .and_then(|ino| disk.attr(ino));
        reply_entry(reply, result);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.disk().remove(parent.0, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.disk().remove(parent.0, name, true));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self
            .disk()
            .rename(parent.0, name, newparent.0, newname, flags);
        reply_empty(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut disk = self.disk();
        match disk
            .powered()
            .and_then(|()| disk.file_mut(ino.0).map(|_| ()))
        {
            Ok(()) => reply.opened(
                disk.new_handle(Handle::File(ino.0)),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(errno) => reply.error(errno),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut disk = self.disk();
        let result = disk
            .new_node(parent.0, name, Node::File(File::new(name)))
            .and_then(|ino| disk.attr(ino));
        match result {
            Ok(attr) => {
                let fh = disk.new_handle(Handle::File(attr.ino.0));
                reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut disk = self.disk();
        let result = disk
            .open_file(fh)
            .and_then(|ino| Ok(disk.file_mut(ino)?.live.read(offset, size)));
        match result {
            Ok(bytes) => reply.data(&bytes),
            Err(errno) => reply.error(errno),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut disk = self.disk();
        let result = disk.open_file(fh).and_then(|ino| {
            let file = disk.file_mut(ino)?;
            file.live.write(offset, data, &mut file.dirty);
            let name = file.name.to_string_lossy().into_owned();
            if let Some(prefix) = &disk.cut_on_write {
                if name.starts_with(prefix.as_str()) {
                    disk.cut();
                    return Err(Errno::EIO);
                }
            }
            Ok(())
        });
        match (result, u32::try_from(data.len())) {
            (Ok(()), Ok(written)) => reply.written(written),
            (Ok(()), Err(_)) => reply.error(Errno::EFBIG),
            (Err(errno), _) => reply.error(errno),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.disk().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // fdatasync makes the size durable too (it is needed to read the data back), so both
        // calls sync the same thing here.
        let mut disk = self.disk();
        let result = disk.open_file(fh).and_then(|ino| {
            disk.file_mut(ino)?.sync();
            disk.stats.file_syncs += 1;
            Ok(())
        });
        reply_empty(reply, result);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.disk().opendir(ino.0) {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut disk = self.disk();
        if let Err(errno) = disk.powered() {
            return reply.error(errno);
        }
        let Some(Handle::Dir(_, entries)) = disk.handles.get(&fh.0) else {
            disk.stats.refused += 1;
            return reply.error(Errno::EIO);
        };
        for (index, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), index as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.disk().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut disk = self.disk();
        let result = disk.powered().and_then(|()| {
            let Some(&Handle::Dir(ino, _)) = disk.handles.get(&fh.0) else {
                disk.stats.refused += 1;
                return Err(Errno::EIO);
            };
            let dir = disk.dir_mut(ino)?;
            dir.synced = dir.live.clone();
            disk.stats.dir_syncs += 1;
            Ok(())
        });
        reply_empty(reply, result);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Answered even with the power off: glommio unwraps statfs when it opens a DMA file,
        // and a panic there would only add noise to a process that is about to be killed.
        reply.statfs(
            1 << 24,
            1 << 24,
            1 << 24,
            1 << 20,
            1 << 20,
            BLOCK as u32,
            255,
            BLOCK as u32,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut disk = self.disk();
        let result = disk.open_file(fh).and_then(|ino| {
            let file = disk.file_mut(ino)?;
            let len = file.live.len.max(offset.saturating_add(length));
            file.live.set_len(len, &mut file.dirty);
            Ok(())
        });
        reply_empty(reply, result);
    }
}
