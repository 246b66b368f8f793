//! The superblock and group descriptors, and the feature set.
//!
//! Features, all of which Linux has mounted read-write for over a decade:
//! - `filetype`: the type in each directory entry, so `readdir` callers
//!   (and e2fsck) need not read every inode.
//! - `extents`: files are a few extents instead of block maps; required for
//!   files over 16 GiB with 4 KiB blocks in practice, and far less metadata.
//! - `flex_bg`: bitmaps and inode tables sit together at the front instead
//!   of at the start of every group, so data runs can span groups.
//! - `sparse_super`: superblock copies only in groups 0, 1, 3^n, 5^n, 7^n.
//! - `large_file`, `huge_file`: files over 2 GiB, `i_blocks` in 48 bits.
//! - `dir_nlink`: directories with more than 65000 subdirectories.
//! - `extra_isize`: the 32 extra inode bytes (nanosecond times, crtime).
//! - `ext_attr`: xattrs, in the inode and in one block.
//! - `dir_index`: hashed directories (see `dir.rs`).
//! - `uninit_bg` (`gdt_csum`): each group records how much of its inode
//!   table is in use, so e2fsck and the kernel skip the unused (and never
//!   written, sparse) rest. It costs one CRC16 per group descriptor.
//!
//! Not set, on purpose:
//! - `metadata_csum`: checksums on every block would need CRC32c over all
//!   metadata, and catch only media corruption of an image we just wrote
//!   and the VM disk already protects; Apple's formatter has none either.
//!   `uninit_bg` gives the speed benefit that matters.
//! - `has_journal`, unless asked for (see `journal.rs`): a snapshot is
//!   written once by us and cloned per container; a journal would cost its
//!   size in every image for no gain while writing.
//! - `64bit`: only needed beyond 16 TiB.
//! - `resize_inode`: reserved descriptor blocks for online growth; the
//!   image can still be grown offline with resize2fs.

use super::journal;
use super::layout::{BLOCK_SIZE, EXTRA_ISIZE, FIRST_INO, Geometry, INODE_SIZE};

const MAGIC: u16 = 0xEF53;
const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_EXT_ATTR: u32 = 0x8;
const COMPAT_DIR_INDEX: u32 = 0x20;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_LARGE_FILE: u32 = 0x2;
const RO_COMPAT_HUGE_FILE: u32 = 0x8;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_DIR_NLINK: u32 = 0x20;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
const FLAGS_UNSIGNED_HASH: u32 = 0x2;
const DEFM_XATTR_USER_ACL: u32 = 0x4 | 0x8;
/// 16 groups per flex group, mke2fs's default; only an allocation hint for
/// the kernel since our metadata is placed by the allocator.
const LOG_GROUPS_PER_FLEX: u8 = 4;

pub const BG_INODE_UNINIT: u16 = 0x1;
pub const BG_INODE_ZEROED: u16 = 0x4;

pub struct Superblock<'a> {
    pub geometry: &'a Geometry,
    pub free_blocks: u64,
    pub free_inodes: u32,
    pub uuid: [u8; 16],
    pub hash_seed: [u32; 4],
    pub now: u32,
    /// The journal inode's `i_block` and size, when there is a journal.
    pub journal: Option<([u8; 60], u64)>,
}

