//! Images: references, the registry client, the content store, image records
//! and the ext4 snapshot of each image. (Filled in by the image work.)

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A parsed image reference (`alpine`, `127.0.0.1:5000/ns/name:tag`, `name@sha256:...`).
#[derive(Debug, Clone)]
pub struct Reference {}

impl std::str::FromStr for Reference {
    type Err = Error;
    fn from_str(_s: &str) -> Result<Self, Error> {
        unimplemented!()
    }
}

/// What the image says about how to run it (the OCI config's `config` object).
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

/// An image in the local store.
#[derive(Debug, Clone)]
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
pub struct ImageStore {}

impl ImageStore {
    pub fn open(_app_root: &Path) -> Result<Self, Error> {
        unimplemented!()
    }
    /// The image a reference names, if it is in the store.
    pub fn lookup(&self, _reference: &Reference) -> Result<Option<Image>, Error> {
        unimplemented!()
    }
    /// Pulls an image for the host platform into the store.
    pub async fn pull(
        &self,
        _reference: &Reference,
        _options: &PullOptions,
    ) -> Result<Image, Error> {
        unimplemented!()
    }
    /// The image's ext4 root filesystem, made once per manifest digest.
    pub fn snapshot(&self, _image: &Image) -> Result<PathBuf, Error> {
        unimplemented!()
    }
}
