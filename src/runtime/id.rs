//! Container IDs (and the runtime's process IDs in the guest, from them).

pub fn new() -> Result<String, super::Error> {
    crate::id::random().map_err(super::io("read /dev/urandom"))
}
