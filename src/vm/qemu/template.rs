//! VM templates: a VM saved once vminitd is ready, which later VMs like it
//! are restored from instead of booting, as Firecracker and Kata start from
//! snapshots. A restore skips the kernel's boot and vminitd's start, and
//! the restored VM maps the template's RAM privately: it holds only the
//! pages it touches, and QEMU translates only the code it runs from then
//! on (`scripts/bench-template` measures both).
//!
//! A template fits VMs with the same QEMU, kernel, init filesystem, CPUs,
//! memory, disks (how many, their sizes, read-only or not) and network
//! interfaces (how many): the guest
//! saw those as it booted. It is saved with placeholder disks of those
//! sizes; vminitd drops what it cached of a disk before mounting it.
//! A VM on QEMU's user-mode network (containers without root) is saved on
//! one without forwards, which sends nothing while the guest's link is
//! down; the MAC is part of the saved device state, so the runtime sets
//! each VM's own before it brings the link up. VMs with shared directories
//! (QEMU cannot save a vhost-user-fs device) or on a tap (a network's
//! bridge; the saved VM's network backend must be of the same kind, and
//! making a tap of its own is the network module's) boot cold.
//!
//! Each is a directory `<cache>/templates/<key>` with the guest's RAM
//! (`ram`, sparse) and the devices' state (`state`), made whole in a
//! staging directory and renamed into place, so a crash leaves no half
//! template and racing makers keep one.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::json;
use sha2::{Digest, Sha256};

use super::qmp::Qmp;
use super::{QemuVm, Start};
use crate::io_error::io;
use crate::vm::{Disk, DiskFormat, Error, Nic, NicAttachment, VirtualMachine, VmConfig};

/// Bumped when what a template holds changes meaning.
const FORMAT: u32 = 1;
/// Templates kept per cache; the least recently used go first.
const KEEP: usize = 4;
/// How long the template's own boot may take.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// A staged template older than this was left by a save that died.
const STAGING_ABANDONED: Duration = Duration::from_secs(600);
/// How long QEMU may take to open its monitor.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Template {
    dir: PathBuf,
}

