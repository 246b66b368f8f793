//! Images: references, the registry client, the content store, image records
//! and the ext4 snapshot of each image.
//!
//! Layout under the app root:
//! - `content/blobs/sha256/<hex>`: every manifest, index, config and layer, verified
//! - `content/ingest/`: blobs being downloaded (hidden temp files)
//! - `images/records.json`: reference -> manifest digest (`images/records.lock` guards it)
//! - `snapshots/<manifest hex>.ext4`: the unpacked root filesystem of each image

mod atomic;
mod manifest;
mod platform;
mod pull;
mod records;
mod reference;
mod registry;
mod snapshot;
mod store;

use std::path::{Path, PathBuf};

pub use platform::Platform;
pub use reference::Reference;
pub use snapshot::SNAPSHOT_SIZE_BYTES;

use manifest::{Document, ImageConfig};
use records::Records;
use store::ContentStore;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference \"{input}\": {reason}")]
    InvalidReference { input: String, reason: String },
    #[error("image {reference} not found in the registry")]
    NotFound { reference: String },
    #[error(
        "the registry denied access to image {reference}; it may not exist or may need a login"
    )]
    Unauthorized { reference: String },
    #[error("image {reference} has no manifest for {platform} (it has: {available})")]
    NoMatchingPlatform {
        reference: String,
        platform: Platform,
        available: String,
    },
    #[error("digest mismatch for blob {expected}: got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("size mismatch for blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("invalid digest {0}: only sha256 digests are supported")]
    InvalidDigest(String),
    #[error("manifest {digest} is invalid: {reason}")]
    InvalidManifest { digest: String, reason: String },
    #[error("image config {digest} is invalid: {reason}")]
    InvalidConfig { digest: String, reason: String },
    #[error("unsupported layer media type {0}")]
    UnsupportedLayer(String),
    #[error("blob {0} is missing from the content store; pull the image again")]
    MissingContent(String),
    #[error("downloading blob {digest} failed: {source}")]
    Transfer {
        digest: String,
        source: std::io::Error,
    },
    #[error("registry {registry} failed: {source}")]
    Registry {
        registry: String,
        source: Box<oci_client::errors::OciDistributionError>,
    },
    #[error("image records at {path} are unreadable: {reason}")]
    Records { path: PathBuf, reason: String },
    #[error("building the root filesystem failed: {0}")]
    Ext4(#[from] crate::ext4::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Attaches the path to an I/O error, so messages say which file failed.
trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T, Error>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T, Error> {
        self.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// What the image says about how to run it (the OCI config's `config` object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

/// An image in the local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub reference: String,
    /// Digest of the platform manifest.
    pub digest: String,
    pub config: RunConfig,
}

/// `http`, `https`, or `auto` (plain HTTP for loopback and private addresses).
#[derive(Debug, Clone, Copy, Default)]
pub enum Scheme {
    #[default]
    Auto,
    Http,
    Https,
}

#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub scheme: Scheme,
}

/// The content store and image records under the app root.
pub struct ImageStore {
    content: ContentStore,
    records: Records,
    snapshots: PathBuf,
}

impl ImageStore {
    pub fn open(app_root: &Path) -> Result<Self, Error> {
        let snapshots = app_root.join("snapshots");
        std::fs::create_dir_all(&snapshots).at(&snapshots)?;
        atomic::remove_orphans(&snapshots);
        Ok(ImageStore {
            content: ContentStore::open(&app_root.join("content"))?,
            records: Records::open(&app_root.join("images"))?,
            snapshots,
        })
    }

    /// The image a reference names, if it is in the store.
    pub fn lookup(&self, reference: &Reference) -> Result<Option<Image>, Error> {
        self.records
            .get(reference)?
            .map(|record| self.image(record.reference, record.digest))
            .transpose()
    }

    /// Pulls an image for the host platform into the store.
    pub async fn pull(&self, reference: &Reference, options: &PullOptions) -> Result<Image, Error> {
        pull::pull(self, reference, options).await
    }

    /// The image's ext4 root filesystem, made once per manifest digest.
    /// Blocking, and seconds long for big images: call it from
    /// `spawn_blocking` in async code.
    pub fn snapshot(&self, image: &Image) -> Result<PathBuf, Error> {
        snapshot::snapshot(self, &image.digest)
    }

    /// Reads an image's config through its manifest in the content store.
    fn image(&self, reference: String, digest: String) -> Result<Image, Error> {
        let manifest = self.manifest(&digest)?;
        let config_digest = &manifest.config.digest;
        let config = ImageConfig::parse(&self.content.read(config_digest)?, config_digest)?;
        Ok(Image {
            reference,
            digest,
            config: config.run_config(),
        })
    }

    fn manifest(&self, digest: &str) -> Result<manifest::Manifest, Error> {
        match Document::parse(&self.content.read(digest)?, digest)? {
            Document::Manifest(manifest) => Ok(manifest),
            Document::Index(_) => Err(Error::InvalidManifest {
                digest: digest.to_string(),
                reason: "it is an index where a platform manifest was expected".to_string(),
            }),
        }
    }
}
