//! Directory blocks. A directory that fits one block is a plain list of
//! entries; a bigger one becomes an htree (`dir_index`): entries are placed
//! in leaf blocks by the half-MD4 hash of their names, with index blocks in
//! front, so the guest kernel finds a name in a directory of thousands by
//! reading two or three blocks instead of scanning them all.

use super::layout::BLOCK_SIZE;

const BS: usize = BLOCK_SIZE as usize;
pub const FT_REG: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHR: u8 = 3;
pub const FT_BLK: u8 = 4;
pub const FT_FIFO: u8 = 5;
pub const FT_SYMLINK: u8 = 7;

/// `dx_root_info.hash_version`: half-MD4, the mke2fs default.
const HASH_HALF_MD4: u8 = 1;
/// Index entries in the root block after the dot entries and root info.
const ROOT_LIMIT: usize = (BS - 32) / 8;
/// Index entries in an interior index block after its empty dirent.
const NODE_LIMIT: usize = (BS - 8) / 8;

pub struct Entry<'a> {
    pub name: &'a [u8],
    pub ino: u32,
    pub file_type: u8,
}

/// More entries than a two-level htree (without `large_dir`) can index.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

/// A directory's blocks in logical order; `indexed` asks for `EXT4_INDEX_FL`.
pub struct Blocks {
    pub data: Vec<Vec<u8>>,
    pub indexed: bool,
}

fn rec_len(name_len: usize) -> usize {
    (8 + name_len).next_multiple_of(4)
}

/// Appends entries to blocks, starting a new block when one is full; the
/// last entry of each block stretches to the block end, as ext4 requires.
struct Packer {
    blocks: Vec<Vec<u8>>,
    used: usize,
    last: usize,
}

impl Packer {
    fn new() -> Self {
        Packer {
            blocks: Vec::new(),
            used: BS,
            last: 0,
        }
    }

    /// Returns whether the entry opened a new block.
    fn add(&mut self, ino: u32, name: &[u8], file_type: u8) -> bool {
        let len = rec_len(name.len());
        let opened = self.used + len > BS;
        if opened {
            self.blocks.push(vec![0u8; BS]);
            self.used = 0;
        }
        let block = self.blocks.last_mut().expect("a block is open");
        if !opened {
            let prev = self.last;
            block[prev + 4..prev + 6].copy_from_slice(&((self.used - prev) as u16).to_le_bytes());
        }
        let at = self.used;
        block[at..at + 4].copy_from_slice(&ino.to_le_bytes());
        block[at + 4..at + 6].copy_from_slice(&((BS - at) as u16).to_le_bytes());
        block[at + 6] = name.len() as u8;
        block[at + 7] = file_type;
        block[at + 8..at + 8 + name.len()].copy_from_slice(name);
        self.last = at;
        self.used = at + len;
        opened
    }
}

/// Lays out a directory. `entries` excludes `.` and `..`.
pub fn build(ino: u32, parent: u32, entries: &[Entry], seed: [u32; 4]) -> Result<Blocks, TooLarge> {
    let linear_len: usize = 12 + 12 + entries.iter().map(|e| rec_len(e.name.len())).sum::<usize>();
    if linear_len <= BS {
        let mut p = Packer::new();
        p.add(ino, b".", FT_DIR);
        p.add(parent, b"..", FT_DIR);
        for e in entries {
            p.add(e.ino, e.name, e.file_type);
        }
        return Ok(Blocks {
            data: p.blocks,
            indexed: false,
        });
    }
    build_htree(ino, parent, entries, seed)
}

fn build_htree(
    ino: u32,
    parent: u32,
    entries: &[Entry],
    seed: [u32; 4],
) -> Result<Blocks, TooLarge> {
    let mut hashed: Vec<(u32, u32, &Entry)> = entries
        .iter()
        .map(|e| {
            let (major, minor) = half_md4(e.name, seed);
            (major, minor, e)
        })
        .collect();
    hashed.sort_by(|a, b| (a.0, a.1, a.2.name).cmp(&(b.0, b.1, b.2.name)));

    // Leaves, each with the hash it starts at. A leaf starting in the middle
    // of a run of equal hashes gets the low "continued" bit, which tells the
    // kernel to look in the previous leaf too.
    let mut leaves = Packer::new();
    let mut starts: Vec<u32> = Vec::new();
    let mut prev_hash = None;
    for &(hash, _, e) in &hashed {
        if leaves.add(e.ino, e.name, e.file_type) {
            starts.push(hash | u32::from(prev_hash == Some(hash)));
        }
        prev_hash = Some(hash);
    }
    let leaf_count = leaves.blocks.len();
    if leaf_count > ROOT_LIMIT * NODE_LIMIT {
        return Err(TooLarge);
    }

    // Logical layout: root, leaves, then interior index blocks if needed.
    let mut data = Vec::with_capacity(1 + leaf_count);
    let mut root = vec![0u8; BS];
    root[0..4].copy_from_slice(&ino.to_le_bytes());
    root[4..6].copy_from_slice(&12u16.to_le_bytes());
    root[6] = 1;
    root[7] = FT_DIR;
    root[8] = b'.';
    root[12..16].copy_from_slice(&parent.to_le_bytes());
    root[16..18].copy_from_slice(&((BS - 12) as u16).to_le_bytes());
    root[18] = 2;
    root[19] = FT_DIR;
    root[20..22].copy_from_slice(b"..");
    root[28] = HASH_HALF_MD4;
    root[29] = 8;
    let leaf_refs: Vec<(u32, u32)> = starts
        .iter()
        .enumerate()
        .map(|(i, &h)| (h, 1 + i as u32))
        .collect();
    if leaf_count <= ROOT_LIMIT {
        write_index(&mut root[32..], ROOT_LIMIT, &leaf_refs);
        data.push(root);
        data.extend(leaves.blocks);
    } else {
        root[30] = 1; // indirect_levels
        let first_node = 1 + leaf_count as u32;
        let mut nodes = Vec::new();
        let mut node_refs = Vec::new();
        for (i, chunk) in leaf_refs.chunks(NODE_LIMIT).enumerate() {
            let mut node = vec![0u8; BS];
            node[4..6].copy_from_slice(&(BS as u16).to_le_bytes());
            write_index(&mut node[8..], NODE_LIMIT, chunk);
            nodes.push(node);
            node_refs.push((chunk[0].0, first_node + i as u32));
        }
        write_index(&mut root[32..], ROOT_LIMIT, &node_refs);
        data.push(root);
        data.extend(leaves.blocks);
        data.extend(nodes);
    }
    Ok(Blocks {
        data,
        indexed: true,
    })
}

