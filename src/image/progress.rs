//! What pulls and pushes report about each blob, for the CLI to draw (bars on
//! a terminal, lines in a log). The image code only emits events; it never
//! knows how, or whether, they are shown.

use std::fmt;
use std::sync::Arc;

pub enum Event<'a> {
    /// The blob is already where it is going; nothing to transfer.
    Exists {
        digest: &'a str,
        size: u64,
    },
    /// The registry had the blob in another repository and linked it.
    Mounted {
        digest: &'a str,
        size: u64,
    },
    Started {
        digest: &'a str,
        size: u64,
    },
    /// `bytes` more were transferred.
    Advanced {
        digest: &'a str,
        bytes: u64,
    },
    /// Transferred and verified.
    Done {
        digest: &'a str,
    },
}

pub trait Progress: Send + Sync {
    fn event(&self, event: Event<'_>);
}

/// Where events go; nowhere by default.
#[derive(Clone, Default)]
pub struct ProgressSink(Option<Arc<dyn Progress>>);

impl ProgressSink {
    pub fn new(progress: Arc<dyn Progress>) -> ProgressSink {
        ProgressSink(Some(progress))
    }

    pub fn emit(&self, event: Event<'_>) {
        if let Some(progress) = &self.0 {
            progress.event(event);
        }
    }
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "ProgressSink(on)"
        } else {
            "ProgressSink(off)"
        })
    }
}
