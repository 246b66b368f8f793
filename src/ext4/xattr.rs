//! Extended attributes: first in the inode's spare 92 bytes, the rest in
//! one shared-format xattr block. `security.capability` (file capabilities,
//! e.g. ping's `cap_net_raw`) and SELinux labels are what images carry.

use super::inode::INLINE_XATTR_SPACE;
use super::layout::BLOCK_SIZE;

const MAGIC: u32 = 0xEA02_0000;
const BLOCK_HEADER: usize = 32;
const ENTRY_HEADER: usize = 16;
const INDEX_ACL_ACCESS: u8 = 2;
const INDEX_ACL_DEFAULT: u8 = 3;

/// One attribute as ext4 stores it: a namespace index and the name after
/// the namespace prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attr {
    pub index: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum XattrError {
    #[error("has a malformed POSIX ACL in xattr {0:?}")]
    Acl(String),
    #[error("has more xattrs than fit in its inode and one 4 KiB block")]
    TooLarge,
}

impl Attr {
    /// From a full name such as `security.capability` and the value as tar
    /// carries it (the Linux VFS format). Names outside the Linux
    /// namespaces (e.g. `com.apple.*` from archives made on a Mac) give
    /// `Ok(None)`: Linux could not have them either, so they are dropped.
    pub fn new(full_name: &str, value: &[u8]) -> Result<Option<Attr>, XattrError> {
        let acl = |index| {
            Ok(Some(Attr {
                index,
                name: Vec::new(),
                value: acl_to_disk(value).ok_or_else(|| XattrError::Acl(full_name.into()))?,
            }))
        };
        match full_name {
            "system.posix_acl_access" => return acl(INDEX_ACL_ACCESS),
            "system.posix_acl_default" => return acl(INDEX_ACL_DEFAULT),
            _ => {}
        }
        const PREFIXES: [(&str, u8); 4] = [
            ("user.", 1),
            ("trusted.", 4),
            ("security.", 6),
            ("system.", 7),
        ];
        for (prefix, index) in PREFIXES {
            if let Some(name) = full_name.strip_prefix(prefix)
                && !name.is_empty()
                && name.len() <= 255
            {
                let name = name.as_bytes().to_vec();
                return Ok(Some(Attr {
                    index,
                    name,
                    value: value.to_vec(),
                }));
            }
        }
        Ok(None)
    }

    fn entry_len(&self) -> usize {
        (ENTRY_HEADER + self.name.len()).next_multiple_of(4)
    }

    fn value_len(&self) -> usize {
        self.value.len().next_multiple_of(4)
    }

    /// ext4's entry hash over the name and the zero-padded value words.
    fn hash(&self) -> u32 {
        let mut hash: u32 = 0;
        for &c in &self.name {
            hash = (hash << 5) ^ (hash >> 27) ^ u32::from(c);
        }
        let mut padded = self.value.clone();
        padded.resize(self.value_len(), 0);
        for word in padded.chunks(4) {
            let w = u32::from_le_bytes(word.try_into().expect("padded to 4"));
            hash = (hash << 16) ^ (hash >> 16) ^ w;
        }
        hash
    }
}

