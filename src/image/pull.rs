//! Pulling: resolve the reference to the wanted platform's manifest (the
//! host's by default), fetch the missing blobs (a few at a time), then store
//! the manifest and the record. The order matters: a record only ever points
//! at content that is complete. A pull that fails half-way leaves whole blobs
//! (reused by the next pull), partials of the blobs the network cut short
//! (resumed by the next pull, deleted by a prune) and, if the process died,
//! its ingest files (deleted when the next process opens the store),
//! nothing else.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;

use super::manifest::{self, Compression, Descriptor, Document, ImageConfig};
use super::platform::Platform;
use super::progress::Event;
use super::records::Record;
use super::registry::Registry;
use super::{Error, Image, ImageStore, PullOptions, Reference};

/// The largest image config we fetch: a config is read whole and parsed,
/// so one that claims more (a 100 MB environment) is refused unfetched.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// The most layers an image may have: far above real images (Docker's
/// overlay storage stops at 128) and far below a count that would turn one
/// pull into thousands of requests.
pub const MAX_LAYERS: usize = 1000;

/// Refuses an image we would not hold: more than [`MAX_LAYERS`] layers, or
/// a config too big to read whole. A pull checks before fetching anything,
/// a load before recording what it read.
pub(super) fn within_bounds(reference: &str, layers: usize, config_size: u64) -> Result<(), Error> {
    if layers > MAX_LAYERS {
        return Err(Error::TooManyLayers {
            reference: reference.to_string(),
            count: layers,
            limit: MAX_LAYERS,
        });
    }
    if config_size > MAX_CONFIG_BYTES {
        return Err(Error::TooLarge {
            what: format!("the config of {reference} ({config_size} bytes)"),
            limit: MAX_CONFIG_BYTES,
        });
    }
    Ok(())
}

pub async fn pull(
    images: &ImageStore,
    reference: &Reference,
    options: &PullOptions,
) -> Result<Image, Error> {
    let registry = Registry::new(&images.root, reference.registry(), options.scheme).await?;
    let wanted = options.platform.clone().unwrap_or_else(Platform::host);
    let _adding = images.adding_content()?;

    let (bytes, digest) = registry.manifest(reference).await?;
    let (manifest_bytes, manifest_digest, index) = match Document::parse(&bytes, &digest)? {
        Document::Manifest(_) => (bytes, digest, None),
        Document::Index(entries) => {
            let entry = manifest::select(&entries, &wanted)
                .ok_or_else(|| no_platform(reference, &wanted, &entries))?;
            let (manifest_bytes, manifest_digest) = registry
                .manifest(&reference.with_digest(entry.digest.as_str()))
                .await?;
            if manifest_digest != entry.digest {
                return Err(Error::DigestMismatch {
                    expected: entry.digest.to_string(),
                    actual: manifest_digest.into(),
                });
            }
            (manifest_bytes, manifest_digest, Some((bytes, digest)))
        }
    };
    let manifest = match Document::parse(&manifest_bytes, &manifest_digest)? {
        Document::Manifest(manifest) => manifest,
        Document::Index(_) => {
            return Err(Error::InvalidManifest {
                digest: manifest_digest.into(),
                reason: "an index entry points at another index".to_string(),
            });
        }
    };
    // Refuse what we could not unpack or would not hold before downloading
    // any of it.
    within_bounds(
        &reference.to_string(),
        manifest.layers.len(),
        manifest.config.size,
    )?;
    for layer in &manifest.layers {
        Compression::of_layer(&layer.media_type)?;
    }

    let content = &images.content;
    let mut seen = HashSet::new();
    let mut missing: Vec<&Descriptor> = Vec::new();
    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
        if !seen.insert(&blob.digest) {
            continue;
        }
        if content.contains(&blob.digest, blob.size) {
            options.progress.emit(Event::Exists {
                digest: blob.digest.as_str(),
                size: blob.size,
            });
        } else {
            missing.push(blob);
        }
    }
    // The futures are made up front rather than in a `map` closure: a closure
    // there makes the pull future fail `Send` checks (rust-lang/rust#102211).
    let fetches: Vec<_> = missing
        .into_iter()
        .map(|blob| registry.fetch_blob(reference, blob, content, &options.progress))
        .collect();
    // Every fetch runs to its end, even after one fails: a commit in flight
    // finishes before the pull returns, so nothing changes after the error.
    let results: Vec<Result<(), Error>> = futures::stream::iter(fetches)
        .buffer_unordered(options.max_concurrent_downloads.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<(), Error>>()?;

    let config_digest = &manifest.config.digest;
    let config = ImageConfig::parse(&content.read(config_digest)?, config_digest)?;
    if !wanted.runs(&config.platform) {
        return Err(Error::NoMatchingPlatform {
            reference: reference.to_string(),
            platform: wanted,
            available: config.platform.to_string(),
        });
    }

    content.put(&manifest_digest, &manifest_bytes)?;
    if let Some((index_bytes, index_digest)) = &index {
        content.put(index_digest, index_bytes)?;
    }
    let record = Record {
        reference: reference.to_string(),
        digest: manifest_digest.to_string(),
        index_digest: index.map(|(_, digest)| digest.into()),
        pulled_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    images.records.put(record)?;

    Ok(Image {
        reference: reference.to_string(),
        digest: manifest_digest.into(),
        config: config.run_config(),
        platform: config.platform,
    })
}

fn no_platform(reference: &Reference, wanted: &Platform, entries: &[Descriptor]) -> Error {
    let available: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref().map(Platform::to_string))
        .collect();
    Error::NoMatchingPlatform {
        reference: reference.to_string(),
        platform: wanted.clone(),
        available: available.join(", "),
    }
}