impl Template {
    pub fn ram(&self) -> PathBuf {
        self.dir.join("ram")
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Loads the template into a QEMU started with `-incoming defer` and
    /// its monitor on `monitor`, and lets the VM run.
    pub async fn restore(&self, monitor: &Path) -> Result<(), Error> {
        let mut qmp = Qmp::connect(monitor, MONITOR_TIMEOUT).await?;
        qmp.call("migrate-set-capabilities", ignore_shared())
            .await?;
        let uri = format!("exec:cat {}", shell_quoted(&self.state()));
        qmp.call("migrate-incoming", json!({ "uri": uri })).await?;
        qmp.migrated().await?;
        // Saved stopped, so restored paused.
        qmp.call("cont", json!({})).await?;
        Ok(())
    }

    /// Removes a template that failed to restore: the next VM saves anew.
    pub fn discard(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The template for VMs like `config`, saved first if there is none yet;
/// None for a VM that cannot have one, or if saving failed (it boots cold).
pub async fn for_vm(config: &VmConfig, initfs: &Path, accel: &'static str) -> Option<Template> {
    // To compare with a cold boot, or to rule templates out.
    if std::env::var("CONTAINER_VM_TEMPLATES").as_deref() == Ok("off") {
        return None;
    }
    let key = match key(config, initfs, accel) {
        Ok(key) => key?,
        Err(e) => {
            tracing::debug!("no VM template: {e}");
            return None;
        }
    };
    let templates = config.cache_dir.join("templates");
    let template = Template {
        dir: templates.join(&key),
    };
    if template.state().exists() {
        // Its age is when it was last used, for pruning.
        let _ =
            std::fs::File::open(&template.dir).and_then(|dir| dir.set_modified(SystemTime::now()));
        return Some(template);
    }
    let started = std::time::Instant::now();
    match save(config, initfs, accel, &template).await {
        Ok(()) => {
            tracing::debug!(key, "saved a VM template in {:?}", started.elapsed());
            prune(&templates);
            Some(template)
        }
        Err(e) => {
            tracing::debug!("saving a VM template failed, booting cold: {e}");
            None
        }
    }
}

/// What a template must match, hashed; None for a VM that cannot have one.
fn key(config: &VmConfig, initfs: &Path, accel: &str) -> std::io::Result<Option<String>> {
    let tap = |nic: &Nic| matches!(nic.attachment, NicAttachment::Tap(_));
    if !config.shares.is_empty() || config.nics.iter().any(tap) {
        return Ok(None);
    }
    let mut hash = Sha256::new();
    let mut add = |part: &[u8]| {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    };
    add(&FORMAT.to_le_bytes());
    let qemu = on_path("qemu-system-x86_64")?;
    for file in [qemu.as_path(), &config.kernel.image, initfs] {
        add(file.as_os_str().as_bytes());
        let meta = std::fs::metadata(file)?;
        add(&meta.len().to_le_bytes());
        let modified = meta.modified()?.duration_since(SystemTime::UNIX_EPOCH);
        add(&modified.unwrap_or_default().as_nanos().to_le_bytes());
    }
    add(accel.as_bytes());
    add(&config.cpus.to_le_bytes());
    add(&config.memory_mib.to_le_bytes());
    add(config.kernel_args.join(" ").as_bytes());
    for disk in &config.disks {
        add(&[disk.read_only as u8]);
        add(&disk_size(disk)?.to_le_bytes());
    }
    add(&config.nics.len().to_le_bytes());
    Ok(Some(hex::encode(&hash.finalize()[..12])))
}

/// The size the guest sees a disk as.
fn disk_size(disk: &Disk) -> std::io::Result<u64> {
    match disk.format {
        DiskFormat::Raw => Ok(std::fs::metadata(&disk.path)?.len()),
        DiskFormat::Qcow2 => crate::vm::qcow2::virtual_size(&disk.path),
    }
}

/// Where `program` is on the PATH, as the spawn will find it.
fn on_path(program: &str) -> std::io::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| std::io::Error::other(format!("{program} is not on the PATH")))
}

/// Boots a VM like `config` with placeholder disks, waits for vminitd's
/// READY, and saves it stopped there: RAM in `ram`, the rest in `state`.
async fn save(
    config: &VmConfig,
    initfs: &Path,
    accel: &'static str,
    template: &Template,
) -> Result<(), Error> {
    let parent = template.dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
    let staging = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(parent)
        .map_err(io(format!("create a directory in {}", parent.display())))?;
    let mut disks = Vec::new();
    for (index, disk) in config.disks.iter().enumerate() {
        let path = staging.path().join(format!("disk{index}"));
        let size = disk_size(disk).map_err(io(format!("size {}", disk.path.display())))?;
        std::fs::File::create(&path)
            .and_then(|file| file.set_len(size))
            .map_err(io(format!("create {}", path.display())))?;
        disks.push(Disk {
            path,
            format: DiskFormat::Raw,
            read_only: disk.read_only,
            scratch: true,
        });
    }
    // The guest's link stays down while it boots; the VMs restored set
    // their own MAC before they bring it up.
    let nics = config
        .nics
        .iter()
        .map(|nic| Nic {
            mac: nic.mac,
            attachment: NicAttachment::User { forwards: vec![] },
        })
        .collect();
    let like = VmConfig {
        disks,
        nics,
        run_dir: staging.path().join("run"),
        console_log: staging.path().join("boot.log"),
        ..config.clone()
    };
    let ram = staging.path().join("ram");
    let mut vm = QemuVm::start(&like, initfs, accel, Start::Save { ram: &ram }).await?;
    let saved = async {
        let _link = crate::vm::connect_agent(&mut vm, BOOT_TIMEOUT, &like.console_log).await?;
        let mut qmp = Qmp::connect(&like.run_dir.join("qmp.sock"), MONITOR_TIMEOUT).await?;
        qmp.call("stop", json!({})).await?;
        qmp.call("migrate-set-capabilities", ignore_shared())
            .await?;
        let state = staging.path().join("state");
        let uri = format!("exec:cat > {}", shell_quoted(&state));
        qmp.call("migrate", json!({ "uri": uri })).await?;
        qmp.migrated().await
    }
    .await;
    vm.kill().await;
    saved?;
    // Only the RAM and the state are kept, synced before the rename.
    for entry in std::fs::read_dir(staging.path()).map_err(io("list the new template"))? {
        let path = entry.map_err(io("list the new template"))?.path();
        let kept = path.ends_with("ram") || path.ends_with("state");
        let result = if !kept {
            std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path))
        } else {
            std::fs::File::open(&path).and_then(|file| file.sync_all())
        };
        result.map_err(io(format!("finish {}", path.display())))?;
    }
    let staging = staging.keep();
    if std::fs::rename(&staging, &template.dir).is_err() {
        // Another VM saved it first: keep that one.
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(())
}

