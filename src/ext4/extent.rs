//! Extent trees: the map from a file's logical blocks to disk blocks.
//! Up to four extents live in the inode itself; more get a tree of 4 KiB
//! index and leaf blocks of whatever depth the count needs, so fragmented
//! and huge files have no limit short of ext4's own.

use super::layout::BLOCK_SIZE;

const MAGIC: u16 = 0xF30A;
const HEADER: usize = 12;
const ENTRY: usize = 12;
const IN_INODE: usize = 4;
const PER_BLOCK: usize = (BLOCK_SIZE as usize - HEADER) / ENTRY;
/// The longest initialized extent (the top bit of the length marks
/// uninitialized extents).
pub const MAX_LEN: u32 = 32768;

/// A mapped run: `len` blocks from logical block `logical` at disk block
/// `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub logical: u32,
    pub start: u64,
    pub len: u32,
}

/// Appends a mapping, extending the last extent when it continues it, and
/// splitting at [`MAX_LEN`].
pub fn push(extents: &mut Vec<Extent>, mut logical: u32, mut start: u64, mut len: u32) {
    while len > 0 {
        if let Some(last) = extents.last_mut()
            && last.logical + last.len == logical
            && last.start + last.len as u64 == start
            && last.len < MAX_LEN
        {
            let add = len.min(MAX_LEN - last.len);
            last.len += add;
            (logical, start, len) = (logical + add, start + add as u64, len - add);
            continue;
        }
        let take = len.min(MAX_LEN);
        extents.push(Extent {
            logical,
            start,
            len: take,
        });
        (logical, start, len) = (logical + take, start + take as u64, len - take);
    }
}

/// The encoded tree: the 60 bytes of `i_block`, and the blocks the tree
/// needs outside the inode.
pub struct Tree {
    pub root: [u8; 60],
    pub blocks: Vec<(u64, Vec<u8>)>,
}

/// Builds the tree bottom-up. `alloc` provides one disk block per tree node.
pub fn build<E>(extents: &[Extent], mut alloc: impl FnMut() -> Result<u64, E>) -> Result<Tree, E> {
    let mut blocks = Vec::new();
    let mut root = [0u8; 60];
    if extents.len() <= IN_INODE {
        write_node(&mut root, IN_INODE, 0, extents.iter().map(leaf_entry));
        return Ok(Tree { root, blocks });
    }
    // (first logical block, disk block) of each node on the current level.
    let mut level: Vec<(u32, u64)> = Vec::new();
    for chunk in extents.chunks(PER_BLOCK) {
        let at = alloc()?;
        let mut block = vec![0u8; BLOCK_SIZE as usize];
        write_node(&mut block, PER_BLOCK, 0, chunk.iter().map(leaf_entry));
        blocks.push((at, block));
        level.push((chunk[0].logical, at));
    }
    let mut depth = 1;
    while level.len() > IN_INODE {
        let mut up = Vec::new();
        for chunk in level.chunks(PER_BLOCK) {
            let at = alloc()?;
            let mut block = vec![0u8; BLOCK_SIZE as usize];
            write_node(&mut block, PER_BLOCK, depth, chunk.iter().map(index_entry));
            blocks.push((at, block));
            up.push((chunk[0].0, at));
        }
        level = up;
        depth += 1;
    }
    write_node(&mut root, IN_INODE, depth, level.iter().map(index_entry));
    Ok(Tree { root, blocks })
}

fn leaf_entry(e: &Extent) -> [u8; ENTRY] {
    let mut b = [0u8; ENTRY];
    b[0..4].copy_from_slice(&e.logical.to_le_bytes());
    b[4..6].copy_from_slice(&(e.len as u16).to_le_bytes());
    b[6..8].copy_from_slice(&((e.start >> 32) as u16).to_le_bytes());
    b[8..12].copy_from_slice(&(e.start as u32).to_le_bytes());
    b
}

fn index_entry(&(logical, block): &(u32, u64)) -> [u8; ENTRY] {
    let mut b = [0u8; ENTRY];
    b[0..4].copy_from_slice(&logical.to_le_bytes());
    b[4..8].copy_from_slice(&(block as u32).to_le_bytes());
    b[8..10].copy_from_slice(&((block >> 32) as u16).to_le_bytes());
    b
}

fn write_node(
    buf: &mut [u8],
    max: usize,
    depth: u16,
    entries: impl ExactSizeIterator<Item = [u8; ENTRY]>,
) {
    buf[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    buf[2..4].copy_from_slice(&(entries.len() as u16).to_le_bytes());
    buf[4..6].copy_from_slice(&(max as u16).to_le_bytes());
    buf[6..8].copy_from_slice(&depth.to_le_bytes());
    for (i, e) in entries.enumerate() {
        buf[HEADER + i * ENTRY..HEADER + (i + 1) * ENTRY].copy_from_slice(&e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    #[test]
    fn push_merges_and_splits() {
        let mut v = Vec::new();
        push(&mut v, 0, 100, 10);
        push(&mut v, 10, 110, 5);
        push(&mut v, 20, 200, MAX_LEN + 1);
        assert_eq!(
            v,
            [
                Extent {
                    logical: 0,
                    start: 100,
                    len: 15
                },
                Extent {
                    logical: 20,
                    start: 200,
                    len: MAX_LEN
                },
                Extent {
                    logical: 20 + MAX_LEN,
                    start: 200 + MAX_LEN as u64,
                    len: 1
                },
            ]
        );
    }

    #[test]
    fn depth_grows_with_count() {
        let extents: Vec<Extent> = (0..2000)
            .map(|i| Extent {
                logical: i * 2,
                start: 1000 + i as u64 * 2,
                len: 1,
            })
            .collect();
        let mut next = 10;
        let tree = build::<()>(&extents[..4], || unreachable!()).unwrap();
        assert_eq!((u16_at(&tree.root, 2), u16_at(&tree.root, 6)), (4, 0));
        let tree = build::<()>(&extents, || {
            next += 1;
            Ok(next)
        })
        .unwrap();
        // 2000 extents: 6 leaves, then 1 index block, so depth 2 at the root.
        assert_eq!(tree.blocks.len(), 7);
        assert_eq!((u16_at(&tree.root, 2), u16_at(&tree.root, 6)), (1, 2));
        assert_eq!(u16_at(&tree.blocks[6].1, 2), 6);
    }
}
