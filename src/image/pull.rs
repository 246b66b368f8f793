//! Pulling: resolve the reference to the host platform's manifest, fetch the
//! missing blobs (a few at a time), then store the manifest and the record.
//! The order matters: a record only ever points at content that is complete.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};

use super::manifest::{Compression, Descriptor, Document, ImageConfig};
use super::platform::{self, Platform};
use super::records::Record;
use super::registry::Registry;
use super::{Error, Image, ImageStore, PullOptions, Reference};

/// Layers downloaded at once, as in Apple's `container` and Docker.
const MAX_CONCURRENT_DOWNLOADS: usize = 3;

pub async fn pull(
    images: &ImageStore,
    reference: &Reference,
    options: &PullOptions,
) -> Result<Image, Error> {
    let registry = Registry::new(reference, options.scheme);
    let host = Platform::host();

    let (bytes, digest) = registry.manifest(reference).await?;
    let (manifest_bytes, manifest_digest, index) = match Document::parse(&bytes, &digest)? {
        Document::Manifest(_) => (bytes, digest, None),
        Document::Index(entries) => {
            let entry = platform::select(&entries, &host)
                .ok_or_else(|| no_platform(reference, &host, &entries))?;
            let (manifest_bytes, manifest_digest) = registry
                .manifest(&reference.with_digest(&entry.digest))
                .await?;
            if manifest_digest != entry.digest {
                return Err(Error::DigestMismatch {
                    expected: entry.digest.clone(),
                    actual: manifest_digest,
                });
            }
            (manifest_bytes, manifest_digest, Some((bytes, digest)))
        }
    };
    let manifest = match Document::parse(&manifest_bytes, &manifest_digest)? {
        Document::Manifest(manifest) => manifest,
        Document::Index(_) => {
            return Err(Error::InvalidManifest {
                digest: manifest_digest,
                reason: "an index entry points at another index".to_string(),
            });
        }
    };
    // Refuse what we could not unpack before downloading any of it.
    for layer in &manifest.layers {
        Compression::of_layer(&layer.media_type)?;
    }

    let content = &images.content;
    let mut seen = HashSet::new();
    let mut missing: Vec<&Descriptor> = Vec::new();
    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
        if seen.insert(&blob.digest) && !content.contains(&blob.digest, blob.size)? {
            missing.push(blob);
        }
    }
    // The futures are made up front rather than in a `map` closure: a closure
    // there makes the pull future fail `Send` checks (rust-lang/rust#102211).
    let fetches: Vec<_> = missing
        .into_iter()
        .map(|blob| registry.fetch_blob(reference, blob, content))
        .collect();
    futures::stream::iter(fetches)
        .buffer_unordered(MAX_CONCURRENT_DOWNLOADS)
        .try_collect::<()>()
        .await?;

    let config_digest = &manifest.config.digest;
    let config = ImageConfig::parse(&content.read(config_digest)?, config_digest)?;
    if !host.runs(&config.platform) {
        return Err(Error::NoMatchingPlatform {
            reference: reference.to_string(),
            platform: host,
            available: config.platform.to_string(),
        });
    }

    content.put(&manifest_digest, &manifest_bytes)?;
    if let Some((index_bytes, index_digest)) = &index {
        content.put(index_digest, index_bytes)?;
    }
    let record = Record {
        reference: reference.to_string(),
        digest: manifest_digest.clone(),
        index_digest: index.map(|(_, digest)| digest),
        pulled_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    images.records.put(record)?;

    Ok(Image {
        reference: reference.to_string(),
        digest: manifest_digest,
        config: config.run_config(),
    })
}

fn no_platform(reference: &Reference, host: &Platform, entries: &[Descriptor]) -> Error {
    let available: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref().map(Platform::to_string))
        .collect();
    Error::NoMatchingPlatform {
        reference: reference.to_string(),
        platform: host.clone(),
        available: available.join(", "),
    }
}
