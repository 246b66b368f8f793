//! The ext4 writer: turns OCI layer tar streams into one ext4 filesystem
//! image. Its only I/O is the output file. (Filled in by the ext4 work.)

use std::io::Read;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Options for a new filesystem image.
#[derive(Debug, Clone)]
pub struct FormatOptions {
    /// Size of the filesystem in bytes; the file is sparse, so unused space costs nothing.
    pub size_bytes: u64,
}

/// Builds one ext4 image from layers applied in order.
pub struct Formatter {}

impl Formatter {
    pub fn create(_path: &Path, _options: FormatOptions) -> Result<Self, Error> {
        unimplemented!()
    }
    /// Applies one uncompressed layer tar (whiteouts included) on top of what is there.
    pub fn unpack_layer(&mut self, _tar: impl Read) -> Result<(), Error> {
        unimplemented!()
    }
    /// Writes the metadata and flushes the file.
    pub fn finish(self) -> Result<(), Error> {
        unimplemented!()
    }
}
