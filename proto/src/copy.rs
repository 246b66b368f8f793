//! The tar streams `container cp` moves between host and guest: one side
//! packs, the other unpacks, with Docker's rules. Here, in the crate both
//! sides share, so the two ends agree on the layout by construction.
//!
//! A packed path becomes an archive whose top entry is named after the
//! path's last component (`/etc/hosts` -> `hosts`, `/var/log` -> `log/...`).
//! Unpacking at a destination that is an existing directory puts that entry
//! inside it; otherwise the entry becomes the destination itself. As in
//! Docker, a destination ending in `/` asserts a directory: if none exists,
//! only a directory may become it; a file is refused rather than saved
//! under the directory's name.

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// Writes a tar of `path` (a file, directory tree or symlink) to `out`.
pub fn pack(path: &Path, out: impl Write) -> std::io::Result<()> {
    let name = path.file_name().map(Path::new).unwrap_or(Path::new("."));
    let mut builder = tar::Builder::new(out);
    // Symlinks are archived as links, as Docker does; never followed out.
    builder.follow_symlinks(false);
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        builder.append_dir_all(name, path)?;
    } else {
        builder.append_path_with_name(path, name)?;
    }
    builder.into_inner()?.flush()
}

/// Writes a tar of the whole filesystem at `root` (as `docker export` does):
/// entries relative to it, not descending into other filesystems mounted
/// below it (/proc, /sys, /dev), whose mount points appear empty.
pub fn pack_filesystem(root: &Path, out: impl Write) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::symlink_metadata(root)?.dev();
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = path.strip_prefix(root).expect("walked below root");
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                builder.append_dir(name, &path)?;
                if meta.dev() == device {
                    pending.push(path);
                }
            } else {
                builder.append_path_with_name(&path, name)?;
            }
        }
    }
    builder.into_inner()?.flush()
}

/// Unpacks an archive made by [`pack`] (or any tar, for `cp -`) at `dest`.
pub fn unpack(input: impl Read, dest: &Path) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    if dest.is_dir() {
        // tar's unpack refuses entries that would land outside `dest`.
        return archive.unpack(dest);
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is not a directory", parent.display()),
        ));
    }
    let new_name = dest
        .file_name()
        .ok_or_else(|| std::io::Error::other("destination has no name"))?;
    let must_be_directory = dest.as_os_str().as_bytes().ends_with(b"/");
    for (i, entry) in archive.entries()?.enumerate() {
        let mut entry = entry?;
        if i == 0 && must_be_directory && !entry.header().entry_type().is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such directory (a destination ending in / must be an existing directory)",
            ));
        }
        let path = entry.path()?.into_owned();
        // The top entry is renamed to the destination's name.
        let mut components = path
            .components()
            .filter(|c| !matches!(c, Component::CurDir));
        let Some(Component::Normal(_)) = components.next() else {
            return Err(std::io::Error::other(format!(
                "unexpected entry {}",
                path.display()
            )));
        };
        let renamed: std::path::PathBuf = std::iter::once(Component::Normal(new_name))
            .chain(components)
            .collect();
        if !entry.unpack_in_as(parent, &renamed)? {
            return Err(std::io::Error::other(format!(
                "entry {} would land outside {}",
                path.display(),
                parent.display()
            )));
        }
    }
    Ok(())
}

trait UnpackAs {
    fn unpack_in_as(&mut self, dir: &Path, name: &Path) -> std::io::Result<bool>;
}

impl<R: Read> UnpackAs for tar::Entry<'_, R> {
    /// `unpack_in` under another name: refuses names that escape `dir`.
    fn unpack_in_as(&mut self, dir: &Path, name: &Path) -> std::io::Result<bool> {
        if name.components().any(|c| {
            matches!(
                c,
                Component::ParentDir | Component::RootDir | Component::Prefix(_)
            )
        }) {
            return Ok(false);
        }
        let target = dir.join(name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        self.unpack(&target).map(|_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_trees_round_trip_with_docker_rules() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("tree/sub")).unwrap();
        std::fs::write(src.path().join("tree/sub/f"), "deep").unwrap();
        std::fs::write(src.path().join("file"), "flat").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("tree/link")).unwrap();

        let dst = tempfile::tempdir().unwrap();
        let mut tar = Vec::new();
        pack(&src.path().join("tree"), &mut tar).unwrap();
        // Into an existing directory: the tree keeps its name.
        unpack(tar.as_slice(), dst.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.path().join("tree/sub/f")).unwrap(),
            "deep"
        );
        assert_eq!(
            std::fs::read_link(dst.path().join("tree/link")).unwrap(),
            Path::new("/etc/passwd")
        );
        // To a new name: the tree becomes it.
        unpack(tar.as_slice(), &dst.path().join("copy")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.path().join("copy/sub/f")).unwrap(),
            "deep"
        );

        let mut tar = Vec::new();
        pack(&src.path().join("file"), &mut tar).unwrap();
        unpack(tar.as_slice(), &dst.path().join("renamed")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.path().join("renamed")).unwrap(),
            "flat"
        );
        let err = unpack(tar.as_slice(), &dst.path().join("missing/x")).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }

    #[test]
    fn a_trailing_slash_asserts_a_directory() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("tree")).unwrap();
        std::fs::write(src.path().join("tree/f"), "in tree").unwrap();
        std::fs::write(src.path().join("file"), "flat").unwrap();
        let dst = tempfile::tempdir().unwrap();
        let slash = |name: &str| dst.path().join(format!("{name}/"));

        // A file to a missing directory: refused, and nothing is written.
        let mut tar = Vec::new();
        pack(&src.path().join("file"), &mut tar).unwrap();
        let err = unpack(tar.as_slice(), &slash("missing")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert!(err.to_string().starts_with("no such directory"), "{err}");
        assert_eq!(std::fs::read_dir(dst.path()).unwrap().count(), 0);
        // Into one that exists: the file keeps its name.
        std::fs::create_dir(dst.path().join("present")).unwrap();
        unpack(tar.as_slice(), &slash("present")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.path().join("present/file")).unwrap(),
            "flat"
        );

        // A directory becomes the missing one, as Docker does.
        let mut tar = Vec::new();
        pack(&src.path().join("tree"), &mut tar).unwrap();
        unpack(tar.as_slice(), &slash("new")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.path().join("new/f")).unwrap(),
            "in tree"
        );
    }

    #[test]
    fn a_whole_filesystem_packs_relative_to_its_root() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("etc")).unwrap();
        std::fs::write(src.path().join("etc/hostname"), "box\n").unwrap();
        let mut tar = Vec::new();
        pack_filesystem(src.path(), &mut tar).unwrap();
        let mut names: Vec<String> = tar::Archive::new(tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_string()
            })
            .collect();
        names.sort();
        assert_eq!(names, ["etc", "etc/hostname"]);
    }
}
