//! Registry credentials: ours in `<app root>/auth.json` (mode 0600), in the
//! same shape as Docker's `config.json` (`{"auths": {HOST: {"auth":
//! base64(user:password)}}}`), and Docker's own file after ours, read as
//! Docker reads it, so a machine already logged in with Docker needs no
//! second login. Passwords only ever leave this module as a `RegistryAuth`,
//! whose Debug hides them, or to the helper that keeps them.
//!
//! Either file may name a credential helper for a registry (`credHelpers`,
//! and in Docker's also `credsStore` for every registry): the program
//! `docker-credential-<name>` holds the password (see credential_helper.rs).
//! Ours names one only where `registry login --credential-helper` stored
//! through it (podman's auth.json names helpers under the same key); we
//! never write Docker's file or Docker's helpers unasked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};

use super::credential_helper::{Answer, Helper};
use super::{Error, IoContext};
use crate::atomic;

#[derive(Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    /// Registry -> helper name. In ours, written by `login --credential-helper`.
    #[serde(
        rename = "credHelpers",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    cred_helpers: BTreeMap<String, String>,
    /// The helper for every registry without its own. Read from Docker's
    /// file only; we never write it.
    #[serde(rename = "credsStore", default, skip_serializing)]
    creds_store: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
}

impl AuthFile {
    /// The user and password inline for `registry`, under any key that
    /// normalizes to it (Docker keys Docker Hub by URL).
    fn inline(&self, registry: &str) -> Option<(String, String)> {
        self.auths
            .iter()
            .find(|(key, _)| normalize(key) == registry)
            .and_then(|(_, entry)| decode(&entry.auth))
    }

    fn helper(&self, registry: &str) -> Option<&str> {
        self.cred_helpers
            .iter()
            .find(|(key, _)| normalize(key) == registry)
            .map(|(_, name)| name.as_str())
    }

    /// The helper Docker asks for `registry`, as docker/cli's
    /// `getConfiguredCredentialStore`: the registry's own `credHelpers`
    /// entry, else `credsStore`. With one, Docker never reads the inline
    /// `auths` (its native store replaces the file store).
    fn docker_helper(&self, registry: &str) -> Option<&str> {
        self.helper(registry)
            .or(self.creds_store.as_deref().filter(|name| !name.is_empty()))
    }
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

    /// How to authenticate to `registry` (`host[:port]`), first found of:
    /// our inline login, our helper, Docker's helper for it (`credHelpers`,
    /// else `credsStore`), Docker's inline login. Else anonymous (which
    /// still answers a token challenge with an anonymous token, as public
    /// images need). A helper holding nothing for the registry passes on
    /// from ours to Docker's; Docker's own helper holding nothing means
    /// anonymous, as it does for Docker.
    pub async fn for_registry(&self, registry: &str) -> Result<RegistryAuth, Error> {
        let ours = read(&self.file)?;
        let docker = match &self.docker {
            // A broken Docker file is Docker's problem, not a reason to fail.
            Some(path) => read(path).unwrap_or_default(),
            None => AuthFile::default(),
        };
        for source in sources(&ours, &docker, registry) {
            match source {
                Source::Login(user, password) => return Ok(RegistryAuth::Basic(user, password)),
                Source::Helper(name) => {
                    if let Some(auth) = from_helper(name, registry).await? {
                        return Ok(auth);
                    }
                }
            }
        }
        Ok(RegistryAuth::Anonymous)
    }

    /// Stores a login in our file (replacing a helper we stored through).
    pub fn store(&self, registry: &str, user: &str, password: &str) -> Result<(), Error> {
        let auth = BASE64.encode(format!("{user}:{password}"));
        self.update(|file| {
            file.cred_helpers.remove(registry);
            file.auths.insert(registry.to_string(), AuthEntry { auth });
        })
    }

    /// Stores a login through `docker-credential-<helper>`; our file only
    /// records which helper holds it.
    pub async fn store_in_helper(
        &self,
        helper: &str,
        registry: &str,
        user: &str,
        password: &str,
    ) -> Result<(), Error> {
        Helper::new(helper, registry).store(user, password).await?;
        self.update(|file| {
            file.auths.remove(registry);
            file.cred_helpers
                .insert(registry.to_string(), helper.to_string());
        })
    }

    /// Forgets a registry's credentials, erasing them from the helper we
    /// stored them through; false if we held none. Docker's file and
    /// helpers are left alone: they are Docker's logins.
    pub async fn remove(&self, registry: &str) -> Result<bool, Error> {
        if let Some(helper) = read(&self.file)?.helper(registry) {
            Helper::new(helper, registry).erase().await?;
        }
        let mut removed = false;
        self.update(|file| {
            let inline = file.auths.remove(registry).is_some();
            let helper = file.cred_helpers.remove(registry).is_some();
            removed = inline || helper;
        })?;
        Ok(removed)
    }

