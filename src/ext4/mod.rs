//! The ext4 writer: turns OCI layer tar streams into one ext4 filesystem
//! image. Its only I/O is the output file.
//!
//! File data is written to its final blocks while the tar is read, so
//! memory does not grow with file sizes; everything else (the tree, inode
//! contents, directories, bitmaps) is kept in memory and written by
//! [`Formatter::finish`]. The image file is sparse: only blocks holding
//! something are ever written, and all-zero data blocks become holes in the
//! files themselves. See `superblock.rs` for the ext4 features chosen and
//! `tree.rs` for layer semantics and path safety.

mod alloc;
mod dir;
mod extent;
mod inode;
mod journal;
mod layout;
mod read_ahead;
mod superblock;
mod tar_entry;
pub(crate) mod tar_reader;
#[cfg(test)]
mod tests;
mod tree;
mod xattr;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use alloc::{Allocator, Run};
use extent::Extent;
use inode::{FL_EXTENTS, FL_INDEX, Inode, Time};
use layout::{BLOCK_SIZE, FIRST_INO, Geometry, INODE_SIZE};
use sha2::{Digest, Sha256};
use superblock::{BG_INODE_UNINIT, BG_INODE_ZEROED, GroupDesc, Superblock};
use tree::{Kind, Meta, Node, NodeId, Place, Tree};

pub use layout::GeometryError;
pub use tar_reader::TarError;
use tar_reader::{Header, Reader};
pub use tree::PathError;
pub use xattr::XattrError;

const BS: usize = BLOCK_SIZE as usize;
/// Data is copied through a buffer of this size.
const CHUNK: usize = 1 << 20;
/// File data written since writeback was last started; see `start_writeback`.
const WRITEBACK_EVERY: u64 = 16 << 20;
const ZERO_BLOCK: [u8; BS] = [0; BS];
/// Fast symlinks keep their target in the 60 bytes of `i_block`.
const FAST_SYMLINK_MAX: usize = 59;
/// `dir_nlink`: beyond this a directory's link count is 1, meaning "many".
const DIR_NLINK_MAX: u32 = 65000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    #[error("cannot create the image file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the image file failed: {0}")]
    Write(std::io::Error),
    #[error("the layer is not a readable tar stream: {0}")]
    Tar(TarError),
    #[error("reading tar entry {path:?} failed: {source}")]
    Entry {
        path: String,
        source: std::io::Error,
    },
    #[error("tar entry {path:?} {problem}")]
    Path { path: String, problem: PathError },
    #[error("tar entry {path:?} {problem}")]
    Xattr { path: String, problem: XattrError },
    #[error("tar entry {path:?} is invalid: {problem}")]
    Invalid { path: String, problem: &'static str },
    #[error("the image is full: there is no room for {0}")]
    NoSpace(String),
    #[error("the image has {available} inodes but the layers need {needed}")]
    NoInodes { needed: u64, available: u32 },
    #[error("directory inode {ino} has more entries than a two-level htree can index")]
    DirTooLarge { ino: u32 },
    #[error("a journal of {0} bytes is too small: jbd2 needs at least 4 MiB")]
    JournalTooSmall(u64),
}

/// Options for a new filesystem image.
#[derive(Debug, Clone)]
pub struct FormatOptions {
    /// Size of the filesystem in bytes; the file is sparse, so unused space costs nothing.
    pub size_bytes: u64,
}

/// Where one group's bitmaps and inode table live.
struct GroupMeta {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
}

/// Builds one ext4 image from layers applied in order.
pub struct Formatter {
    file: File,
    geometry: Geometry,
    alloc: Allocator,
    groups: Vec<GroupMeta>,
    tree: Tree,
    layer: u32,
    now: Time,
    buf: Vec<u8>,
    /// Bytes written since `start_writeback` last ran.
    unflushed: u64,
    /// Where the journal lives, if there is one: (first block, blocks).
    journal: Option<(u64, u64)>,
}

