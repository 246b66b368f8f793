//! Images: references, the registry client, the content store, image records
//! and the ext4 snapshot of each image.
//!
//! Layout under the app root:
//! - `content/blobs/sha256/<hex>`: every manifest, index, config and layer, verified
//! - `content/ingest/`: blobs being downloaded (hidden temp files)
//! - `content/partial/<hex>`: the first bytes of a blob whose download the
//!   network cut short, for the next pull to resume (see store.rs)
//! - `images/records.json`: reference -> manifest digest (`images/records.lock` guards it)
//! - `snapshots/<manifest hex>.ext4`: the unpacked root filesystem of each image
//! - `content/gc.lock`: shared by everything that adds content, exclusive for
//!   garbage collection, so a collection never deletes a blob a pull has
//!   written but not yet recorded
//! - `auth.json`: registry credentials, or the credential helper holding them (mode 0600)
//! - `properties.json`: settings such as `registry.domain`

mod archive;
mod auth;
mod credential_helper;
mod digest;
mod gc;
mod info;
pub(crate) mod manifest;
mod platform;
mod progress;
mod pull;
mod push;
mod records;
mod reference;
mod registry;
mod snapshot;
mod store;
pub(crate) mod token;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;

pub use auth::Credentials;
pub use digest::Digest;
pub use gc::{DiskUsage, Removed, Roots};
pub use info::{ImageInfo, LayerInfo};
pub use platform::Platform;
pub use progress::{Event, Progress, ProgressSink};
pub use reference::Reference;
pub use registry::check_login;
pub use snapshot::{LAYER_READ_BUFFER, SNAPSHOT_SIZE_BYTES};

use manifest::Document;
pub use manifest::{ContainerConfig, Descriptor, Healthcheck, History, ImageConfig};
use records::{Record, Records};
pub(crate) use reference::{is_valid_registry, reads_as_registry};
use store::ContentStore;
pub use writer::{LayerWriter, NewLayer};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference \"{input}\": {reason}")]
    InvalidReference { input: String, reason: String },
    #[error("image {reference} not found in the registry")]
    NotFound { reference: String },
    #[error("image {0} not found")]
    NotFoundLocally(String),
    #[error(
        "image {reference} is used by container {container}; remove the container or use --force"
    )]
    InUse {
        reference: String,
        container: String,
    },
    #[error("{0} matches more than one image; use a full reference")]
    Ambiguous(String),
    #[error("cannot tag with a digest ({0}); use NAME[:TAG]")]
    TagWithDigest(String),
    #[error("invalid platform \"{input}\": {reason}")]
    InvalidPlatform { input: String, reason: String },
    #[error("the archive is invalid: {0}")]
    InvalidArchive(String),
    #[error("logging in to {registry} failed: wrong username or password")]
    LoginRejected { registry: String },
    #[error("credential helper {helper} for {registry} failed: {reason}")]
    CredentialHelper {
        helper: String,
        registry: String,
        reason: String,
    },
    #[error(
        "credential helper {helper} holds an identity token for {registry}, which container cannot use; store a user name and password in it"
    )]
    IdentityToken { helper: String, registry: String },
    #[error("not logged in to {0}")]
    NotLoggedIn(String),
    #[error("{path} is unreadable: {reason}")]
    Settings { path: PathBuf, reason: String },
    #[error(transparent)]
    Properties(#[from] crate::properties::Error),
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
    #[error("downloading {what} failed: {source}")]
    Transfer {
        what: String,
        source: std::io::Error,
    },
    #[error("the token service of registry {registry} failed: {reason}")]
    TokenService { registry: String, reason: String },
    #[error("{what} is larger than the {limit} bytes accepted")]
    TooLarge { what: String, limit: u64 },
    #[error("image {reference} has {count} layers, more than the {limit} accepted")]
    TooManyLayers {
        reference: String,
        count: usize,
        limit: usize,
    },
    #[error("registry {registry} answered {status}: {message}")]
    RegistryStatus {
        registry: String,
        status: String,
        message: String,
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
    #[error(transparent)]
    Atomic(#[from] crate::atomic::Error),
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
}

/// Attaches the path to an I/O error, so messages say which file failed.
trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T, Error>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T, Error> {
        Ok(self.map_err(crate::io_error::at(path))?)
    }
}

/// A registry as users type it (`HOST[:PORT]`, or Docker's URL forms),
/// checked and in the form references use, for keying credentials.
pub fn normalize_registry(server: &str) -> Result<String, Error> {
    let host = auth::normalize(server);
    if !reference::is_valid_registry(&host) {
        return Err(Error::InvalidReference {
            input: server.to_string(),
            reason: "the registry must be a host name or address with an optional port".to_string(),
        });
    }
    Ok(host)
}

/// What the image says about how to run it (the OCI config's `config` object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// Paths the image declares with `VOLUME`: each gets an anonymous
    /// volume unless the container mounts something there.
    pub volumes: Vec<String>,
}

