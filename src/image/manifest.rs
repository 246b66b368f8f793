//! The few parts of OCI and Docker v2 manifests, indexes and image configs
//! that pulling and unpacking need. Unknown fields are ignored, so the two
//! formats share one set of types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Digest;
use super::platform::Platform;
use super::{Error, RunConfig};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Every manifest type we can pull, for the registry's `Accept` header.
pub const ACCEPTED_MANIFESTS: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// A pointer to a blob: a layer, a config, or (in an index) a manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// One platform's image: its config and its layers, bottom first.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// OCI or Docker; OCI when the document does not say.
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// A manifest or an index, told apart by `mediaType` or, when a registry
/// leaves that out (it is optional in OCI), by which list the document has.
pub enum Document {
    Manifest(Manifest),
    Index(Vec<Descriptor>),
}

impl Document {
    pub fn parse(bytes: &[u8], digest: &dyn std::fmt::Display) -> Result<Document, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            media_type: Option<String>,
            manifests: Option<Vec<Descriptor>>,
            config: Option<Descriptor>,
            layers: Option<Vec<Descriptor>>,
        }
        let invalid = |reason: String| Error::InvalidManifest {
            digest: digest.to_string(),
            reason,
        };
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        match (
            probe.media_type.as_deref(),
            probe.manifests,
            probe.config,
            probe.layers,
        ) {
            (Some(OCI_INDEX | DOCKER_MANIFEST_LIST) | None, Some(manifests), None, _) => {
                Ok(Document::Index(manifests))
            }
            (Some(OCI_MANIFEST | DOCKER_MANIFEST) | None, None, Some(config), Some(layers)) => {
                Ok(Document::Manifest(Manifest {
                    media_type: probe.media_type.unwrap_or_else(|| OCI_MANIFEST.to_string()),
                    config,
                    layers,
                }))
            }
            (Some(other), ..) if !ACCEPTED_MANIFESTS.contains(&other) => {
                Err(invalid(format!("unsupported media type {other}")))
            }
            _ => Err(invalid(
                "it is neither an image manifest nor an index".to_string(),
            )),
        }
    }
}

/// An image config (OCI or Docker), whole: `build` edits and writes it
/// back, so fields we do not interpret are kept in `extra`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(flatten)]
    pub platform: Platform,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The layers' uncompressed digests, bottom first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".to_string(),
            diff_ids: Vec::new(),
        }
    }
}

/// What made one layer (or, with `empty_layer`, one config change).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// The image config's `config` object, with Docker's extensions (`Shell`,
/// `Healthcheck`, `OnBuild`) that OCI leaves out; Docker writes `null`
/// for empty lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `EXPOSE` ports (`80/tcp`), as the keys of an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `VOLUME` paths, as the keys of an object (`{"/data": {}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Docker's `HEALTHCHECK`, durations in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    #[serde(default)]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8], digest: &dyn std::fmt::Display) -> Result<ImageConfig, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidConfig {
            digest: digest.to_string(),
            reason: e.to_string(),
        })
    }

    /// A config for an image with no layers yet (`FROM scratch`).
    pub fn empty(platform: Platform) -> ImageConfig {
        ImageConfig {
            created: None,
            author: None,
            platform,
            config: Some(ContainerConfig::default()),
            rootfs: RootFs::default(),
            history: Vec::new(),
            extra: BTreeMap::new(),
        }
    }

    pub fn run_config(&self) -> RunConfig {
        let c = self.config.clone().unwrap_or_default();
        RunConfig {
            env: c.env.unwrap_or_default(),
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
            volumes: c.volumes.unwrap_or_default().into_keys().collect(),
        }
    }
}

/// A manifest as we write it (`build`, `load`): OCI unless a Docker
/// archive's layers say otherwise.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestDocument<'a> {
    pub schema_version: u32,
    pub media_type: &'a str,
    pub config: &'a Descriptor,
    pub layers: &'a [Descriptor],
}

impl ManifestDocument<'_> {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest serializes")
    }
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn of_layer(media_type: &str) -> Result<Compression, Error> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => {
                Ok(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Ok(Compression::Zstd)
            }
            other => Err(Error::UnsupportedLayer(other.to_string())),
        }
    }
}

