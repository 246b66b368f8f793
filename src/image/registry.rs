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
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_RANGE, HeaderName, RANGE};

use super::manifest::{ACCEPTED_MANIFESTS, Descriptor};
use super::progress::{Event, ProgressSink};
use super::store::{ContentStore, Ingest};
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
                Some((ACCEPT, ACCEPTED_MANIFESTS.join(", "))),
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
    /// token (asked for once) or the Basic credentials, and `header` if
    /// given. A failed answer is our error, its body read up to 4 KiB for
    /// the registry's own words; `what` names what was asked for.
    async fn fetch(
        &self,
        reference: &Reference,
        path: &str,
        header: Option<(HeaderName, String)>,
        what: &str,
    ) -> Result<reqwest::Response, Error> {
        let response = self.send(reference, path, header, what).await?;
        succeeded(response, reference).await
    }

    /// The GET `fetch` makes, whatever the status it gets. reqwest follows
    /// redirects (to a storage URL, as some registries answer blob GETs)
    /// with every header but the credentials, which it drops on the way to
    /// another host: a `Range` reaches the storage.
    async fn send(
        &self,
        reference: &Reference,
        path: &str,
        header: Option<(HeaderName, String)>,
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
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        request.send().await.map_err(transfer(what))
    }

    /// Streams one blob into the store. Memory use is one network chunk,
    /// whatever the blob's size; the store refuses bytes past its declared
    /// size and checks the digest. A download the network or the registry
    /// cuts short keeps its bytes as a partial, which the next fetch of the
    /// blob resumes; one that failed for its bytes (too many, a wrong
    /// digest) or the disk (full) keeps nothing.
    pub async fn fetch_blob(
        &self,
        reference: &Reference,
        blob: &Descriptor,
        store: &ContentStore,
        progress: &ProgressSink,
    ) -> Result<(), Error> {
        let taking = (store.clone(), blob.digest.clone(), blob.size);
        // Reading a partial back, and the fsyncs below, block; keep them
        // off the async workers.
        let mut ingest = tokio::task::spawn_blocking(move || {
            let (store, digest, size) = taking;
            store.resume(&digest, size)
        })
        .await
        .expect("taking a partial does not panic")?;
        if let Err(e) = self
            .download(reference, blob, store, &mut ingest, progress)
            .await
        {
            if keeps_partial(&e) {
                tokio::task::spawn_blocking(move || ingest.keep_partial())
                    .await
                    .expect("keeping a partial does not panic");
            }
            return Err(e);
        }
        tokio::task::spawn_blocking(move || ingest.commit())
            .await
            .expect("blob commit does not panic")?;
        progress.emit(Event::Done {
            digest: blob.digest.as_str(),
        });
        Ok(())
    }

    /// Streams the blob into `ingest` from where it stands. A resumed one
    /// asks for the rest (`Range: bytes=N-`); unless the registry sends
    /// exactly that (206 with the matching `Content-Range`), the partial is
    /// dropped and the blob comes whole: from the 200 that answered, or
    /// asked for again after a 416 or another range. The progress counts
    /// the resumed bytes as done.
    async fn download(
        &self,
        reference: &Reference,
        blob: &Descriptor,
        store: &ContentStore,
        ingest: &mut Ingest,
        progress: &ProgressSink,
    ) -> Result<(), Error> {
        let digest = blob.digest.as_str();
        let what = format!("blob {digest}");
        let path = format!("blobs/{digest}");
        let resumed = ingest.written();
        let range = (resumed > 0).then(|| (RANGE, format!("bytes={resumed}-")));
        let mut response = self.send(reference, &path, range, &what).await?;
        if resumed > 0 {
            let status = response.status();
            let continues = status == StatusCode::PARTIAL_CONTENT
                && response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|value| value.to_str().ok())
                    .is_some_and(|value| is_rest_of(value, resumed, blob.size));
            if !continues && (status.is_success() || status == StatusCode::RANGE_NOT_SATISFIABLE) {
                *ingest = store.ingest(&blob.digest, blob.size)?;
                if status != StatusCode::OK {
                    response = self.send(reference, &path, None, &what).await?;
                }
            }
        }
        let mut response = succeeded(response, reference).await?;
        progress.emit(Event::Started {
            digest,
            size: blob.size,
        });
        if ingest.written() > 0 {
            progress.emit(Event::Advanced {
                digest,
                bytes: ingest.written(),
            });
        }
        while let Some(bytes) = response.chunk().await.map_err(transfer(&what))? {
            ingest.write(&bytes)?;
            progress.emit(Event::Advanced {
                digest,
                bytes: bytes.len() as u64,
            });
        }
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

