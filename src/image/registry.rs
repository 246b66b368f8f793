//! Talking to a registry. Pulls are ours, on reqwest, so that everything a
//! registry sends is bounded (manifests, error bodies, the token service's
//! answer in token.rs) and blobs stream into the content store; pushes and
//! logins go through oci-client. Errors become ours: a missing image must
//! read as "not found", not as an HTTP status.

use std::net::IpAddr;
use std::path::Path;

use futures::StreamExt;
use oci_client::RegistryOperation;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;

use super::manifest::{ACCEPTED_MANIFESTS, Descriptor};
use super::progress::{Event, ProgressSink};
use super::store::ContentStore;
use super::{Credentials, Error, IoContext, Reference, Scheme, token};

/// The largest manifest or index we read, as containerd bounds them: a
/// registry serving more is refused before the rest is read.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

pub struct Registry {
    client: oci_client::Client,
    auth: RegistryAuth,
    /// Pulls go through this client, not oci-client's, which reads any
    /// body whole.
    http: reqwest::Client,
    scheme: &'static str,
    /// The pull token (None: anonymous or basic), asked for once.
    token: tokio::sync::OnceCell<Option<String>>,
}

impl Registry {
    /// A client for `registry` (`host[:port]`) with the stored credentials for it.
    pub async fn new(app_root: &Path, registry: &str, scheme: Scheme) -> Result<Registry, Error> {
        let auth = Credentials::open(app_root).for_registry(registry).await?;
        Ok(Registry::with_auth(registry, scheme, auth))
    }

    fn with_auth(registry: &str, scheme: Scheme, auth: RegistryAuth) -> Registry {
        let plain_http = match scheme {
            Scheme::Http => true,
            Scheme::Https => false,
            Scheme::Auto => is_private_host(registry),
        };
        let config = ClientConfig {
            protocol: if plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            // We resolve indexes ourselves (see platform.rs).
            platform_resolver: None,
            // One streamed PUT per blob: no chunk round trips, and the body
            // comes straight from the file.
            use_monolithic_push: true,
            ..ClientConfig::default()
        };
        Registry {
            client: oci_client::Client::new(config),
            auth,
            http: reqwest::Client::new(),
            scheme: if plain_http { "http" } else { "https" },
            token: tokio::sync::OnceCell::new(),
        }
    }

    /// Fetches the manifest or index `reference` names, and its sha256
    /// digest (checked against the one the reference pins). A body larger
    /// than [`MAX_MANIFEST_BYTES`] is refused as soon as it says so or
    /// grows past it.
    pub async fn manifest(&self, reference: &Reference) -> Result<(Vec<u8>, super::Digest), Error> {
        let object = reference.digest().or(reference.tag()).unwrap_or("latest");
        let what = format!("the manifest of {reference}");
        let mut response = self
            .fetch(
                reference,
                &format!("manifests/{object}"),
                Some(ACCEPTED_MANIFESTS.join(", ")),
                &what,
            )
            .await?;
        let too_large = |size: Option<u64>| Error::TooLarge {
            what: match size {
                Some(size) => format!("the manifest of {reference} ({size} bytes)"),
                None => format!("the manifest of {reference}"),
            },
            limit: MAX_MANIFEST_BYTES,
        };
        if let Some(size) = response
            .content_length()
            .filter(|&n| n > MAX_MANIFEST_BYTES)
        {
            return Err(too_large(Some(size)));
        }
        let body = read_bounded(&mut response, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| e.map_or_else(transfer(&what), |()| too_large(None)))?;
        let digest = super::Digest::of(&body);
        if let Some(pinned) = reference.digest()
            && pinned != digest.as_str()
        {
            return Err(Error::DigestMismatch {
                expected: pinned.to_string(),
                actual: digest.to_string(),
            });
        }
        Ok((body, digest))
    }

