//! User settings, kept in `<app root>/properties.json` (`container system
//! property set KEY VALUE`), checked when set so that readers can trust them:
//! - `registry.domain`: the registry of image names without one;
//! - `network.default`: the network containers join when `run` names none
//!   (`none` for no network at all, as Docker's `"bridge": "none"`);
//! - `network.subnet`: the default network's subnet (Apple's property of the
//!   same name), taken when that network is next unused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::atomic;
use crate::io_error::at;

pub const REGISTRY_DOMAIN: &str = "registry.domain";
pub const NETWORK_DEFAULT: &str = "network.default";
pub const NETWORK_SUBNET: &str = "network.subnet";
const KNOWN: [&str; 3] = [REGISTRY_DOMAIN, NETWORK_DEFAULT, NETWORK_SUBNET];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown property {0} (known: {known})", known = KNOWN.join(", "))]
    Unknown(String),
    #[error("invalid value {value:?} for {key}: use {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("{path} is unreadable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
    #[error(transparent)]
    Atomic(#[from] atomic::Error),
}

pub struct Properties {
    file: PathBuf,
}

impl Properties {
    pub fn open(app_root: &Path) -> Properties {
        Properties {
            file: app_root.join("properties.json"),
        }
    }

    /// Every property that is set.
    pub fn list(&self) -> Result<BTreeMap<String, String>, Error> {
        match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                path: self.file.clone(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(at(&self.file)(e).into()),
        }
    }

    pub fn get(&self, key: &str) -> Result<Option<String>, Error> {
        check_key(key)?;
        Ok(self.list()?.remove(key))
    }

    /// Sets a property after checking its value; `None` clears it.
    pub fn set(&self, key: &str, value: Option<&str>) -> Result<(), Error> {
        check_key(key)?;
        if let Some(value) = value {
            check_value(key, value)?;
        }
        let dir = self.file.parent().expect("properties.json has a directory");
        std::fs::create_dir_all(dir).map_err(at(dir))?;
        let _lock = atomic::lock(&dir.join("properties.lock"))?;
        let mut all = self.list()?;
        match value {
            Some(value) => all.insert(key.to_string(), value.to_string()),
            None => all.remove(key),
        };
        let json = serde_json::to_vec_pretty(&all).expect("properties serialize");
        atomic::write_file(&self.file, &json, 0o644)?;
        Ok(())
    }
}

fn check_value(key: &str, value: &str) -> Result<(), Error> {
    let (valid, what) = match key {
        // Image records are kept as the text of their references and read
        // back from it: a domain that text would not read as a registry
        // (`myhost/app` is Docker Hub's) would name other images.
        REGISTRY_DOMAIN => (
            crate::image::is_valid_registry(value) && crate::image::reads_as_registry(value),
            "a host name with a '.' or a port, localhost, or an IP address",
        ),
        NETWORK_SUBNET => (
            crate::network::parse_subnet(value).is_ok(),
            "an IPv4 CIDR such as 192.168.70.0/24 (prefix 8 to 29)",
        ),
        _ => (crate::name::valid(value), "a network name, or none"),
    };
    if valid {
        return Ok(());
    }
    Err(Error::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        expected: what,
    })
}

fn check_key(key: &str) -> Result<(), Error> {
    if KNOWN.contains(&key) {
        Ok(())
    } else {
        Err(Error::Unknown(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_clear() {
        let dir = tempfile::tempdir().unwrap();
        let properties = Properties::open(dir.path());
        assert_eq!(properties.get(REGISTRY_DOMAIN).unwrap(), None);
        properties
            .set(REGISTRY_DOMAIN, Some("127.0.0.1:5000"))
            .unwrap();
        assert_eq!(
            properties.get(REGISTRY_DOMAIN).unwrap().as_deref(),
            Some("127.0.0.1:5000")
        );
        assert!(properties.set(REGISTRY_DOMAIN, Some("not a host")).is_err());
        properties.set(NETWORK_DEFAULT, Some("none")).unwrap();
        assert!(matches!(
            properties.set(NETWORK_DEFAULT, Some("a/b")),
            Err(Error::Invalid { .. })
        ));
        properties
            .set(NETWORK_SUBNET, Some("10.20.0.0/16"))
            .unwrap();
        assert!(matches!(
            properties.set(NETWORK_SUBNET, Some("10.20.0.1/16")),
            Err(Error::Invalid { .. })
        ));
        let unknown = properties.get("dns.domain").unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "unknown property dns.domain (known: registry.domain, network.default, network.subnet)"
        );
        properties.set(REGISTRY_DOMAIN, None).unwrap();
        assert_eq!(properties.get(REGISTRY_DOMAIN).unwrap(), None);
    }

    /// Found by fuzz/fuzz_targets/property.rs (input `tt`): `registry.domain`
    /// `t` made `alpine` the record `t/alpine:latest`, which reads back as
    /// Docker Hub's `t/alpine`.
    #[test]
    fn registry_domain_must_read_as_a_registry() {
        use crate::image::Reference;
        let dir = tempfile::tempdir().unwrap();
        let properties = Properties::open(dir.path());
        for domain in ["t", "myhost", "registry-1"] {
            let err = properties.set(REGISTRY_DOMAIN, Some(domain)).unwrap_err();
            assert!(
                err.to_string().ends_with(&format!(
                    "value \"{domain}\" for registry.domain: use a host name with a '.' or a port, localhost, or an IP address"
                )),
                "{err}"
            );
            assert_eq!(properties.get(REGISTRY_DOMAIN).unwrap(), None);
        }
        for domain in [
            "localhost",
            "localhost:5000",
            "registry.example",
            "10.0.0.1",
            "[::1]:5000",
            "myhost:443",
        ] {
            properties.set(REGISTRY_DOMAIN, Some(domain)).unwrap();
            let reference = Reference::parse_with_domain("alpine", Some(domain)).unwrap();
            assert_eq!(reference.registry(), domain);
            let back: Reference = reference.to_string().parse().unwrap();
            assert_eq!(back, reference, "{domain}");
        }
    }
}
