//! Image layers as `container build` writes them: tar streams in the OCI
//! layer format, the same for the files a `COPY` adds (written on the host)
//! and the changes a `RUN` made (read from an overlayfs upper directory in
//! the guest). Here, in the crate both sides share, so both kinds of layer
//! follow one set of rules by construction:
//!
//! - numeric owners only (no user or group names, which differ between
//!   images and would make equal content differ),
//! - modification times clamped to `SOURCE_DATE_EPOCH` when the build sets
//!   it, so the same inputs give the same layer digest,
//! - deletions as OCI whiteouts: `.wh.NAME` beside the deleted entry, and
//!   `.wh..wh..opq` in a directory that replaced the one below it.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The name OCI gives a deleted entry's marker: `.wh.` then the name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The marker of a directory whose lower contents are all hidden.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Overlayfs marks an opaque upper directory with this xattr set to `y`.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Overlayfs's own bookkeeping, never part of an image.
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";

/// Ownership, permissions and time of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits, with setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the Unix epoch.
    pub mtime: u64,
}

impl Meta {
    pub fn of(metadata: &std::fs::Metadata) -> Meta {
        Meta {
            mode: metadata.mode() & 0o7777,
            uid: metadata.uid(),
            gid: metadata.gid(),
            mtime: metadata.mtime().max(0) as u64,
        }
    }
}

/// Writes a layer entry by entry; parents must come before their children.
pub struct Writer<W: Write> {
    builder: tar::Builder<W>,
    /// `SOURCE_DATE_EPOCH`: no entry is newer.
    clamp: Option<u64>,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, clamp: Option<u64>) -> Writer<W> {
        let mut builder = tar::Builder::new(out);
        builder.follow_symlinks(false);
        Writer { builder, clamp }
    }

    pub fn dir(&mut self, path: &str, meta: Meta, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
        let name = format!("{}/", path.trim_end_matches('/'));
        self.append(
            &name,
            tar::EntryType::Directory,
            meta,
            0,
            xattrs,
            io::empty(),
        )
    }

    pub fn file(
        &mut self,
        path: &str,
        meta: Meta,
        size: u64,
        xattrs: &[(String, Vec<u8>)],
        data: impl Read,
    ) -> io::Result<()> {
        self.append(path, tar::EntryType::Regular, meta, size, xattrs, data)
    }

    pub fn symlink(&mut self, path: &str, meta: Meta, target: &Path) -> io::Result<()> {
        let mut header = self.header(tar::EntryType::Symlink, meta, 0);
        self.builder.append_link(&mut header, path, target)
    }

    /// A second name for a file written earlier in this layer.
    pub fn hard_link(&mut self, path: &str, meta: Meta, target: &str) -> io::Result<()> {
        let mut header = self.header(tar::EntryType::Link, meta, 0);
        self.builder.append_link(&mut header, path, target)
    }

    /// A device node or a FIFO.
    pub fn special(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        meta: Meta,
        rdev: (u32, u32),
    ) -> io::Result<()> {
        let mut header = self.header(kind, meta, 0);
        header.set_device_major(rdev.0)?;
        header.set_device_minor(rdev.1)?;
        self.builder.append_data(&mut header, path, io::empty())
    }

    /// Marks `path` deleted: `.wh.NAME` in its parent directory.
    pub fn whiteout(&mut self, path: &str, meta: Meta) -> io::Result<()> {
        let (parent, name) = split(path);
        let marker = format!("{parent}{WHITEOUT_PREFIX}{name}");
        self.append(&marker, tar::EntryType::Regular, meta, 0, &[], io::empty())
    }

    /// Marks the directory `dir` opaque: nothing below it in lower layers shows.
    pub fn opaque(&mut self, dir: &str, meta: Meta) -> io::Result<()> {
        let marker = format!("{}/{OPAQUE_MARKER}", dir.trim_end_matches('/'));
        self.append(&marker, tar::EntryType::Regular, meta, 0, &[], io::empty())
    }

    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }

    fn header(&self, kind: tar::EntryType, meta: Meta, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(meta.mode);
        header.set_uid(meta.uid.into());
        header.set_gid(meta.gid.into());
        header.set_mtime(self.clamp.map_or(meta.mtime, |c| meta.mtime.min(c)));
        header.set_size(size);
        header
    }

    fn append(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        meta: Meta,
        size: u64,
        xattrs: &[(String, Vec<u8>)],
        data: impl Read,
    ) -> io::Result<()> {
        if !xattrs.is_empty() {
            let records: Vec<(String, &[u8])> = xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            self.builder
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))?;
        }
        let mut header = self.header(kind, meta, size);
        self.builder.append_data(&mut header, path, data)
    }
}

