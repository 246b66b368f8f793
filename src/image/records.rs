//! Image records: which manifest each pulled reference names.
//!
//! One JSON file, `images/records.json`, replaced atomically under an flock on
//! `images/records.lock`, so concurrent pulls on one app root never lose each
//! other's updates and readers never see a half-written file (readers take no
//! lock: a rename is atomic). Everything else about an image (its config,
//! layers, size) is read from the content store by digest, so it cannot
//! disagree with the record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Error, IoContext, Reference};
use crate::atomic;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The normalized reference, as `Reference`'s Display writes it.
    pub reference: String,
    /// The platform manifest the reference resolved to.
    pub digest: String,
    /// The index (manifest list) the reference pointed at, for multi-platform images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// Seconds since the Unix epoch.
    pub pulled_at: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct RecordFile {
    images: BTreeMap<String, Record>,
}

pub struct Records {
    file: PathBuf,
    lock: PathBuf,
}

impl Records {
    pub fn open(dir: &Path) -> Result<Records, Error> {
        std::fs::create_dir_all(dir).at(dir)?;
        atomic::remove_orphans(dir);
        Ok(Records {
            file: dir.join("records.json"),
            lock: dir.join("records.lock"),
        })
    }

    /// The record for a reference; a digest reference also finds an image that
    /// was pulled by tag, since it names the same content.
    pub fn get(&self, reference: &Reference) -> Result<Option<Record>, Error> {
        let images = self.load()?.images;
        if let Some(record) = images.get(&reference.to_string()) {
            return Ok(Some(record.clone()));
        }
        let Some(digest) = reference.digest() else {
            return Ok(None);
        };
        let name = reference.name();
        Ok(images.into_values().find(|r| {
            let same_repo = r
                .reference
                .parse::<Reference>()
                .is_ok_and(|p| p.name() == name);
            same_repo && (r.digest == digest || r.index_digest.as_deref() == Some(digest))
        }))
    }

    pub fn put(&self, record: Record) -> Result<(), Error> {
        self.update(|images| {
            images.insert(record.reference.clone(), record);
        })
    }

    /// Every record, ordered by reference.
    pub fn list(&self) -> Result<Vec<Record>, Error> {
        Ok(self.load()?.images.into_values().collect())
    }

    /// Deletes the records for these references; returns those that existed.
    pub fn remove(&self, references: &[String]) -> Result<Vec<Record>, Error> {
        let mut removed = Vec::new();
        self.update(|images| {
            removed = references.iter().filter_map(|r| images.remove(r)).collect();
        })?;
        Ok(removed)
    }

    /// Read-modify-write under the lock, so concurrent writers never lose
    /// each other's changes.
    fn update(&self, change: impl FnOnce(&mut BTreeMap<String, Record>)) -> Result<(), Error> {
        let _lock = atomic::lock(&self.lock)?;
        let mut file = self.load()?;
        change(&mut file.images);
        let json = serde_json::to_vec_pretty(&file).expect("records serialize");
        atomic::write_file(&self.file, &json, 0o644)?;
        Ok(())
    }

    fn load(&self) -> Result<RecordFile, Error> {
        match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Records {
                path: self.file.clone(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RecordFile::default()),
            Err(e) => Err(e).at(&self.file),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn record(reference: &str, digest: &str, index: Option<&str>) -> Record {
        Record {
            reference: reference.parse::<Reference>().unwrap().to_string(),
            digest: digest.into(),
            index_digest: index.map(Into::into),
            pulled_at: 1,
        }
    }

    #[test]
    fn put_get_and_digest_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(dir.path()).unwrap();
        let r = |s: &str| s.parse::<Reference>().unwrap();
        assert_eq!(records.get(&r("busybox")).unwrap(), None);

        records.put(record("busybox", A, Some(B))).unwrap();
        records
            .put(record("localhost:5000/app:1", A, None))
            .unwrap();
        assert_eq!(
            records.get(&r("busybox:latest")).unwrap().unwrap().digest,
            A
        );
        // Replacing a tag's record keeps one entry.
        records.put(record("busybox", B, None)).unwrap();
        assert_eq!(records.get(&r("busybox")).unwrap().unwrap().digest, B);

        let by_digest = records
            .get(&r(&format!("localhost:5000/app@{A}")))
            .unwrap()
            .unwrap();
        assert_eq!(by_digest.reference, "localhost:5000/app:1");

        let removed = records
            .remove(&["localhost:5000/app:1".into(), "nope".into()])
            .unwrap();
        assert_eq!(removed.len(), 1);
        let left: Vec<String> = records
            .list()
            .unwrap()
            .into_iter()
            .map(|r| r.reference)
            .collect();
        assert_eq!(left, ["docker.io/library/busybox:latest"]);
        assert_eq!(
            records
                .get(&r(&format!("localhost:5000/other@{A}")))
                .unwrap(),
            None
        );
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("records.json"), b"{").unwrap();
        let err = records
            .get(&"busybox".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("image records at "), "{err}");
    }
}
