//! The disk model behind the power-cut filesystem: every file and directory has a live state
//! and a synced state, and a cut throws the difference away. One method per FUSE request, each
//! returning an errno on failure; `fuse.rs` only converts and replies.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use fuser::{Errno, FileAttr, FileHandle, FileType, INodeNo, RenameFlags};

/// Unit of copy-on-write between the live and the synced state of a file.
pub(super) const BLOCK: u64 = 4096;
/// Looking this name up in the root turns the power back on (see [`PowerCutFs::power_on`]).
pub(super) const POWER_ON: &str = ".powercut-power-on";

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
pub(super) struct Disk {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    pub(super) powered: bool,
    /// Cut the power right after the next write to a file whose name starts with this.
    pub(super) cut_on_write: Option<String>,
    /// Files whose unsynced data the last cut threw away.
    pub(super) last_cut: Vec<String>,
    pub(super) stats: Stats,
    uid: u32,
    gid: u32,
}

pub(super) type Result<T> = std::result::Result<T, Errno>;

impl Disk {
    /// An empty, powered disk whose files belong to `uid`:`gid`.
    pub(super) fn new(uid: u32, gid: u32) -> Self {
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
    pub(super) fn powered(&mut self) -> Result<()> {
        if self.powered {
            Ok(())
        } else {
            self.stats.refused += 1;
            Err(Errno::EIO)
        }
    }

    /// The power cut: every file and directory goes back to its synced state, every handle
    /// dies, and every request fails until the power-on lookup.
    pub(super) fn cut(&mut self) {
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

    /// The attributes of `ino` as readers see it now.
    pub(super) fn attr(&self, ino: u64) -> Result<FileAttr> {
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

    /// Looks `name` up in `parent`; the power-on name switches the power back on instead.
    pub(super) fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr> {
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

    /// `unlink` (`want_dir` false) or `rmdir` (true), in the live entries only.
    pub(super) fn remove(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<()> {
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

    /// Moves an entry in the live entries; each directory's synced entries change only when it
    /// is synced, as on a real disk.
    pub(super) fn rename(
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

    /// Opens a directory, listing its live entries as of now.
    pub(super) fn opendir(&mut self, ino: u64) -> Result<FileHandle> {
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

/// The requests that act on files and handles.
impl Disk {
    /// Changes a file's size (truncate or extend); other attributes are not modelled.
    pub(super) fn setattr(
        &mut self,
        ino: u64,
        fh: Option<FileHandle>,
        size: Option<u64>,
    ) -> Result<FileAttr> {
        self.powered()?;
        if let Some(fh) = fh {
            self.open_file(fh)?;
        }
        if let Some(size) = size {
            let file = self.file_mut(ino)?;
            file.live.set_len(size, &mut file.dirty);
        }
        self.attr(ino)
    }

    /// Creates an empty regular file.
    pub(super) fn mknod(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr> {
        let ino = self.new_node(parent, name, Node::File(File::new(name)))?;
        self.attr(ino)
    }

    /// Creates an empty directory.
    pub(super) fn mkdir(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr> {
        let ino = self.new_node(parent, name, Node::Dir(Dir::default()))?;
        self.attr(ino)
    }

    /// Opens a regular file.
    pub(super) fn open(&mut self, ino: u64) -> Result<FileHandle> {
        self.powered()?;
        self.file_mut(ino)?;
        Ok(self.new_handle(Handle::File(ino)))
    }

    /// Creates an empty regular file and opens it.
    pub(super) fn create(&mut self, parent: u64, name: &OsStr) -> Result<(FileAttr, FileHandle)> {
        let attr = self.mknod(parent, name)?;
        Ok((attr, self.new_handle(Handle::File(attr.ino.0))))
    }

    /// Reads the live state.
    pub(super) fn read(&mut self, fh: FileHandle, offset: u64, size: u32) -> Result<Vec<u8>> {
        let ino = self.open_file(fh)?;
        Ok(self.file_mut(ino)?.live.read(offset, size))
    }

    /// Writes into the live state; if a cut is armed for this file's name, the power goes now.
    pub(super) fn write(&mut self, fh: FileHandle, offset: u64, data: &[u8]) -> Result<()> {
        let ino = self.open_file(fh)?;
        let file = self.file_mut(ino)?;
        file.live.write(offset, data, &mut file.dirty);
        let name = file.name.to_string_lossy().into_owned();
        if let Some(prefix) = &self.cut_on_write {
            if name.starts_with(prefix.as_str()) {
                self.cut();
                return Err(Errno::EIO);
            }
        }
        Ok(())
    }

    /// Forgets a file or directory handle.
    pub(super) fn release(&mut self, fh: FileHandle) {
        self.handles.remove(&fh.0);
    }

    /// `fsync` and `fdatasync` alike: fdatasync must keep the size too (it is needed to read the
    /// data back), and nothing else is modelled.
    pub(super) fn fsync(&mut self, fh: FileHandle) -> Result<()> {
        let ino = self.open_file(fh)?;
        self.file_mut(ino)?.sync();
        self.stats.file_syncs += 1;
        Ok(())
    }

    /// Extends a file (plain `fallocate`, mode 0).
    pub(super) fn fallocate(&mut self, fh: FileHandle, offset: u64, length: u64) -> Result<()> {
        let ino = self.open_file(fh)?;
        let file = self.file_mut(ino)?;
        let len = file.live.len.max(offset.saturating_add(length));
        file.live.set_len(len, &mut file.dirty);
        Ok(())
    }

    /// The entries listed when the directory was opened.
    pub(super) fn readdir(&mut self, fh: FileHandle) -> Result<&[(u64, FileType, OsString)]> {
        self.powered()?;
        match self.handles.get(&fh.0) {
            Some(Handle::Dir(_, entries)) => Ok(entries),
            _ => {
                self.stats.refused += 1;
                Err(Errno::EIO)
            }
        }
    }

    /// Makes a directory's live entries its synced entries.
    pub(super) fn fsyncdir(&mut self, fh: FileHandle) -> Result<()> {
        self.powered()?;
        let Some(&Handle::Dir(ino, _)) = self.handles.get(&fh.0) else {
            self.stats.refused += 1;
            return Err(Errno::EIO);
        };
        let dir = self.dir_mut(ino)?;
        dir.synced = dir.live.clone();
        self.stats.dir_syncs += 1;
        Ok(())
    }
}
