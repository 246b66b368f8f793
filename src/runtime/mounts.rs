//! What a container's mounts become when it starts: host directories the
//! VM shares (virtio-fs) and sized volumes' disks it attaches, the guest
//! mounts of those, and the list vminitd mounts into the container. Planned
//! here, applied by the supervisor (devices, guest mounts) and vminitd
//! (the container's).

use std::path::PathBuf;

use agent_proto::{ContainerMount, MountRequest, container_mount};

use crate::io_error::io;
use crate::vm;
use crate::volume::{self, Volumes, spec};

/// Where the guest mounts the directory shared under `tag`.
fn guest_dir(tag: &str) -> String {
    format!("/run/container/shares/{tag}")
}

/// Where the guest mounts a sized volume's disk.
fn guest_disk_dir(volume: &str) -> String {
    format!("/run/container/volumes/{volume}")
}

/// The guest mount of one of our ext4 disks (the root, a sized volume).
/// With the kernel's default options: a journaled disk is `data=ordered`
/// anyway, and naming it explicitly makes the kernel refuse a disk without
/// a journal, as snapshots and containers made before snapshots had one.
pub fn disk_mount(source: String, target: String, grow: bool) -> MountRequest {
    MountRequest {
        source,
        target,
        fstype: "ext4".into(),
        options: vec![],
        grow,
    }
}

#[derive(Debug, Default)]
pub struct Plan {
    /// One per host directory, however many mounts use it.
    pub shares: Vec<vm::Share>,
    /// Sized volumes' disks, after the root disk (`/dev/vdb`, ...).
    pub disks: Vec<vm::Disk>,
    /// The guest mounts of the shares and disks, before the container is made.
    pub guest: Vec<MountRequest>,
    /// For vminitd: the container's mounts, in the user's order.
    pub container: Vec<ContainerMount>,
    /// Sized volumes' disks are this VM's while these are held.
    claims: Vec<nix::fcntl::Flock<std::fs::File>>,
}

/// Plans a container's mounts. A bound file is reached through a share of
/// its directory (virtio-fs shares directories); the container sees only
/// the file. A directory shared by several mounts is shared once, and
/// read-only only if every one of them is. A sized volume is its disk,
/// attached once however many mounts use it.
pub fn plan(mounts: &[spec::Mount], volumes: &Volumes) -> Result<Plan, volume::Error> {
    let mut plan = Plan::default();
    let mut disk_volumes: Vec<String> = Vec::new();
    for mount in mounts {
        // Where the guest has what is bound, and whether a new volume is
        // filled from the image first.
        let (source, populate) = match &mount.kind {
            spec::Kind::Tmpfs { size, mode, flags } => {
                let mut options = Vec::new();
                if let Some(size) = size {
                    options.push(format!("size={size}"));
                }
                if let Some(mode) = mode {
                    options.push(format!("mode={mode:o}"));
                }
                plan.container.push(ContainerMount {
                    kind: container_mount::Kind::Tmpfs as i32,
                    target: mount.target.clone(),
                    read_only: mount.read_only,
                    options: options.join(","),
                    flags: flags.clone(),
                    ..Default::default()
                });
                continue;
            }
            spec::Kind::Volume { name, no_copy, .. } => {
                let volume = volumes.get(name)?;
                match volumes.storage(&volume) {
                    volume::Storage::Directory(dir) => (share(&mut plan, dir, mount), !no_copy),
                    volume::Storage::Disk(path) => {
                        if !disk_volumes.contains(name) {
                            disk_volumes.push(name.clone());
                            plan.claims.push(volumes.claim_disk(&volume)?);
                            plan.disks.push(vm::Disk {
                                path,
                                format: vm::DiskFormat::Raw,
                                read_only: false,
                                scratch: false,
                            });
                        }
                        (guest_disk_dir(name), !no_copy)
                    }
                }
            }
            spec::Kind::Bind { source } if source.is_dir() => {
                (share(&mut plan, source.clone(), mount), false)
            }
            spec::Kind::Bind { source } => {
                let dir = source.parent().map(PathBuf::from).unwrap_or_default();
                let file = source.file_name().unwrap_or_default().to_string_lossy();
                (format!("{}/{file}", share(&mut plan, dir, mount)), false)
            }
        };
        plan.container.push(ContainerMount {
            kind: container_mount::Kind::Bind as i32,
            source,
            target: mount.target.clone(),
            read_only: mount.read_only,
            populate,
            ..Default::default()
        });
    }
    for share in &plan.shares {
        plan.guest.push(MountRequest {
            source: share.tag.clone(),
            target: guest_dir(&share.tag),
            fstype: "virtiofs".into(),
            options: if share.read_only {
                vec!["ro".into()]
            } else {
                vec![]
            },
            grow: false,
        });
    }
    // The root disk is /dev/vda; these follow it in order.
    for (i, name) in disk_volumes.iter().enumerate() {
        plan.guest.push(disk_mount(
            format!("/dev/vd{}", (b'b' + i as u8) as char),
            guest_disk_dir(name),
            false,
        ));
    }
    Ok(plan)
}

