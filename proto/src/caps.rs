//! Linux capability names, shared by both sides: the host checks and
//! normalizes `--cap-add`/`--cap-drop` when a container is created (it also
//! builds on macOS, where no Linux capability library applies), and vminitd
//! reads the same names when it sets a process's capabilities.

/// Every capability the Linux kernel knows, in bit order (`CAP_CHOWN` is 0).
pub const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A name as Docker takes it (`NET_ADMIN` or `CAP_NET_ADMIN`, any case) in
/// its one stored form, `CAP_NET_ADMIN`; `ALL` stays `ALL`. None for a name
/// no kernel knows.
pub fn normalize(name: &str) -> Option<String> {
    let upper = name.to_ascii_uppercase();
    if upper == "ALL" {
        return Some(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    NAMES.contains(&full.as_str()).then_some(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_to_their_full_form() {
        assert_eq!(normalize("mknod").as_deref(), Some("CAP_MKNOD"));
        assert_eq!(normalize("Cap_Net_Admin").as_deref(), Some("CAP_NET_ADMIN"));
        assert_eq!(
            normalize("checkpoint_restore").as_deref(),
            Some("CAP_CHECKPOINT_RESTORE")
        );
        assert_eq!(normalize("all").as_deref(), Some("ALL"));
        assert_eq!(normalize("FLY"), None);
        assert_eq!(normalize("CAP_"), None);
        assert_eq!(normalize(""), None);
    }
}