/// ext4 stores POSIX ACLs in its own compact format (version 1, 4-byte
/// entries for the owner/group/mask/other tags), not the VFS format
/// (version 2, 8-byte entries) that tar archives carry.
fn acl_to_disk(vfs: &[u8]) -> Option<Vec<u8>> {
    const USER: u16 = 0x02;
    const GROUP: u16 = 0x08;
    let (header, entries) = vfs.split_at_checked(4)?;
    if u32::from_le_bytes(header.try_into().ok()?) != 2 || entries.len() % 8 != 0 {
        return None;
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in entries.chunks(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        out.extend_from_slice(&e[0..4]);
        if tag == USER || tag == GROUP {
            out.extend_from_slice(&e[4..8]);
        }
    }
    Some(out)
}

/// Where an inode's attributes went.
#[derive(Debug, Default)]
pub struct Placed {
    /// The in-inode area, magic first; empty when nothing is inline.
    pub inline: Vec<u8>,
    /// A whole xattr block, if needed.
    pub block: Option<Vec<u8>>,
}

/// Sorts (the kernel binary-searches block entries by index, name length,
/// name) and fills the inode first, then the block.
pub fn place(attrs: &[Attr]) -> Result<Placed, XattrError> {
    let mut sorted: Vec<&Attr> = attrs.iter().collect();
    sorted.sort_by(|a, b| (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name)));
    // The inline area is a magic, entries, a 4-byte terminator and values.
    let inline_room = INLINE_XATTR_SPACE - 4 - 4;
    let block_room = BLOCK_SIZE as usize - BLOCK_HEADER - 4;
    let (mut inline, mut block) = (Vec::new(), Vec::new());
    let (mut inline_used, mut block_used) = (0, 0);
    for a in sorted {
        let need = a.entry_len() + a.value_len();
        if block.is_empty() && inline_used + need <= inline_room {
            inline.push(a);
            inline_used += need;
        } else if block_used + need <= block_room {
            block.push(a);
            block_used += need;
        } else {
            return Err(XattrError::TooLarge);
        }
    }
    let mut placed = Placed::default();
    if !inline.is_empty() {
        let mut area = vec![0u8; INLINE_XATTR_SPACE];
        area[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        write_entries(&mut area[4..], 0, &inline);
        placed.inline = area;
    }
    if !block.is_empty() {
        let mut buf = vec![0u8; BLOCK_SIZE as usize];
        buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        buf[4..8].copy_from_slice(&1u32.to_le_bytes()); // refcount
        buf[8..12].copy_from_slice(&1u32.to_le_bytes()); // blocks
        let hashes = write_entries(&mut buf, BLOCK_HEADER, &block);
        let block_hash = hashes.iter().fold(0u32, |h, &e| (h << 16) ^ (h >> 16) ^ e);
        buf[12..16].copy_from_slice(&block_hash.to_le_bytes());
        placed.block = Some(buf);
    }
    Ok(placed)
}

/// Writes entries from `first` and values down from the end of `area`;
/// value offsets are relative to the start of `area`. Returns entry hashes.
fn write_entries(area: &mut [u8], first: usize, attrs: &[&Attr]) -> Vec<u32> {
    let mut at = first;
    let mut value_end = area.len();
    let mut hashes = Vec::new();
    for a in attrs {
        let hash = a.hash();
        hashes.push(hash);
        let value_at = if a.value.is_empty() {
            0
        } else {
            value_end -= a.value_len();
            area[value_end..value_end + a.value.len()].copy_from_slice(&a.value);
            value_end
        };
        area[at] = a.name.len() as u8;
        area[at + 1] = a.index;
        area[at + 2..at + 4].copy_from_slice(&(value_at as u16).to_le_bytes());
        area[at + 8..at + 12].copy_from_slice(&(a.value.len() as u32).to_le_bytes());
        area[at + 12..at + 16].copy_from_slice(&hash.to_le_bytes());
        area[at + ENTRY_HEADER..at + ENTRY_HEADER + a.name.len()].copy_from_slice(&a.name);
        at += a.entry_len();
    }
    hashes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_namespaces() {
        let a = Attr::new("security.capability", b"x").unwrap().unwrap();
        assert_eq!((a.index, a.name.as_slice()), (6, &b"capability"[..]));
        assert_eq!(Attr::new("com.apple.quarantine", b""), Ok(None));
    }

    #[test]
    fn acl_is_converted_to_ext4_format() {
        let mut vfs = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [(1u16, 7u16, u32::MAX), (2, 5, 1000), (0x20, 4, u32::MAX)] {
            vfs.extend_from_slice(&tag.to_le_bytes());
            vfs.extend_from_slice(&perm.to_le_bytes());
            vfs.extend_from_slice(&id.to_le_bytes());
        }
        let a = Attr::new("system.posix_acl_access", &vfs).unwrap().unwrap();
        assert_eq!(a.index, 2);
        assert_eq!(a.value.len(), 4 + 4 + 8 + 4);
        assert_eq!(&a.value[0..4], &1u32.to_le_bytes());
    }

    #[test]
    fn spills_into_block_and_refuses_too_much() {
        let small = Attr::new("user.a", b"1").unwrap().unwrap();
        let big = Attr::new("user.big", &[7u8; 200]).unwrap().unwrap();
        let p = place(&[big.clone(), small]).unwrap();
        assert_eq!(p.inline.len(), INLINE_XATTR_SPACE);
        assert!(p.block.is_some());
        let huge: Vec<Attr> = (0..30)
            .map(|i| {
                Attr::new(&format!("user.n{i}"), &[1u8; 200])
                    .unwrap()
                    .unwrap()
            })
            .collect();
        assert_eq!(place(&huge).unwrap_err(), XattrError::TooLarge);
    }
}
