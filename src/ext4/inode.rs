//! The 256-byte on-disk inode.

use super::layout::{EXTRA_ISIZE, INODE_SIZE};

pub const S_IFIFO: u16 = 0o010000;
pub const S_IFCHR: u16 = 0o020000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFBLK: u16 = 0o060000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFLNK: u16 = 0o120000;

pub const FL_INDEX: u32 = 0x1000;
pub const FL_EXTENTS: u32 = 0x80000;

/// Start of the in-inode xattr area, right after the extra fields.
pub const INLINE_XATTR_AT: usize = 128 + EXTRA_ISIZE as usize;
/// Bytes available for in-inode xattrs (magic included).
pub const INLINE_XATTR_SPACE: usize = INODE_SIZE as usize - INLINE_XATTR_AT;

/// Seconds since the epoch (any i64 that ext4's 34-bit encoding holds) and
/// nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

impl Time {
    /// The classic signed 32-bit field and the `_extra` field: two epoch
    /// bits that extend the range to the year 2446, then nanoseconds.
    fn encode(self) -> (u32, u32) {
        let low = self.secs as i32;
        let epoch = ((self.secs - low as i64) >> 32) as u32 & 3;
        (low as u32, (self.nanos << 2) | epoch)
    }
}

#[derive(Debug)]
pub struct Inode {
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: Time,
    pub ctime: Time,
    pub mtime: Time,
    pub links: u16,
    /// In 512-byte units, as `huge_file` without `EXT4_HUGE_FILE_FL` wants.
    pub sectors: u64,
    pub flags: u32,
    pub block: [u8; 60],
    pub xattr_block: u64,
    /// The in-inode xattr area (magic first), or empty.
    pub inline_xattrs: Vec<u8>,
}

impl Default for Inode {
    fn default() -> Self {
        Inode {
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            atime: Time::default(),
            ctime: Time::default(),
            mtime: Time::default(),
            links: 0,
            sectors: 0,
            flags: 0,
            block: [0; 60],
            xattr_block: 0,
            inline_xattrs: Vec::new(),
        }
    }
}

impl Inode {
    pub fn encode(&self) -> [u8; INODE_SIZE as usize] {
        let mut b = [0u8; INODE_SIZE as usize];
        let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
        let (atime, atime_x) = self.atime.encode();
        let (ctime, ctime_x) = self.ctime.encode();
        let (mtime, mtime_x) = self.mtime.encode();
        put(0, &self.mode.to_le_bytes());
        put(2, &(self.uid as u16).to_le_bytes());
        put(4, &(self.size as u32).to_le_bytes());
        put(8, &atime.to_le_bytes());
        put(12, &ctime.to_le_bytes());
        put(16, &mtime.to_le_bytes());
        put(24, &(self.gid as u16).to_le_bytes());
        put(26, &self.links.to_le_bytes());
        put(28, &(self.sectors as u32).to_le_bytes());
        put(32, &self.flags.to_le_bytes());
        put(40, &self.block);
        put(104, &(self.xattr_block as u32).to_le_bytes());
        put(108, &((self.size >> 32) as u32).to_le_bytes());
        put(116, &((self.sectors >> 32) as u16).to_le_bytes());
        put(118, &((self.xattr_block >> 32) as u16).to_le_bytes());
        put(120, &((self.uid >> 16) as u16).to_le_bytes());
        put(122, &((self.gid >> 16) as u16).to_le_bytes());
        put(128, &EXTRA_ISIZE.to_le_bytes());
        put(132, &ctime_x.to_le_bytes());
        put(136, &mtime_x.to_le_bytes());
        put(140, &atime_x.to_le_bytes());
        // Creation time: tar does not carry one; mtime is the closest truth.
        put(144, &mtime.to_le_bytes());
        put(148, &mtime_x.to_le_bytes());
        put(INLINE_XATTR_AT, &self.inline_xattrs);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_past_2038_use_epoch_bits() {
        assert_eq!(Time { secs: 1, nanos: 5 }.encode(), (1, 20));
        assert_eq!(Time { secs: -1, nanos: 0 }.encode(), (u32::MAX, 0));
        let t = Time {
            secs: (1 << 32) + 7,
            nanos: 0,
        };
        assert_eq!(t.encode(), (7, 1));
    }
}
