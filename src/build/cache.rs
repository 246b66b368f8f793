//! The build cache: the layer each `RUN`, `COPY` and `ADD` made, by a key
//! that chains everything the step's result depends on (its parent's key,
//! the instruction as expanded, the build arguments it sees, and for COPY
//! and ADD the digest of the tar they write). One small JSON file per key
//! under `build-cache/`; the layers themselves are in the content store,
//! and an entry whose layer was pruned from it is a miss.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::image::Descriptor;

/// What a step made, enough to put it on top of its parent again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub layer: Descriptor,
    pub diff_id: String,
    /// When the step first ran (RFC 3339), for the image's history.
    pub created: String,
}

pub struct Cache {
    dir: PathBuf,
}

/// A step's cache key: sha256 of its parts, each length-prefixed so no two
/// different lists of parts give the same bytes.
pub fn key(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

impl Cache {
    pub fn open(app_root: &Path) -> Result<Cache, std::io::Error> {
        let dir = app_root.join("build-cache");
        std::fs::create_dir_all(&dir)?;
        crate::atomic::remove_orphans(&dir);
        Ok(Cache { dir })
    }

    /// The entry for `key`; an unreadable one is a miss, not an error: the
    /// step just runs again and replaces it.
    pub fn get(&self, key: &str) -> Option<Entry> {
        let bytes = std::fs::read(self.dir.join(format!("{key}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn put(&self, key: &str, entry: &Entry) -> Result<(), crate::atomic::Error> {
        let bytes = serde_json::to_vec(entry).expect("a cache entry serializes");
        crate::atomic::write_file(&self.dir.join(format!("{key}.json")), &bytes, 0o644)
    }

    /// The entries' files.
    fn files(&self) -> impl Iterator<Item = std::path::PathBuf> {
        let entries = std::fs::read_dir(&self.dir).into_iter().flatten().flatten();
        entries
            .map(|e| e.path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
    }

    /// How many steps are cached.
    pub fn entries(&self) -> usize {
        self.files().count()
    }

    /// The layers the cache names: roots for garbage collection.
    pub fn layers(&self) -> std::collections::BTreeSet<String> {
        self.files()
            .filter_map(|path| std::fs::read(path).ok())
            .filter_map(|bytes| serde_json::from_slice::<Entry>(&bytes).ok())
            .map(|entry| entry.layer.digest.to_string())
            .collect()
    }

    /// Forgets everything (`builder prune`); returns how many entries went.
    pub fn clear(&self) -> usize {
        self.files()
            .filter(|path| std::fs::remove_file(path).is_ok())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_ones_miss() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::open(root.path()).unwrap();
        let k = key(&["parent", "RUN make"]);
        assert_ne!(k, key(&["parentRUN", " make"]), "parts are delimited");
        assert!(cache.get(&k).is_none());
        let entry = Entry {
            layer: Descriptor {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                digest: crate::image::Digest::of(b"layer"),
                size: 3,
                platform: None,
            },
            diff_id: format!("sha256:{}", "b".repeat(64)),
            created: "2026-01-01T00:00:00Z".into(),
        };
        cache.put(&k, &entry).unwrap();
        assert_eq!(cache.get(&k).unwrap().layer.digest, entry.layer.digest);
        assert!(cache.layers().contains(entry.layer.digest.as_str()));
        std::fs::write(root.path().join("build-cache/bad.json"), "{").unwrap();
        assert!(cache.get("bad").is_none());
        assert_eq!(
            cache.layers().len(),
            1,
            "a broken entry does not hide the others"
        );
        assert_eq!(cache.clear(), 2);
        assert!(cache.get(&k).is_none());
    }
}