    /// A GET of `path` below the repository's `/v2/` URL, with the pull
    /// token (asked for once) or the Basic credentials. A failed answer is
    /// our error, its body read up to 4 KiB for the registry's own words;
    /// `what` names what was asked for.
    async fn fetch(
        &self,
        reference: &Reference,
        path: &str,
        accept: Option<String>,
        what: &str,
    ) -> Result<reqwest::Response, Error> {
        let base = format!("{}://{}", self.scheme, reference.registry());
        let token = self
            .token
            .get_or_try_init(|| {
                token::pull_token(&self.http, &base, reference.repository(), &self.auth)
            })
            .await
            .map_err(|failure| match failure {
                token::Failure::Refused => Error::Unauthorized {
                    reference: reference.to_string(),
                },
                token::Failure::Transfer(e) => transfer(&format!("a token to pull {reference}"))(e),
                token::Failure::Malformed(reason) => Error::TokenService {
                    registry: reference.registry().to_string(),
                    reason,
                },
            })?;
        let mut request = self
            .http
            .get(format!("{base}/v2/{}/{path}", reference.repository()));
        request = match (token, &self.auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, _) => request,
        };
        if let Some(accept) = accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        let mut response = request.send().await.map_err(transfer(what))?;
        let status = response.status();
        if !status.is_success() {
            let body = read_bounded(&mut response, 4096).await.unwrap_or_default();
            return Err(status_error(status, &body, reference));
        }
        Ok(response)
    }

    /// Streams one blob into the store. Memory use is one network chunk,
    /// whatever the blob's size; the store refuses bytes past its declared
    /// size and checks the digest. A failed request's body is read up to
    /// 4 KiB, for the registry's own words.
    pub async fn fetch_blob(
        &self,
        reference: &Reference,
        blob: &Descriptor,
        store: &ContentStore,
        progress: &ProgressSink,
    ) -> Result<(), Error> {
        let digest = blob.digest.as_str();
        let what = format!("blob {digest}");
        let mut response = self
            .fetch(reference, &format!("blobs/{digest}"), None, &what)
            .await?;
        progress.emit(Event::Started {
            digest,
            size: blob.size,
        });
        let mut ingest = store.ingest(&blob.digest, blob.size)?;
        while let Some(bytes) = response.chunk().await.map_err(transfer(&what))? {
            ingest.write(&bytes)?;
            progress.emit(Event::Advanced {
                digest,
                bytes: bytes.len() as u64,
            });
        }
        // The fsync and rename block; keep them off the async workers.
        tokio::task::spawn_blocking(move || ingest.commit())
            .await
            .expect("blob commit does not panic")?;
        progress.emit(Event::Done { digest });
        Ok(())
    }

    /// Logs in for pushing to `target`'s repository before anything is sent
    /// (oci-client only logs in on its own in the calls that pull).
    pub async fn authorize_push(&self, target: &Reference) -> Result<(), Error> {
        self.client
            .auth(&oci_reference(target), &self.auth, RegistryOperation::Push)
            .await
            .map_err(|e| map_error(e, target))?;
        Ok(())
    }

    /// Sends one blob from the store to `target`'s repository unless it is
    /// there already; when the image came from another repository of the
    /// same registry, asks the registry to link it from there instead.
    pub async fn push_blob(
        &self,
        target: &Reference,
        source: &Reference,
        blob: &Descriptor,
        store: &ContentStore,
        progress: &ProgressSink,
    ) -> Result<(), Error> {
        let image = oci_reference(target);
        let (digest, size) = (blob.digest.as_str(), blob.size);
        let exists = self
            .client
            .blob_exists(&image, digest)
            .await
            .map_err(|e| map_error(e, target))?;
        if exists {
            progress.emit(Event::Exists { digest, size });
            return Ok(());
        }
        if source.registry() == target.registry()
            && source.repository() != target.repository()
            && self
                .client
                .mount_blob(&image, &oci_reference(source), digest)
                .await
                .is_ok()
        {
            progress.emit(Event::Mounted { digest, size });
            return Ok(());
        }
        let path = store.path(&blob.digest);
        let file = tokio::fs::File::open(&path).await.at(&path)?;
        progress.emit(Event::Started { digest, size });
        let sink = progress.clone();
        let owned_digest = digest.to_string();
        let body = tokio_util::io::ReaderStream::new(file).map(move |chunk| {
            if let Ok(bytes) = &chunk {
                sink.emit(Event::Advanced {
                    digest: &owned_digest,
                    bytes: bytes.len() as u64,
                });
            }
            chunk.map_err(|e| OciDistributionError::GenericError(Some(e.to_string())))
        });
        self.client
            .push_blob_stream(&image, body, digest, Some(size))
            .await
            .map_err(|e| map_error(e, target))?;
        progress.emit(Event::Done { digest });
        Ok(())
    }

    /// Stores a manifest under `target`'s tag (or digest).
    pub async fn push_manifest(
        &self,
        target: &Reference,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<(), Error> {
        let content_type = media_type.parse().map_err(|_| Error::InvalidManifest {
            digest: target.to_string(),
            reason: format!("media type {media_type:?} is not a header value"),
        })?;
        self.client
            .push_manifest_raw(&oci_reference(target), bytes, content_type)
            .await
            .map_err(|e| map_error(e, target))?;
        Ok(())
    }
}

/// Checks a user name and password with a registry, as `registry login`
/// must before storing them. A token challenge is answered with them (the
/// token service rejects bad ones); a Basic registry is asked for a
/// repository's tags (it answers 401 to bad ones, and "unknown" to good ones
/// when the repository does not exist).
pub async fn check_login(
    registry: &str,
    scheme: Scheme,
    user: &str,
    password: &str,
) -> Result<(), Error> {
    let auth = RegistryAuth::Basic(user.to_string(), password.to_string());
    let client = Registry::with_auth(registry, scheme, auth);
    let probe = login_probe(registry);
    let image = oci_reference(&probe);
    let rejected = || Error::LoginRejected {
        registry: registry.to_string(),
    };
    let token = client
        .client
        .auth(&image, &client.auth, RegistryOperation::Pull)
        .await
        .map_err(|e| match map_error(e, &probe) {
            Error::Unauthorized { .. } => rejected(),
            other => other,
        })?;
    if token.is_some() {
        return Ok(());
    }
    match client
        .client
        .list_tags(&image, &client.auth, Some(1), None)
        .await
        .map_err(|e| map_error(e, &probe))
    {
        Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
        Err(Error::Unauthorized { .. }) => Err(rejected()),
        Err(other) => Err(other),
    }
}

