//! Where a container's start goes: each phase of `create`, `start` and the
//! VM's life, timed and logged at debug level (`--debug` shows them, one
//! line each, `phase NAME: MS ms`), so a slow start names its slow part.

use std::time::{Duration, Instant};

/// A stopwatch over consecutive phases: each `done` logs the time since
/// the previous one.
pub struct Phases {
    last: Instant,
}

impl Phases {
    pub fn start() -> Phases {
        Phases {
            last: Instant::now(),
        }
    }

    /// Ends `name`, which began when the previous phase ended.
    pub fn done(&mut self, name: &str) {
        let now = Instant::now();
        log(name, now - self.last);
        self.last = now;
    }

    /// Ends a stretch that others timed in parts (the guest's own clock
    /// splits a boot): logs the parts in order, and the rest of the stretch
    /// first, as `rest`.
    pub fn done_in_parts(&mut self, rest: &str, parts: &[(&str, Duration)]) {
        let now = Instant::now();
        let known: Duration = parts.iter().map(|(_, d)| *d).sum();
        log(rest, (now - self.last).saturating_sub(known));
        for (name, duration) in parts {
            log(name, *duration);
        }
        self.last = now;
    }
}

fn log(name: &str, duration: Duration) {
    tracing::debug!("phase {name}: {:.1} ms", duration.as_secs_f64() * 1000.0);
}
