//! The optional JBD2 journal (`has_journal`): inode 8, one contiguous run
//! of blocks starting with a journal superblock that says "empty", so the
//! kernel starts its first transaction at block 1 and nothing is replayed.
//! Container root disks are written to after boot; with a journal (the
//! kernel's default `data=ordered`), a VM killed mid-write leaves a disk
//! that mounts without a full fsck. Snapshots themselves need none: we
//! write them once and fsync before anyone uses them.

use super::layout::BLOCK_SIZE;

/// The journal's reserved inode number.
pub const INO: u32 = 8;
/// jbd2 refuses journals shorter than this (`JBD2_MIN_JOURNAL_BLOCKS`).
pub const MIN_BLOCKS: u64 = 1024;
/// Inode 8's `i_block` and size are also kept in the superblock
/// (`s_jnl_blocks`), so e2fsck can rebuild a damaged journal inode.
pub const BACKUP_BLOCKS: u8 = 1;

const MAGIC: u32 = 0xC03B_3998;
const SUPERBLOCK_V2: u32 = 4;

/// The first block of the journal, big-endian as JBD2 is on every host.
pub fn superblock(blocks: u64, uuid: [u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_SIZE as usize];
    let mut put = |at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    put(0x0, MAGIC);
    put(0x4, SUPERBLOCK_V2);
    put(0xC, BLOCK_SIZE as u32);
    put(0x10, blocks as u32); // s_maxlen
    put(0x14, 1); // s_first: the log starts right after this block
    put(0x18, 1); // s_sequence of the first transaction
    // s_start = 0 (0x1C): the journal is empty, there is nothing to recover.
    put(0x40, 1); // s_nr_users: this filesystem
    b[0x30..0x40].copy_from_slice(&uuid);
    b
}