    /// The registries we hold credentials for, with their user names (a
    /// helper's asked for it).
    pub async fn list(&self) -> Result<Vec<(String, String)>, Error> {
        let file = read(&self.file)?;
        let mut logins: BTreeMap<String, String> = file
            .auths
            .iter()
            .map(|(registry, entry)| {
                let user = decode(&entry.auth).map(|(u, _)| u).unwrap_or_default();
                (registry.clone(), user)
            })
            .collect();
        for (registry, helper) in &file.cred_helpers {
            let user = match Helper::new(helper, registry).get().await? {
                Answer::Password { user, .. } => user,
                Answer::NotFound | Answer::IdentityToken => String::new(),
            };
            logins.insert(registry.clone(), user);
        }
        Ok(logins.into_iter().collect())
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

/// Where a registry's credentials may be, to ask in turn.
enum Source<'a> {
    Login(String, String),
    Helper(&'a str),
}

/// The order [`Credentials::for_registry`] asks in. Docker's file offers a
/// helper or its inline login, never both: with a helper configured,
/// Docker ignores `auths`.
fn sources<'a>(ours: &'a AuthFile, docker: &'a AuthFile, registry: &str) -> Vec<Source<'a>> {
    let mut sources = Vec::new();
    if let Some((user, password)) = ours.inline(registry) {
        sources.push(Source::Login(user, password));
    }
    sources.extend(ours.helper(registry).map(Source::Helper));
    match docker.docker_helper(registry) {
        Some(name) => sources.push(Source::Helper(name)),
        None => sources.extend(
            docker
                .inline(registry)
                .map(|(user, password)| Source::Login(user, password)),
        ),
    }
    sources
}

/// What helper `name` holds for `registry`; None if nothing. An identity
/// token is refused: sending it as a password would fail at the registry
/// with a misleading "unauthorized".
async fn from_helper(name: &str, registry: &str) -> Result<Option<RegistryAuth>, Error> {
    let helper = Helper::new(name, registry);
    match helper.get().await? {
        Answer::NotFound => Ok(None),
        Answer::Password { user, password } => Ok(Some(RegistryAuth::Basic(user, password))),
        Answer::IdentityToken => Err(Error::IdentityToken {
            helper: helper.program(),
            registry: registry.to_string(),
        }),
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

    #[tokio::test]
    async fn store_list_remove_with_private_mode() {
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
            credentials.list().await.unwrap(),
            [("127.0.0.1:5000".to_string(), "me".to_string())]
        );
        let RegistryAuth::Basic(user, password) =
            credentials.for_registry("127.0.0.1:5000").await.unwrap()
        else {
            panic!("expected basic auth");
        };
        assert_eq!((user.as_str(), password.as_str()), ("me", "s3:cret"));
        assert!(matches!(
            credentials.for_registry("other:1").await.unwrap(),
            RegistryAuth::Anonymous
        ));
        assert!(credentials.remove("127.0.0.1:5000").await.unwrap());
        assert!(!credentials.remove("127.0.0.1:5000").await.unwrap());
    }

    #[tokio::test]
    async fn falls_back_to_docker_config() {
        let root = tempfile::tempdir().unwrap();
        let docker = root.path().join("config.json");
        let auth = BASE64.encode("hub:pw");
        std::fs::write(
            &docker,
            format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
        let credentials = Credentials {
            file: root.path().join("auth.json"),
            docker: Some(docker),
        };
        assert!(matches!(
            credentials.for_registry("docker.io").await.unwrap(),
            RegistryAuth::Basic(user, _) if user == "hub"
        ));
        assert_eq!(normalize("https://ghcr.io/v2/"), "ghcr.io");
    }

    /// What each source names, for comparing.
    fn order(ours: &str, docker: &str, registry: &str) -> Vec<String> {
        let ours: AuthFile = serde_json::from_str(ours).unwrap();
        let docker: AuthFile = serde_json::from_str(docker).unwrap();
        sources(&ours, &docker, registry)
            .into_iter()
            .map(|source| match source {
                Source::Login(user, _) => format!("login {user}"),
                Source::Helper(name) => format!("helper {name}"),
            })
            .collect()
    }

    #[test]
    fn precedence_ours_then_docker_as_docker_reads_it() {
        let a = BASE64.encode("a:pw");
        let b = BASE64.encode("b:pw");
        let host = "127.0.0.1:5000";
        // Ours first, inline then helper; then Docker's registry helper,
        // which beats its credsStore and hides its inline login.
        let ours = format!(
            r#"{{"auths":{{"{host}":{{"auth":"{a}"}}}},"credHelpers":{{"{host}":"mine"}}}}"#
        );
        let docker = format!(
            r#"{{"auths":{{"{host}":{{"auth":"{b}"}}}},"credHelpers":{{"{host}":"reg"}},"credsStore":"all"}}"#
        );
        assert_eq!(
            order(&ours, &docker, host),
            ["login a", "helper mine", "helper reg"]
        );
        // credsStore alone also hides the inline login.
        let docker = format!(r#"{{"auths":{{"{host}":{{"auth":"{b}"}}}},"credsStore":"all"}}"#);
        assert_eq!(order("{}", &docker, host), ["helper all"]);
        // Another registry's helper is not this one's; an empty credsStore is none.
        let docker = format!(
            r#"{{"auths":{{"{host}":{{"auth":"{b}"}}}},"credHelpers":{{"other:1":"reg"}},"credsStore":""}}"#
        );
        assert_eq!(order("{}", &docker, host), ["login b"]);
        // Docker Hub's helper entry under its URL key.
        let docker = r#"{"credHelpers":{"https://index.docker.io/v1/":"hub"}}"#;
        assert_eq!(order("{}", docker, "docker.io"), ["helper hub"]);
        assert!(order("{}", "{}", host).is_empty());
    }

    #[test]
    fn our_file_never_gains_a_creds_store() {
        let file: AuthFile =
            serde_json::from_str(r#"{"credsStore":"x","credHelpers":{"h:1":"y"}}"#).unwrap();
        let json = serde_json::to_string(&file).unwrap();
        assert_eq!(json, r#"{"auths":{},"credHelpers":{"h:1":"y"}}"#);
    }
}