fn split(path: &str) -> (&str, &str) {
    let path = path.trim_end_matches('/');
    match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Writes the changes an overlayfs upper directory holds as a layer: every
/// entry depth first in name order, a whiteout (a 0:0 character device) as
/// `.wh.NAME`, an opaque directory with its marker first. Overlayfs's own
/// xattrs are left out, and so are the paths in `exclude` (relative, as
/// `etc/hosts`); other xattrs (file capabilities) are kept.
pub fn pack_upper(
    upper: &Path,
    clamp: Option<u64>,
    exclude: &[String],
    out: impl Write,
) -> io::Result<()> {
    let mut packer = UpperPacker {
        writer: Writer::new(out, clamp),
        links: HashMap::new(),
        exclude,
    };
    packer.dir(upper, "")?;
    packer.writer.finish()?.flush()
}

struct UpperPacker<'a, W: Write> {
    writer: Writer<W>,
    exclude: &'a [String],
    /// The first name written of each file with several, by (device, inode).
    links: HashMap<(u64, u64), String>,
}

impl<W: Write> UpperPacker<'_, W> {
    fn dir(&mut self, full: &Path, prefix: &str) -> io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(full)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let name = name.to_str().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{:?} is not UTF-8", entry.path()),
                )
            })?;
            let path = format!("{prefix}{name}");
            if !self.exclude.contains(&path) {
                self.entry(&entry.path(), &path)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, host: &Path, path: &str) -> io::Result<()> {
        let meta = std::fs::symlink_metadata(host)?;
        let kind = meta.file_type();
        let m = Meta::of(&meta);
        if kind.is_char_device() && meta.rdev() == 0 {
            return self.writer.whiteout(path, m);
        }
        if kind.is_dir() {
            self.writer.dir(path, m, &xattrs(host)?)?;
            if get_xattr(host, OVERLAY_OPAQUE_XATTR)?.as_deref() == Some(b"y") {
                self.writer.opaque(path, m)?;
            }
            return self.dir(host, &format!("{path}/"));
        }
        if kind.is_symlink() {
            return self.writer.symlink(path, m, &std::fs::read_link(host)?);
        }
        if kind.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.links.get(&key) {
                    return self.writer.hard_link(path, m, first);
                }
                self.links.insert(key, path.to_string());
            }
            let file = std::fs::File::open(host)?;
            return self.writer.file(path, m, meta.len(), &xattrs(host)?, file);
        }
        let entry_type = if kind.is_char_device() {
            tar::EntryType::Char
        } else if kind.is_block_device() {
            tar::EntryType::Block
        } else if kind.is_fifo() {
            tar::EntryType::Fifo
        } else {
            // Sockets belong to a process that is gone; tar has no type for them.
            return Ok(());
        };
        let rdev = meta.rdev();
        self.writer
            .special(path, entry_type, m, (libc::major(rdev), libc::minor(rdev)))
    }
}

/// The xattrs of a path worth keeping in a layer.
/// Unpacks a layer as an overlayfs lower directory at `dir`, the inverse
/// of [`pack_upper`]: `.wh.NAME` becomes a whiteout (a 0:0 character
/// device), `.wh..wh..opq` marks its directory opaque, and every other
/// entry is unpacked as tar unpacks it, with its owner, mode, time and
/// xattrs. A build's VM stacks these under the next step's overlay, so a
/// layer made on the host (a `COPY`) joins the steps that ran in the VM.
pub fn unpack_lower(input: impl Read, dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    // Directories last, deepest first, as tar's own unpack does: a
    // read-only directory must not stop its contents, nor they change its time.
    let mut directories = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let name = path.file_name().map(OsStr::as_bytes).unwrap_or_default();
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let parent = dir.join(inside(path.parent().unwrap_or(Path::new("")))?);
            std::fs::create_dir_all(&parent)?;
            if name == OPAQUE_MARKER.as_bytes() {
                set_xattr(&parent, OVERLAY_OPAQUE_XATTR, b"y")?;
            } else {
                let path = parent.join(OsStr::from_bytes(hidden));
                whiteout(&path)?;
                set_mtime(&path, entry.header().mtime()?)?;
            }
        } else if entry.header().entry_type().is_dir() {
            directories.push(entry);
        } else {
            entry.unpack_in(dir)?;
        }
    }
    directories.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
    for mut directory in directories {
        directory.unpack_in(dir)?;
        // Tar sets a directory's mode, not its time.
        let path = dir.join(inside(&directory.path()?)?);
        set_mtime(&path, directory.header().mtime()?)?;
    }
    Ok(())
}

/// Sets the modification (and access) time of `path` itself, not of what
/// a symlink points to.
fn set_mtime(path: &Path, seconds: u64) -> io::Result<()> {
    let c = cstring(path.as_os_str())?;
    let time = libc::timespec {
        tv_sec: seconds as libc::time_t,
        tv_nsec: 0,
    };
    // SAFETY: the path is NUL-terminated; the two times are valid.
    let done = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [time, time].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `path` if it stays below the directory it is relative to.
fn inside(path: &Path) -> io::Result<&Path> {
    use std::path::Component;
    if path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        Ok(path)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("layer entry {} leaves its directory", path.display()),
        ))
    }
}