/// The plan for a container about to boot. Fails, naming it, if a shared
/// directory is gone since the container was created (a volume removed
/// with `--force`, a host directory deleted): better than the VM's helper
/// failing.
pub fn plan_for(container: &super::Container) -> Result<Plan, super::Error> {
    let volumes = Volumes::open(container.app_root())?;
    let plan = plan(&container.config.spec.mounts, &volumes)?;
    check_sources(&plan)?;
    Ok(plan)
}

fn check_sources(plan: &Plan) -> Result<(), super::Error> {
    for share in &plan.shares {
        if !share.path.is_dir() {
            let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
            return Err(io(format!("mount {}", share.path.display()))(missing).into());
        }
    }
    Ok(())
}

/// Where the guest mounts the share of `dir` for `mount`, the share added
/// if new; one shared for several mounts gets the strictest caching they
/// ask for.
fn share(plan: &mut Plan, dir: PathBuf, mount: &spec::Mount) -> String {
    let cache = match mount.consistency {
        spec::Consistency::Consistent => vm::ShareCache::Never,
        spec::Consistency::Cached => vm::ShareCache::Brief,
        spec::Consistency::Delegated => vm::ShareCache::Long,
    };
    if let Some(share) = plan.shares.iter_mut().find(|s| s.path == dir) {
        share.read_only &= mount.read_only;
        share.cache = share.cache.min(cache);
        return guest_dir(&share.tag);
    }
    let tag = format!("share{}", plan.shares.len());
    plan.shares.push(vm::Share {
        tag: tag.clone(),
        path: dir,
        read_only: mount.read_only,
        cache,
    });
    guest_dir(&tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(kind: spec::Kind, target: &str, read_only: bool) -> spec::Mount {
        spec::Mount {
            kind,
            target: target.into(),
            read_only,
            consistency: spec::Consistency::Consistent,
        }
    }

    #[test]
    fn shares_once_per_directory_and_binds_files_through_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.conf");
        std::fs::write(&file, b"x").unwrap();
        let volumes = Volumes::open(dir.path()).unwrap();
        let none = Default::default();
        volumes
            .create(Some("data"), Default::default(), &none)
            .unwrap();
        let sized = std::collections::BTreeMap::from([("size".into(), "16M".into())]);
        volumes
            .create(Some("db"), Default::default(), &sized)
            .unwrap();
        let bind = |source: &std::path::Path| spec::Kind::Bind {
            source: source.into(),
        };
        let plan = plan(
            &[
                mount(bind(dir.path()), "/src", true),
                mount(bind(&file), "/etc/app.conf", false),
                mount(
                    spec::Kind::Volume {
                        name: "data".into(),
                        anonymous: false,
                        no_copy: false,
                    },
                    "/data",
                    false,
                ),
                mount(
                    spec::Kind::Tmpfs {
                        size: Some(1 << 20),
                        mode: Some(0o1777),
                        flags: vec!["noexec".into()],
                    },
                    "/tmp",
                    false,
                ),
                mount(
                    spec::Kind::Volume {
                        name: "db".into(),
                        anonymous: false,
                        no_copy: true,
                    },
                    "/db",
                    false,
                ),
            ],
            &volumes,
        )
        .unwrap();
        assert_eq!(plan.shares.len(), 2, "{:?}", plan.shares);
        assert_eq!(plan.shares[0].path, dir.path());
        assert!(
            !plan.shares[0].read_only,
            "one writable use makes it writable"
        );
        assert_eq!(plan.shares[0].cache, vm::ShareCache::Never);
        assert_eq!(plan.shares[1].path, volumes.data("data"));
        assert_eq!(plan.guest.len(), 3);
        assert_eq!(plan.guest[0].fstype, "virtiofs");
        assert_eq!(plan.guest[0].source, "share0");
        // The sized volume is the second disk, held by this plan.
        assert_eq!(plan.disks.len(), 1);
        assert_eq!(
            (plan.guest[2].source.as_str(), plan.guest[2].target.as_str()),
            ("/dev/vdb", "/run/container/volumes/db")
        );
        let db = volumes.get("db").unwrap();
        assert!(volumes.claim_disk(&db).is_err(), "the plan holds the disk");
        let sources: Vec<&str> = plan.container.iter().map(|m| m.source.as_str()).collect();
        assert_eq!(
            sources,
            [
                "/run/container/shares/share0",
                "/run/container/shares/share0/app.conf",
                "/run/container/shares/share1",
                "",
                "/run/container/volumes/db",
            ]
        );
        assert!(!plan.container[4].populate, "nocopy");
        assert!(plan.container[0].read_only);
        assert!(
            plan.container[2].populate,
            "a volume is filled from the image"
        );
        assert!(!plan.container[0].populate, "a host directory is not");
        assert_eq!(plan.container[3].options, "size=1048576,mode=1777");
        assert_eq!(plan.container[3].kind(), container_mount::Kind::Tmpfs);
    }
}
