//! `image save` and `image load`: images as one tar stream.
//!
//! We write an OCI image layout (`oci-layout`, `index.json`, `blobs/`) with a
//! Docker `manifest.json` beside it, so both `container image load` and
//! `docker load` read it. We read OCI layouts (named by the
//! `io.containerd.image.name` or a full `org.opencontainers.image.ref.name`
//! annotation) and `docker save` archives, old (`<id>/layer.tar`) and new.
//! Blobs stream from the tar into the content store, verified like pulled
//! ones; only the small JSON files are held in memory.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::manifest::{self, DOCKER_MANIFEST, Descriptor, Document, ManifestDocument, OCI_INDEX};
use super::platform::Platform;
use super::pull::within_bounds;
use super::records::Record;
use super::registry::MAX_MANIFEST_BYTES;
use super::{Digest, Error, ImageStore, Reference, info};

const NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Files other than blobs and layers are JSON metadata, read whole: an
/// archive with a bigger one is refused.
const MAX_METADATA_BYTES: u64 = 16 << 20;
/// Links followed to find what a link stands for (a loop ends here).
const MAX_LINK_HOPS: usize = 16;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutIndex {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<LayoutEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutEntry {
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// One image of a `docker save` manifest.json.
#[derive(Serialize, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Writes the images `names` stand for. A reference holds one platform's
/// manifest (the one pulled or loaded), and that is what is written, never
/// its index; with `platform`, each image must be built for it, which is
/// checked before anything is written.
pub fn save(
    images: &ImageStore,
    names: &[String],
    platform: Option<&Platform>,
    out: impl Write,
) -> Result<(), Error> {
    let _adding = images.adding_content()?;
    let all = images.records.list()?;
    let mut records: Vec<Record> = Vec::new();
    for name in names {
        for record in info::matching(images, name, &all)? {
            if !records.iter().any(|r| r.reference == record.reference) {
                records.push(record);
            }
        }
    }
    if let Some(wanted) = platform {
        for record in &records {
            let image = images.image(record.reference.clone(), record.digest.clone())?;
            if !wanted.runs(&image.platform) {
                return Err(Error::NoMatchingPlatform {
                    reference: record.reference.clone(),
                    platform: wanted.clone(),
                    available: image.platform.to_string(),
                });
            }
        }
    }

    let mut index = LayoutIndex {
        schema_version: 2,
        media_type: Some(OCI_INDEX.to_string()),
        manifests: Vec::new(),
    };
    let mut docker: Vec<DockerEntry> = Vec::new();
    let mut blobs: Vec<Digest> = Vec::new();
    for record in &records {
        let record_digest = Digest::parse(&record.digest)?;
        let manifest = images.manifest(&record.digest)?;
        let reference: Reference = record.reference.parse()?;
        let mut annotations =
            BTreeMap::from([(NAME_ANNOTATION.to_string(), record.reference.clone())]);
        if let Some(tag) = reference.tag() {
            annotations.insert(REF_NAME_ANNOTATION.to_string(), tag.to_string());
        }
        index.manifests.push(LayoutEntry {
            media_type: manifest.media_type.clone(),
            digest: record_digest.clone(),
            size: images.content.read(&record_digest)?.len() as u64,
            annotations,
        });
        let layers: Vec<Digest> = manifest.layers.iter().map(|l| l.digest.clone()).collect();
        let tags = reference.tag().map(|_| record.reference.clone());
        match docker
            .iter_mut()
            .find(|e| e.config == blob_path(&manifest.config.digest))
        {
            Some(entry) => entry.repo_tags.get_or_insert_default().extend(tags),
            None => docker.push(DockerEntry {
                config: blob_path(&manifest.config.digest),
                repo_tags: Some(tags.into_iter().collect()),
                layers: layers.iter().map(|d| blob_path(d)).collect(),
            }),
        }
        for digest in [record_digest, manifest.config.digest]
            .into_iter()
            .chain(layers)
        {
            if !blobs.contains(&digest) {
                blobs.push(digest);
            }
        }
    }

    let io = |e| Error::from(crate::io_error::io("image archive")(e));
    let mut tar = tar::Builder::new(out);
    let mut add = |path: &str, size: u64, data: &mut dyn Read| {
        let mut header = tar::Header::new_ustar();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, data).map_err(io)
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    add("oci-layout", layout.len() as u64, &mut &layout[..])?;
    let index = serde_json::to_vec(&index).expect("index serializes");
    add("index.json", index.len() as u64, &mut &index[..])?;
    let docker = serde_json::to_vec(&docker).expect("manifest.json serializes");
    add("manifest.json", docker.len() as u64, &mut &docker[..])?;
    for digest in &blobs {
        let mut file = images.content.open_blob(digest)?;
        let size = file.metadata().map_err(io)?.len();
        add(&blob_path(digest), size, &mut file)?;
    }
    tar.into_inner().map_err(io)?.flush().map_err(io)
}

pub fn load(images: &ImageStore, input: impl Read) -> Result<Vec<String>, Error> {
    let _adding = images.adding_content()?;
    let invalid = |reason: String| Error::InvalidArchive(reason);
    // Blobs known by a path that is not their blob path: layers of old
    // `docker save` archives (their digests are only known once read), and
    // links to blobs.
    let mut named_blobs: HashMap<String, Digest> = HashMap::new();
    let mut metadata: HashMap<String, Vec<u8>> = HashMap::new();
    // Links between entries (old `docker save` links a repeated layer to
    // its first copy), as path -> the path it stands for.
    let mut links: HashMap<String, String> = HashMap::new();
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(|e| invalid(e.to_string()))? {
        let mut entry = entry.map_err(|e| invalid(e.to_string()))?;
        let raw = entry.path().map_err(|e| invalid(e.to_string()))?;
        let path = inside(Path::new(""), &raw).ok_or_else(|| {
            invalid(format!(
                "entry {} points outside the archive",
                raw.display()
            ))
        })?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| invalid(e.to_string()))?
                .unwrap_or_default();
            // A symlink is relative to its directory, a hard link to the
            // archive's root.
            let base = match kind.is_symlink() {
                true => Path::new(&path).parent().unwrap_or(Path::new("")),
                false => Path::new(""),
            };
            let resolved = inside(base, &target).ok_or_else(|| {
                invalid(format!(
                    "entry {path} links outside the archive (to {})",
                    target.display()
                ))
            })?;
            links.insert(path, resolved);
            continue;
        }
        if kind != tar::EntryType::Regular {
            continue;
        }
        let size = entry.size();
        if let Some(digest) = digest_of_blob_path(&path) {
            if !images.content.contains(&digest, size) {
                let mut ingest = images.content.ingest(&digest, size)?;
                copy(&mut entry, |chunk| ingest.write(chunk))?;
                ingest.commit()?;
            }
        } else if path.ends_with(".tar") {
            let mut ingest = images.content.ingest_unnamed()?;
            copy(&mut entry, |chunk| ingest.write(chunk))?;
            named_blobs.insert(path, ingest.commit()?);
        } else if size <= MAX_METADATA_BYTES {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| invalid(e.to_string()))?;
            metadata.insert(path, bytes);
        } else {
            return Err(Error::TooLarge {
                what: format!(
                    "entry {path} of the archive ({size} bytes), which is neither a blob nor a layer,"
                ),
                limit: MAX_METADATA_BYTES,
            });
        }
    }
    // Each link stands for what it finally points at.
    let resolve = |path: &str| -> String {
        let mut path = path.to_string();
        for _ in 0..MAX_LINK_HOPS {
            match links.get(&path) {
                Some(target) => path = target.clone(),
                None => break,
            }
        }
        path
    };
    for (link, _) in links.iter() {
        let target = resolve(link);
        if let Some(bytes) = metadata.get(&target).cloned() {
            metadata.insert(link.clone(), bytes);
        }
        if let Some(digest) = named_blobs.get(&target).cloned() {
            named_blobs.insert(link.clone(), digest);
        }
        if let Some(digest) = digest_of_blob_path(&target) {
            named_blobs.insert(link.clone(), digest);
        }
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut records = Vec::new();
    if let Some(index) = metadata.get("index.json") {
        let index: LayoutIndex =
            serde_json::from_slice(index).map_err(|e| invalid(format!("index.json: {e}")))?;
        for entry in index.manifests {
            let Some(reference) = layout_name(&entry.annotations) else {
                continue;
            };
            records.push(oci_record(images, reference, entry.digest, now)?);
        }
    }
    if records.is_empty()
        && let Some(manifest) = metadata.get("manifest.json")
    {
        let entries: Vec<DockerEntry> =
            serde_json::from_slice(manifest).map_err(|e| invalid(format!("manifest.json: {e}")))?;
        for entry in entries {
            let digest = docker_manifest(images, &entry, &metadata, &named_blobs)?;
            for tag in entry.repo_tags.unwrap_or_default() {
                let reference: Reference = tag.parse()?;
                records.push(Record {
                    reference: reference.to_string(),
                    digest: digest.clone(),
                    index_digest: None,
                    pulled_at: now,
                });
            }
        }
    }
    if records.is_empty() {
        return Err(invalid(
            "it holds no named image (no index.json or manifest.json with image names)".to_string(),
        ));
    }
    let mut loaded = Vec::new();
    for record in records {
        loaded.push(record.reference.clone());
        images.records.put(record)?;
    }
    Ok(loaded)
}