/// An overlayfs whiteout: a character device numbered 0:0.
fn whiteout(path: &Path) -> io::Result<()> {
    let c = cstring(path.as_os_str())?;
    // SAFETY: the path is NUL-terminated.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cstring(path.as_os_str())?;
    let n = cstring(OsStr::new(name))?;
    // SAFETY: both strings are NUL-terminated; the value is valid for its length.
    let done = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let c = cstring(path.as_os_str())?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: the buffer is valid for `names.len()` bytes.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(err),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            continue;
        }
        if let Some(value) = get_xattr(path, &name)? {
            out.push((name, value));
        }
    }
    out.sort();
    Ok(out)
}

fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let c = cstring(path.as_os_str())?;
    let n = cstring(OsStr::new(name))?;
    let mut value = vec![0u8; 256];
    loop {
        // SAFETY: both strings are NUL-terminated; the buffer is valid for its length.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len >= 0 {
            value.truncate(len as usize);
            return Ok(Some(value));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => value.resize(value.len() * 4, 0),
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            _ => return Err(err),
        }
    }
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, u64)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                    e.header().mtime().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn whiteouts_name_the_deleted_entry_in_its_parent() {
        let mut w = Writer::new(Vec::new(), None);
        let meta = Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 5,
        };
        w.whiteout("etc/motd", meta).unwrap();
        w.whiteout("top", meta).unwrap();
        w.opaque("var/cache/", meta).unwrap();
        let names: Vec<String> = entries(&w.finish().unwrap())
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, ["etc/.wh.motd", ".wh.top", "var/cache/.wh..wh..opq"]);
    }

    #[test]
    fn times_are_clamped_to_the_source_date_epoch() {
        let mut w = Writer::new(Vec::new(), Some(100));
        let at = |mtime| Meta {
            mode: 0o644,
            uid: 1,
            gid: 2,
            mtime,
        };
        w.file("old", at(50), 1, &[], &b"a"[..]).unwrap();
        w.file("new", at(5000), 1, &[], &b"b"[..]).unwrap();
        let got: Vec<u64> = entries(&w.finish().unwrap())
            .into_iter()
            .map(|e| e.2)
            .collect();
        assert_eq!(got, [50, 100]);
    }

    /// A real overlay upper directory: needs root (mount, whiteout nodes,
    /// trusted xattrs), as the guest has.
    #[test]
    fn an_overlay_upper_directory_becomes_a_layer() {
        if !nix_is_root() {
            eprintln!("skipped: needs root to mount an overlay");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper, work, merged) = (
            dir.path().join("lower"),
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("merged"),
        );
        for d in [&lower, &upper, &work, &merged] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::write(lower.join("etc/motd"), "hi").unwrap();
        std::fs::create_dir_all(lower.join("cache/old")).unwrap();
        std::fs::write(lower.join("keep"), "k").unwrap();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let status = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&merged)
            .status()
            .unwrap();
        assert!(status.success());
        let changes = (|| {
            std::fs::remove_file(merged.join("etc/motd"))?;
            std::fs::remove_dir_all(merged.join("cache"))?;
            std::fs::create_dir(merged.join("cache"))?;
            std::fs::write(merged.join("cache/new"), "n")?;
            std::fs::write(merged.join("added"), "a")?;
            std::fs::hard_link(merged.join("added"), merged.join("linked"))?;
            std::fs::write(merged.join("keep"), "written by the runtime")
        })();
        let _ = std::process::Command::new("umount").arg(&merged).status();
        changes.unwrap();
        // Dated long ago, so that an entry unpacked below without its time
        // differs from it.
        let status = std::process::Command::new("find")
            .arg(&upper)
            .args(["-exec", "touch", "-h", "-d", "@1000", "{}", "+"])
            .status()
            .unwrap();
        assert!(status.success());

        let mut tar = Vec::new();
        pack_upper(&upper, None, &["keep".to_string()], &mut tar).unwrap();
        let got: Vec<(String, tar::EntryType)> =
            entries(&tar).into_iter().map(|e| (e.0, e.1)).collect();
        use tar::EntryType::*;
        let want: Vec<(String, tar::EntryType)> = [
            ("added", Regular),
            ("cache/", Directory),
            ("cache/.wh..wh..opq", Regular),
            ("cache/new", Regular),
            ("etc/", Directory),
            ("etc/.wh.motd", Regular),
            ("linked", Link),
        ]
        .into_iter()
        .map(|(n, k)| (n.to_string(), k))
        .collect();
        assert_eq!(got, want);

        // Unpacked as a lower directory, the layer packs to the same bytes,
        // and stacked on the lower it shows what the overlay showed.
        let unpacked = dir.path().join("unpacked");
        unpack_lower(&tar[..], &unpacked).unwrap();
        let mut again = Vec::new();
        pack_upper(&unpacked, None, &[], &mut again).unwrap();
        assert_eq!(again, tar);
        let options = format!("lowerdir={}:{}", unpacked.display(), lower.display());
        let status = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &options])
            .arg(&merged)
            .status()
            .unwrap();
        assert!(status.success());
        let seen = |path: &str| merged.join(path).exists();
        let shown = (
            seen("etc/motd"),
            seen("cache/old"),
            seen("cache/new"),
            seen("linked"),
        );
        let _ = std::process::Command::new("umount").arg(&merged).status();
        assert_eq!(shown, (false, false, true, true));
    }

    fn nix_is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }
}
