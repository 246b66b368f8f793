//! What `image ls` and `image inspect` show, read from the records and the
//! content store, and how a name the user typed finds its images.

use serde::Serialize;

use super::manifest::ImageConfig;
use super::platform::Platform;
use super::records::Record;
use super::{Digest, Error, ImageStore, Reference};

/// One image record with what its manifest and config say.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub reference: String,
    /// Every reference naming the same manifest, this one included.
    pub references: Vec<String>,
    /// The platform manifest's digest.
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    pub media_type: String,
    pub platform: Platform,
    /// Manifest, config and layers, as stored (layers compressed).
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub pulled_at: u64,
    pub layers: Vec<LayerInfo>,
    /// The image config document, verbatim.
    pub config: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerInfo {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

pub fn list(images: &ImageStore) -> Result<Vec<ImageInfo>, Error> {
    let records = images.records.list()?;
    records
        .iter()
        .map(|record| describe(images, record, &records))
        .collect()
}

/// The images `name` stands for: the record of a reference; else, for a
/// digest or a hex prefix of one (at least 6 digits, as `image ls` prints
/// 12), every record with that manifest digest.
pub fn find(images: &ImageStore, name: &str) -> Result<Vec<ImageInfo>, Error> {
    let records = images.records.list()?;
    matching(images, name, &records)?
        .iter()
        .map(|record| describe(images, record, &records))
        .collect()
}

/// The one record `name` stands for; several records of the same manifest
/// count as one.
pub fn find_one(images: &ImageStore, name: &str) -> Result<Record, Error> {
    let records = images.records.list()?;
    let found = matching(images, name, &records)?;
    let first = found[0].clone();
    if found.iter().any(|r| r.digest != first.digest) {
        return Err(Error::Ambiguous(name.to_string()));
    }
    Ok(first)
}

/// Records `name` stands for, never empty.
pub fn matching(images: &ImageStore, name: &str, records: &[Record]) -> Result<Vec<Record>, Error> {
    if let Ok(reference) = images.parse_reference(name)
        && let Some(record) = images.records.get(&reference)?
    {
        return Ok(vec![record]);
    }
    let prefix = match name.strip_prefix("sha256:") {
        Some(hex) if super::Digest::parse(name).is_ok() => hex,
        None if name.len() >= 6 && name.bytes().all(|b| b.is_ascii_hexdigit()) => name,
        _ => {
            // Surface a malformed reference as such.
            name.parse::<Reference>()?;
            return Err(Error::NotFoundLocally(name.to_string()));
        }
    };
    let found: Vec<Record> = records
        .iter()
        .filter(|r| super::Digest::parse(&r.digest).is_ok_and(|d| d.hex().starts_with(prefix)))
        .cloned()
        .collect();
    if found.is_empty() {
        return Err(Error::NotFoundLocally(name.to_string()));
    }
    Ok(found)
}

fn describe(images: &ImageStore, record: &Record, all: &[Record]) -> Result<ImageInfo, Error> {
    let manifest = images.manifest(&record.digest)?;
    let manifest_size = images.content.read(&Digest::parse(&record.digest)?)?.len() as u64;
    let config_digest = &manifest.config.digest;
    let config_bytes = images.content.read(config_digest)?;
    let platform = ImageConfig::parse(&config_bytes, config_digest)?.platform;
    let config = serde_json::from_slice(&config_bytes).map_err(|e| Error::InvalidConfig {
        digest: config_digest.to_string(),
        reason: e.to_string(),
    })?;
    let layers: Vec<LayerInfo> = manifest
        .layers
        .iter()
        .map(|l| LayerInfo {
            media_type: l.media_type.clone(),
            digest: l.digest.to_string(),
            size: l.size,
        })
        .collect();
    let size = manifest_size + manifest.config.size + layers.iter().map(|l| l.size).sum::<u64>();
    Ok(ImageInfo {
        reference: record.reference.clone(),
        references: all
            .iter()
            .filter(|r| r.digest == record.digest)
            .map(|r| r.reference.clone())
            .collect(),
        digest: record.digest.clone(),
        index_digest: record.index_digest.clone(),
        media_type: manifest.media_type,
        platform,
        size,
        pulled_at: record.pulled_at,
        layers,
        config,
    })
}
