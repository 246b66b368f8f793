//! Content digests as a type. A digest is checked once, where it comes in
//! (a registry's manifest, an archive's file name, a user's reference), and
//! from then on is known to be `sha256:` and 64 lowercase hex digits: safe
//! to make a file name of, with its hex part at hand instead of sliced out
//! of a string.

use std::fmt;

use sha2::{Digest as _, Sha256};

use super::Error;

const PREFIX: &str = "sha256:";

/// Deserializing checks it: a manifest naming a bad digest is refused
/// where it is read.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// The only kind of digest this store accepts.
    pub fn parse(text: &str) -> Result<Digest, Error> {
        match text.strip_prefix(PREFIX) {
            Some(hex) if is_hex64(hex) => Ok(Digest(text.to_string())),
            _ => Err(Error::InvalidDigest(text.to_string())),
        }
    }

    /// The digest whose hex part is a file name, if it is one.
    pub fn from_hex(hex: &str) -> Option<Digest> {
        is_hex64(hex).then(|| Digest(format!("{PREFIX}{hex}")))
    }

    /// The digest of some bytes.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest of everything a hasher has seen.
    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest(format!("{PREFIX}{}", hex::encode(hasher.finalize())))
    }

    /// The 64 hex digits: a blob's or snapshot's file name.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    /// The first 12 hex digits, as Docker shows image IDs and blobs.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;

    fn try_from(text: String) -> Result<Digest, Error> {
        Digest::parse(&text)
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.0
    }
}

fn is_hex64(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_with_64_lowercase_hex_digits() {
        let good = format!("sha256:{}", "ab".repeat(32));
        let digest = Digest::parse(&good).unwrap();
        assert_eq!(digest.hex(), "ab".repeat(32));
        assert_eq!(digest.to_string(), good);
        assert_eq!(Digest::from_hex(digest.hex()), Some(digest));
        for bad in [
            "sha256:../../etc/passwd".to_string(),
            "md5:abc".to_string(),
            format!("sha256:{}", "AB".repeat(32)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha512:{}", "a".repeat(128)),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
