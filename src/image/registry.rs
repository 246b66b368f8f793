//! Talking to a registry: oci-client does HTTP, the token dance and retries of
//! auth; this module picks the scheme, turns its errors into ours (a missing
//! image must read as "not found", not as an HTTP status) and streams blobs
//! into the content store.

use std::net::IpAddr;

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use sha2::{Digest as _, Sha256};

use super::manifest::{ACCEPTED_MANIFESTS, Descriptor};
use super::store::ContentStore;
use super::{Error, Reference, Scheme};

pub struct Registry {
    client: oci_client::Client,
    auth: RegistryAuth,
}

impl Registry {
    pub fn new(reference: &Reference, scheme: Scheme) -> Registry {
        let plain_http = match scheme {
            Scheme::Http => true,
            Scheme::Https => false,
            Scheme::Auto => is_private_host(reference.registry()),
        };
        let config = ClientConfig {
            protocol: if plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            // We resolve indexes ourselves (see platform.rs).
            platform_resolver: None,
            ..ClientConfig::default()
        };
        Registry {
            client: oci_client::Client::new(config),
            // Anonymous still answers a registry's bearer-token challenge with
            // an anonymous token, which is what public images need.
            auth: RegistryAuth::Anonymous,
        }
    }

    /// Fetches the manifest or index `reference` names, and its sha256 digest.
    /// When the reference pins a digest, oci-client has already checked it.
    pub async fn manifest(&self, reference: &Reference) -> Result<(Vec<u8>, String), Error> {
        let (body, _) = self
            .client
            .pull_manifest_raw(&oci_reference(reference), &self.auth, &ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| map_error(e, reference))?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        Ok((body.to_vec(), digest))
    }

    /// Streams one blob into the store. Memory use is one network chunk,
    /// whatever the blob's size.
    pub async fn fetch_blob(
        &self,
        reference: &Reference,
        blob: &Descriptor,
        store: &ContentStore,
    ) -> Result<(), Error> {
        let image = oci_reference(reference);
        let mut stream = self
            .client
            .pull_blob_stream(&image, blob.digest.as_str())
            .await
            .map_err(|e| map_error(e, reference))?;
        let mut ingest = store.ingest(&blob.digest, blob.size)?;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => ingest.write(&bytes)?,
                // oci-client verifies too and reports a mismatch as a stream
                // error after the last chunk; our own check in `commit` says
                // the same thing in our words.
                Err(e) if is_digest_error(&e) => break,
                Err(e) => {
                    return Err(Error::Transfer {
                        digest: blob.digest.clone(),
                        source: e,
                    });
                }
            }
        }
        // The fsync and rename block; keep them off the async workers.
        tokio::task::spawn_blocking(move || ingest.commit())
            .await
            .expect("blob commit does not panic")
    }
}

fn is_digest_error(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<DigestError>())
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
