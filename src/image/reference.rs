//! Image references, parsed and normalized the way Docker does, so that
//! `alpine`, `docker.io/library/alpine:latest` and `index.docker.io/alpine`
//! all name the same image record.

use std::fmt;
use std::str::FromStr;

use super::Error;

/// Where a name without a registry part comes from.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Docker Hub's namespace for single-component names (`alpine` -> `library/alpine`).
const OFFICIAL_NAMESPACE: &str = "library";
const DEFAULT_TAG: &str = "latest";
/// Docker's limit on the repository name (registry excluded).
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed image reference (`alpine`, `127.0.0.1:5000/ns/name:tag`, `name@sha256:...`).
///
/// A reference without a tag or digest gets the tag `latest`; one with only a
/// digest has no tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// The registry host, with its port if one was given (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`library/alpine`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The pinned manifest (or index) digest, `sha256:<hex>`.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The same image with its tag dropped and this digest pinned.
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// `registry/repository`, the part shared by every tag of the image.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        Reference::parse_with_domain(input, None)
    }
}

impl Reference {
    /// Parses with `domain` (`registry.domain`) as the registry of names
    /// that have none; Docker Hub when `None`.
    pub fn parse_with_domain(input: &str, domain: Option<&str>) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidReference {
            input: input.to_string(),
            reason: reason.to_string(),
        };

        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                if super::Digest::parse(digest).is_err() {
                    return Err(invalid(
                        "the digest must be sha256: followed by 64 lowercase hex digits",
                    ));
                }
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };

        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if !is_valid_tag(tag) {
                    return Err(invalid(
                        "the tag must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
                    ));
                }
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(invalid("the name is empty"));
        }

        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if reads_as_registry(first) => (first, path),
            _ => (domain.unwrap_or(DEFAULT_REGISTRY), name),
        };
        if !is_valid_registry(registry) {
            return Err(invalid(
                "the registry must be a host name or address with an optional port",
            ));
        }
        let registry = match registry {
            "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY,
            other => other,
        };
        if !path.split('/').all(is_valid_path_component) {
            return Err(invalid(
                "each name component must be lowercase letters and digits, separated by '.', '_', '__' or dashes",
            ));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{path}")
        } else {
            path.to_string()
        };
        if repository.len() > MAX_NAME_LEN {
            return Err(invalid("the name is longer than 255 characters"));
        }

        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }
}

fn is_valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    first_ok
        && tag.len() <= MAX_TAG_LEN
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
fn is_valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(&bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(&bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Docker's rule: the first component of a name is a registry only if it
/// could not be a repository component (it has a '.' or ':', is
/// `localhost`, or is a bracketed IPv6 address). `myhost/app` is Docker
/// Hub's `myhost/app`.
pub(crate) fn reads_as_registry(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost" || first.starts_with('[')
}

/// A host name, IPv4 address or bracketed IPv6 address, with an optional port.
pub(crate) fn is_valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, after)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => {
                match after.strip_prefix(':') {
                    Some(port) => (None, Some(port)),
                    None if after.is_empty() => (None, None),
                    None => return false,
                }
            }
            _ => return false,
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    let host_ok = host.is_none_or(|host| {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    });
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok_and(|p| p > 0));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(s: &str) -> Reference {
        s.parse()
            .unwrap_or_else(|e| panic!("{s} should parse: {e}"))
    }

    #[test]
    fn normalizes_docker_hub_names() {
        assert_eq!(
            parse("alpine").to_string(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            parse("alpine:3.20").to_string(),
            "docker.io/library/alpine:3.20"
        );
        assert_eq!(
            parse("library/alpine").to_string(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(parse("user/app:v1").to_string(), "docker.io/user/app:v1");
        assert_eq!(
            parse("docker.io/alpine").to_string(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            parse("index.docker.io/alpine").to_string(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(parse("alpine"), parse("docker.io/library/alpine:latest"));
    }

    #[test]
    fn splits_registry_repository_tag() {
        let r = parse("127.0.0.1:5000/ns/name:tag");
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "ns/name");
        assert_eq!(r.tag(), Some("tag"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.to_string(), "127.0.0.1:5000/ns/name:tag");

        let r = parse("localhost/busybox");
        assert_eq!((r.registry(), r.repository()), ("localhost", "busybox"));
        let r = parse("localhost:5000/busybox");
        assert_eq!((r.registry(), r.tag()), ("localhost:5000", Some("latest")));
        let r = parse("ghcr.io/a/b/c");
        assert_eq!((r.registry(), r.repository()), ("ghcr.io", "a/b/c"));
        let r = parse("[::1]:5000/busybox:1");
        assert_eq!((r.registry(), r.repository()), ("[::1]:5000", "busybox"));
        // No '.' or ':' and not localhost: a namespace, not a registry.
        let r = parse("myhost/app");
        assert_eq!((r.registry(), r.repository()), ("docker.io", "myhost/app"));
    }

    #[test]
    fn digests() {
        let r = parse(&format!("busybox@sha256:{HEX}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(format!("sha256:{HEX}").as_str()));
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/busybox@sha256:{HEX}")
        );

        let r = parse(&format!("127.0.0.1:5000/busybox:1.36@sha256:{HEX}"));
        assert_eq!(r.tag(), Some("1.36"));
        assert_eq!(
            r.to_string(),
            format!("127.0.0.1:5000/busybox:1.36@sha256:{HEX}")
        );

        let pinned = parse("127.0.0.1:5000/busybox:1.36").with_digest(&format!("sha256:{HEX}"));
        assert_eq!(
            pinned.to_string(),
            format!("127.0.0.1:5000/busybox@sha256:{HEX}")
        );
        assert_eq!(pinned.name(), "127.0.0.1:5000/busybox");
    }

    #[test]
    fn rejects_malformed_references() {
        let cases = [
            "",
            ":tag",
            "Alpine",
            "alpine:",
            "alpine:.bad",
            "alpine::x",
            "a//b",
            "/alpine",
            "alpine/",
            "a-/b",
            "a..b",
            "a___b",
            "alpine@sha256:abc",
            "alpine@sha512:abc",
            &format!("alpine@sha256:{}", HEX.to_uppercase()),
            "host:99999/app",
            "host:/app",
            "[zz]:5000/app",
            "bad_host.io:5000/app",
            &format!("alpine:{}", "x".repeat(129)),
            &format!("alpine/{}", "x".repeat(250)),
            "alpine tag",
        ];
        for case in cases {
            let err = case.parse::<Reference>().expect_err(case).to_string();
            assert!(
                err.starts_with(&format!("invalid image reference \"{case}\"")),
                "{case}: {err}"
            );
        }
    }

    #[test]
    fn default_domain_applies_to_names_without_a_registry() {
        let with = |s: &str| {
            Reference::parse_with_domain(s, Some("127.0.0.1:5000"))
                .unwrap()
                .to_string()
        };
        assert_eq!(with("alpine"), "127.0.0.1:5000/alpine:latest");
        assert_eq!(with("ns/app:1"), "127.0.0.1:5000/ns/app:1");
        assert_eq!(with("docker.io/alpine"), "docker.io/library/alpine:latest");
        assert_eq!(with("ghcr.io/a/b"), "ghcr.io/a/b:latest");
    }

    #[test]
    fn accepts_unusual_but_valid_names() {
        for case in ["a__b", "a---b", "a.b_c", "x/y-z/w", "a:_tag", "a:v1.2-rc_3"] {
            parse(case);
        }
    }
}
