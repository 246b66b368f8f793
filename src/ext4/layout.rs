//! The fixed geometry of an image: how many block groups, how many inodes,
//! and where the superblock copies live. Pure arithmetic, decided once from
//! the requested size.

/// 4 KiB blocks: the page size on every host and guest we run, so the guest
/// page cache maps blocks one to one, and extents cover 128 MiB each.
pub const BLOCK_SIZE: u64 = 4096;
/// 256-byte inodes leave 96 bytes after the 32 bytes of `i_extra_isize`
/// fields: room for nanosecond timestamps and small xattrs (capabilities,
/// SELinux labels) without an xattr block.
pub const INODE_SIZE: u64 = 256;
/// Bytes of `i_extra_isize`: everything up to and including `i_projid`.
pub const EXTRA_ISIZE: u16 = 32;
/// One block bitmap of 4 KiB describes exactly this many blocks.
pub const BLOCKS_PER_GROUP: u64 = BLOCK_SIZE * 8;
/// Group descriptor size without the `64bit` feature.
pub const DESC_SIZE: u64 = 32;
/// The first inode not reserved by ext4 (it becomes /lost+found).
pub const FIRST_INO: u32 = 11;
/// The image is the container's root disk, so it needs inodes for what the
/// container writes later, not just for the layers: one inode per 16 KiB is
/// mke2fs's default. Unused inode tables are holes in the file, and with
/// `uninit_bg` e2fsck and the kernel skip them, so the generosity is cheap.
const BYTES_PER_INODE: u64 = 16384;
/// Without the `64bit` feature block numbers are 32 bits.
const MAX_BLOCKS: u64 = u32::MAX as u64;
/// A last group shorter than this is dropped (as mke2fs does): it could not
/// hold its own superblock backup and would only add bookkeeping.
const MIN_LAST_GROUP: u64 = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub blocks_count: u64,
    pub groups: u32,
    pub inodes_per_group: u32,
    /// Blocks of inode table per group.
    pub inode_table_blocks: u64,
    /// Blocks of the group descriptor table (each copy).
    pub gdt_blocks: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    #[error(
        "an image of {0} bytes is too small to hold an ext4 filesystem (at least 1 MiB is needed)"
    )]
    TooSmall(u64),
    #[error(
        "an image of {0} bytes is larger than 16 TiB, the ext4 limit without the 64bit feature"
    )]
    TooLarge(u64),
}

impl Geometry {
    pub fn new(size_bytes: u64) -> Result<Self, GeometryError> {
        let mut blocks = size_bytes / BLOCK_SIZE;
        if blocks < MIN_LAST_GROUP {
            return Err(GeometryError::TooSmall(size_bytes));
        }
        if blocks > MAX_BLOCKS {
            return Err(GeometryError::TooLarge(size_bytes));
        }
        let tail = blocks % BLOCKS_PER_GROUP;
        if blocks > BLOCKS_PER_GROUP && tail != 0 && tail < MIN_LAST_GROUP {
            blocks -= tail;
        }
        let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
        let group_bytes = blocks.min(BLOCKS_PER_GROUP) * BLOCK_SIZE;
        let inodes_per_block = BLOCK_SIZE / INODE_SIZE;
        // Whole inode-table blocks, and at most one inode bitmap block's worth.
        let ipg = (group_bytes / BYTES_PER_INODE)
            .next_multiple_of(inodes_per_block)
            .clamp(inodes_per_block, BLOCK_SIZE * 8);
        Ok(Geometry {
            blocks_count: blocks,
            groups: groups as u32,
            inodes_per_group: ipg as u32,
            inode_table_blocks: ipg / inodes_per_block,
            gdt_blocks: (groups * DESC_SIZE).div_ceil(BLOCK_SIZE),
        })
    }

    pub fn inodes_count(&self) -> u32 {
        self.inodes_per_group * self.groups
    }

    pub fn group_start(&self, group: u32) -> u64 {
        group as u64 * BLOCKS_PER_GROUP
    }

    pub fn group_len(&self, group: u32) -> u64 {
        (self.blocks_count - self.group_start(group)).min(BLOCKS_PER_GROUP)
    }

    /// `sparse_super`: copies of the superblock and descriptors only in
    /// groups 0, 1 and powers of 3, 5 and 7, which is plenty of redundancy
    /// and keeps almost every group free for data.
    pub fn has_super(&self, group: u32) -> bool {
        fn power_of(mut n: u32, base: u32) -> bool {
            while n.is_multiple_of(base) {
                n /= base;
            }
            n == 1
        }
        group <= 1 || power_of(group, 3) || power_of(group, 5) || power_of(group, 7)
    }

    /// Blocks at the start of `group` taken by its superblock copy and
    /// descriptor table copy.
    pub fn super_blocks(&self, group: u32) -> u64 {
        if self.has_super(group) {
            1 + self.gdt_blocks
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_image_is_one_group() {
        let g = Geometry::new(64 << 20).unwrap();
        assert_eq!(g.blocks_count, 16384);
        assert_eq!(g.groups, 1);
        assert_eq!(g.inodes_per_group, 4096);
        assert_eq!(g.inode_table_blocks, 256);
        assert_eq!(g.gdt_blocks, 1);
    }

    #[test]
    fn short_last_group_is_dropped() {
        let g = Geometry::new((BLOCKS_PER_GROUP * 3 + 10) * BLOCK_SIZE).unwrap();
        assert_eq!(g.groups, 3);
        assert_eq!(g.blocks_count, BLOCKS_PER_GROUP * 3);
        let g = Geometry::new((BLOCKS_PER_GROUP * 3 + 1000) * BLOCK_SIZE).unwrap();
        assert_eq!(g.groups, 4);
        assert_eq!(g.group_len(3), 1000);
        assert_eq!(g.inodes_per_group, 8192);
    }

    #[test]
    fn sparse_super_groups() {
        let g = Geometry::new(1 << 40).unwrap();
        let with: Vec<u32> = (0..130).filter(|&n| g.has_super(n)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125]);
        assert_eq!(g.gdt_blocks, 64);
    }

    #[test]
    fn limits() {
        assert_eq!(Geometry::new(4096), Err(GeometryError::TooSmall(4096)));
        assert!(Geometry::new(1 << 44).is_err());
        assert!(Geometry::new((1 << 44) - 4096).is_ok());
    }
}
