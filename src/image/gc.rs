//! Removing images and collecting what no image needs: blobs not reachable
//! from any record or root (an image a container uses, a build cache
//! layer), snapshots of manifests no record or container names, and the
//! partials of interrupted downloads, whatever their age: a collection is
//! a user asking for disk space back, and the partials worth the most
//! space are those of the pull that failed a minute ago, which an age
//! limit would spare. Losing one costs the next pull of its blob only the
//! time to download it whole. The
//! roots come from their owners (`runtime`, `build`) through the caller:
//! this module reads no other module's files.
//!
//! Collection holds `content/gc.lock` exclusively while pulls and loads hold
//! it shared, so it never sees a blob whose record is still being written;
//! removing records and collecting happen under that one lock, so a pull
//! during an `image rm` either finishes first or starts after.

use std::collections::{BTreeMap, BTreeSet};

use super::records::Record;
use super::{Error, ImageStore, IoContext, info};
use crate::atomic;

/// What other parts of the system keep alive.
#[derive(Debug, Default)]
pub struct Roots {
    /// Manifest digest -> the ID of one container using that image.
    pub in_use: BTreeMap<String, String>,
    /// Further blobs to keep: the build cache's layers.
    pub blobs: BTreeSet<String>,
}

/// What a removal or prune deleted.
#[derive(Debug, Default)]
pub struct Removed {
    /// References whose records were deleted.
    pub images: Vec<String>,
    /// Disk space freed, blobs and snapshots together.
    pub bytes: u64,
}

/// What `system df` shows for images (its JSON, field for field).
#[derive(Debug, Default, serde::Serialize)]
pub struct DiskUsage {
    pub images: usize,
    /// Images at least one container uses.
    pub active: usize,
    pub content_bytes: u64,
    /// Disk blocks in use by snapshots (they are sparse files).
    pub snapshot_bytes: u64,
    /// Partials of interrupted downloads, all reclaimable.
    pub partial_bytes: u64,
    /// What `image prune -a` would free.
    pub reclaimable_bytes: u64,
    /// The blobs `Roots::blobs` names (the build cache's layers), and the
    /// part of them nothing else keeps: what forgetting them frees.
    pub root_blob_bytes: u64,
    pub root_blob_only_bytes: u64,
}

/// Removes the records `names` stand for. As in Docker, a container pins
/// its image, not each name of it: a reference goes even while a container
/// uses the image, as long as another reference to the image stays; only
/// removing its last one needs `force`. Nothing is removed on an error.
pub fn remove(
    images: &ImageStore,
    names: &[String],
    force: bool,
    roots: &Roots,
) -> Result<Removed, Error> {
    let _gc = atomic::lock(&images.gc_lock)?;
    let records = images.records.list()?;
    let in_use = &roots.in_use;
    let mut targets: Vec<Record> = Vec::new();
    for name in names {
        for record in info::matching(images, name, &records)? {
            if !targets.iter().any(|t| t.reference == record.reference) {
                targets.push(record);
            }
        }
    }
    if !force {
        for target in &targets {
            let Some(container) = in_use.get(&target.digest) else {
                continue;
            };
            let kept = records.iter().any(|r| {
                r.digest == target.digest && !targets.iter().any(|t| t.reference == r.reference)
            });
            if !kept {
                return Err(Error::InUse {
                    reference: target.reference.clone(),
                    container: container.clone(),
                });
            }
        }
    }
    let targets: Vec<String> = targets.into_iter().map(|t| t.reference).collect();
    finish(images, &targets, roots)
}

pub fn prune(images: &ImageStore, all: bool, roots: &Roots) -> Result<Removed, Error> {
    let _gc = atomic::lock(&images.gc_lock)?;
    let in_use = &roots.in_use;
    let targets: Vec<String> = if all {
        images
            .records
            .list()?
            .into_iter()
            .filter(|r| !in_use.contains_key(&r.digest))
            .map(|r| r.reference)
            .collect()
    } else {
        Vec::new()
    };
    finish(images, &targets, roots)
}

