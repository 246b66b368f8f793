//! New images, written into the store by `build`: layers streamed through
//! gzip into the content store (hashed twice on the way: the uncompressed
//! tar's digest is the config's `diff_id`, the compressed blob's the
//! manifest's), then a config and a manifest naming them. Everything goes
//! through the content store's verified ingest, as pulled content does.

use std::io::Write;

use sha2::{Digest as _, Sha256};

use super::manifest::{
    Descriptor, ImageConfig, ManifestDocument, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST,
};
use super::store::Ingest;
use super::{Digest, Error, ImageStore};

/// Where a layer's tar is written. Dropping it without `finish` leaves
/// nothing behind (the ingest file goes with it).
pub struct LayerWriter {
    gzip: flate2::write::GzEncoder<Counted>,
    diff: Sha256,
}

/// A layer in the store: how the manifest names it, and the digest of its
/// uncompressed tar for the config's `rootfs.diff_ids`.
#[derive(Debug, Clone)]
pub struct NewLayer {
    pub descriptor: Descriptor,
    pub diff_id: String,
}

/// The ingest as a `Write`, counting what it is given.
struct Counted {
    ingest: Ingest,
    size: u64,
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.ingest.write(buf).map_err(std::io::Error::other)?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Write for LayerWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.gzip.write(buf)?;
        self.diff.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.gzip.flush()
    }
}

impl LayerWriter {
    /// Compresses the rest, stores the blob and says what it is.
    pub fn finish(self) -> Result<NewLayer, Error> {
        let io = |e| Error::from(crate::io_error::io("a new layer")(e));
        let diff_id = String::from(Digest::from_hasher(self.diff));
        let Counted { ingest, size } = self.gzip.finish().map_err(io)?;
        let digest = ingest.commit()?;
        Ok(NewLayer {
            descriptor: Descriptor {
                media_type: OCI_LAYER_GZIP.to_string(),
                digest,
                size,
                platform: None,
            },
            diff_id,
        })
    }
}

impl ImageStore {
    /// Starts a new gzip layer. The gzip header carries no time or name, so
    /// the same tar always gives the same blob.
    pub fn new_layer(&self) -> Result<LayerWriter, Error> {
        let counted = Counted {
            ingest: self.content.ingest_unnamed()?,
            size: 0,
        };
        Ok(LayerWriter {
            gzip: flate2::GzBuilder::new().write(counted, flate2::Compression::fast()),
            diff: Sha256::new(),
        })
    }

    /// Stores a config and an OCI manifest for it and `layers` (which must
    /// be stored already); returns the manifest's digest.
    pub fn write_image(
        &self,
        config: &ImageConfig,
        layers: &[Descriptor],
    ) -> Result<String, Error> {
        let config_bytes = serde_json::to_vec(config).expect("an image config serializes");
        let config_digest = Digest::of(&config_bytes);
        self.content.put(&config_digest, &config_bytes)?;
        let manifest = ManifestDocument {
            schema_version: 2,
            media_type: OCI_MANIFEST,
            config: &Descriptor {
                media_type: OCI_CONFIG.to_string(),
                digest: config_digest,
                size: config_bytes.len() as u64,
                platform: None,
            },
            layers,
        }
        .to_bytes();
        let digest = Digest::of(&manifest);
        self.content.put(&digest, &manifest)?;
        Ok(digest.into())
    }

    /// An image's whole config and its layers, by manifest digest.
    pub fn image_parts(&self, digest: &str) -> Result<(ImageConfig, Vec<Descriptor>), Error> {
        let manifest = self.manifest(digest)?;
        let config_digest = &manifest.config.digest;
        let config = ImageConfig::parse(&self.content.read(config_digest)?, config_digest)?;
        Ok((config, manifest.layers))
    }

    /// Whether a blob is stored, with the size its descriptor says.
    pub fn has_blob(&self, blob: &Descriptor) -> bool {
        self.content.contains(&blob.digest, blob.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Platform;

    #[test]
    fn same_tar_same_layer_and_the_image_reads_back() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let layer = |data: &[u8]| {
            let mut writer = store.new_layer().unwrap();
            writer.write_all(data).unwrap();
            writer.finish().unwrap()
        };
        let a = layer(b"same bytes");
        let b = layer(b"same bytes");
        assert_eq!(a.descriptor.digest, b.descriptor.digest);
        assert_eq!(a.diff_id, Digest::of(b"same bytes").as_str());
        assert_ne!(
            a.descriptor.digest.as_str(),
            a.diff_id,
            "the blob is compressed"
        );
        assert_eq!(
            store.content.read(&a.descriptor.digest).unwrap().len() as u64,
            a.descriptor.size
        );

        let mut config = ImageConfig::empty(Platform::host());
        config.rootfs.diff_ids.push(a.diff_id.clone());
        let digest = store
            .write_image(&config, std::slice::from_ref(&a.descriptor))
            .unwrap();
        assert!(store.has_blob(&a.descriptor));
        let (read, layers) = store.image_parts(&digest).unwrap();
        assert_eq!(read.rootfs.diff_ids, [a.diff_id]);
        assert_eq!(layers[0].digest, a.descriptor.digest);

        store.content.remove(&a.descriptor.digest).unwrap();
        assert!(!store.has_blob(&a.descriptor));

        // An unfinished layer leaves nothing in the ingest directory.
        let mut unfinished = store.new_layer().unwrap();
        unfinished.write_all(b"partial").unwrap();
        drop(unfinished);
        assert_eq!(
            std::fs::read_dir(root.path().join("content/ingest"))
                .unwrap()
                .count(),
            0
        );
    }
}
