//! How a container's filesystem view is built: a plan of steps (pure, so it
//! is unit-tested) and their application (system calls).
//!
//! The layout follows Docker's: a private tmpfs /dev with the standard
//! nodes, the guest's devpts (so `tty` names match), /dev/shm, /dev/mqueue,
//! read-only sysfs, the container's own cgroup2, and /proc with Docker's
//! masked and read-only paths.

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::unistd::{pivot_root, symlinkat};

use agent_proto::{ContainerMount, container_mount};

use crate::boot::make_dir;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Mount {
        source: &'static str,
        target: String,
        fstype: &'static str,
        flags: MsFlags,
        data: String,
    },
    Bind {
        source: String,
        target: String,
        read_only: bool,
    },
    CharDevice {
        path: String,
        major: u64,
        minor: u64,
    },
    Symlink {
        target: &'static str,
        link: String,
    },
    /// Hide a file or directory (bind /dev/null, or an empty read-only tmpfs).
    Mask {
        path: String,
    },
    /// Remount a path read-only where it is.
    ReadOnly {
        path: String,
    },
    /// A mount the user asked for (`-v`, `--mount`, `--tmpfs`) at `target`,
    /// a path in the container. Resolved inside `root` when applied, after
    /// the mounts before it: the image's symlinks are followed without
    /// leaving the root. A missing target is made: a directory, or an empty
    /// file to bind a file on.
    User {
        root: String,
        target: String,
        source: UserSource,
        read_only: bool,
        flags: MsFlags,
        /// Fill an empty bound directory with what the image has at the
        /// target first (a new volume, as Docker does).
        populate: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSource {
    /// A guest path: a directory the host shares, or a file in one.
    Bind(String),
    /// A new tmpfs with this data (`size=...,mode=...`).
    Tmpfs(String),
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Devices every container gets, all 0666 as in Docker.
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

const DEV_LINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
    ("pts/ptmx", "ptmx"),
    ("/proc/kcore", "core"),
];

/// Paths in /proc and /sys a container must not see (Docker's list).
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths in /proc a container may read but not write (Docker's list).
const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's size for /dev/shm when `--shm-size` is not given.
const DEFAULT_SHM_BYTES: u64 = 64 << 20;

/// What to mount under `root` before pivoting into it, with a /dev/shm of
/// `shm_size_bytes` (0: Docker's 64 MiB). /proc is not here: it must be
/// mounted from inside the container's PID namespace (see [`proc`]).
pub fn root(root: &str, shm_size_bytes: u64) -> Vec<Step> {
    let shm_bytes = if shm_size_bytes == 0 {
        DEFAULT_SHM_BYTES
    } else {
        shm_size_bytes
    };
    let at = |p: &str| format!("{root}{p}");
    let mut steps = vec![
        // pivot_root needs the new root to be a mount point.
        Step::Bind {
            source: root.to_string(),
            target: root.to_string(),
            read_only: false,
        },
        Step::Mount {
            source: "tmpfs",
            target: at("/dev"),
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID.union(MsFlags::MS_STRICTATIME),
            data: "mode=755,size=65536k".into(),
        },
    ];
    for (name, major, minor) in DEVICES {
        steps.push(Step::CharDevice {
            path: at(&format!("/dev/{name}")),
            major: *major,
            minor: *minor,
        });
    }
    for (target, link) in DEV_LINKS {
        steps.push(Step::Symlink {
            target,
            link: at(&format!("/dev/{link}")),
        });
    }
    steps.extend([
        Step::Bind {
            source: "/dev/pts".into(),
            target: at("/dev/pts"),
            read_only: false,
        },
        Step::Mount {
            source: "shm",
            target: at("/dev/shm"),
            fstype: "tmpfs",
            flags: NOSUID_NODEV_NOEXEC,
            data: format!("mode=1777,size={shm_bytes}"),
        },
        Step::Mount {
            source: "mqueue",
            target: at("/dev/mqueue"),
            fstype: "mqueue",
            flags: NOSUID_NODEV_NOEXEC,
            data: String::new(),
        },
        Step::Mount {
            source: "sysfs",
            target: at("/sys"),
            fstype: "sysfs",
            flags: NOSUID_NODEV_NOEXEC.union(MsFlags::MS_RDONLY),
            data: String::new(),
        },
        Step::Mount {
            source: "cgroup",
            target: at("/sys/fs/cgroup"),
            fstype: "cgroup2",
            flags: NOSUID_NODEV_NOEXEC.union(MsFlags::MS_RDONLY),
            data: String::new(),
        },
    ]);
    steps.extend(
        MASKED
            .iter()
            .filter(|p| p.starts_with("/sys/"))
            .map(|p| Step::Mask { path: at(p) }),
    );
    steps
}

/// What to do after entering the container's root, from inside its PID namespace.
pub fn proc() -> Vec<Step> {
    let mut steps = vec![Step::Mount {
        source: "proc",
        target: "/proc".into(),
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: String::new(),
    }];
    steps.extend(
        MASKED
            .iter()
            .filter(|p| p.starts_with("/proc/"))
            .map(|p| Step::Mask {
                path: p.to_string(),
            }),
    );
    steps.extend(READ_ONLY.iter().map(|p| Step::ReadOnly {
        path: p.to_string(),
    }));
    steps
}

/// The user's mounts under `root`, parents before what is mounted inside
/// them (Docker sorts them by depth the same way; equal depths keep their
/// order). A target must be absolute and plain (no `..`); flags are
/// `nosuid`, `nodev`, `noexec`.
pub fn user(root: &str, mounts: &[ContainerMount]) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for m in mounts {
        if !m.target.starts_with('/') || m.target.split('/').any(|part| part == "..") {
            return Err(format!(
                "mount target {:?} must be an absolute path without \"..\"",
                m.target
            ));
        }
        let mut flags = MsFlags::empty();
        for flag in &m.flags {
            flags |= match flag.as_str() {
                "nosuid" => MsFlags::MS_NOSUID,
                "nodev" => MsFlags::MS_NODEV,
                "noexec" => MsFlags::MS_NOEXEC,
                other => return Err(format!("unknown mount flag {other:?}")),
            };
        }
        let source = match m.kind() {
            container_mount::Kind::Bind => UserSource::Bind(m.source.clone()),
            container_mount::Kind::Tmpfs => UserSource::Tmpfs(m.options.clone()),
        };
        steps.push(Step::User {
            root: root.to_string(),
            target: m.target.clone(),
            source,
            read_only: m.read_only,
            flags,
            populate: m.populate,
        });
    }
    let depth = |step: &Step| match step {
        Step::User { target, .. } => target.split('/').filter(|p| !p.is_empty()).count(),
        _ => 0,
    };
    steps.sort_by_key(depth);
    Ok(steps)
}

/// Applies steps in order. Masks and read-only remounts of paths this kernel
/// does not have are skipped, as Docker does.
pub fn apply(steps: &[Step]) -> Result<(), String> {
    for step in steps {
        apply_one(step).map_err(|e| match step {
            // The user's own: say it in their words.
            Step::User { target, .. } => format!("mount on {target}: {e}"),
            _ => format!("{step:?}: {e}"),
        })?;
    }
    Ok(())
}

fn apply_one(step: &Step) -> Result<(), String> {
    let none = None::<&str>;
    match step {
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => {
            make_dir(target)?;
            let data = (!data.is_empty()).then_some(data.as_str());
            mount(Some(*source), target.as_str(), Some(*fstype), *flags, data)
                .map_err(|e| e.to_string())
        }
        Step::Bind {
            source,
            target,
            read_only,
        } => {
            make_dir(target)?;
            let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
            mount(Some(source.as_str()), target.as_str(), none, flags, none)
                .map_err(|e| e.to_string())?;
            if *read_only {
                remount_read_only(target)?;
            }
            Ok(())
        }
        Step::CharDevice { path, major, minor } => {
            mknod(
                path.as_str(),
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(*major, *minor),
            )
            .map_err(|e| e.to_string())?;
            // mknod honours the umask; the mode must be exactly 0666.
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                path.as_str(),
                Mode::from_bits_truncate(0o666),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| e.to_string())
        }
        Step::Symlink { target, link } => {
            symlinkat(*target, nix::fcntl::AT_FDCWD, link.as_str()).map_err(|e| e.to_string())
        }
        Step::Mask { path } => match std::fs::metadata(path) {
            Err(_) => Ok(()),
            Ok(meta) if meta.is_dir() => mount(
                Some("tmpfs"),
                path.as_str(),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                none,
            )
            .map_err(|e| e.to_string()),
            Ok(_) => mount(
                Some("/dev/null"),
                path.as_str(),
                none,
                MsFlags::MS_BIND,
                none,
            )
            .map_err(|e| e.to_string()),
        },
        Step::ReadOnly { path } => {
            if std::fs::symlink_metadata(path).is_err() {
                return Ok(());
            }
            mount(
                Some(path.as_str()),
                path.as_str(),
                none,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                none,
            )
            .map_err(|e| e.to_string())?;
            remount_read_only(path)
        }
        Step::User {
            root,
            target,
            source,
            read_only,
            flags,
            populate,
        } => {
            let at = resolve_in(root, target)?;
            match source {
                UserSource::Bind(source) => {
                    let is_dir = std::fs::metadata(source)
                        .map_err(|e| format!("{source}: {e}"))?
                        .is_dir();
                    make_target(&at, is_dir)?;
                    if *populate && is_dir {
                        populate_dir(&at, source)?;
                    }
                    let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
                    mount(Some(source.as_str()), at.as_str(), none, bind, none)
                        .map_err(|e| e.to_string())?;
                    let mut remount = *flags;
                    if *read_only {
                        remount |= MsFlags::MS_RDONLY;
                    }
                    if !remount.is_empty() {
                        let remount = remount | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
                        mount(none, at.as_str(), none, remount, none)
                            .map_err(|e| format!("remount {at}: {e}"))?;
                    }
                    Ok(())
                }
                UserSource::Tmpfs(data) => {
                    make_target(&at, true)?;
                    let mut flags = *flags;
                    if *read_only {
                        flags |= MsFlags::MS_RDONLY;
                    }
                    let data = (!data.is_empty()).then_some(data.as_str());
                    mount(Some("tmpfs"), at.as_str(), Some("tmpfs"), flags, data)
                        .map_err(|e| e.to_string())
                }
            }
        }
    }
}