fn finish(images: &ImageStore, targets: &[String], roots: &Roots) -> Result<Removed, Error> {
    let removed = images.records.remove(targets)?;
    let bytes = collect(images, roots)?;
    Ok(Removed {
        images: removed.into_iter().map(|r| r.reference).collect(),
        bytes,
    })
}

pub fn disk_usage(images: &ImageStore, roots: &Roots) -> Result<DiskUsage, Error> {
    let records = images.records.list()?;
    let in_use = &roots.in_use;
    let digests: BTreeSet<&String> = records.iter().map(|r| &r.digest).collect();
    let mut needed = reachable(images, in_use.keys().map(String::as_str));
    // What images keep: the in-use ones' blobs, read once, and the rest's.
    let mut kept_by_images = reachable(
        images,
        digests
            .iter()
            .filter(|d| !in_use.contains_key(**d))
            .map(|d| d.as_str()),
    );
    kept_by_images.extend(needed.iter().cloned());
    needed.extend(roots.blobs.iter().cloned());
    let mut usage = DiskUsage {
        images: digests.len(),
        active: digests.iter().filter(|d| in_use.contains_key(**d)).count(),
        ..DiskUsage::default()
    };
    for digest in images.content.digests()? {
        let path = images.content.path(&digest);
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        usage.content_bytes += size;
        if !needed.contains(digest.as_str()) {
            usage.reclaimable_bytes += size;
        }
        if roots.blobs.contains(digest.as_str()) {
            usage.root_blob_bytes += size;
            if !kept_by_images.contains(digest.as_str()) {
                usage.root_blob_only_bytes += size;
            }
        }
    }
    usage.partial_bytes = images.content.partial_bytes()?;
    usage.reclaimable_bytes += usage.partial_bytes;
    for (digest, path) in snapshots(images)? {
        let bytes = crate::bytes::on_disk(&path);
        usage.snapshot_bytes += bytes;
        if !in_use.contains_key(&digest) {
            usage.reclaimable_bytes += bytes;
        }
    }
    Ok(usage)
}

/// Deletes every blob and snapshot no record or root needs, and every
/// partial; returns the bytes freed. Call with the gc lock held: no pull
/// is under way then, so no partial is being taken or put back.
fn collect(images: &ImageStore, roots: &Roots) -> Result<u64, Error> {
    let records = images.records.list()?;
    let manifests: BTreeSet<&str> = records
        .iter()
        .map(|r| r.digest.as_str())
        .chain(roots.in_use.keys().map(String::as_str))
        .collect();
    let mut keep = reachable(images, manifests.iter().copied());
    keep.extend(records.iter().filter_map(|r| r.index_digest.clone()));
    keep.extend(roots.blobs.iter().cloned());
    let mut freed = 0;
    for digest in images.content.digests()? {
        if !keep.contains(digest.as_str()) {
            freed += images.content.remove(&digest)?;
        }
    }
    freed += images.content.remove_partials()?;
    for (digest, path) in snapshots(images)? {
        if !manifests.contains(digest.as_str()) {
            let bytes = crate::bytes::on_disk(&path);
            match std::fs::remove_file(&path) {
                Ok(()) => freed += bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).at(&path),
            }
        }
    }
    Ok(freed)
}

/// The manifests given and the config and layers each names. A manifest
/// missing from the store keeps nothing but itself.
fn reachable<'a>(
    images: &ImageStore,
    manifests: impl Iterator<Item = &'a str>,
) -> BTreeSet<String> {
    let mut keep = BTreeSet::new();
    for digest in manifests {
        keep.insert(digest.to_string());
        if let Ok(manifest) = images.manifest(digest) {
            keep.insert(manifest.config.digest.into());
            keep.extend(manifest.layers.into_iter().map(|l| l.digest.into()));
        }
    }
    keep
}

/// Finished snapshots: (manifest digest, path).
fn snapshots(images: &ImageStore) -> Result<Vec<(String, std::path::PathBuf)>, Error> {
    let dir = &images.snapshots;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(hex) = name.strip_suffix(".ext4")
            && !name.starts_with('.')
        {
            found.push((format!("sha256:{hex}"), entry.path()));
        }
    }
    Ok(found)
}