/// A full image name from a layout entry's annotations; a bare tag in
/// `ref.name` (as skopeo writes) names no repository, so it is not enough.
fn layout_name(annotations: &BTreeMap<String, String>) -> Option<Reference> {
    if let Some(name) = annotations.get(NAME_ANNOTATION) {
        return name.parse().ok();
    }
    annotations
        .get(REF_NAME_ANNOTATION)
        .filter(|name| name.contains('/'))
        .and_then(|name| name.parse().ok())
}

/// The record for an image of an OCI layout, after checking its content
/// arrived; an index resolves to the host's platform.
fn oci_record(
    images: &ImageStore,
    reference: Reference,
    digest: Digest,
    now: u64,
) -> Result<Record, Error> {
    // Manifests and indexes are read whole: as in a pull, not past 4 MiB.
    let bounded = |digest: &Digest| -> Result<(), Error> {
        let size = images
            .content
            .open_blob(digest)?
            .metadata()
            .map_or(0, |m| m.len());
        if size > MAX_MANIFEST_BYTES {
            return Err(Error::TooLarge {
                what: format!("the manifest of {reference} ({size} bytes)"),
                limit: MAX_MANIFEST_BYTES,
            });
        }
        Ok(())
    };
    bounded(&digest)?;
    let (digest, index_digest) = match Document::parse(&images.content.read(&digest)?, &digest)? {
        Document::Manifest(_) => (digest, None),
        Document::Index(entries) => {
            let host = Platform::host();
            let entry =
                manifest::select(&entries, &host).ok_or_else(|| Error::NoMatchingPlatform {
                    reference: reference.to_string(),
                    platform: host.clone(),
                    available: entries
                        .iter()
                        .filter_map(|e| e.platform.as_ref().map(Platform::to_string))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            (entry.digest.clone(), Some(digest.to_string()))
        }
    };
    bounded(&digest)?;
    let manifest = images.manifest(digest.as_str())?;
    within_bounds(
        &reference.to_string(),
        manifest.layers.len(),
        manifest.config.size,
    )?;
    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
        if !images.content.contains(&blob.digest, blob.size) {
            return Err(Error::InvalidArchive(format!(
                "{reference} needs blob {} which the archive lacks",
                blob.digest
            )));
        }
    }
    Ok(Record {
        reference: reference.to_string(),
        digest: digest.into(),
        index_digest,
        pulled_at: now,
    })
}

/// Stores a Docker v2 manifest for a `docker save` entry; returns its digest.
fn docker_manifest(
    images: &ImageStore,
    entry: &DockerEntry,
    metadata: &HashMap<String, Vec<u8>>,
    named_blobs: &HashMap<String, Digest>,
) -> Result<String, Error> {
    let missing = |path: &str| {
        Error::InvalidArchive(format!(
            "manifest.json names {path}, which the archive lacks"
        ))
    };
    let config_digest = match (
        digest_of_blob_path(&entry.config).or_else(|| named_blobs.get(&entry.config).cloned()),
        metadata.get(&entry.config),
    ) {
        (Some(digest), _) => digest,
        (None, Some(bytes)) => {
            let digest = Digest::of(bytes);
            images.content.put(&digest, bytes)?;
            digest
        }
        (None, None) => return Err(missing(&entry.config)),
    };
    let config_size = images
        .content
        .open_blob(&config_digest)?
        .metadata()
        .map_or(0, |m| m.len());
    let name = entry
        .repo_tags
        .iter()
        .flatten()
        .next()
        .map_or("an image of the archive", String::as_str);
    within_bounds(name, entry.layers.len(), config_size)?;
    let mut layers = Vec::new();
    for path in &entry.layers {
        let digest = digest_of_blob_path(path)
            .or_else(|| named_blobs.get(path).cloned())
            .ok_or_else(|| missing(path))?;
        let mut file = images.content.open_blob(&digest)?;
        let size = file.metadata().map_or(0, |m| m.len());
        let mut magic = [0u8; 2];
        let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
        let media_type = if gzip {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        } else {
            "application/vnd.docker.image.rootfs.diff.tar"
        };
        layers.push(Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            platform: None,
        });
    }
    let bytes = ManifestDocument {
        schema_version: 2,
        media_type: DOCKER_MANIFEST,
        config: &Descriptor {
            media_type: "application/vnd.docker.container.image.v1+json".to_string(),
            digest: config_digest,
            size: config_size,
            platform: None,
        },
        layers: &layers,
    }
    .to_bytes();
    let digest = Digest::of(&bytes);
    images.content.put(&digest, &bytes)?;
    Ok(digest.into())
}

/// `path`, taken relative to `base` inside the archive, as a normalized
/// relative path; `None` if it is absolute or climbs out of the archive.
fn inside(base: &Path, path: &Path) -> Option<String> {
    let mut parts: Vec<&std::ffi::OsStr> = base.components().map(|c| c.as_os_str()).collect();
    for component in path.components() {
        match component {
            Component::Normal(name) => parts.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    let joined: PathBuf = parts.iter().collect();
    Some(joined.to_string_lossy().into_owned())
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn digest_of_blob_path(path: &str) -> Option<Digest> {
    Digest::from_hex(path.strip_prefix("blobs/sha256/")?)
}

/// Streams a tar entry through `write` in bounded chunks.
fn copy(
    entry: &mut impl Read,
    mut write: impl FnMut(&[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buffer)
            .map_err(|e| Error::InvalidArchive(e.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        write(&buffer[..n])?;
    }
}
