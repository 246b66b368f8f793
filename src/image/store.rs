//! The content store: blobs addressed by digest under `content/blobs/sha256/`.
//!
//! A blob only ever appears there complete and verified: it is written to
//! `content/ingest/`, hashed as it streams in, checked against the expected
//! digest and size, fsynced and renamed into place. Two processes fetching the
//! same blob each use their own ingest file; the second rename replaces
//! identical bytes, so neither sees a partial blob.
//!
//! A download cut short by the network keeps what it received as a
//! partial, `content/partial/<hex>`, for the next fetch of that digest to
//! resume (see registry.rs). A partial is only ever a prefix of what the
//! registry sent, fsynced before it is renamed there, so a crash leaves a
//! valid partial or none. A fetch takes it by renaming it back into an
//! ingest file of its own: the rename is atomic, so of two processes
//! fetching the same blob exactly one gets it and the other starts from
//! byte 0, and neither ever appends to a file the other writes. No lock is
//! needed, and none can be left behind. Putting a partial back replaces
//! whatever another process put there, which is another valid prefix.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::{Digest, Error, IoContext};
use crate::atomic;

/// Cheap to clone (three paths), so blocking work can take it to a thread.
#[derive(Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
    partials: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) the store rooted at `dir` (`<app root>/content`).
    pub fn open(dir: &Path) -> Result<ContentStore, Error> {
        let blobs = dir.join("blobs/sha256");
        let ingest = dir.join("ingest");
        let partials = dir.join("partial");
        for d in [&blobs, &ingest, &partials] {
            std::fs::create_dir_all(d).at(d)?;
        }
        atomic::remove_orphans(&ingest);
        Ok(ContentStore {
            blobs,
            ingest,
            partials,
        })
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
            _ => crate::io_error::at(&path)(e).into(),
        })
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, Error> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingContent(digest.to_string()),
            _ => crate::io_error::at(&path)(e).into(),
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
        self.start(Some(Expected::new(digest, size)))
    }

    /// Starts writing a blob that is expected to have this digest and size,
    /// from where the partial of an earlier download left off, if there is
    /// one (then `Ingest::written` says how far): the partial is taken and
    /// read through the hasher, so the digest covers every byte. A partial
    /// that cannot be a proper prefix (empty, or as long as the blob) is
    /// discarded. Blocking: it reads the partial.
    pub fn resume(&self, digest: &Digest, size: u64) -> Result<Ingest, Error> {
        let partial = self.partials.join(digest.hex());
        let temp = atomic::temp_path(&self.ingest, digest.hex());
        match std::fs::rename(&partial, &temp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self.ingest(digest, size);
            }
            Err(e) => return Err(e).at(&partial),
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&temp)
            .at(&temp)?;
        let mut ingest = self.writing(file, temp, Some(Expected::new(digest, size)));
        ingest.written = std::io::copy(&mut &ingest.file, &mut ingest.hasher).at(&ingest.temp)?;
        if ingest.written == 0 || ingest.written >= size {
            return self.ingest(digest, size);
        }
        Ok(ingest)
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
        Ok(self.writing(file, temp, expected))
    }

    fn writing(&self, file: File, temp: PathBuf, expected: Option<Expected>) -> Ingest {
        Ingest {
            file,
            temp,
            blobs: self.blobs.clone(),
            partials: self.partials.clone(),
            expected,
            written: 0,
            hasher: Sha256::new(),
            committed: false,
        }
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
        remove_sized(&self.path(digest))
    }

    /// The bytes the partials of interrupted downloads hold.
    pub fn partial_bytes(&self) -> Result<u64, Error> {
        Ok(self.partials()?.iter().map(|(_, size)| size).sum())
    }

    /// Deletes every partial; returns the bytes freed.
    pub fn remove_partials(&self) -> Result<u64, Error> {
        let mut freed = 0;
        for (path, _) in self.partials()? {
            freed += remove_sized(&path)?;
        }
        Ok(freed)
    }

    fn partials(&self) -> Result<Vec<(PathBuf, u64)>, Error> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.partials).at(&self.partials)? {
            let entry = entry.at(&self.partials)?;
            found.push((entry.path(), entry.metadata().map_or(0, |m| m.len())));
        }
        Ok(found)
    }
}