/// A `dx_countlimit` followed by `dx_entry`s; the first entry's hash slot
/// holds the count and limit, since it always covers hash 0.
fn write_index(buf: &mut [u8], limit: usize, refs: &[(u32, u32)]) {
    buf[0..2].copy_from_slice(&(limit as u16).to_le_bytes());
    buf[2..4].copy_from_slice(&(refs.len() as u16).to_le_bytes());
    for (i, &(hash, block)) in refs.iter().enumerate() {
        let at = i * 8;
        if i > 0 {
            buf[at..at + 4].copy_from_slice(&hash.to_le_bytes());
        }
        buf[at + 4..at + 8].copy_from_slice(&block.to_le_bytes());
    }
}

/// ext4's half-MD4 directory hash (unsigned-char variant, which the
/// superblock's `EXT2_FLAGS_UNSIGNED_HASH` announces). Returns (major, minor).
pub fn half_md4(name: &[u8], seed: [u32; 4]) -> (u32, u32) {
    let mut buf = if seed == [0; 4] {
        [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476]
    } else {
        seed
    };
    let mut rest = name;
    loop {
        let mut input = [0u32; 8];
        str_to_words(rest, &mut input);
        md4_transform(&mut buf, &input);
        if rest.len() <= 32 {
            break;
        }
        rest = &rest[32..];
    }
    let mut major = buf[1] & !1;
    if major == 0x7fff_ffff << 1 {
        major = (0x7fff_ffff - 1) << 1;
    }
    (major, buf[2])
}

/// Packs up to 32 bytes of the name into words, padded with a value derived
/// from the remaining length (ext4's `str2hashbuf`).
fn str_to_words(msg: &[u8], out: &mut [u32; 8]) {
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut val = pad;
    let mut n = 0;
    for (i, &c) in msg.iter().take(32).enumerate() {
        val = u32::from(c).wrapping_add(val << 8);
        if i % 4 == 3 {
            out[n] = val;
            n += 1;
            val = pad;
        }
    }
    if n < 8 {
        out[n] = val;
        n += 1;
    }
    out[n..].fill(pad);
}

fn md4_transform(buf: &mut [u32; 4], x: &[u32; 8]) {
    fn f(x: u32, y: u32, z: u32) -> u32 {
        z ^ (x & (y ^ z))
    }
    fn g(x: u32, y: u32, z: u32) -> u32 {
        (x & y).wrapping_add((x ^ y) & z)
    }
    fn h(x: u32, y: u32, z: u32) -> u32 {
        x ^ y ^ z
    }
    const K2: u32 = 0o13240474631;
    const K3: u32 = 0o15666365641;
    let [mut a, mut b, mut c, mut d] = *buf;
    macro_rules! round {
        ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
            $a = $a
                .wrapping_add($f($b, $c, $d))
                .wrapping_add($x)
                .rotate_left($s)
        };
    }
    round!(f, a, b, c, d, x[0], 3);
    round!(f, d, a, b, c, x[1], 7);
    round!(f, c, d, a, b, x[2], 11);
    round!(f, b, c, d, a, x[3], 19);
    round!(f, a, b, c, d, x[4], 3);
    round!(f, d, a, b, c, x[5], 7);
    round!(f, c, d, a, b, x[6], 11);
    round!(f, b, c, d, a, x[7], 19);
    round!(g, a, b, c, d, x[1].wrapping_add(K2), 3);
    round!(g, d, a, b, c, x[3].wrapping_add(K2), 5);
    round!(g, c, d, a, b, x[5].wrapping_add(K2), 9);
    round!(g, b, c, d, a, x[7].wrapping_add(K2), 13);
    round!(g, a, b, c, d, x[0].wrapping_add(K2), 3);
    round!(g, d, a, b, c, x[2].wrapping_add(K2), 5);
    round!(g, c, d, a, b, x[4].wrapping_add(K2), 9);
    round!(g, b, c, d, a, x[6].wrapping_add(K2), 13);
    round!(h, a, b, c, d, x[3].wrapping_add(K3), 3);
    round!(h, d, a, b, c, x[7].wrapping_add(K3), 9);
    round!(h, c, d, a, b, x[2].wrapping_add(K3), 11);
    round!(h, b, c, d, a, x[6].wrapping_add(K3), 15);
    round!(h, a, b, c, d, x[1].wrapping_add(K3), 3);
    round!(h, d, a, b, c, x[5].wrapping_add(K3), 9);
    round!(h, c, d, a, b, x[0].wrapping_add(K3), 11);
    round!(h, b, c, d, a, x[4].wrapping_add(K3), 15);
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}
