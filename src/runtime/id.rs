//! Container IDs (and the runtime's process IDs in the guest, from them).

pub fn new() -> Result<String, super::Error> {
    Ok(crate::id::random().map_err(crate::io_error::io("read /dev/urandom"))?)
}
