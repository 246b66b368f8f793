//! `container`: run Linux containers, each in its own lightweight VM.
//!
//! Data flows one way: `cli` -> `runtime` -> `vm` (and the agent client),
//! and `image` -> `ext4`. See docs/architecture.md.

pub mod app_root;
pub(crate) mod atomic;
pub mod build;
pub mod bytes;
pub mod causes;
pub mod cli;
pub mod ext4;
pub(crate) mod id;
pub mod image;
pub mod io_error;
pub mod name;
pub mod network;
pub mod phases;
pub mod properties;
pub mod runtime;
pub mod vm;
pub mod volume;

/// Internal parsers the fuzz targets in `fuzz/` call directly: the ext4
/// writer's tar reader (otherwise reachable only through the whole writer),
/// the manifest/index parser, with the manifest form the writers
/// serialize, and the registries' token challenge parser. Only built with the `fuzzing` feature, which only
/// fuzz/Cargo.toml enables; not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::ext4::tar_reader::Reader as TarReader;
    pub use crate::image::manifest::{Document, ManifestDocument};
    pub use crate::image::token::bearer_challenge;
}
