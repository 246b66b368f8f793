//! A QEMU Machine Protocol client: just enough to save a booted VM as a
//! template and to restore one (stop, migrate, migrate-incoming, cont).
//!
//! Written by hand: QMP is JSON lines over a Unix socket, a few dozen lines
//! with serde_json, and the crates that speak it (qapi) bring QEMU's whole
//! schema for these four commands.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::Error;

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// How long a migration (saving or restoring a template's device state, a
/// few dozen KiB) may take.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(30);

impl Qmp {
    /// Connects to the monitor socket QEMU creates at `path` as it starts.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, Error> {
        let started = Instant::now();
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(stream) => break stream,
                Err(e) if started.elapsed() > timeout => {
                    return Err(Error::Monitor(format!(
                        "connect to {}: {e}",
                        path.display()
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        };
        let (reader, writer) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(reader),
            writer,
        };
        qmp.read().await?; // the greeting
        qmp.call("qmp_capabilities", json!({})).await?;
        Ok(qmp)
    }

    async fn read(&mut self) -> Result<Value, Error> {
        let mut line = String::new();
        let read = self.reader.read_line(&mut line).await;
        match read {
            Ok(0) => Err(Error::Monitor("QEMU closed its monitor".into())),
            Ok(_) => serde_json::from_str(&line)
                .map_err(|e| Error::Monitor(format!("unreadable reply {line:?}: {e}"))),
            Err(e) => Err(Error::Monitor(format!("read: {e}"))),
        }
    }

    /// Runs `command` and returns what it returned; events are skipped.
    pub async fn call(&mut self, command: &str, arguments: Value) -> Result<Value, Error> {
        let mut request = json!({ "execute": command, "arguments": arguments }).to_string();
        request.push('\n');
        self.writer
            .write_all(request.as_bytes())
            .await
            .map_err(|e| Error::Monitor(format!("{command}: {e}")))?;
        loop {
            let mut reply = self.read().await?;
            if let Some(error) = reply.get("error") {
                let text = error["desc"].as_str().unwrap_or("an error");
                return Err(Error::Monitor(format!("{command}: {text}")));
            }
            if let Some(value) = reply.get_mut("return") {
                return Ok(value.take());
            }
        }
    }

    /// Waits for the migration in progress (either way) to complete.
    pub async fn migrated(&mut self) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let status = self.call("query-migrate", json!({})).await?;
            match status["status"].as_str() {
                Some("completed") => return Ok(()),
                Some("failed" | "cancelled") => {
                    let why = status["error-desc"].as_str().unwrap_or("no reason given");
                    return Err(Error::Monitor(format!("migration failed: {why}")));
                }
                _ if started.elapsed() > MIGRATION_TIMEOUT => {
                    return Err(Error::Monitor("migration did not complete".into()));
                }
                _ => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
}
