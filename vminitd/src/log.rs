//! Logging to the guest console (the VM's serial port), which the host keeps
//! as the container's boot log. A logging framework would be dead weight in
//! a binary that logs a dozen lines per boot. Times are seconds since the
//! kernel started, like the kernel's own lines, so the two read together.

/// The guest's boot clock: time since the kernel started.
pub fn since_boot() -> std::time::Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0))
        .into()
}

fn line(level: &str, message: &str) {
    let t = since_boot();
    eprintln!(
        "vminitd [{}.{:06}] {level}: {message}",
        t.as_secs(),
        t.subsec_micros()
    );
}

pub fn info(message: &str) {
    line("info", message);
}

pub fn error(message: &str) {
    line("error", message);
}

/// vminitd's peak resident memory, from /proc/self/status.
pub fn peak_memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}