/// The repository a login is checked against, on `registry` itself: as
/// text, `myhost/container/login-check` would name Docker Hub's.
fn login_probe(registry: &str) -> Reference {
    Reference::parse_with_domain("container/login-check", Some(registry))
        .expect("a valid registry makes a valid reference")
}

/// A failed download of `what`, with the causes reqwest's own text hides.
fn transfer(what: &str) -> impl Fn(reqwest::Error) -> Error + '_ {
    move |e| Error::Transfer {
        what: what.to_string(),
        source: std::io::Error::other(crate::causes::describe(&e)),
    }
}

/// A response's body, up to `limit` bytes; past it, `Err(Ok(()))`.
pub(super) async fn read_bounded(
    response: &mut reqwest::Response,
    limit: u64,
) -> Result<Vec<u8>, Result<(), reqwest::Error>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Err)? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            return Err(Ok(()));
        }
    }
    Ok(body)
}

/// What a failed pull request means: the distribution spec's error
/// codes where the registry sent them, else the status.
fn status_error(status: reqwest::StatusCode, body: &[u8], reference: &Reference) -> Error {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Code>,
    }
    #[derive(serde::Deserialize)]
    struct Code {
        code: String,
        #[serde(default)]
        message: String,
    }
    let codes = serde_json::from_slice::<Envelope>(body).map_or_else(|_| vec![], |e| e.errors);
    let has = |names: &[&str]| codes.iter().any(|c| names.contains(&c.code.as_str()));
    if status == reqwest::StatusCode::NOT_FOUND
        || has(&["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "NOT_FOUND"])
    {
        return Error::NotFound {
            reference: reference.to_string(),
        };
    }
    if matches!(status.as_u16(), 401 | 403) || has(&["UNAUTHORIZED", "DENIED"]) {
        return Error::Unauthorized {
            reference: reference.to_string(),
        };
    }
    let said = codes
        .iter()
        .map(|c| format!("{}: {}", c.code, c.message))
        .collect::<Vec<_>>()
        .join("; ");
    Error::RegistryStatus {
        registry: reference.registry().to_string(),
        status: status.to_string(),
        message: if said.is_empty() {
            String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(200)
                .collect()
        } else {
            said
        },
    }
}

fn oci_reference(reference: &Reference) -> oci_client::Reference {
    let (registry, repository) = (
        reference.registry().to_string(),
        reference.repository().to_string(),
    );
    match (reference.tag(), reference.digest()) {
        (_, Some(digest)) => {
            oci_client::Reference::with_digest(registry, repository, digest.to_string())
        }
        (Some(tag), None) => oci_client::Reference::with_tag(registry, repository, tag.to_string()),
        (None, None) => unreachable!("a parsed Reference has a tag or a digest"),
    }
}

fn map_error(error: OciDistributionError, reference: &Reference) -> Error {
    let not_found = |reference: &Reference| Error::NotFound {
        reference: reference.to_string(),
    };
    match error {
        OciDistributionError::RegistryError { ref envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) =>
        {
            not_found(reference)
        }
        OciDistributionError::ServerError { code: 404, .. } => not_found(reference),
        OciDistributionError::RegistryError { ref envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)) =>
        {
            Error::Unauthorized {
                reference: reference.to_string(),
            }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => Error::Unauthorized {
            reference: reference.to_string(),
        },
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            Error::DigestMismatch { expected, actual }
        }
        other => Error::Registry {
            registry: reference.registry().to_string(),
            source: Box::new(other),
        },
    }
}

/// Whether `Scheme::Auto` uses plain HTTP for a registry (`host[:port]`):
/// yes for localhost, loopback and private addresses, which are almost
/// always local registries without certificates; HTTPS for everything else.
pub fn is_private_host(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(host, _)| host),
    };
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private(),
        Ok(IpAddr::V6(ip)) => ip.is_loopback(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_is_checked_on_the_registry_named() {
        for registry in ["myhost", "myhost:5000", "registry.example.com", "localhost"] {
            assert_eq!(login_probe(registry).registry(), registry);
        }
    }

    #[test]
    fn auto_scheme_uses_http_only_for_local_and_private_hosts() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.8.9.10",
            "[::1]:5000",
            "10.1.2.3:443",
            "172.16.0.1",
            "172.31.255.255:80",
            "192.168.1.1:5000",
        ] {
            assert!(is_private_host(host), "{host}");
        }
        for host in [
            "docker.io",
            "ghcr.io:443",
            "172.32.0.1",
            "172.15.0.1",
            "11.0.0.1",
            "8.8.8.8:5000",
            "[2001:db8::1]:5000",
            "localhost.example.com",
        ] {
            assert!(!is_private_host(host), "{host}");
        }
    }
}
