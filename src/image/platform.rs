//! Platforms (OS, architecture, variant) and how well one fits another,
//! by which `manifest::select` chooses an index's manifest.
//!
//! Our own matcher rather than oci-client's, because that one ignores the
//! variant: on arm64 it could hand an arm/v7 or arm64/v9-only image to a v8
//! machine.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An OCI platform as it appears in an index entry or image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on: containers run in a VM of the host's
    /// architecture, never emulated.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Platform {
            os: "linux".to_string(),
            architecture: architecture.to_string(),
            variant: default_variant(architecture).map(str::to_string),
        }
    }

    /// The platform `--platform`, `--os` and `--arch` ask for; None when
    /// none is given. As in Apple's `container`, `--platform` takes
    /// precedence, and `--os` or `--arch` alone takes the other from the host.
    pub fn from_flags(
        platform: Option<&str>,
        os: Option<&str>,
        arch: Option<&str>,
    ) -> Result<Option<Platform>, super::Error> {
        if let Some(platform) = platform {
            return platform.parse().map(Some);
        }
        if os.is_none() && arch.is_none() {
            return Ok(None);
        }
        let host = Platform::host();
        let os = os.unwrap_or(&host.os);
        let arch = arch.unwrap_or(&host.architecture);
        format!("{os}/{arch}").parse().map(Some)
    }

    /// Whether an image built for `candidate` runs here.
    pub fn runs(&self, candidate: &Platform) -> bool {
        self.score(candidate).is_some()
    }

    /// How well an index entry's platform fits this one: `None` if it cannot
    /// run here, higher is better. An entry without a variant fits any variant
    /// of its architecture but loses to one naming ours exactly.
    pub(super) fn score(&self, candidate: &Platform) -> Option<u8> {
        if candidate.os != self.os || candidate.architecture != self.architecture {
            return None;
        }
        let variant = |p: &Platform| {
            p.variant
                .clone()
                .or(default_variant(&p.architecture).map(Into::into))
        };
        match (variant(self), variant(candidate)) {
            (want, got) if want == got => Some(2),
            (_, None) => Some(1),
            _ => None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = super::Error;

    /// `os/architecture[/variant]`, as `--platform` takes it (`linux/arm64/v8`).
    fn from_str(input: &str) -> Result<Platform, super::Error> {
        let parts: Vec<&str> = input.split('/').collect();
        let valid = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid) {
            return Err(super::Error::InvalidPlatform {
                input: input.to_string(),
                reason: "use OS/ARCH[/VARIANT], e.g. linux/arm64/v8".to_string(),
            });
        }
        let architecture = match parts[1] {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: architecture.to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

/// The variant an architecture implies when none is given: arm64 means v8.
fn default_variant(architecture: &str) -> Option<&'static str> {
    (architecture == "arm64").then_some("v8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        }
    }

    #[test]
    fn parses_platform_flags() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p, platform("linux", "arm64", Some("v8")));
        let p: Platform = "linux/x86_64".parse().unwrap();
        assert_eq!(p, platform("linux", "amd64", None));
        for bad in ["linux", "linux/", "a/b/c/d", "Linux/amd64"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }

    #[test]
    fn platform_flags_combine_as_apple_does() {
        let from = |p, o, a| Platform::from_flags(p, o, a).unwrap();
        assert_eq!(from(None, None, None), None);
        let host = Platform::host();
        assert_eq!(
            from(Some("linux/arm64/v8"), Some("windows"), Some("amd64")),
            Some(platform("linux", "arm64", Some("v8")))
        );
        assert_eq!(
            from(None, None, Some("arm64")),
            Some(platform("linux", "arm64", None))
        );
        assert_eq!(
            from(None, Some("freebsd"), None),
            Some(platform("freebsd", &host.architecture, None))
        );
        assert!(Platform::from_flags(Some("linux"), None, None).is_err());
        assert!(Platform::from_flags(None, None, Some("ARM")).is_err());
    }

    #[test]
    fn host_is_linux() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert!(!host.architecture.is_empty());
        assert_ne!(host.architecture, "x86_64");
    }
}