/// The best entry of an index for `platform`; on a tie the first wins, as the
/// index order is the publisher's preference.
pub fn select<'a>(entries: &'a [Descriptor], platform: &Platform) -> Option<&'a Descriptor> {
    let mut best: Option<(u8, &Descriptor)> = None;
    for entry in entries {
        let Some(score) = entry.platform.as_ref().and_then(|p| platform.score(p)) else {
            continue;
        };
        if best.is_none_or(|(top, _)| score > top) {
            best = Some((score, entry));
        }
    }
    best.map(|(_, entry)| entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `OS/ARCH[/VARIANT]` as an index entry's platform field has it.
    fn platform(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        }
    }

    /// Every entry name the tests use.
    const NAMES: [&str; 11] = [
        "amd64",
        "any",
        "arm64",
        "attestation",
        "bare",
        "first",
        "second",
        "v6",
        "v7",
        "v9",
        "win",
    ];

    /// An index entry whose digest stands for `name`.
    fn entry(name: &str, p: Option<Platform>) -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: crate::image::Digest::of(name.as_bytes()),
            size: 1,
            platform: p,
        }
    }

    /// The name of the entry chosen.
    fn pick(entries: &[Descriptor], p: &Platform) -> Option<String> {
        let chosen = select(entries, p)?;
        NAMES
            .into_iter()
            .find(|n| crate::image::Digest::of(n.as_bytes()) == chosen.digest)
            .map(String::from)
    }

    #[test]
    fn picks_os_and_architecture() {
        let entries = [
            entry("arm64", Some(platform("linux", "arm64", Some("v8")))),
            entry("win", Some(platform("windows", "amd64", None))),
            entry("amd64", Some(platform("linux", "amd64", None))),
            entry("attestation", None),
        ];
        let amd64 = platform("linux", "amd64", None);
        assert_eq!(pick(&entries, &amd64).as_deref(), Some("amd64"));
        let arm64 = platform("linux", "arm64", Some("v8"));
        assert_eq!(pick(&entries, &arm64).as_deref(), Some("arm64"));
        assert_eq!(pick(&entries, &platform("linux", "riscv64", None)), None);
    }

    #[test]
    fn arm64_without_variant_means_v8() {
        let v8 = platform("linux", "arm64", Some("v8"));
        let bare = [entry("bare", Some(platform("linux", "arm64", None)))];
        assert_eq!(pick(&bare, &v8).as_deref(), Some("bare"));
        let v9_only = [entry("v9", Some(platform("linux", "arm64", Some("v9"))))];
        assert_eq!(pick(&v9_only, &v8), None);
        // A host described without a variant is still v8.
        assert_eq!(
            pick(&bare, &platform("linux", "arm64", None)).as_deref(),
            Some("bare")
        );
    }

    #[test]
    fn exact_variant_beats_unspecified() {
        let entries = [
            entry("any", Some(platform("linux", "arm", None))),
            entry("v6", Some(platform("linux", "arm", Some("v6")))),
            entry("v7", Some(platform("linux", "arm", Some("v7")))),
        ];
        let v7 = platform("linux", "arm", Some("v7"));
        assert_eq!(pick(&entries, &v7).as_deref(), Some("v7"));
        let v5 = platform("linux", "arm", Some("v5"));
        assert_eq!(pick(&entries, &v5).as_deref(), Some("any"));
    }

    #[test]
    fn first_of_equals_wins() {
        let entries = [
            entry("first", Some(platform("linux", "amd64", None))),
            entry("second", Some(platform("linux", "amd64", None))),
        ];
        assert_eq!(
            pick(&entries, &platform("linux", "amd64", None)).as_deref(),
            Some("first")
        );
    }

    const D: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn tells_manifests_from_indexes() {
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":3,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        );
        let Document::Index(entries) = Document::parse(index.as_bytes(), &D).unwrap() else {
            panic!("not an index");
        };
        assert_eq!(
            entries[0].platform.as_ref().unwrap().to_string(),
            "linux/arm64/v8"
        );

        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"x","digest":"{D}","size":1}},"layers":[{{"mediaType":"y","digest":"{D}","size":2}}]}}"#
        );
        let Document::Manifest(m) = Document::parse(manifest.as_bytes(), &D).unwrap() else {
            panic!("not a manifest");
        };
        assert_eq!((m.config.size, m.layers.len(), m.layers[0].size), (1, 1, 2));

        let err = Document::parse(br#"{"mediaType":"application/vnd.example+json"}"#, &D)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("unsupported media type application/vnd.example+json"),
            "{err}"
        );
        assert!(Document::parse(b"not json", &D).is_err());
    }

    #[test]
    fn reads_run_config_including_docker_nulls() {
        let config = br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Entrypoint":null,"Cmd":["sh","-c","x"],"WorkingDir":"/w","User":"1000:1000"}}"#;
        let parsed = ImageConfig::parse(config, &D).unwrap();
        assert_eq!(parsed.platform.architecture, "amd64");
        let run = parsed.run_config();
        assert_eq!(run.env, ["A=1"]);
        assert!(run.entrypoint.is_empty());
        assert_eq!(run.cmd, ["sh", "-c", "x"]);
        assert_eq!(
            (run.working_dir.as_str(), run.user.as_str()),
            ("/w", "1000:1000")
        );

        let bare = ImageConfig::parse(br#"{"architecture":"arm64","os":"linux"}"#, &D).unwrap();
        assert!(bare.run_config().cmd.is_empty());
    }

    #[test]
    fn config_round_trips_fields_it_does_not_interpret() {
        let docker = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "os.version": "x",
            "created": "2024-01-01T00:00:00Z",
            "container_config": {"Hostname": "abc"},
            "config": {
                "Env": ["PATH=/bin"],
                "Cmd": ["sh"],
                "ArgsEscaped": true,
                "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30000000000u64, "Retries": 3},
                "OnBuild": ["RUN echo hi"],
                "Shell": ["/bin/bash", "-c"],
                "ExposedPorts": {"80/tcp": {}}
            },
            "rootfs": {"type": "layers", "diff_ids": [D]},
            "history": [{"created_by": "/bin/sh -c #(nop) CMD [\"sh\"]", "empty_layer": true}]
        });
        let parsed = ImageConfig::parse(docker.to_string().as_bytes(), &D).unwrap();
        let inner = parsed.config.as_ref().unwrap();
        assert_eq!(inner.healthcheck.as_ref().unwrap().retries, Some(3));
        assert_eq!(
            inner.shell.as_deref(),
            Some(&["/bin/bash".to_string(), "-c".into()][..])
        );
        assert!(parsed.history[0].empty_layer);
        let back: Value = serde_json::to_value(&parsed).unwrap();
        assert_eq!(back, docker);
    }

    #[test]
    fn layer_compression_by_media_type() {
        use Compression::*;
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", None),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Gzip),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Zstd),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", Gzip),
        ];
        for (media_type, want) in cases {
            assert_eq!(
                Compression::of_layer(media_type).unwrap(),
                want,
                "{media_type}"
            );
        }
        assert!(Compression::of_layer("application/vnd.oci.image.config.v1+json").is_err());
    }
}
