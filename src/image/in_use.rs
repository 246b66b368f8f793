//! Which images containers use, so `image rm` and `image prune -a` leave them
//! alone. The runtime writes `containers/<id>/config.json` with an
//! `image_digest` field (the image's manifest digest); this is the reader.
//! A container without a readable config uses nothing we can know of.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

#[derive(Deserialize)]
struct ContainerConfig {
    image_digest: String,
}

/// Manifest digest -> the ID of one container using it.
pub fn images_in_use(app_root: &Path) -> BTreeMap<String, String> {
    let mut used = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(app_root.join("containers")) else {
        return used;
    };
    for entry in entries.flatten() {
        let Ok(bytes) = std::fs::read(entry.path().join("config.json")) else {
            continue;
        };
        if let Ok(config) = serde_json::from_slice::<ContainerConfig>(&bytes) {
            let id = entry.file_name().to_string_lossy().into_owned();
            used.entry(config.image_digest).or_insert(id);
        }
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_image_digests_of_containers() {
        let root = tempfile::tempdir().unwrap();
        assert!(images_in_use(root.path()).is_empty());
        for (id, config) in [
            ("a", r#"{"image_digest":"sha256:1","other":1}"#),
            ("b", "not json"),
            ("c", r#"{"image":"x"}"#),
        ] {
            let dir = root.path().join("containers").join(id);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("config.json"), config).unwrap();
        }
        std::fs::create_dir_all(root.path().join("containers/d")).unwrap();
        let used = images_in_use(root.path());
        assert_eq!(used.len(), 1);
        assert_eq!(used["sha256:1"], "a");
    }
}
