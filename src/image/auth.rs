//! Registry credentials: ours in `<app root>/auth.json` (mode 0600), in the
//! same shape as Docker's `config.json` (`{"auths": {HOST: {"auth":
//! base64(user:password)}}}`), and Docker's own file as a fallback, so a
//! machine already logged in with Docker needs no second login. Passwords
//! only ever leave this module as a `RegistryAuth`, whose Debug hides them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};

use super::{Error, IoContext};
use crate::atomic;

#[derive(Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
}

pub struct Credentials {
    file: PathBuf,
    docker: Option<PathBuf>,
}

impl Credentials {
    pub fn open(app_root: &Path) -> Credentials {
        let docker = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .map(|dir| dir.join("config.json"));
        Credentials {
            file: app_root.join("auth.json"),
            docker,
        }
    }

    /// How to authenticate to `registry` (`host[:port]`): stored
    /// credentials, else anonymous (which still answers a token challenge
    /// with an anonymous token, as public images need).
    pub fn for_registry(&self, registry: &str) -> Result<RegistryAuth, Error> {
        let ours = read(&self.file)?;
        let docker = match &self.docker {
            // A broken Docker file is Docker's problem, not a reason to fail.
            Some(path) => read(path).unwrap_or_default(),
            None => AuthFile::default(),
        };
        for file in [ours, docker] {
            let found = file
                .auths
                .iter()
                .find(|(key, _)| normalize(key) == registry)
                .and_then(|(_, entry)| decode(&entry.auth));
            if let Some((user, password)) = found {
                return Ok(RegistryAuth::Basic(user, password));
            }
        }
        Ok(RegistryAuth::Anonymous)
    }

    pub fn store(&self, registry: &str, user: &str, password: &str) -> Result<(), Error> {
        let auth = BASE64.encode(format!("{user}:{password}"));
        self.update(|file| {
            file.auths.insert(registry.to_string(), AuthEntry { auth });
        })
    }

    /// Forgets a registry's credentials; false if there were none.
    pub fn remove(&self, registry: &str) -> Result<bool, Error> {
        let mut removed = false;
        self.update(|file| removed = file.auths.remove(registry).is_some())?;
        Ok(removed)
    }

    /// The registries we hold credentials for, with their user names.
    pub fn list(&self) -> Result<Vec<(String, String)>, Error> {
        Ok(read(&self.file)?
            .auths
            .into_iter()
            .map(|(registry, entry)| {
                let user = decode(&entry.auth).map(|(u, _)| u).unwrap_or_default();
                (registry, user)
            })
            .collect())
    }

    fn update(&self, change: impl FnOnce(&mut AuthFile)) -> Result<(), Error> {
        let dir = self.file.parent().expect("auth.json has a directory");
        std::fs::create_dir_all(dir).at(dir)?;
        let _lock = atomic::lock(&dir.join("auth.lock"))?;
        let mut file = read(&self.file)?;
        change(&mut file);
        let json = serde_json::to_vec_pretty(&file).expect("credentials serialize");
        atomic::write_file(&self.file, &json, 0o600)?;
        Ok(())
    }
}

fn read(path: &Path) -> Result<AuthFile, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Settings {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuthFile::default()),
        Err(e) => Err(e).at(path),
    }
}

fn decode(auth: &str) -> Option<(String, String)> {
    let text = String::from_utf8(BASE64.decode(auth).ok()?).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Docker keys its file by URL for Docker Hub (`https://index.docker.io/v1/`)
/// and sometimes for others; we key by `host[:port]` as references do.
pub fn normalize(server: &str) -> String {
    let host = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    match host {
        "index.docker.io" | "registry-1.docker.io" => {
            super::reference::DEFAULT_REGISTRY.to_string()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn store_list_remove_with_private_mode() {
        let root = tempfile::tempdir().unwrap();
        let credentials = Credentials {
            file: root.path().join("auth.json"),
            docker: None,
        };
        credentials
            .store("127.0.0.1:5000", "me", "s3:cret")
            .unwrap();
        let mode = std::fs::metadata(root.path().join("auth.json"))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            credentials.list().unwrap(),
            [("127.0.0.1:5000".to_string(), "me".to_string())]
        );
        let RegistryAuth::Basic(user, password) =
            credentials.for_registry("127.0.0.1:5000").unwrap()
        else {
            panic!("expected basic auth");
        };
        assert_eq!((user.as_str(), password.as_str()), ("me", "s3:cret"));
        assert!(matches!(
            credentials.for_registry("other:1").unwrap(),
            RegistryAuth::Anonymous
        ));
        assert!(credentials.remove("127.0.0.1:5000").unwrap());
        assert!(!credentials.remove("127.0.0.1:5000").unwrap());
    }

    #[test]
    fn falls_back_to_docker_config() {
        let root = tempfile::tempdir().unwrap();
        let docker = root.path().join("config.json");
        let auth = BASE64.encode("hub:pw");
        std::fs::write(
            &docker,
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}}}},"credsStore":"x"}}"#),
        )
        .unwrap();
        let credentials = Credentials {
            file: root.path().join("auth.json"),
            docker: Some(docker),
        };
        assert!(matches!(
            credentials.for_registry("docker.io").unwrap(),
            RegistryAuth::Basic(user, _) if user == "hub"
        ));
        assert_eq!(normalize("https://ghcr.io/v2/"), "ghcr.io");
    }
}
