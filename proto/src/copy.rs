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

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

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
        let renamed = rename_top(&path, new_name)?;
        unpack_as(&mut entry, parent, &renamed)?;
    }
    Ok(())
}

/// `path` with its first component (the packed path's own name) replaced by
/// `new_name`; refuses a path that could leave the destination.
fn rename_top(path: &Path, new_name: &OsStr) -> std::io::Result<PathBuf> {
    let mut components = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir));
    let Some(Component::Normal(_)) = components.next() else {
        return Err(outside(path));
    };
    let rest: Vec<Component> = components.collect();
    if rest.iter().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(outside(path));
    }
    Ok(std::iter::once(Component::Normal(new_name))
        .chain(rest)
        .collect())
}

fn outside(path: &Path) -> std::io::Error {
    std::io::Error::other(format!(
        "entry {} would land outside the destination",
        path.display()
    ))
}

/// Unpacks `entry` as `dir/name`, where `name` stays inside `dir` (see
/// [`rename_top`]). What `tar`'s own `unpack_in` checks, done here because
/// the name is not the entry's: no directory on the way may be a symlink
/// (an earlier entry of a hostile archive could have planted one pointing
/// anywhere), and a hard link names an entry of the archive, renamed alike,
/// never a host path.
fn unpack_as<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    dir: &Path,
    name: &Path,
) -> std::io::Result<()> {
    let target = dir.join(name);
    make_dirs_inside(dir, name.parent().unwrap_or(Path::new("")))?;
    if entry.header().entry_type().is_hard_link() {
        let link = entry.link_name()?.ok_or_else(|| {
            std::io::Error::other(format!("hard link {} has no target", name.display()))
        })?;
        let new_name = name
            .components()
            .next()
            .expect("a renamed path has a first component");
        let source = rename_top(&link, new_name.as_os_str())?;
        make_dirs_inside(dir, source.parent().unwrap_or(Path::new("")))?;
        match std::fs::remove_file(&target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        return std::fs::hard_link(dir.join(source), &target);
    }
    entry.unpack(&target).map(drop)
}

/// Creates the directories of `rel` below `dir`, refusing to pass through
/// a symlink or anything else that is not a directory.
fn make_dirs_inside(dir: &Path, rel: &Path) -> std::io::Result<()> {
    let mut at = dir.to_path_buf();
    for component in rel.components() {
        at.push(component);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(std::io::Error::other(format!(
                    "{} is a symlink, which a copy does not write through",
                    at.display()
                )));
            }
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} is not a directory",
                    at.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&at)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
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

    /// A tar as a hostile guest could send it: a directory holding a
    /// symlink to `outside`, a file written through that symlink, and a
    /// hard link to a file in `outside`.
    fn hostile(outside: &Path) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        b.append_data(&mut dir, "top/", &[][..]).unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        b.append_link(&mut link, "top/link", outside).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_size(4);
        file.set_mode(0o644);
        b.append_data(&mut file, "top/link/planted", &b"evil"[..])
            .unwrap();
        let mut hard = tar::Header::new_gnu();
        hard.set_entry_type(tar::EntryType::Link);
        hard.set_size(0);
        b.append_link(&mut hard, "top/hard", outside.join("secret"))
            .unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn a_hostile_archive_writes_nothing_outside_the_destination() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host only").unwrap();
        let tar = hostile(outside.path());
        let dst = tempfile::tempdir().unwrap();
        // Into an existing directory, and to a new name.
        for dest in [dst.path().to_path_buf(), dst.path().join("renamed")] {
            let err = unpack(tar.as_slice(), &dest).unwrap_err();
            assert!(
                !outside.path().join("planted").exists(),
                "{dest:?}: wrote through the symlink"
            );
            let names: Vec<_> = std::fs::read_dir(outside.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["secret"], "{dest:?}: {err}");
        }
        assert!(!dst.path().join("top/hard").exists());
        assert!(!dst.path().join("renamed/hard").exists());
    }

    #[test]
    fn hard_links_within_the_archive_follow_its_rename() {
        let mut b = tar::Builder::new(Vec::new());
        let mut file = tar::Header::new_gnu();
        file.set_size(4);
        file.set_mode(0o644);
        b.append_data(&mut file, "top/a", &b"data"[..]).unwrap();
        let mut hard = tar::Header::new_gnu();
        hard.set_entry_type(tar::EntryType::Link);
        hard.set_size(0);
        b.append_link(&mut hard, "top/sub/b", "top/a").unwrap();
        let tar = b.into_inner().unwrap();
        let dst = tempfile::tempdir().unwrap();
        unpack(tar.as_slice(), &dst.path().join("renamed")).unwrap();
        use std::os::unix::fs::MetadataExt;
        let a = std::fs::metadata(dst.path().join("renamed/a")).unwrap();
        let b = std::fs::metadata(dst.path().join("renamed/sub/b")).unwrap();
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
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
