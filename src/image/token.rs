//! The registry token dance, done here so that every answer is bounded:
//! `/v2/` answers 401 with a `WWW-Authenticate` challenge, and a Bearer one
//! names the token service, whose JSON answer holds the token. oci-client
//! does the same for pushes and logins, but reads the token service's
//! answer whole, however large.

use oci_client::secrets::RegistryAuth;

/// The most of a token service's answer we read: real tokens are a few
/// KiB (JWTs with a scope list), far below this.
pub const MAX_TOKEN_BYTES: u64 = 1 << 20;

/// Where to ask for a token: the Bearer challenge of a `WWW-Authenticate`
/// header.
#[derive(Debug, PartialEq)]
pub struct Challenge {
    pub realm: String,
    pub service: Option<String>,
}

/// The Bearer challenge among those a `WWW-Authenticate` value holds, if
/// any (a Basic registry sends only a Basic one). A malformed value holds
/// none. Parsed with `http-auth`, as oci-client does: quoting and escapes
/// are the hard part of RFC 7235, and it is fuzzed (fuzz/).
pub fn bearer_challenge(value: &str) -> Option<Challenge> {
    let challenges = http_auth::parse_challenges(value).ok()?;
    let bearer = challenges
        .iter()
        .find(|c| c.scheme.eq_ignore_ascii_case("Bearer"))?;
    let param = |name: &str| {
        bearer
            .params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.to_unescaped())
    };
    Some(Challenge {
        realm: param("realm")?,
        service: param("service"),
    })
}

/// Why no token came.
#[derive(Debug)]
pub enum Failure {
    /// The request failed on the way (connection, TLS, a body cut short).
    Transfer(reqwest::Error),
    /// The token service refused the credentials (or their absence).
    Refused,
    /// It answered something other than a token, or more than we read.
    Malformed(String),
}

/// A token to pull from `repository` on the registry at `base`
/// (`scheme://host[:port]`), or `None` where the registry asks for none (no
/// challenge, or only Basic: then the credentials go with each request).
pub async fn pull_token(
    http: &reqwest::Client,
    base: &str,
    repository: &str,
    auth: &RegistryAuth,
) -> Result<Option<String>, Failure> {
    if let RegistryAuth::Bearer(token) = auth {
        return Ok(Some(token.clone()));
    }
    let probe = http
        .get(format!("{base}/v2/"))
        .send()
        .await
        .map_err(Failure::Transfer)?;
    let Some(challenge) = probe
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_challenge)
    else {
        return Ok(None);
    };
    let scope = format!("repository:{repository}:pull");
    let mut query = vec![("scope", scope.as_str())];
    if let Some(service) = &challenge.service {
        query.push(("service", service));
    }
    let mut request = http.get(&challenge.realm).query(&query);
    if let RegistryAuth::Basic(user, password) = auth {
        request = request.basic_auth(user, Some(password));
    }
    let mut response = request.send().await.map_err(Failure::Transfer)?;
    if matches!(response.status().as_u16(), 401 | 403) {
        return Err(Failure::Refused);
    }
    if !response.status().is_success() {
        return Err(Failure::Malformed(format!(
            "the token service answered {}",
            response.status()
        )));
    }
    let body = super::registry::read_bounded(&mut response, MAX_TOKEN_BYTES)
        .await
        .map_err(|e| match e {
            Err(e) => Failure::Transfer(e),
            Ok(()) => Failure::Malformed(format!(
                "the token service's answer is larger than {MAX_TOKEN_BYTES} bytes"
            )),
        })?;
    parse_token(&body).map(Some)
}

/// The token of a token service's JSON answer: `token`, or the OAuth2 name
/// `access_token` some services use instead.
fn parse_token(body: &[u8]) -> Result<String, Failure> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| Failure::Malformed(format!("the token service's answer is not JSON: {e}")))?;
    answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Failure::Malformed("the token service's answer holds no token".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_as_registries_send_them() {
        let hub = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        assert_eq!(
            bearer_challenge(hub),
            Some(Challenge {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
        // Scheme and names in any case, escapes undone, Basic beside it.
        let mixed = r#"Basic realm="x", bearer REALM="http://127.0.0.1:1/t\"ok\"""#;
        assert_eq!(
            bearer_challenge(mixed),
            Some(Challenge {
                realm: r#"http://127.0.0.1:1/t"ok""#.into(),
                service: None,
            })
        );
        assert_eq!(bearer_challenge(r#"Basic realm="registry""#), None);
        assert_eq!(bearer_challenge(r#"Bearer service="no realm""#), None);
        assert_eq!(bearer_challenge(r#"Bearer realm="unterminated"#), None);
    }

    #[test]
    fn tokens_by_either_name() {
        assert_eq!(parse_token(br#"{"token":"t1"}"#).unwrap(), "t1");
        assert_eq!(parse_token(br#"{"access_token":"t2"}"#).unwrap(), "t2");
        assert!(matches!(
            parse_token(br#"{"token":""}"#),
            Err(Failure::Malformed(_))
        ));
        assert!(matches!(parse_token(b"<html>"), Err(Failure::Malformed(_))));
    }
}
