//! Docker credential helpers: the program `docker-credential-<name>` on
//! PATH, spoken to as docker-credential-helpers' client does. `get` reads
//! a server URL on stdin and answers `{"ServerURL","Username","Secret"}`;
//! `store` reads that object; `erase` reads a server URL. A helper reports
//! failure by exiting non-zero with its message on stdout, and "credentials
//! not found in native keychain" means it holds nothing for that server.
//!
//! A helper is someone else's program: its answer is read to at most
//! [`MAX_ANSWER_BYTES`] and it gets [`TIMEOUT`] to give it, so a broken one
//! cannot hang or balloon the CLI. Secrets never reach a Debug or a message.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::Error;

/// Far above a real answer (a user name and a token of a few KiB).
pub const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// Keychain helpers may wait for an unlock prompt; anything slower than
/// this is stuck.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// What every helper answers when it holds nothing for a server
/// (docker-credential-helpers' `errCredentialsNotFoundMessage`).
const NOT_FOUND: &str = "credentials not found in native keychain";

/// The user name a helper answers with to mean "the secret is an identity
/// token" (an OAuth2 refresh token), not a password.
const TOKEN_USERNAME: &str = "<token>";

/// The secret a helper holds for a server. No Debug: it holds a password.
pub enum Answer {
    NotFound,
    Password { user: String, password: String },
    IdentityToken,
}

pub struct Helper<'a> {
    /// The suffix Docker's config names (`desktop`, `pass`, ...).
    name: &'a str,
    /// `host[:port]`, for messages.
    registry: &'a str,
}

impl<'a> Helper<'a> {
    pub fn new(name: &'a str, registry: &'a str) -> Helper<'a> {
        Helper { name, registry }
    }

    pub fn program(&self) -> String {
        format!("docker-credential-{}", self.name)
    }

    pub async fn get(&self) -> Result<Answer, Error> {
        #[derive(serde::Deserialize)]
        struct Credentials {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let stdout = match self
            .run("get", server_url(self.registry).as_bytes())
            .await?
        {
            Ok(stdout) => stdout,
            Err(message) if message == NOT_FOUND => return Ok(Answer::NotFound),
            Err(message) => return Err(self.failed(message)),
        };
        let answer: Credentials = serde_json::from_slice(&stdout)
            .map_err(|e| self.failed(format!("its answer is not credentials JSON: {e}")))?;
        Ok(if answer.username.is_empty() && answer.secret.is_empty() {
            Answer::NotFound
        } else if answer.username == TOKEN_USERNAME {
            Answer::IdentityToken
        } else {
            Answer::Password {
                user: answer.username,
                password: answer.secret,
            }
        })
    }

    pub async fn store(&self, user: &str, password: &str) -> Result<(), Error> {
        let input = serde_json::json!({
            "ServerURL": server_url(self.registry),
            "Username": user,
            "Secret": password,
        });
        match self.run("store", input.to_string().as_bytes()).await? {
            Ok(_) => Ok(()),
            // A helper echoing its input must not put the password on screen.
            Err(message) if password.is_empty() => Err(self.failed(message)),
            Err(message) => Err(self.failed(message.replace(password, "***"))),
        }
    }

    /// Forgets the server; holding nothing for it is not an error.
    pub async fn erase(&self) -> Result<(), Error> {
        match self
            .run("erase", server_url(self.registry).as_bytes())
            .await?
        {
            Ok(_) => Ok(()),
            Err(message) if message == NOT_FOUND => Ok(()),
            Err(message) => Err(self.failed(message)),
        }
    }

    fn failed(&self, reason: String) -> Error {
        Error::CredentialHelper {
            helper: self.program(),
            registry: self.registry.to_string(),
            reason,
        }
    }

    /// Runs `docker-credential-<name> ACTION` with `input` on stdin: its
    /// stdout if it succeeded, else its message (stdout, else stderr, else
    /// the exit status) as one trimmed line. The outer error is the
    /// helper not running, timing out, or answering too much.
    async fn run(&self, action: &str, input: &[u8]) -> Result<Result<Vec<u8>, String>, Error> {
        // With a slash, the name would be a path to run, not a helper on PATH.
        if self.name.is_empty() || self.name.contains('/') {
            return Err(self.failed(format!("\"{}\" is not a helper name", self.name)));
        }
        let mut child = tokio::process::Command::new(self.program())
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Dropped on a timeout: the helper must not outlive the wait.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                self.failed(match e.kind() {
                    std::io::ErrorKind::NotFound => format!("{} is not on PATH", self.program()),
                    _ => e.to_string(),
                })
            })?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            unreachable!("all three are piped");
        };
        let talk = async {
            let write = async {
                // A helper that exits without reading is judged by its
                // exit status, not by the broken pipe.
                let _ = stdin.write_all(input).await;
                drop(stdin);
            };
            let (_, out, err, status) = tokio::join!(
                write,
                read_bounded(stdout),
                read_bounded(stderr),
                child.wait()
            );
            Ok::<_, std::io::Error>((out?, err?, status?))
        };
        let (out, err, status) = tokio::time::timeout(TIMEOUT, talk)
            .await
            .map_err(|_| self.failed(format!("it did not answer within {} s", TIMEOUT.as_secs())))?
            .map_err(|e| self.failed(e.to_string()))?;
        let (Some(out), Some(err)) = (out, err) else {
            return Err(self.failed(format!("it answered more than {MAX_ANSWER_BYTES} bytes")));
        };
        if status.success() {
            return Ok(Ok(out));
        }
        Ok(Err(message(&out, &err, status)))
    }
}

/// The server key Docker gives helpers: its v1 URL for Docker Hub,
/// `host[:port]` for every other registry.
pub fn server_url(registry: &str) -> String {
    if registry == super::reference::DEFAULT_REGISTRY {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// All of a pipe, or None past [`MAX_ANSWER_BYTES`] (then the pipe is
/// closed, so a helper writing on gets EPIPE instead of blocking).
async fn read_bounded(pipe: impl AsyncRead + Unpin) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    pipe.take(MAX_ANSWER_BYTES + 1)
        .read_to_end(&mut bytes)
        .await?;
    Ok((bytes.len() as u64 <= MAX_ANSWER_BYTES).then_some(bytes))
}

/// A failed helper's message as one line: helpers write theirs to stdout,
/// a script that broke writes to stderr, and a silent one has its status.
fn message(stdout: &[u8], stderr: &[u8], status: ExitStatus) -> String {
    let text = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let said = [text(stdout), text(stderr)]
        .into_iter()
        .find(|t| !t.is_empty());
    match said {
        Some(said) if said.chars().count() > 200 => {
            format!("{}...", said.chars().take(200).collect::<String>())
        }
        Some(said) => said,
        None => format!("it exited with {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_is_named_by_its_v1_url() {
        assert_eq!(server_url("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(server_url("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