impl Superblock<'_> {
    /// The 1024 superblock bytes for the copy in `group`.
    pub fn encode(&self, group: u32) -> [u8; 1024] {
        let g = self.geometry;
        let mut b = [0u8; 1024];
        let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &g.inodes_count().to_le_bytes());
        put(4, &(g.blocks_count as u32).to_le_bytes());
        put(12, &(self.free_blocks as u32).to_le_bytes());
        put(16, &self.free_inodes.to_le_bytes());
        put(20, &0u32.to_le_bytes()); // first data block: 0 with 4 KiB blocks
        let log = (BLOCK_SIZE.trailing_zeros() - 10).to_le_bytes();
        put(24, &log);
        put(28, &log);
        let per_group = (super::layout::BLOCKS_PER_GROUP as u32).to_le_bytes();
        put(32, &per_group);
        put(36, &per_group);
        put(40, &g.inodes_per_group.to_le_bytes());
        put(48, &self.now.to_le_bytes()); // wtime
        put(54, &u16::MAX.to_le_bytes()); // no mount-count checks
        put(56, &MAGIC.to_le_bytes());
        put(58, &1u16.to_le_bytes()); // clean
        put(60, &1u16.to_le_bytes()); // errors: continue
        put(64, &self.now.to_le_bytes()); // lastcheck
        put(76, &1u32.to_le_bytes()); // dynamic revision
        put(84, &FIRST_INO.to_le_bytes());
        put(88, &(INODE_SIZE as u16).to_le_bytes());
        put(90, &(group as u16).to_le_bytes());
        let mut compat = COMPAT_EXT_ATTR | COMPAT_DIR_INDEX;
        if let Some((i_block, size)) = self.journal {
            compat |= COMPAT_HAS_JOURNAL;
            put(224, &journal::INO.to_le_bytes());
            put(253, &[journal::BACKUP_BLOCKS]);
            put(268, &i_block);
            put(328, &((size >> 32) as u32).to_le_bytes());
            put(332, &(size as u32).to_le_bytes());
        }
        put(92, &compat.to_le_bytes());
        put(
            96,
            &(INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_FLEX_BG).to_le_bytes(),
        );
        put(
            100,
            &(RO_COMPAT_SPARSE_SUPER
                | RO_COMPAT_LARGE_FILE
                | RO_COMPAT_HUGE_FILE
                | RO_COMPAT_GDT_CSUM
                | RO_COMPAT_DIR_NLINK
                | RO_COMPAT_EXTRA_ISIZE)
                .to_le_bytes(),
        );
        put(104, &self.uuid);
        for (i, w) in self.hash_seed.iter().enumerate() {
            put(236 + 4 * i, &w.to_le_bytes());
        }
        put(252, &[1]); // default hash: half-MD4
        put(256, &DEFM_XATTR_USER_ACL.to_le_bytes());
        put(264, &self.now.to_le_bytes()); // mkfs time
        put(348, &EXTRA_ISIZE.to_le_bytes());
        put(350, &EXTRA_ISIZE.to_le_bytes());
        put(352, &FLAGS_UNSIGNED_HASH.to_le_bytes());
        put(372, &[LOG_GROUPS_PER_FLEX]);
        b
    }
}

pub struct GroupDesc {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks: u16,
    pub free_inodes: u16,
    pub used_dirs: u16,
    pub flags: u16,
    pub itable_unused: u16,
}

impl GroupDesc {
    pub fn encode(&self, group: u32, uuid: &[u8; 16]) -> [u8; 32] {
        let mut b = [0u8; 32];
        let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &(self.block_bitmap as u32).to_le_bytes());
        put(4, &(self.inode_bitmap as u32).to_le_bytes());
        put(8, &(self.inode_table as u32).to_le_bytes());
        put(12, &self.free_blocks.to_le_bytes());
        put(14, &self.free_inodes.to_le_bytes());
        put(16, &self.used_dirs.to_le_bytes());
        put(18, &self.flags.to_le_bytes());
        put(28, &self.itable_unused.to_le_bytes());
        let crc = crc16(crc16(crc16(0xFFFF, uuid), &group.to_le_bytes()), &b[..30]);
        b[30..32].copy_from_slice(&crc.to_le_bytes());
        b
    }
}

/// CRC-16 (polynomial 0x8005, reflected), as `uninit_bg` uses.
fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &byte in data {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc16_check_value() {
        // The standard check value of CRC-16/ARC is 0xBB3D (init 0).
        assert_eq!(super::crc16(0, b"123456789"), 0xBB3D);
    }
}
