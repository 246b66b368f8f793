//! The container's cgroup (v2): where its limits are set and its usage read.
//! One container per VM, so one cgroup, directly under the root.

use std::path::Path;

pub const CONTAINER: &str = "/sys/fs/cgroup/container";
/// cpu.max's period; quotas are expressed against it.
const CPU_PERIOD_USEC: u64 = 100_000;

/// Creates the container's cgroup with its limits (0 means none).
pub fn create(memory_limit_bytes: u64, cpu_quota_millicpus: u32) -> Result<(), String> {
    // Each controller on its own: a kernel without one should not cost the others.
    for controller in ["+cpu", "+memory", "+pids", "+io"] {
        let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", controller);
    }
    std::fs::create_dir_all(CONTAINER).map_err(|e| format!("create {CONTAINER}: {e}"))?;
    if memory_limit_bytes > 0 {
        write("memory.max", &memory_limit_bytes.to_string())?;
    }
    if cpu_quota_millicpus > 0 {
        let quota = u64::from(cpu_quota_millicpus) * CPU_PERIOD_USEC / 1000;
        write("cpu.max", &format!("{quota} {CPU_PERIOD_USEC}"))?;
    }
    Ok(())
}

fn write(file: &str, value: &str) -> Result<(), String> {
    let path = Path::new(CONTAINER).join(file);
    std::fs::write(&path, value).map_err(|e| format!("write {value} to {}: {e}", path.display()))
}

/// Moves the calling process into the container's cgroup.
pub fn join() -> Result<(), String> {
    write("cgroup.procs", &std::process::id().to_string())
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_usage_usec: u64,
    pub memory_current_bytes: u64,
    pub memory_max_bytes: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    pub pids_current: u64,
}

pub fn usage() -> Usage {
    let read =
        |file: &str| std::fs::read_to_string(Path::new(CONTAINER).join(file)).unwrap_or_default();
    parse_usage(
        &read("cpu.stat"),
        &read("memory.current"),
        &read("memory.max"),
        &read("io.stat"),
        &read("pids.current"),
    )
}

fn parse_usage(
    cpu_stat: &str,
    memory_current: &str,
    memory_max: &str,
    io_stat: &str,
    pids: &str,
) -> Usage {
    let keyed = |text: &str, key: &str| -> u64 {
        text.lines()
            .filter_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
            .next()
            .unwrap_or(0)
    };
    // io.stat: one line per device, "8:0 rbytes=1 wbytes=2 ...".
    let io_sum = |key: &str| -> u64 {
        io_stat
            .split_whitespace()
            .filter_map(|field| {
                field
                    .strip_prefix(key)?
                    .strip_prefix('=')?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    Usage {
        cpu_usage_usec: keyed(cpu_stat, "usage_usec "),
        memory_current_bytes: memory_current.trim().parse().unwrap_or(0),
        memory_max_bytes: memory_max.trim().parse().unwrap_or(0), // "max" means none
        io_read_bytes: io_sum("rbytes"),
        io_write_bytes: io_sum("wbytes"),
        pids_current: pids.trim().parse().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgroup_files() {
        let usage = parse_usage(
            "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n",
            "4096\n",
            "max\n",
            "254:0 rbytes=100 wbytes=20 rios=1 wios=1\n254:16 rbytes=5 wbytes=1 rios=1 wios=1\n",
            "3\n",
        );
        assert_eq!(
            usage,
            Usage {
                cpu_usage_usec: 1234,
                memory_current_bytes: 4096,
                memory_max_bytes: 0,
                io_read_bytes: 105,
                io_write_bytes: 21,
                pids_current: 3
            }
        );
    }
}
