//! Pushing a stored image: its blobs (skipped when the registry has them,
//! linked from the source repository when the registry can), then its
//! manifest, byte for byte, so the digest stays the same.

use futures::{StreamExt, TryStreamExt};

use super::registry::Registry;
use super::{Error, ImageStore, PushOptions, Reference, info};

/// Returns the pushed manifest's digest.
pub async fn push(
    images: &ImageStore,
    source: &str,
    target: &Reference,
    options: &PushOptions,
) -> Result<String, Error> {
    let record = info::find_one(images, source)?;
    // Where the registry may already hold the blobs: another repository of
    // the target's registry that this image was pulled from or pushed to.
    let origin: Reference = images
        .records
        .list()?
        .into_iter()
        .filter(|r| r.digest == record.digest)
        .filter_map(|r| r.reference.parse::<Reference>().ok())
        .find(|r| r.registry() == target.registry() && r.repository() != target.repository())
        .unwrap_or_else(|| target.clone());
    let manifest = images.manifest(&record.digest)?;
    let registry = Registry::new(&images.root, target.registry(), options.scheme).await?;

    let mut seen = std::collections::HashSet::new();
    let blobs: Vec<_> = std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .filter(|blob| seen.insert(&blob.digest))
        .collect();
    for blob in &blobs {
        // Fail before uploading anything if the store lost a blob.
        if !images.content.contains(&blob.digest, blob.size) {
            return Err(Error::MissingContent(blob.digest.to_string()));
        }
    }
    registry.authorize_push(target).await?;
    // Made up front for the same `Send` reason as in pull.rs.
    let uploads: Vec<_> = blobs
        .into_iter()
        .map(|blob| registry.push_blob(target, &origin, blob, &images.content, &options.progress))
        .collect();
    futures::stream::iter(uploads)
        .buffer_unordered(super::DEFAULT_CONCURRENT_DOWNLOADS)
        .try_collect::<()>()
        .await?;

    let bytes = images
        .content
        .read(&super::Digest::parse(&record.digest)?)?;
    registry
        .push_manifest(target, bytes, &manifest.media_type)
        .await?;
    Ok(record.digest)
}
