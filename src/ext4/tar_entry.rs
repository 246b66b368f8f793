//! What a tar entry asks for: its kind and metadata as the filesystem will
//! hold them (`tar_reader.rs` has already applied PAX records and GNU long
//! names), and the checks that are about ext4 rather than tar.

use super::Error;
use super::tar_reader::Header;
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

/// `Ok(None)` for entries that are not filesystem objects (GNU volume
/// labels and the like).
pub fn parse(header: &Header, path: &str) -> Result<Option<Parsed>, Error> {
    let invalid = |problem| Error::Invalid {
        path: path.into(),
        problem,
    };
    let device = || -> Result<(u32, u32), Error> {
        let (major, minor) = header.device;
        match (u32::try_from(major), u32::try_from(minor)) {
            (Ok(major), Ok(minor)) => Ok((major, minor)),
            _ => Err(invalid("its device number does not fit 32 bits")),
        }
    };
    let link_target = || match &header.link {
        t if !t.is_empty() => Ok(t.clone()),
        _ => Err(invalid("it is a link without a target")),
    };
    let kind = match header.kind {
        b'0' | b'7' | b'S' => What::File,
        // A GNU dumpdir (`tar --listed-incremental`) is a directory whose
        // data lists its contents; GNU tar restores its owner and mode.
        b'5' | b'D' => What::Dir,
        b'2' => {
            let target = link_target()?;
            if target.len() > SYMLINK_MAX {
                return Err(invalid("its symlink target is longer than 4095 bytes"));
            }
            What::Symlink(target)
        }
        b'1' => What::HardLink(link_target()?),
        b'3' => {
            let (major, minor) = device()?;
            What::Char(major, minor)
        }
        b'4' => {
            let (major, minor) = device()?;
            What::Block(major, minor)
        }
        b'6' => What::Fifo,
        _ => return Ok(None),
    };
    let (Ok(uid), Ok(gid)) = (u32::try_from(header.uid), u32::try_from(header.gid)) else {
        return Err(invalid("its owner does not fit 32 bits"));
    };
    let mut xattrs: Vec<Attr> = Vec::new();
    for (name, value) in &header.xattrs {
        let attr = Attr::new(name, value).map_err(|problem| Error::Xattr {
            path: path.into(),
            problem,
        })?;
        if let Some(attr) = attr {
            xattrs.retain(|a| (a.index, &a.name) != (attr.index, &attr.name));
            xattrs.push(attr);
        }
    }
    xattr::place(&xattrs).map_err(|problem| Error::Xattr {
        path: path.into(),
        problem,
    })?;
    let meta = Meta {
        perm: (header.mode & 0o7777) as u16,
        uid,
        gid,
        atime: header.atime.unwrap_or(header.mtime),
        mtime: header.mtime,
        ctime: header.ctime.unwrap_or(header.mtime),
        xattrs,
    };
    Ok(Some(Parsed { meta, kind }))
}