/// An image in the local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub reference: String,
    /// Digest of the platform manifest.
    pub digest: String,
    /// What its config says it is built for.
    pub platform: Platform,
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

/// Layers downloaded at once by default, as in Apple's `container` and Docker.
pub const DEFAULT_CONCURRENT_DOWNLOADS: usize = 3;

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub scheme: Scheme,
    /// The platform to pull from an index; the host's when `None`.
    pub platform: Option<Platform>,
    pub max_concurrent_downloads: usize,
    pub progress: ProgressSink,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            scheme: Scheme::Auto,
            platform: None,
            max_concurrent_downloads: DEFAULT_CONCURRENT_DOWNLOADS,
            progress: ProgressSink::default(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub scheme: Scheme,
    pub progress: ProgressSink,
}

/// The content store and image records under the app root.
pub struct ImageStore {
    root: PathBuf,
    content: ContentStore,
    records: Records,
    snapshots: PathBuf,
    gc_lock: PathBuf,
}

impl ImageStore {
    pub fn open(app_root: &Path) -> Result<Self, Error> {
        let snapshots = app_root.join("snapshots");
        std::fs::create_dir_all(&snapshots).at(&snapshots)?;
        crate::atomic::remove_orphans(&snapshots);
        let content = app_root.join("content");
        Ok(ImageStore {
            root: app_root.to_path_buf(),
            content: ContentStore::open(&content)?,
            records: Records::open(&app_root.join("images"))?,
            snapshots,
            gc_lock: content.join("gc.lock"),
        })
    }

    /// Parses a reference as the user typed it, with the configured default
    /// registry (`registry.domain`) for names without one.
    pub fn parse_reference(&self, input: &str) -> Result<Reference, Error> {
        let domain = crate::properties::Properties::open(&self.root)
            .get(crate::properties::REGISTRY_DOMAIN)?;
        Reference::parse_with_domain(input, domain.as_deref())
    }

    /// The image a reference names, if it is in the store.
    pub fn lookup(&self, reference: &Reference) -> Result<Option<Image>, Error> {
        self.records
            .get(reference)?
            .map(|record| self.image(record.reference, record.digest))
            .transpose()
    }

    /// The image a reference names: the stored one, unless `options` asks
    /// for a platform it is not built for; else pulled (as Docker and Apple
    /// do for `run --platform`).
    pub async fn get_or_pull(
        &self,
        reference: &Reference,
        options: &PullOptions,
    ) -> Result<Image, Error> {
        if let Some(image) = self.lookup(reference)?
            && options
                .platform
                .as_ref()
                .is_none_or(|wanted| wanted.runs(&image.platform))
        {
            return Ok(image);
        }
        self.pull(reference, options).await
    }

    /// Pulls an image into the store.
    pub async fn pull(&self, reference: &Reference, options: &PullOptions) -> Result<Image, Error> {
        pull::pull(self, reference, options).await
    }

    /// Pushes a stored image (`source`, as the user named it) to `target`.
    pub async fn push(
        &self,
        source: &str,
        target: &Reference,
        options: &PushOptions,
    ) -> Result<String, Error> {
        push::push(self, source, target, options).await
    }

