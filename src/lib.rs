//! `container`: run Linux containers, each in its own lightweight VM.
//!
//! Data flows one way: `cli` -> `runtime` -> `vm` (and the agent client),
//! and `image` -> `ext4`. See docs/architecture.md.

pub mod app_root;
pub(crate) mod atomic;
pub mod build;
pub mod bytes;
pub mod cli;
pub mod ext4;
pub(crate) mod id;
pub mod image;
pub mod name;
pub mod network;
pub mod phases;
pub mod properties;
pub mod runtime;
pub mod vm;
pub mod volume;