/// Deletes a file; returns its size (0 if it was already gone).
fn remove_sized(path: &Path) -> Result<u64, Error> {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    match std::fs::remove_file(path) {
        Ok(()) => Ok(size),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).at(path),
    }
}

struct Expected {
    digest: Digest,
    size: u64,
}

impl Expected {
    fn new(digest: &Digest, size: u64) -> Expected {
        Expected {
            digest: digest.clone(),
            size,
        }
    }
}

/// A blob being written. Dropping it without `commit` deletes the partial file.
pub struct Ingest {
    file: File,
    temp: PathBuf,
    blobs: PathBuf,
    partials: PathBuf,
    expected: Option<Expected>,
    written: u64,
    hasher: Sha256,
    committed: bool,
}

impl Ingest {
    /// The bytes it holds: more than 0 from the start when it resumes a partial.
    pub fn written(&self) -> u64 {
        self.written
    }

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
        // The whole blob makes a partial of it (another process's) useless.
        let _ = std::fs::remove_file(self.partials.join(actual.hex()));
        Ok(actual)
    }

    /// Keeps the bytes written so far as the partial of the expected blob,
    /// for the next download of it to resume; call it only when the
    /// transfer failed, not the bytes or the disk. Best effort: if they
    /// cannot be made durable (the disk is full after all) they are
    /// deleted, which costs the next download only time. Blocking: fsync.
    pub fn keep_partial(mut self) {
        let Some(expected) = &self.expected else {
            return;
        };
        if self.written == 0 || self.written >= expected.size {
            return;
        }
        let partial = self.partials.join(expected.digest.hex());
        if self.file.sync_all().is_ok() && atomic::commit(&self.temp, &partial).is_ok() {
            self.committed = true;
        }
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

    #[test]
    fn a_kept_partial_is_resumed_by_one_ingest_and_dropped_when_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let digest = sha(b"0123456789");

        let mut first = store.resume(&digest, 10).unwrap();
        assert_eq!(first.written(), 0, "nothing to resume yet");
        first.write(b"0123").unwrap();
        first.keep_partial();
        assert_eq!(store.partial_bytes().unwrap(), 4);
        assert_eq!(entries(&dir.path().join("ingest")), 0);

        // Taken by one: another ingest of the blob meanwhile starts over.
        let mut resumed = store.resume(&digest, 10).unwrap();
        assert_eq!(resumed.written(), 4);
        assert_eq!(store.resume(&digest, 10).unwrap().written(), 0);
        resumed.write(b"456789").unwrap();
        assert_eq!(resumed.commit().unwrap(), digest);
        assert_eq!(store.read(&digest).unwrap(), b"0123456789");

        // Bytes that are no prefix of the blob fail its digest, and go.
        let other = sha(b"abcdef");
        let mut wrong = store.ingest(&other, 6).unwrap();
        wrong.write(b"xyz").unwrap();
        wrong.keep_partial();
        let mut resumed = store.resume(&other, 6).unwrap();
        assert_eq!(resumed.written(), 3);
        resumed.write(b"def").unwrap();
        assert!(matches!(
            resumed.commit(),
            Err(Error::DigestMismatch { .. })
        ));
        assert_eq!(store.partial_bytes().unwrap(), 0);

        // Nothing is kept of an empty ingest, a whole one or an unnamed one.
        store.ingest(&other, 6).unwrap().keep_partial();
        let mut whole = store.ingest(&other, 6).unwrap();
        whole.write(b"abcdef").unwrap();
        whole.keep_partial();
        let mut unnamed = store.ingest_unnamed().unwrap();
        unnamed.write(b"abc").unwrap();
        unnamed.keep_partial();
        assert_eq!(store.partial_bytes().unwrap(), 0);

        let mut kept = store.ingest(&other, 6).unwrap();
        kept.write(b"abc").unwrap();
        kept.keep_partial();
        assert_eq!(store.remove_partials().unwrap(), 3);
        assert_eq!(store.resume(&other, 6).unwrap().written(), 0);
        assert_eq!(entries(&dir.path().join("partial")), 0);
        assert_eq!(entries(&dir.path().join("ingest")), 0);
    }
}