/// `path` (a path in the container) as a guest path under `root`, with the
/// symlinks that exist followed as the container would see them: an
/// absolute link starts again at `root`, and `..` never leaves it.
fn resolve_in(root: &str, path: &str) -> Result<String, String> {
    let mut resolved: Vec<String> = Vec::new();
    let mut pending: std::collections::VecDeque<String> =
        path.split('/').map(String::from).collect();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let candidate = format!(
            "{root}/{}",
            [resolved.as_slice(), &[part.clone()]].concat().join("/")
        );
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(format!("{path}: too many levels of symbolic links"));
                }
                let link =
                    std::fs::read_link(&candidate).map_err(|e| format!("{candidate}: {e}"))?;
                let link = link.to_string_lossy();
                if link.starts_with('/') {
                    resolved.clear();
                }
                for part in link.split('/').rev() {
                    pending.push_front(part.to_string());
                }
            }
            _ => resolved.push(part),
        }
    }
    Ok(format!("{root}/{}", resolved.join("/")))
}

/// Makes a mount's target where missing: a directory, or for a file an
/// empty file in its (made) directory. An existing one of the wrong kind is
/// an error, as the mount would fail less clearly.
fn make_target(at: &str, dir: bool) -> Result<(), String> {
    match (std::fs::metadata(at), dir) {
        (Ok(meta), true) if !meta.is_dir() => Err(format!("{at} is not a directory")),
        (Ok(meta), false) if meta.is_dir() => Err(format!(
            "{at} is a directory; a file cannot be mounted on it"
        )),
        (Ok(_), _) => Ok(()),
        (Err(_), true) => make_dir(at),
        (Err(_), false) => {
            if let Some((parent, _)) = at.rsplit_once('/') {
                make_dir(parent)?;
            }
            std::fs::File::create(at)
                .map(drop)
                .map_err(|e| format!("create {at}: {e}"))
        }
    }
}

