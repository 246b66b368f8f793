//! Copying a directory tree with its owners, modes, times and symlinks, to
//! fill a new volume from the image (see `mounts::Step::User`). By hand: a
//! few system calls, where a crate would bring a tree of dependencies into
//! the guest's init.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat};

/// Copies the contents of `from` into the existing directory `to`, and
/// `from`'s owner and mode onto `to`. Device nodes, FIFOs and sockets are
/// skipped: a volume holds data.
pub fn copy(from: &Path, to: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let source = entry.path();
        let dest = to.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&source)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            std::fs::create_dir(&dest)?;
            copy(&source, &dest)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &dest)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &dest)?;
        } else {
            continue;
        }
        keep_attributes(&dest, &meta)?;
    }
    keep_attributes(to, &std::fs::metadata(from)?)
}

/// Gives `path` the owner, mode and times of `meta` (a symlink only its
/// owner and times).
fn keep_attributes(path: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(Uid::from_raw(meta.uid())),
        Some(Gid::from_raw(meta.gid())),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    if !meta.file_type().is_symlink() {
        // After chown, which clears set-id bits.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    let accessed = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let modified = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &accessed,
        &modified,
        UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_files_dirs_links_and_modes() {
        let base = std::env::temp_dir().join(format!("copy-tree-{}", std::process::id()));
        let (from, to) = (base.join("from"), base.join("to"));
        std::fs::create_dir_all(from.join("sub")).unwrap();
        std::fs::create_dir_all(&to).unwrap();
        std::fs::write(from.join("sub/file"), b"data").unwrap();
        std::fs::set_permissions(from.join("sub/file"), PermissionsExt::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("sub/file", from.join("link")).unwrap();
        std::fs::set_permissions(&from, PermissionsExt::from_mode(0o750)).unwrap();

        copy(&from, &to).unwrap();

        assert_eq!(std::fs::read(to.join("sub/file")).unwrap(), b"data");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&to.join("sub/file")), 0o640);
        assert_eq!(mode(&to), 0o750);
        assert_eq!(
            std::fs::read_link(to.join("link")).unwrap(),
            Path::new("sub/file")
        );
        let mtime = |p: &Path| std::fs::metadata(p).unwrap().mtime();
        assert_eq!(mtime(&to.join("sub/file")), mtime(&from.join("sub/file")));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