/// Removes all but the KEEP most recently used templates, and what a save
/// that died (its process killed) left staged.
fn prune(templates: &Path) {
    let Ok(entries) = std::fs::read_dir(templates) else {
        return;
    };
    let mut kept = Vec::new();
    for entry in entries.flatten() {
        let Some(modified) = entry.metadata().and_then(|m| m.modified()).ok() else {
            continue;
        };
        if !entry.file_name().as_bytes().starts_with(b".") {
            kept.push((modified, entry.path()));
        } else if modified.elapsed().is_ok_and(|age| age > STAGING_ABANDONED) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    kept.sort_by(|a, b| b.0.cmp(&a.0));
    for (_, old) in kept.into_iter().skip(KEEP) {
        let _ = std::fs::remove_dir_all(old);
    }
}

/// QEMU's capability to leave RAM that lives in a shared file out of a
/// migration: the template's RAM is its file.
fn ignore_shared() -> serde_json::Value {
    json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": true }] })
}

/// `path` for the shell QEMU runs an `exec:` migration with.
fn shell_quoted(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_fits_only_vms_the_guest_would_see_as_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, len: u64| {
            let path = dir.path().join(name);
            std::fs::File::create(&path).unwrap().set_len(len).unwrap();
            path
        };
        let (kernel, initfs) = (file("vmlinux", 10), file("initfs.cpio", 10));
        let disk = |path: PathBuf, read_only| Disk {
            path,
            format: DiskFormat::Raw,
            read_only,
            scratch: false,
        };
        let config = VmConfig {
            kernel: crate::vm::Kernel {
                image: kernel,
                release: "6.1".into(),
                modules: None,
            },
            vminitd: "/vminitd".into(),
            cache_dir: dir.path().into(),
            kernel_args: vec![],
            cpus: 2,
            memory_mib: 1152,
            disks: vec![disk(file("a.raw", 8 << 20), false)],
            nics: vec![],
            shares: vec![],
            run_dir: "/run/one".into(),
            console_log: "/one.log".into(),
        };
        let key = |config: &VmConfig| key(config, &initfs, "tcg").unwrap();
        let nic = |attachment| Nic {
            mac: crate::vm::MacAddress([2, 0, 0, 0, 0, 1]),
            attachment,
        };
        let same = key(&config).expect("a VM with a disk has a template");
        // Where the VM keeps its files is the host's business.
        let elsewhere = VmConfig {
            run_dir: "/run/two".into(),
            console_log: "/two.log".into(),
            disks: vec![disk(file("b.raw", 8 << 20), false)],
            ..config.clone()
        };
        assert_eq!(key(&elsewhere).as_ref(), Some(&same));
        // What the guest saw as it booted is not.
        let differ = [
            VmConfig {
                memory_mib: 2048,
                ..config.clone()
            },
            VmConfig {
                cpus: 1,
                ..config.clone()
            },
            VmConfig {
                disks: vec![disk(file("c.raw", 16 << 20), false)],
                ..config.clone()
            },
            VmConfig {
                disks: vec![disk(config.disks[0].path.clone(), true)],
                ..config.clone()
            },
            VmConfig {
                disks: vec![],
                ..config.clone()
            },
            VmConfig {
                nics: vec![nic(NicAttachment::User { forwards: vec![] })],
                ..config.clone()
            },
        ];
        for other in &differ {
            let other = key(other).expect("a template");
            assert_ne!(other, same, "{other}");
        }
        // Forwarded ports and the MAC are not the guest's to see at boot.
        let user = |mac: u8, forwards| VmConfig {
            nics: vec![Nic {
                mac: crate::vm::MacAddress([2, 0, 0, 0, 0, mac]),
                attachment: NicAttachment::User { forwards },
            }],
            ..config.clone()
        };
        let forward = crate::vm::PortForward {
            host: "127.0.0.1:8080".parse().unwrap(),
            guest_port: 80,
            udp: false,
        };
        assert_eq!(key(&user(1, vec![])), key(&user(2, vec![forward])));
        // Nor can a VM on a tap, or with a shared directory, have one.
        let tap = std::fs::File::open("/dev/null").unwrap().into();
        let on_a_tap = VmConfig {
            nics: vec![nic(NicAttachment::Tap(std::sync::Arc::new(tap)))],
            ..config.clone()
        };
        assert_eq!(key(&on_a_tap), None);
        let shared = VmConfig {
            shares: vec![crate::vm::Share {
                tag: "vol0".into(),
                path: dir.path().into(),
                read_only: false,
                cache: crate::vm::ShareCache::Never,
            }],
            ..config.clone()
        };
        assert_eq!(key(&shared), None);
    }

    #[test]
    fn pruning_keeps_the_most_recently_used_and_saves_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let aged = |name: &str, seconds: u64| {
            let path = dir.path().join(name);
            std::fs::create_dir(&path).unwrap();
            let when = SystemTime::now() - Duration::from_secs(seconds);
            std::fs::File::open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        };
        for (name, age) in [
            ("a", 50),
            ("b", 10),
            ("c", 40),
            ("d", 20),
            ("e", 30),
            ("f", 60),
        ] {
            aged(name, age);
        }
        aged(".new-saving", 5);
        aged(".new-died", 3600);
        prune(dir.path());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".new-saving", "b", "c", "d", "e"]);
    }

    #[test]
    fn paths_reach_the_migration_shell_whole() {
        assert_eq!(shell_quoted(Path::new("/a b/state")), "'/a b/state'");
        assert_eq!(shell_quoted(Path::new("/it's")), r"'/it'\''s'");
    }
}