/// Copies what the image has at `from` into the empty directory `to`, with
/// owners, modes and times, and gives `to` the owner and mode of `from`
/// (even an empty one), as Docker fills a new volume. A `to` that has
/// anything in it is left alone.
fn populate_dir(from: &str, to: &str) -> Result<(), String> {
    let empty = std::fs::read_dir(to)
        .map(|mut entries| entries.next().is_none())
        .unwrap_or(false);
    if !std::path::Path::new(from).is_dir() || !empty {
        return Ok(());
    }
    crate::copy_tree::copy(from.as_ref(), to.as_ref())
        .map_err(|e| format!("copy {from} into the new volume: {e}"))
}

fn remount_read_only(path: &str) -> Result<(), String> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("remount {path} read-only: {e}"))
}

/// Makes `root` the process's `/` and detaches the old root, so nothing of
/// the guest stays reachable from the container. The guest's root has a
/// parent mount (`boot::root_with_parent`), so pivot_root works directly;
/// pivoting "." onto "." stacks the old root over the new one, to be
/// detached at once, so the container's disk gets no directory for it.
pub fn enter(root: &str, read_only: bool) -> Result<(), String> {
    nix::unistd::chdir(root).map_err(|e| format!("chdir {root}: {e}"))?;
    pivot_root(".", ".").map_err(|e| format!("pivot_root to {root}: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| e.to_string())?;
    if read_only {
        remount_read_only("/")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_plan_mounts_dev_before_its_nodes_and_stays_under_root() {
        let steps = root("/r", 0);
        assert_eq!(
            steps[0],
            Step::Bind {
                source: "/r".into(),
                target: "/r".into(),
                read_only: false
            }
        );
        let dev = steps
            .iter()
            .position(|s| matches!(s, Step::Mount { target, .. } if target == "/r/dev"))
            .unwrap();
        let null = steps
            .iter()
            .position(|s| matches!(s, Step::CharDevice { path, .. } if path == "/r/dev/null"))
            .unwrap();
        assert!(dev < null);
        for step in &steps {
            let target = match step {
                Step::Mount { target, .. } | Step::Bind { target, .. } => target,
                Step::CharDevice { path, .. } | Step::Mask { path } | Step::ReadOnly { path } => {
                    path
                }
                Step::Symlink { link, .. } => link,
                Step::User { root, .. } => root,
            };
            assert!(target.starts_with("/r/") || target == "/r", "{target}");
        }
        // /proc belongs to the container's PID namespace, not this plan.
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s, Step::Mount { fstype: "proc", .. }))
        );
    }

    #[test]
    fn shm_is_docker_s_64m_unless_sized() {
        let shm = |size| {
            root("/r", size).into_iter().find_map(|s| match s {
                Step::Mount { target, data, .. } if target == "/r/dev/shm" => Some(data),
                _ => None,
            })
        };
        assert_eq!(shm(0).as_deref(), Some("mode=1777,size=67108864"));
        assert_eq!(shm(1 << 30).as_deref(), Some("mode=1777,size=1073741824"));
    }

    #[test]
    fn user_mounts_go_parents_first_and_bad_targets_are_refused() {
        let mount = |target: &str, kind: container_mount::Kind| ContainerMount {
            kind: kind as i32,
            source: "/run/container/shares/share0".into(),
            target: target.into(),
            flags: vec!["nosuid".into()],
            ..Default::default()
        };
        let steps = user(
            "/r",
            &[
                mount("/a/b/c", container_mount::Kind::Bind),
                mount("/a", container_mount::Kind::Tmpfs),
                mount("/z/y", container_mount::Kind::Bind),
            ],
        )
        .unwrap();
        let targets: Vec<&str> = steps
            .iter()
            .map(|s| match s {
                Step::User { target, .. } => target.as_str(),
                _ => panic!("{s:?}"),
            })
            .collect();
        assert_eq!(targets, ["/a", "/z/y", "/a/b/c"]);
        assert!(
            matches!(&steps[0], Step::User { source: UserSource::Tmpfs(_), flags, .. }
            if *flags == MsFlags::MS_NOSUID)
        );
        for bad in ["relative", "/a/../etc"] {
            assert!(user("/r", &[mount(bad, container_mount::Kind::Bind)]).is_err());
        }
        let mut odd = mount("/x", container_mount::Kind::Bind);
        odd.flags = vec!["shared".into()];
        assert!(user("/r", &[odd]).is_err());
    }

    #[test]
    fn targets_resolve_inside_the_root() {
        let root = std::env::temp_dir().join(format!("resolve-{}", std::process::id()));
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("real/up")).unwrap();
        let root_str = root.to_str().unwrap();
        let at = |p: &str| resolve_in(root_str, p).unwrap();
        assert_eq!(at("/abs/dir"), format!("{root_str}/real/dir"));
        assert_eq!(at("/real/up/etc"), format!("{root_str}/etc"));
        assert_eq!(at("/new/path"), format!("{root_str}/new/path"));
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(resolve_in(root_str, "/loop/x").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn proc_plan_mounts_proc_first_then_hides() {
        let steps = proc();
        assert!(
            matches!(&steps[0], Step::Mount { fstype: "proc", target, .. } if target == "/proc")
        );
        assert!(steps.contains(&Step::Mask {
            path: "/proc/kcore".into()
        }));
        assert!(steps.contains(&Step::ReadOnly {
            path: "/proc/sys".into()
        }));
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s, Step::Mask { path } if path.starts_with("/sys")))
        );
    }
}
