//! Container IDs: 64 lowercase hex digits, as Docker makes them.

use std::io::Read;

pub fn new() -> Result<String, super::Error> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(super::io("read /dev/urandom"))?;
    Ok(hex::encode(bytes))
}