impl Formatter {
    pub fn create(path: &Path, options: FormatOptions) -> Result<Self, Error> {
        let geometry = Geometry::new(options.size_bytes)?;
        let create = |source| Error::Create {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(create)?;
        file.set_len(geometry.blocks_count * BLOCK_SIZE)
            .map_err(create)?;

        let mut alloc = Allocator::new(geometry.blocks_count);
        for g in 0..geometry.groups {
            let len = geometry.super_blocks(g);
            if len > 0 {
                alloc.reserve(Run {
                    start: geometry.group_start(g),
                    len,
                });
            }
        }
        // flex_bg: all bitmaps, then all inode tables, packed at the front.
        let too_small = || Error::Geometry(GeometryError::TooSmall(options.size_bytes));
        let mut one = |n| alloc.allocate_contiguous(n).ok_or_else(too_small);
        let block_bitmaps: Vec<u64> = (0..geometry.groups)
            .map(|_| one(1))
            .collect::<Result<_, _>>()?;
        let inode_bitmaps: Vec<u64> = (0..geometry.groups)
            .map(|_| one(1))
            .collect::<Result<_, _>>()?;
        let groups = (0..geometry.groups as usize)
            .map(|g| {
                Ok(GroupMeta {
                    block_bitmap: block_bitmaps[g],
                    inode_bitmap: inode_bitmaps[g],
                    inode_table: one(geometry.inode_table_blocks)?,
                })
            })
            .collect::<Result<_, Error>>()?;

        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let now = Time {
            secs: since_epoch.as_secs() as i64,
            nanos: since_epoch.subsec_nanos(),
        };
        let root = Meta {
            perm: 0o755,
            atime: now,
            mtime: now,
            ctime: now,
            ..Meta::default()
        };
        Ok(Formatter {
            file,
            geometry,
            alloc,
            groups,
            tree: Tree::new(root),
            layer: 0,
            now,
            buf: vec![0; CHUNK],
            unflushed: 0,
            journal: None,
        })
    }

    /// Gives the filesystem a journal of `bytes` (rounded up to blocks),
    /// for disks that will be written to while mounted. Call it before
    /// unpacking, so the journal gets one contiguous run near the front.
    pub fn with_journal(mut self, bytes: u64) -> Result<Self, Error> {
        let blocks = bytes.div_ceil(BLOCK_SIZE);
        if blocks < journal::MIN_BLOCKS {
            return Err(Error::JournalTooSmall(bytes));
        }
        let start = self
            .alloc
            .allocate_contiguous(blocks)
            .ok_or_else(|| Error::NoSpace(format!("a journal of {bytes} bytes")))?;
        self.journal = Some((start, blocks));
        Ok(self)
    }

    /// Applies one uncompressed layer tar (whiteouts included) on top of
    /// what is there. `tar` is read on a thread of its own.
    pub fn unpack_layer(&mut self, tar: impl Read + Send) -> Result<(), Error> {
        self.layer += 1;
        read_ahead::read_ahead(tar, |chunks| {
            let mut archive = Reader::new(chunks);
            while let Some(header) = archive.next().map_err(Error::Tar)? {
                self.apply(&header, &mut archive)?;
            }
            Ok(())
        })
    }

    /// Applies one entry; `data` reads its contents.
    fn apply(&mut self, header: &Header, data: &mut Reader<impl Read>) -> Result<(), Error> {
        let raw_path = &header.path;
        let path = String::from_utf8_lossy(raw_path).into_owned();
        let parsed = tar_entry::parse(header, &path)?;
        let Some(parsed) = parsed else {
            return Ok(());
        };
        let path_err = |problem| Error::Path {
            path: path.clone(),
            problem,
        };
        let layer = self.layer;

        // Whiteouts never create anything, so they resolve without creating.
        let trimmed = raw_path.strip_suffix(b"/").unwrap_or(raw_path);
        let (parent, base) = match trimmed.iter().rposition(|&c| c == b'/') {
            Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
            None => (&b""[..], trimmed),
        };
        if let Some(hidden) = base.strip_prefix(b".wh.") {
            let dir = match self.tree.place(parent, None).map_err(path_err)? {
                Some(Place::Dir(d)) => Some(d),
                Some(Place::Entry(d, name)) => self.tree.child(d, &name),
                None => None,
            };
            if let Some(dir) = dir {
                if hidden == b".wh..opq" {
                    self.tree.opaque(dir, layer);
                } else {
                    self.tree.whiteout(dir, hidden, layer);
                }
            }
            self.release_freed();
            return Ok(());
        }

        let implicit = Meta {
            perm: 0o755,
            atime: self.now,
            mtime: self.now,
            ctime: self.now,
            ..Meta::default()
        };
        let place = self
            .tree
            .place(raw_path, Some((&implicit, layer)))
            .map_err(path_err)?;
        let (dir, name) = match place.expect("created") {
            Place::Entry(dir, name) => (dir, name),
            Place::Dir(dir) => {
                if !matches!(parsed.kind, tar_entry::What::Dir) {
                    return Err(path_err(PathError::NotAName));
                }
                self.tree.set_dir_meta(dir, parsed.meta);
                return Ok(());
            }
        };
        let kind = match parsed.kind {
            tar_entry::What::File => {
                let size = header.size;
                let extents = self.write_data(data, size, &path)?;
                Kind::File { size, extents }
            }
            tar_entry::What::Dir => Kind::Dir {
                children: BTreeMap::new(),
            },
            tar_entry::What::Symlink(target) => Kind::Symlink(target),
            tar_entry::What::Char(major, minor) => Kind::CharDevice { major, minor },
            tar_entry::What::Block(major, minor) => Kind::BlockDevice { major, minor },
            tar_entry::What::Fifo => Kind::Fifo,
            tar_entry::What::HardLink(target) => {
                self.tree
                    .link(dir, name, &target, layer)
                    .map_err(path_err)?;
                self.release_freed();
                return Ok(());
            }
        };
        self.tree
            .put(dir, name, Node::new(parsed.meta, kind), layer);
        self.release_freed();
        Ok(())
    }

    /// Returns the blocks of files that lost their last name to the allocator.
    fn release_freed(&mut self) {
        for e in self.tree.take_released() {
            self.alloc.free(Run {
                start: e.start,
                len: e.len as u64,
            });
        }
    }

    /// Streams a file's data to disk, one chunk at a time. All-zero blocks
    /// are never allocated (they become holes, so a sparse multi-GiB file
    /// costs only its data). Each chunk's blocks are taken right after the
    /// previous chunk's, starting in the first free run that could hold the
    /// whole file, so files stay contiguous whenever the image allows.
    fn write_data(
        &mut self,
        data: &mut Reader<impl Read>,
        size: u64,
        path: &str,
    ) -> Result<Vec<Extent>, Error> {
        let blocks = size.div_ceil(BLOCK_SIZE);
        if blocks > u32::MAX as u64 {
            let problem = "is larger than ext4's 16 TiB file size limit";
            return Err(Error::Invalid {
                path: path.into(),
                problem,
            });
        }
        let mut next = self.alloc.find_fit(blocks);
        let mut extents = Vec::new();
        let mut remaining = size;
        let mut logical: u32 = 0;
        while remaining > 0 {
            let hole = data.skip_hole(remaining, BLOCK_SIZE);
            if hole > 0 {
                remaining -= hole;
                logical += (hole / BLOCK_SIZE) as u32;
                continue;
            }
            let n = remaining.min(CHUNK as u64) as usize;
            data.read_exact(&mut self.buf[..n])
                .map_err(|source| Error::Entry {
                    path: path.into(),
                    source,
                })?;
            remaining -= n as u64;
            let padded = n.next_multiple_of(BS);
            self.buf[n..padded].fill(0);
            let used = self.buf[..padded]
                .chunks(BS)
                .filter(|b| *b != ZERO_BLOCK)
                .count();
            let runs = self
                .alloc
                .allocate_from(next, used as u64)
                .ok_or_else(|| Error::NoSpace(format!("the data of {path:?}")))?;
            next = runs.last().map(|r| r.start + r.len).or(next);
            let mut physical = runs.iter().flat_map(|r| r.start..r.start + r.len);
            let mut pending: Option<Pending> = None;
            for (i, block) in self.buf[..padded].chunks(BS).enumerate() {
                if block == ZERO_BLOCK {
                    if let Some(run) = pending.take() {
                        run.write(&self.file, &self.buf, &mut extents)?;
                    }
                    continue;
                }
                let p = physical.next().expect("allocated for every used block");
                if let Some(run) = &mut pending
                    && run.start + run.blocks as u64 == p
                {
                    run.blocks += 1;
                    continue;
                }
                if let Some(run) = pending.take() {
                    run.write(&self.file, &self.buf, &mut extents)?;
                }
                pending = Some(Pending {
                    logical: logical + i as u32,
                    start: p,
                    offset: i * BS,
                    blocks: 1,
                });
            }
            if let Some(run) = pending.take() {
                run.write(&self.file, &self.buf, &mut extents)?;
            }
            logical += (padded / BS) as u32;
            self.unflushed += padded as u64;
            if self.unflushed >= WRITEBACK_EVERY {
                self.start_writeback();
            }
        }
        Ok(extents)
    }

    /// Asks the kernel to start writing dirty pages out now, without
    /// waiting. The writer mostly waits for the decompressor, so doing
    /// writeback's work here, bit by bit, is free; leaving it all to the
    /// final `fsync` puts it on the critical path (about a fifth of the
    /// time for a Debian rootfs).
    fn start_writeback(&mut self) {
        self.unflushed = 0;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain syscall on a descriptor we own; a failure only
            // means the final fsync does the work, so it is ignored.
            unsafe {
                libc::sync_file_range(self.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
    }

    /// Writes the metadata and flushes the file.
    pub fn finish(mut self) -> Result<(), Error> {
        let lost_found = Meta {
            perm: 0o700,
            atime: self.now,
            mtime: self.now,
            ctime: self.now,
            ..Meta::default()
        };
        self.tree.ensure_lost_found(lost_found);
        let order = self.tree.breadth_first();
        // Root is inode 2; the rest count up from the first unreserved one.
        let last_ino = FIRST_INO as u64 + order.len() as u64 - 2;
        if last_ino > self.geometry.inodes_count() as u64 {
            return Err(Error::NoInodes {
                needed: last_ino,
                available: self.geometry.inodes_count(),
            });
        }
        let mut ino_of = vec![0u32; self.tree.capacity()];
        for (k, &(id, _)) in order.iter().enumerate() {
            ino_of[id] = if k == 0 { 2 } else { FIRST_INO + k as u32 - 1 };
        }
        let (uuid, hash_seed) = self.identity();
        let ipg = self.geometry.inodes_per_group;
        let mut dirs = vec![0u16; self.geometry.groups as usize];
        let mut table = TableBlock::default();
        // Inode 8 comes before every file's (11 and up): the table is
        // written in ascending order, one block at a time.
        let journal = match self.journal {
            Some((start, blocks)) => {
                let inode = self.journal_inode(start, blocks, uuid)?;
                let at = self.groups[0].inode_table * BLOCK_SIZE
                    + (journal::INO - 1) as u64 * INODE_SIZE;
                table.put(&self.file, at, &inode.encode())?;
                Some((inode.block, inode.size))
            }
            None => None,
        };
        for &(id, parent) in &order {
            let ino = ino_of[id];
            let inode = self.build_inode(id, ino, ino_of[parent], &ino_of, hash_seed)?;
            if matches!(self.tree.node(id).kind, Kind::Dir { .. }) {
                dirs[((ino - 1) / ipg) as usize] += 1;
            }
            let index = (ino - 1) % ipg;
            let at = self.groups[((ino - 1) / ipg) as usize].inode_table * BLOCK_SIZE
                + index as u64 * INODE_SIZE;
            table.put(&self.file, at, &inode.encode())?;
        }
        table.flush(&self.file)?;
        self.write_group_metadata(last_ino as u32, &dirs, uuid, hash_seed, journal)?;
        self.file.sync_all().map_err(Error::Write)
    }

    /// A fresh UUID (and directory hash seed) per image: clones of one
    /// snapshot share it, which is fine since each runs in its own VM.
    fn identity(&self) -> ([u8; 16], [u32; 4]) {
        let digest = Sha256::new()
            .chain_update(self.now.secs.to_le_bytes())
            .chain_update(self.now.nanos.to_le_bytes())
            .chain_update(std::process::id().to_le_bytes())
            .chain_update(self.alloc.free_blocks().to_le_bytes())
            .finalize();
        let mut uuid: [u8; 16] = digest[..16].try_into().expect("32 bytes");
        uuid[6] = (uuid[6] & 0x0f) | 0x40;
        uuid[8] = (uuid[8] & 0x3f) | 0x80;
        let seed = std::array::from_fn(|i| {
            u32::from_le_bytes(digest[16 + 4 * i..20 + 4 * i].try_into().expect("4 bytes"))
        });
        (uuid, seed)
    }

    /// Inode 8, with the journal superblock written to its first block.
    fn journal_inode(&mut self, start: u64, blocks: u64, uuid: [u8; 16]) -> Result<Inode, Error> {
        self.file
            .write_all_at(&journal::superblock(blocks, uuid), start * BLOCK_SIZE)
            .map_err(Error::Write)?;
        let mut extents = Vec::new();
        extent::push(&mut extents, 0, start, blocks as u32);
        let mut inode = Inode {
            mode: inode::S_IFREG | 0o600,
            size: blocks * BLOCK_SIZE,
            links: 1,
            atime: self.now,
            ctime: self.now,
            mtime: self.now,
            ..Inode::default()
        };
        map_extents(&self.file, &mut self.alloc, &mut inode, &extents)?;
        Ok(inode)
    }

    fn build_inode(
        &mut self,
        id: NodeId,
        ino: u32,
        parent: u32,
        ino_of: &[u32],
        seed: [u32; 4],
    ) -> Result<Inode, Error> {
        let node = self.tree.node(id);
        let meta = &node.meta;
        let mut inode = Inode {
            uid: meta.uid,
            gid: meta.gid,
            atime: meta.atime,
            ctime: meta.ctime,
            mtime: meta.mtime,
            links: node.names as u16,
            ..Inode::default()
        };
        let type_bits = match &node.kind {
            Kind::File { size, extents } => {
                inode.size = *size;
                map_extents(&self.file, &mut self.alloc, &mut inode, extents)?;
                inode::S_IFREG
            }
            Kind::Dir { .. } => {
                let entries: Vec<dir::Entry> = self
                    .tree
                    .entries(id)
                    .map(|(name, child)| dir::Entry {
                        name,
                        ino: ino_of[child],
                        file_type: file_type(&self.tree.node(child).kind),
                    })
                    .collect();
                let subdirs = entries
                    .iter()
                    .filter(|e| e.file_type == dir::FT_DIR)
                    .count() as u32;
                inode.links = if subdirs + 2 > DIR_NLINK_MAX {
                    1
                } else {
                    subdirs as u16 + 2
                };
                let blocks = dir::build(ino, parent, &entries, seed)
                    .map_err(|_| Error::DirTooLarge { ino })?;
                if blocks.indexed {
                    inode.flags |= FL_INDEX;
                }
                inode.size = blocks.data.len() as u64 * BLOCK_SIZE;
                let extents = write_blocks(&self.file, &mut self.alloc, &blocks.data)?;
                map_extents(&self.file, &mut self.alloc, &mut inode, &extents)?;
                inode::S_IFDIR
            }
            Kind::Symlink(target) => {
                inode.size = target.len() as u64;
                if target.len() <= FAST_SYMLINK_MAX {
                    inode.block[..target.len()].copy_from_slice(target);
                } else {
                    let mut block = target.clone();
                    block.resize(BS, 0);
                    let extents = write_blocks(&self.file, &mut self.alloc, &[block])?;
                    map_extents(&self.file, &mut self.alloc, &mut inode, &extents)?;
                }
                inode::S_IFLNK
            }
            Kind::CharDevice { major, minor } => {
                encode_device(&mut inode.block, *major, *minor);
                inode::S_IFCHR
            }
            Kind::BlockDevice { major, minor } => {
                encode_device(&mut inode.block, *major, *minor);
                inode::S_IFBLK
            }
            Kind::Fifo => inode::S_IFIFO,
        };
        inode.mode = type_bits | meta.perm;
        let placed =
            xattr::place(&meta.xattrs).expect("xattrs were checked when their entry was read");
        inode.inline_xattrs = placed.inline;
        if let Some(block) = placed.block {
            let at = self
                .alloc
                .allocate_contiguous(1)
                .ok_or_else(|| Error::NoSpace("an xattr block".into()))?;
            self.file
                .write_all_at(&block, at * BLOCK_SIZE)
                .map_err(Error::Write)?;
            inode.xattr_block = at;
            inode.sectors += BLOCK_SIZE / 512;
        }
        Ok(inode)
    }

    /// Bitmaps, group descriptors and the superblock with its backups.
    fn write_group_metadata(
        &self,
        last_ino: u32,
        dirs: &[u16],
        uuid: [u8; 16],
        hash_seed: [u32; 4],
        journal: Option<([u8; 60], u64)>,
    ) -> Result<(), Error> {
        let g = &self.geometry;
        let ipg = g.inodes_per_group;
        let write = |bytes: &[u8], at: u64| self.file.write_all_at(bytes, at).map_err(Error::Write);
        let mut descs = Vec::with_capacity((g.gdt_blocks * BLOCK_SIZE) as usize);
        let mut free_runs = self.alloc.free_runs();
        let mut run = free_runs.next();
        let mut free_total = 0;
        for group in 0..g.groups {
            let meta = &self.groups[group as usize];
            let start = g.group_start(group);
            let end = start + g.group_len(group);
            // Bits past the end of a short last group stay set, as ext4 wants.
            let mut bitmap = vec![0xFFu8; BS];
            let mut free = 0;
            while let Some(r) = run {
                if r.start >= end {
                    break;
                }
                let (s, e) = (r.start.max(start), (r.start + r.len).min(end));
                clear_bits(&mut bitmap, (s - start) as usize, (e - start) as usize);
                free += e - s;
                if r.start + r.len > end {
                    break;
                }
                run = free_runs.next();
            }
            free_total += free;
            if bitmap != ZERO_BLOCK {
                write(&bitmap, meta.block_bitmap * BLOCK_SIZE)?;
            }
            let used = last_ino.saturating_sub(group * ipg).min(ipg);
            let mut flags = BG_INODE_ZEROED;
            if used == 0 {
                flags |= BG_INODE_UNINIT;
            } else {
                let mut bitmap = vec![0xFFu8; BS];
                clear_bits(&mut bitmap, used as usize, ipg as usize);
                write(&bitmap, meta.inode_bitmap * BLOCK_SIZE)?;
            }
            let desc = GroupDesc {
                block_bitmap: meta.block_bitmap,
                inode_bitmap: meta.inode_bitmap,
                inode_table: meta.inode_table,
                free_blocks: free as u16,
                free_inodes: (ipg - used) as u16,
                used_dirs: dirs[group as usize],
                flags,
                itable_unused: (ipg - used) as u16,
            };
            descs.extend_from_slice(&desc.encode(group, &uuid));
        }
        descs.resize((g.gdt_blocks * BLOCK_SIZE) as usize, 0);
        let now = self.now.secs as u32;
        let sb = Superblock {
            geometry: g,
            free_blocks: free_total,
            free_inodes: g.inodes_count() - last_ino,
            uuid,
            hash_seed,
            now,
            journal,
        };
        for group in (0..g.groups).filter(|&n| g.has_super(n)) {
            let at = g.group_start(group) * BLOCK_SIZE;
            write(&sb.encode(group), if group == 0 { at + 1024 } else { at })?;
            write(&descs, at + BLOCK_SIZE)?;
        }
        Ok(())
    }
}

/// A run of non-zero data blocks waiting to be written in one call.
struct Pending {
    logical: u32,
    start: u64,
    offset: usize,
    blocks: u32,
}

impl Pending {
    fn write(self, file: &File, buf: &[u8], extents: &mut Vec<Extent>) -> Result<(), Error> {
        let bytes = &buf[self.offset..self.offset + self.blocks as usize * BS];
        file.write_all_at(bytes, self.start * BLOCK_SIZE)
            .map_err(Error::Write)?;
        extent::push(extents, self.logical, self.start, self.blocks);
        Ok(())
    }
}

/// Inodes arrive in number order, so the inode table is written one
/// 4 KiB block at a time, and blocks with no inode in them stay holes.
#[derive(Default)]
struct TableBlock {
    at: Option<u64>,
    buf: Vec<u8>,
}

impl TableBlock {
    /// Puts an inode at byte `at`. Callers go in ascending order: a block
    /// is started from zeros, so going back to one already written would
    /// wipe the inodes put there before.
    fn put(&mut self, file: &File, at: u64, inode: &[u8]) -> Result<(), Error> {
        let block = at - at % BLOCK_SIZE;
        if self.at != Some(block) {
            debug_assert!(self.at.is_none_or(|previous| previous < block));
            self.flush(file)?;
            self.at = Some(block);
            self.buf = vec![0; BS];
        }
        let off = (at - block) as usize;
        self.buf[off..off + inode.len()].copy_from_slice(inode);
        Ok(())
    }

    fn flush(&mut self, file: &File) -> Result<(), Error> {
        if let Some(at) = self.at.take() {
            file.write_all_at(&self.buf, at).map_err(Error::Write)?;
        }
        Ok(())
    }
}

/// Writes whole metadata blocks (directories, slow symlinks) to newly
/// allocated space and returns their extents.
fn write_blocks(
    file: &File,
    alloc: &mut Allocator,
    blocks: &[Vec<u8>],
) -> Result<Vec<Extent>, Error> {
    let runs = alloc
        .allocate(blocks.len() as u64)
        .ok_or_else(|| Error::NoSpace("directory and symlink blocks".into()))?;
    let mut extents = Vec::new();
    let mut logical = 0;
    for run in runs {
        let bytes = blocks[logical as usize..logical as usize + run.len as usize].concat();
        file.write_all_at(&bytes, run.start * BLOCK_SIZE)
            .map_err(Error::Write)?;
        extent::push(&mut extents, logical, run.start, run.len as u32);
        logical += run.len as u32;
    }
    Ok(extents)
}

/// Puts the extent tree in the inode (writing any tree blocks) and counts
/// data plus tree blocks in `i_blocks`.
fn map_extents(
    file: &File,
    alloc: &mut Allocator,
    inode: &mut Inode,
    extents: &[Extent],
) -> Result<(), Error> {
    let tree = extent::build(extents, || {
        alloc
            .allocate_contiguous(1)
            .ok_or_else(|| Error::NoSpace("extent tree blocks".into()))
    })?;
    for (at, block) in &tree.blocks {
        file.write_all_at(block, at * BLOCK_SIZE)
            .map_err(Error::Write)?;
    }
    let blocks = extents.iter().map(|e| e.len as u64).sum::<u64>() + tree.blocks.len() as u64;
    inode.block = tree.root;
    inode.flags |= FL_EXTENTS;
    inode.sectors += blocks * (BLOCK_SIZE / 512);
    Ok(())
}

/// Old-style numbers when both fit a byte (what mknod would store), the
/// 32-bit "new" encoding otherwise.
fn encode_device(block: &mut [u8; 60], major: u32, minor: u32) {
    if major < 256 && minor < 256 {
        block[0..4].copy_from_slice(&((major << 8) | minor).to_le_bytes());
    } else {
        let new = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        block[4..8].copy_from_slice(&new.to_le_bytes());
    }
}

fn file_type(kind: &Kind) -> u8 {
    match kind {
        Kind::File { .. } => dir::FT_REG,
        Kind::Dir { .. } => dir::FT_DIR,
        Kind::Symlink(_) => dir::FT_SYMLINK,
        Kind::CharDevice { .. } => dir::FT_CHR,
        Kind::BlockDevice { .. } => dir::FT_BLK,
        Kind::Fifo => dir::FT_FIFO,
    }
}

/// Clears bits `from..to` of a bitmap, whole bytes at a time in the middle.
fn clear_bits(bitmap: &mut [u8], mut from: usize, to: usize) {
    while from < to && !from.is_multiple_of(8) {
        bitmap[from / 8] &= !(1 << (from % 8));
        from += 1;
    }
    let whole = (to - from) / 8;
    bitmap[from / 8..from / 8 + whole].fill(0);
    from += whole * 8;
    while from < to {
        bitmap[from / 8] &= !(1 << (from % 8));
        from += 1;
    }
}
