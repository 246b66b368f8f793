//! Snapshots: each image's layers unpacked, in order, into one ext4 file,
//! `snapshots/<manifest hex>.ext4`, built once per manifest digest and then
//! shared (containers clone it copy-on-write). Layers go straight from the
//! content store through a decompressor into the ext4 writer: nothing is
//! extracted onto the host filesystem.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::ext4::{FormatOptions, Formatter};

use super::manifest::{Compression, Descriptor, Manifest};
use super::{Digest, Error, ImageStore, IoContext};
use crate::atomic;

/// Size of every snapshot filesystem: 8 GiB, enough for nearly any image, and
/// the file is sparse, so only blocks in use take disk space.
pub const SNAPSHOT_SIZE_BYTES: u64 = 8 << 30;
/// Every snapshot's journal: what mke2fs gives a filesystem of this size.
/// Containers write to their root, and a VM killed mid-write must not
/// leave it needing fsck; the journal is sparse until the guest writes it.
const SNAPSHOT_JOURNAL_BYTES: u64 = 64 << 20;
/// Compressed layers are read in pieces this big: with the default 8 KiB,
/// the decompressor's thread spends a tenth of its time in `read` calls.
pub const LAYER_READ_BUFFER: usize = 1 << 20;

pub fn snapshot(images: &ImageStore, digest: &str) -> Result<PathBuf, Error> {
    let digest = Digest::parse(digest)?;
    let hex = digest.hex();
    let target = images.snapshots.join(format!("{hex}.ext4"));
    if target.exists() {
        return Ok(target);
    }
    // One builder per image at a time; whoever waited finds the work done.
    let _lock = atomic::lock(&images.snapshots.join(format!(".{hex}.lock")))?;
    if target.exists() {
        return Ok(target);
    }
    let manifest = images.manifest(digest.as_str())?;
    let temp = atomic::temp_path(&images.snapshots, &format!("{hex}.ext4"));
    let result = build(images, &manifest, &temp).and_then(|()| {
        File::open(&temp).and_then(|f| f.sync_all()).at(&temp)?;
        Ok(atomic::commit(&temp, &target)?)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map(|()| target)
}

fn build(images: &ImageStore, manifest: &Manifest, path: &Path) -> Result<(), Error> {
    let mut fs = Formatter::create(
        path,
        FormatOptions {
            size_bytes: SNAPSHOT_SIZE_BYTES,
        },
    )?
    .with_journal(SNAPSHOT_JOURNAL_BYTES)?;
    for layer in &manifest.layers {
        fs.unpack_layer(images.open_layer(layer)?)?;
    }
    fs.finish()?;
    Ok(())
}

impl ImageStore {
    /// A layer's tar, decompressed as its media type says.
    pub fn open_layer(&self, layer: &Descriptor) -> Result<Box<dyn std::io::Read + Send>, Error> {
        let blob =
            BufReader::with_capacity(LAYER_READ_BUFFER, self.content.open_blob(&layer.digest)?);
        Ok(match Compression::of_layer(&layer.media_type)? {
            Compression::None => Box::new(blob),
            // Multi-member: some tools write a gzip layer as several members.
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
            Compression::Zstd => {
                let path = self.content.path(&layer.digest);
                Box::new(zstd::Decoder::with_buffer(blob).at(&path)?)
            }
        })
    }

    /// Deletes the snapshot of a manifest, if there is one (a build's
    /// intermediate states).
    pub fn remove_snapshot(&self, digest: &str) {
        if let Ok(digest) = Digest::parse(digest) {
            let hex = digest.hex();
            let _ = std::fs::remove_file(self.snapshots.join(format!("{hex}.ext4")));
        }
    }
}
