//! `RUN --mount=type=cache` directories, kept between builds as BuildKit
//! keeps them: one sparse ext4 disk per cache id under
//! `build-cache/mounts/`, attached to the builder VM. A disk rather than a
//! shared directory because package caches are many small files, and a
//! virtio-fs share costs a host round trip per path component (see
//! `vm::Share`); the guest's own ext4 does not.
//!
//! A build holds each disk it attached with an exclusive flock. A build
//! that finds one held (another build with the same id running) gets an
//! empty cache of its own for that id instead, on its scratch disk, as
//! BuildKit's `sharing=private` would.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;
use sha2::{Digest as _, Sha256};

use crate::io_error::{IoError, io};

/// How big a cache may grow; sparse, so only what it holds takes space.
const DISK_BYTES: u64 = 32 << 30;

/// A cache's disk, held for this build until dropped.
pub struct CacheDisk {
    pub id: String,
    pub path: PathBuf,
    _lock: Flock<File>,
}

fn dir(app_root: &Path) -> PathBuf {
    app_root.join("build-cache").join("mounts")
}

/// The disk of cache `id`, made empty on first use; None while another
/// build holds it.
pub fn open(app_root: &Path, id: &str) -> Result<Option<CacheDisk>, IoError> {
    let dir = dir(app_root);
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    // Ids are the user's words (a path, by default): named by their hash.
    let name = hex::encode(Sha256::digest(id.as_bytes()));
    let path = dir.join(format!("{}.ext4", &name[..32]));
    let lock = match hold(&path) {
        Ok(Some(lock)) => lock,
        Ok(None) => return Ok(None),
        Err(e) => return Err(io("lock a build cache mount")(e.source)),
    };
    if !path.exists() {
        let partial = path.with_extension("partial");
        let format = || -> Result<(), crate::ext4::Error> {
            let fs = crate::ext4::Formatter::create(
                &partial,
                crate::ext4::FormatOptions {
                    size_bytes: DISK_BYTES,
                },
            )?;
            fs.finish()
        };
        format()
            .map_err(std::io::Error::other)
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(io(format!("make the cache mount disk {}", path.display())))?;
    }
    Ok(Some(CacheDisk {
        id: id.to_string(),
        path,
        _lock: lock,
    }))
}

/// Holds a cache disk (or the one being made in its place) for this
/// process; None while a build holds it.
fn hold(disk: &Path) -> Result<Option<Flock<File>>, crate::atomic::Error> {
    crate::atomic::try_lock(&disk.with_extension("lock"))
}

/// The cache disks, and any being made.
fn disks(app_root: &Path) -> impl Iterator<Item = PathBuf> {
    let entries = std::fs::read_dir(dir(app_root))
        .into_iter()
        .flatten()
        .flatten();
    entries.map(|e| e.path()).filter(|path| {
        path.extension()
            .is_some_and(|e| e == "ext4" || e == "partial")
    })
}

/// What `system df` says of the cache disks.
#[derive(Debug, Default, serde::Serialize)]
pub struct Usage {
    pub mounts: usize,
    /// The ones a running build holds.
    pub active: usize,
    /// Their blocks on the host (they are sparse).
    pub bytes: u64,
    /// The ones no build holds: what `builder prune` frees.
    pub reclaimable_bytes: u64,
}

/// Counts the cache disks. A disk is free if its lock can be taken; it is
/// held for that moment only, and a build that starts within it uses a
/// private cache, as it would beside another build.
pub fn usage(app_root: &Path) -> Usage {
    let mut usage = Usage::default();
    for path in disks(app_root) {
        let bytes = crate::bytes::on_disk(&path);
        usage.mounts += 1;
        usage.bytes += bytes;
        match hold(&path) {
            Ok(Some(_free)) => usage.reclaimable_bytes += bytes,
            _ => usage.active += 1,
        }
    }
    usage
}

/// Removes every cache disk no build holds (`builder prune`); returns how
/// many went.
pub fn clear(app_root: &Path) -> usize {
    let mut removed = 0;
    for path in disks(app_root) {
        if let Ok(Some(_held)) = hold(&path)
            && std::fs::remove_file(&path).is_ok()
        {
            let _ = std::fs::remove_file(path.with_extension("lock"));
            removed += 1;
        }
    }
    removed
}
