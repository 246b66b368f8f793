//! The content store: blobs addressed by digest under `content/blobs/sha256/`.
//!
//! A blob only ever appears there complete and verified: it is written to
//! `content/ingest/`, hashed as it streams in, checked against the expected
//! digest and size, fsynced and renamed into place. Two processes fetching the
//! same blob each use their own ingest file; the second rename replaces
//! identical bytes, so neither sees a partial blob.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::{Digest, Error, IoContext};
use crate::atomic;

pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) the store rooted at `dir` (`<app root>/content`).
    pub fn open(dir: &Path) -> Result<ContentStore, Error> {
        let blobs = dir.join("blobs/sha256");
        let ingest = dir.join("ingest");
        for d in [&blobs, &ingest] {
            std::fs::create_dir_all(d).at(d)?;
        }
        atomic::remove_orphans(&ingest);
        Ok(ContentStore { blobs, ingest })
    }

    /// Where a blob lives: a `Digest` is safe to make a file name of.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Whether the blob is already stored (with the size its descriptor claims).
    pub fn contains(&self, digest: &Digest, size: u64) -> bool {
        std::fs::metadata(self.path(digest)).is_ok_and(|m| m.len() == size)
    }

    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, Error> {
        let path = self.path(digest);
        std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingContent(digest.to_string()),
            _ => Error::Io { path, source: e },
        })
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, Error> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingContent(digest.to_string()),
            _ => Error::Io { path, source: e },
        })
    }

    /// Stores a blob held in memory (manifests, indexes), verifying it first.
    pub fn put(&self, digest: &Digest, bytes: &[u8]) -> Result<(), Error> {
        let mut ingest = self.ingest(digest, bytes.len() as u64)?;
        ingest.write(bytes)?;
        ingest.commit().map(drop)
    }

    /// Starts writing a blob that is expected to have this digest and size.
    pub fn ingest(&self, digest: &Digest, size: u64) -> Result<Ingest, Error> {
        self.start(Some(Expected {
            digest: digest.clone(),
            size,
        }))
    }

    /// Starts writing a blob whose digest is only known once it is written
    /// (the layers of a `docker save` archive, which are named by directory).
    pub fn ingest_unnamed(&self) -> Result<Ingest, Error> {
        self.start(None)
    }

    fn start(&self, expected: Option<Expected>) -> Result<Ingest, Error> {
        let stem = expected.as_ref().map_or("blob", |e| e.digest.hex());
        let temp = atomic::temp_path(&self.ingest, stem);
        let file = File::create(&temp).at(&temp)?;
        Ok(Ingest {
            file,
            temp,
            blobs: self.blobs.clone(),
            expected,
            written: 0,
            hasher: Sha256::new(),
            committed: false,
        })
    }

    /// Every stored blob's digest.
    pub fn digests(&self) -> Result<Vec<Digest>, Error> {
        let entries = std::fs::read_dir(&self.blobs).at(&self.blobs)?;
        let mut digests = Vec::new();
        for entry in entries {
            let name = entry.at(&self.blobs)?.file_name();
            if let Some(digest) = Digest::from_hex(&name.to_string_lossy()) {
                digests.push(digest);
            }
        }
        Ok(digests)
    }

    /// Deletes a blob; returns the bytes freed (0 if it was already gone).
    pub fn remove(&self, digest: &Digest) -> Result<u64, Error> {
        let path = self.path(digest);
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).at(&path),
        }
    }
}

struct Expected {
    digest: Digest,
    size: u64,
}

/// A blob being written. Dropping it without `commit` deletes the partial file.
pub struct Ingest {
    file: File,
    temp: PathBuf,
    blobs: PathBuf,
    expected: Option<Expected>,
    written: u64,
    hasher: Sha256,
    committed: bool,
}

impl Ingest {
    /// Appends bytes; fails as soon as the blob grows past its declared size,
    /// so a misbehaving registry cannot fill the disk.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.written += bytes.len() as u64;
        if let Some(expected) = &self.expected
            && self.written > expected.size
        {
            return Err(self.size_mismatch(expected));
        }
        self.hasher.update(bytes);
        self.file.write_all(bytes).at(&self.temp)
    }

    /// Verifies size and digest, then moves the blob into the store durably.
    /// Returns its digest.
    pub fn commit(mut self) -> Result<Digest, Error> {
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if let Some(expected) = &self.expected {
            if self.written != expected.size {
                return Err(self.size_mismatch(expected));
            }
            if actual != expected.digest {
                return Err(Error::DigestMismatch {
                    expected: expected.digest.to_string(),
                    actual: actual.into(),
                });
            }
        }
        self.file.sync_all().at(&self.temp)?;
        let target = self.blobs.join(actual.hex());
        atomic::commit(&self.temp, &target)?;
        self.committed = true;
        Ok(actual)
    }

    fn size_mismatch(&self, expected: &Expected) -> Error {
        Error::SizeMismatch {
            digest: expected.digest.to_string(),
            expected: expected.size,
            actual: self.written,
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> Digest {
        Digest::of(bytes)
    }

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn stores_verified_blobs_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let digest = sha(b"hello");

        store.put(&digest, b"hello").unwrap();
        assert!(store.contains(&digest, 5));
        assert!(!store.contains(&digest, 6));
        assert_eq!(store.read(&digest).unwrap(), b"hello");

        let other = sha(b"other");
        let err = store.put(&other, b"hellO").unwrap_err().to_string();
        assert_eq!(
            err,
            format!("digest mismatch for blob {other}: got {}", sha(b"hellO"))
        );
        let mut ingest = store.ingest(&other, 5).unwrap();
        let err = ingest.write(b"too long").unwrap_err().to_string();
        drop(ingest);
        assert!(
            err.starts_with(&format!("size mismatch for blob {other}")),
            "{err}"
        );
        assert!(!store.contains(&other, 5));
        assert!(matches!(store.read(&other), Err(Error::MissingContent(_))));

        let mut unnamed = store.ingest_unnamed().unwrap();
        unnamed.write(b"any").unwrap();
        assert_eq!(unnamed.commit().unwrap(), sha(b"any"));
        assert_eq!(store.digests().unwrap().len(), 2);
        assert_eq!(store.remove(&sha(b"any")).unwrap(), 3);
        assert_eq!(store.remove(&sha(b"any")).unwrap(), 0);

        assert_eq!(entries(&dir.path().join("blobs/sha256")), 1);
        assert_eq!(
            entries(&dir.path().join("ingest")),
            0,
            "failed ingests are cleaned up"
        );
    }
}
