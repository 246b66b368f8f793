//! Logging to the guest console (the VM's serial port), which the host keeps
//! as the container's boot log. A logging framework would be dead weight in
//! a binary that logs a dozen lines per boot.

use std::time::{SystemTime, UNIX_EPOCH};

fn line(level: &str, message: &str) {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "vminitd [{}.{:03}] {level}: {message}",
        t.as_secs(),
        t.subsec_millis()
    );
}

pub fn info(message: &str) {
    line("info", message);
}

pub fn error(message: &str) {
    line("error", message);
}