/// The response if it succeeded, else our error for its status, with the
/// registry's own words from the first 4 KiB of its body.
async fn succeeded(
    mut response: reqwest::Response,
    reference: &Reference,
) -> Result<reqwest::Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = read_bounded(&mut response, 4096).await.unwrap_or_default();
    Err(status_error(status, &body, reference))
}

/// Whether a failed download leaves bytes worth keeping for the next one:
/// yes when the network or the registry failed (cut short, unreachable,
/// refusing for now); no when the bytes were wrong or the disk failed,
/// which no later download mends, and a full disk must be left with
/// nothing partial on it.
fn keeps_partial(error: &Error) -> bool {
    matches!(
        error,
        Error::Transfer { .. }
            | Error::RegistryStatus { .. }
            | Error::NotFound { .. }
            | Error::Unauthorized { .. }
            | Error::TokenService { .. }
    )
}

/// Whether a `Content-Range` value (`bytes FIRST-LAST/TOTAL`, TOTAL maybe
/// `*`) is the rest of a blob of `size` bytes from byte `start` on.
fn is_rest_of(content_range: &str, start: u64, size: u64) -> bool {
    let Some((range, total)) = content_range
        .strip_prefix("bytes ")
        .and_then(|rest| rest.split_once('/'))
    else {
        return false;
    };
    let Some((first, last)) = range.split_once('-') else {
        return false;
    };
    first.parse() == Ok(start)
        && last
            .parse::<u64>()
            .ok()
            .and_then(|last| last.checked_add(1))
            == Some(size)
        && (total == "*" || total.parse() == Ok(size))
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
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use super::super::progress::Progress;
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

    #[test]
    fn content_range_is_the_rest_of_the_blob_or_not() {
        assert!(is_rest_of("bytes 10-99/100", 10, 100));
        assert!(is_rest_of("bytes 10-99/*", 10, 100));
        for other in [
            "bytes 0-99/100",
            "bytes 10-98/100",
            "bytes 10-99/101",
            "bytes */100",
            "10-99/100",
            "bytes 10-/100",
            "bytes 10-18446744073709551615/*",
        ] {
            assert!(!is_rest_of(other, 10, 100), "{other}");
        }
    }

    /// How the fake registry below answers a blob GET with a `Range`.
    #[derive(Clone, Copy)]
    enum Answer {
        /// 206 with the rest, as distribution does.
        Rest,
        /// 200 with the whole blob, as a server without ranges does.
        Whole,
        /// 416, as for a range past the end.
        Unsatisfiable,
    }

    /// A registry on 127.0.0.1 that redirects blob GETs to a storage server
    /// on another port (another host, to reqwest), as S3-backed registries
    /// do. Returns the registry's address and the request heads the storage
    /// got.
    fn fake_registry(blob: &'static [u8], answer: Answer) -> (String, Arc<Mutex<Vec<String>>>) {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let storage = TcpListener::bind("127.0.0.1:0").unwrap();
        let storage_port = storage.local_addr().unwrap().port();
        let seen = heads.clone();
        serve(storage, move |head| {
            seen.lock().unwrap().push(head.to_string());
            let range = head
                .lines()
                .find_map(|line| line.strip_prefix("range: bytes="))
                .and_then(|from| from.strip_suffix('-'))
                .map(|from| from.parse::<usize>().unwrap());
            match (range, answer) {
                (None, _) | (Some(_), Answer::Whole) => response("200 OK", &[], blob),
                (Some(from), Answer::Rest) => response(
                    "206 Partial Content",
                    &[format!(
                        "Content-Range: bytes {from}-{}/{}",
                        blob.len() - 1,
                        blob.len()
                    )],
                    &blob[from..],
                ),
                (Some(_), Answer::Unsatisfiable) => response(
                    "416 Range Not Satisfiable",
                    &[format!("Content-Range: bytes */{}", blob.len())],
                    b"",
                ),
            }
        });
        let registry = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = registry.local_addr().unwrap().to_string();
        serve(registry, move |head| {
            let path = head.split(' ').nth(1).unwrap();
            if path == "/v2/" {
                response("200 OK", &[], b"")
            } else {
                let location = format!("Location: http://127.0.0.1:{storage_port}/data");
                response("307 Temporary Redirect", &[location], b"")
            }
        });
        (addr, heads)
    }

    fn response(status: &str, headers: &[String], body: &[u8]) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
        for header in headers {
            out += &format!("{header}\r\n");
        }
        out += "Connection: close\r\n\r\n";
        [out.as_bytes(), body].concat()
    }

    /// Answers each connection's one request (its head, lowercased) on a thread.
    fn serve(listener: TcpListener, answer: impl Fn(&str) -> Vec<u8> + Send + 'static) {
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut head = Vec::new();
                let mut byte = [0];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                stream.write_all(&answer(&head)).unwrap();
            }
        });
    }

    /// A partial resumes through a redirect to another host (the `Range`
    /// survives it); a 200 or a 416 to the range drops the partial and the
    /// blob comes whole. Each way the blob is stored verified, and the
    /// progress ends at its size.
    #[tokio::test]
    async fn a_partial_resumes_across_a_redirect_or_starts_over() {
        const BLOB: &[u8] = b"the whole blob, of which a partial holds the first bytes";
        struct Counted(AtomicU64);
        impl Progress for Counted {
            fn event(&self, event: Event<'_>) {
                if let Event::Advanced { bytes, .. } = event {
                    self.0.fetch_add(bytes, Ordering::Relaxed);
                }
            }
        }
        for (answer, storage_gets) in [
            (Answer::Rest, 1),
            (Answer::Whole, 1),
            (Answer::Unsatisfiable, 2),
        ] {
            let (addr, heads) = fake_registry(BLOB, answer);
            let dir = tempfile::tempdir().unwrap();
            let store = ContentStore::open(dir.path()).unwrap();
            let blob = Descriptor {
                media_type: "application/octet-stream".to_string(),
                digest: super::super::Digest::of(BLOB),
                size: BLOB.len() as u64,
                platform: None,
            };
            let mut partial = store.ingest(&blob.digest, blob.size).unwrap();
            partial.write(&BLOB[..9]).unwrap();
            partial.keep_partial();

            let registry = Registry::with_auth(&addr, Scheme::Http, RegistryAuth::Anonymous);
            let reference: Reference = format!("{addr}/repo:latest").parse().unwrap();
            let counted = Arc::new(Counted(AtomicU64::new(0)));
            let progress = ProgressSink::new(counted.clone());
            registry
                .fetch_blob(&reference, &blob, &store, &progress)
                .await
                .unwrap();

            assert_eq!(store.read(&blob.digest).unwrap(), BLOB);
            assert_eq!(store.partial_bytes().unwrap(), 0);
            assert_eq!(counted.0.load(Ordering::Relaxed), blob.size);
            let heads = heads.lock().unwrap();
            assert_eq!(heads.len(), storage_gets, "{heads:?}");
            assert!(heads[0].contains("\r\nrange: bytes=9-\r\n"), "{heads:?}");
        }
    }
}
