//! Manifests, indexes and image configs as registries and archives hand
//! them over. Parsing must not panic; a config must survive being written
//! back (as `build` and `load` do, writer.rs) and parsed again unchanged;
//! a manifest must survive the same through `ManifestDocument`.
#![no_main]

use container::fuzzing::{Document, ManifestDocument};
use container::image::ImageConfig;
use libfuzzer_sys::fuzz_target;

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fuzz_target!(|data: &[u8]| {
    match Document::parse(data, &DIGEST) {
        Ok(Document::Manifest(manifest)) => {
            // "OCI or Docker; OCI when the document does not say."
            assert!(
                [
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json"
                ]
                .contains(&manifest.media_type.as_str()),
                "{}",
                manifest.media_type
            );
            let written = ManifestDocument {
                schema_version: 2,
                media_type: &manifest.media_type,
                config: &manifest.config,
                layers: &manifest.layers,
            }
            .to_bytes();
            let Ok(Document::Manifest(again)) = Document::parse(&written, &DIGEST) else {
                panic!(
                    "a written manifest is no manifest: {}",
                    String::from_utf8_lossy(&written)
                );
            };
            let json = |m: (&String, _, _)| serde_json::to_value(m).unwrap();
            assert_eq!(
                json((&again.media_type, &again.config, &again.layers)),
                json((&manifest.media_type, &manifest.config, &manifest.layers))
            );
        }
        Ok(Document::Index(entries)) => {
            let host = container::image::Platform::host();
            for platform in entries.iter().filter_map(|e| e.platform.as_ref()) {
                let _ = host.runs(platform);
            }
        }
        Err(_) => {}
    }

    if let Ok(config) = ImageConfig::parse(data, &DIGEST) {
        let _ = config.run_config();
        // writer.rs: `serde_json::to_vec(config).expect("an image config serializes")`.
        let written = serde_json::to_vec(&config).expect("an image config serializes");
        let again = ImageConfig::parse(&written, &DIGEST).unwrap_or_else(|e| {
            panic!(
                "a written config does not parse ({e}): {}",
                String::from_utf8_lossy(&written)
            )
        });
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&config).unwrap(),
            "{}",
            String::from_utf8_lossy(&written)
        );
    }
});
