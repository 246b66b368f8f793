//! What a tar entry asks for: its kind and metadata, with PAX extensions
//! (nanosecond times, `SCHILY.xattr.*`) applied. The tar crate already
//! applies PAX paths, link paths, sizes, uids and gids.

use std::io::Read;

use tar::EntryType;

use super::Error;
use super::inode::Time;
use super::tree::Meta;
use super::xattr::{self, Attr};

/// Longest symlink target: one block minus the terminating NUL.
const SYMLINK_MAX: usize = super::BS - 1;

pub enum What {
    File,
    Dir,
    Symlink(Vec<u8>),
    HardLink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

pub struct Parsed {
    pub meta: Meta,
    pub kind: What,
}

/// `Ok(None)` for entries that are not filesystem objects (PAX global
/// headers, GNU volume labels and the like).
pub fn parse<R: Read>(entry: &mut tar::Entry<R>, path: &str) -> Result<Option<Parsed>, Error> {
    let io = |source| Error::Entry {
        path: path.into(),
        source,
    };
    let invalid = |problem| Error::Invalid {
        path: path.into(),
        problem,
    };
    let header = entry.header();
    let device = || -> Result<(u32, u32), Error> {
        let major = header.device_major().map_err(io)?.unwrap_or(0);
        let minor = header.device_minor().map_err(io)?.unwrap_or(0);
        Ok((major, minor))
    };
    let link_target = || match entry.link_name_bytes() {
        Some(t) if !t.is_empty() => Ok(t.into_owned()),
        _ => Err(invalid("it is a link without a target")),
    };
    let kind = match header.entry_type() {
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => What::File,
        EntryType::Directory => What::Dir,
        EntryType::Symlink => {
            let target = link_target()?;
            if target.len() > SYMLINK_MAX {
                return Err(invalid("its symlink target is longer than 4095 bytes"));
            }
            What::Symlink(target)
        }
        EntryType::Link => What::HardLink(link_target()?),
        EntryType::Char => {
            let (major, minor) = device()?;
            What::Char(major, minor)
        }
        EntryType::Block => {
            let (major, minor) = device()?;
            What::Block(major, minor)
        }
        EntryType::Fifo => What::Fifo,
        _ => return Ok(None),
    };
    let perm = (header.mode().map_err(io)? & 0o7777) as u16;
    let uid = header.uid().map_err(io)? as u32;
    let gid = header.gid().map_err(io)? as u32;
    let mut mtime = Time {
        secs: header.mtime().map_err(io)? as i64,
        nanos: 0,
    };
    let (mut atime, mut ctime) = (None, None);
    let mut xattrs: Vec<Attr> = Vec::new();
    if let Some(extensions) = entry.pax_extensions().map_err(io)? {
        for ext in extensions {
            // The tar crate splits PAX records at newlines instead of by
            // their length (tar-rs issue #428), so a binary value holding a
            // 0x0A byte, like some security.capability xattrs, reads as
            // broken records. The whole entry is refused rather than read
            // from the pieces: a crafted value could otherwise smuggle in
            // a `path` or `linkpath` record that other readers never see.
            let ext = ext.map_err(|_| {
                invalid("it has a PAX record with a newline in its value, which the tar reader cannot parse")
            })?;
            let Ok(key) = ext.key() else { continue };
            let time = || {
                parse_time(ext.value_bytes()).ok_or_else(|| invalid("it has a malformed PAX time"))
            };
            match key {
                "mtime" => mtime = time()?,
                "atime" => atime = Some(time()?),
                "ctime" => ctime = Some(time()?),
                _ => {
                    let Some(name) = key.strip_prefix("SCHILY.xattr.") else {
                        continue;
                    };
                    let attr =
                        Attr::new(name, ext.value_bytes()).map_err(|problem| Error::Xattr {
                            path: path.into(),
                            problem,
                        })?;
                    if let Some(attr) = attr {
                        xattrs.retain(|a| (a.index, &a.name) != (attr.index, &attr.name));
                        xattrs.push(attr);
                    }
                }
            }
        }
    }
    xattr::place(&xattrs).map_err(|problem| Error::Xattr {
        path: path.into(),
        problem,
    })?;
    let meta = Meta {
        perm,
        uid,
        gid,
        atime: atime.unwrap_or(mtime),
        mtime,
        ctime: ctime.unwrap_or(mtime),
        xattrs,
    };
    Ok(Some(Parsed { meta, kind }))
}

/// A PAX time: decimal seconds, optionally negative, with an optional
/// fraction of up to nanosecond precision (more digits are truncated).
fn parse_time(value: &[u8]) -> Option<Time> {
    let s = std::str::from_utf8(value).ok()?;
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    if !whole.bytes().all(|c| c.is_ascii_digit()) || !fraction.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let digits: String = fraction
        .chars()
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect();
    let nanos: u32 = digits.parse().ok()?;
    Some(match (negative, nanos) {
        (false, _) => Time { secs, nanos },
        (true, 0) => Time {
            secs: -secs,
            nanos: 0,
        },
        (true, _) => Time {
            secs: -secs - 1,
            nanos: 1_000_000_000 - nanos,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(
            parse_time(b"1700000000.5"),
            Some(Time {
                secs: 1700000000,
                nanos: 500_000_000
            })
        );
        assert_eq!(parse_time(b"12"), Some(Time { secs: 12, nanos: 0 }));
        assert_eq!(
            parse_time(b"1.1234567899"),
            Some(Time {
                secs: 1,
                nanos: 123_456_789
            })
        );
        assert_eq!(
            parse_time(b"-1.25"),
            Some(Time {
                secs: -2,
                nanos: 750_000_000
            })
        );
        assert_eq!(parse_time(b"x"), None);
        assert_eq!(parse_time(b"1.-2"), None);
    }
}
