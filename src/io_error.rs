//! The I/O error every module wraps: what was being done, and the system's
//! error (`read /x/config.json: Permission denied`). One type and one
//! helper for all: `.map_err(io("read x"))?` converts into each module's
//! own error through its `Io(#[from] IoError)` variant, so every message
//! names what failed the same way.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct IoError {
    context: String,
    source: std::io::Error,
}

impl IoError {
    /// The system's error, for callers that tell some apart (a missing
    /// file, a full disk).
    pub fn io(&self) -> &std::io::Error {
        &self.source
    }
}

/// Attaches what was being done to an I/O error.
pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> IoError {
    let context = context.into();
    move |source| IoError { context, source }
}

/// Attaches the path the I/O was on: `PATH: ERROR`.
pub fn at(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> IoError {
    io(path.as_ref().display().to_string())
}
