//! Random IDs: 64 lowercase hex digits, as Docker makes container IDs and
//! names anonymous volumes.

use std::io::Read;

pub fn random() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes))?;
    Ok(hex::encode(bytes))
}