    /// Every image in the store, ordered by reference.
    pub fn list(&self) -> Result<Vec<ImageInfo>, Error> {
        info::list(self)
    }

    /// The images a user-given name stands for: a reference, a digest, or a
    /// unique prefix of one as `image ls` shows it.
    pub fn inspect(&self, name: &str) -> Result<Vec<ImageInfo>, Error> {
        info::find(self, name)
    }

    /// Gives the image `source` names another reference.
    pub fn tag(&self, source: &str, target: &Reference) -> Result<(), Error> {
        if target.digest().is_some() {
            return Err(Error::TagWithDigest(target.to_string()));
        }
        let record = info::find_one(self, source)?;
        self.records.put(Record {
            reference: target.to_string(),
            ..record
        })
    }

    /// Removes images by name, then the content no image or root needs
    /// any more.
    pub fn remove(&self, names: &[String], force: bool, roots: &Roots) -> Result<Removed, Error> {
        gc::remove(self, names, force, roots)
    }

    /// Removes content no image or root needs; with `all`, also every
    /// image no container uses.
    pub fn prune(&self, all: bool, roots: &Roots) -> Result<Removed, Error> {
        gc::prune(self, all, roots)
    }

    /// What the store holds and what pruning would free.
    pub fn disk_usage(&self, roots: &Roots) -> Result<DiskUsage, Error> {
        gc::disk_usage(self, roots)
    }

    /// Writes images as an OCI image layout tar; with `platform`, only if
    /// each is built for it.
    pub fn save(
        &self,
        names: &[String],
        platform: Option<&Platform>,
        out: impl std::io::Write,
    ) -> Result<(), Error> {
        archive::save(self, names, platform, out)
    }

    /// Reads an OCI image layout tar or a `docker save` tar; returns the
    /// references it stored.
    pub fn load(&self, input: impl std::io::Read) -> Result<Vec<String>, Error> {
        archive::load(self, input)
    }

    /// The image's ext4 root filesystem, made once per manifest digest.
    /// Blocking, and seconds long for big images: call it from
    /// `spawn_blocking` in async code.
    pub fn snapshot(&self, image: &Image) -> Result<PathBuf, Error> {
        snapshot::snapshot(self, &image.digest)
    }

    /// The snapshot of an image by manifest digest (a build's states,
    /// which have no record). Blocking, as `snapshot` is.
    pub fn snapshot_of(&self, digest: &str) -> Result<PathBuf, Error> {
        snapshot::snapshot(self, digest)
    }

    /// Names the image with manifest `digest` `reference` (a build's result).
    pub fn record(&self, reference: &Reference, digest: &str) -> Result<(), Error> {
        self.records.put(Record {
            reference: reference.to_string(),
            digest: digest.to_string(),
            index_digest: None,
            pulled_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }

    /// Held while adding content, so garbage collection waits (see the
    /// module doc); a build holds it from its first layer to its record.
    pub fn adding_content(&self) -> Result<Flock<File>, Error> {
        Ok(crate::atomic::lock_shared(&self.gc_lock)?)
    }

    /// Reads an image's config through its manifest in the content store.
    fn image(&self, reference: String, digest: String) -> Result<Image, Error> {
        let manifest = self.manifest(&digest)?;
        let config_digest = &manifest.config.digest;
        let config = ImageConfig::parse(&self.content.read(config_digest)?, &config_digest)?;
        Ok(Image {
            reference,
            digest,
            config: config.run_config(),
            platform: config.platform,
        })
    }

    fn manifest(&self, digest: &str) -> Result<manifest::Manifest, Error> {
        match Document::parse(&self.content.read(&Digest::parse(digest)?)?, &digest)? {
            Document::Manifest(manifest) => Ok(manifest),
            Document::Index(_) => Err(Error::InvalidManifest {
                digest: digest.to_string(),
                reason: "it is an index where a platform manifest was expected".to_string(),
            }),
        }
    }
}
