//! What PID 1 does before serving the agent: the standard mounts and the
//! kernel modules the guest kernel needs to see its virtio devices.

use std::ffi::CString;
use std::fs::File;
use std::path::Path;

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::Mode;
use nix::unistd::mkdir;

use crate::log;

/// The initfs lists its modules here, already in dependency order (the host
/// resolved modules.dep when it built the initfs).
const MODULE_ORDER: &str = "/modules/order";

/// What must come before anything else, alone: the root (it changes the
/// root of every thread), the kernel modules (the agent's link may need
/// one), and /sys and /dev, where the agent finds its link.
pub fn first() -> Result<(), String> {
    root_with_parent()?;
    load_modules()?;
    mount_all(&[
        ("sysfs", "/sys", "sysfs", NO_DEV_EXEC, None),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
    ])
}

/// The rest, which may run beside the agent's start.
pub fn setup() -> Result<(), String> {
    mount_standard()?;
    loopback_up()?;
    log::info("guest ready");
    Ok(())
}

/// Brings up `lo`: containers share the guest's network namespace (the VM
/// is their isolation), and 127.0.0.1 must work in them as it does in Docker.
fn loopback_up() -> Result<(), String> {
    // SAFETY: plain socket and ioctl calls on a struct we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            request.ifr_name[i] = *b as libc::c_char;
        }
        // The request's type differs between glibc and musl.
        let mut result = libc::ioctl(fd, libc::SIOCGIFFLAGS as libc::Ioctl, &mut request);
        if result == 0 {
            request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            result = libc::ioctl(fd, libc::SIOCSIFFLAGS as libc::Ioctl, &request);
        }
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        if result != 0 {
            return Err(format!("bring up lo: {error}"));
        }
    }
    Ok(())
}

/// Makes the guest's root a bind mount of the initramfs, as switch_root
/// does. pivot_root cannot leave the initramfs itself (it has no parent
/// mount), so without this every container start had to copy the guest's
/// whole mount tree to pivot away from, and then detach both copies.
/// Done first, while nothing is mounted, so the bind copies nothing.
fn root_with_parent() -> Result<(), String> {
    let stage = "/.root";
    make_dir(stage)?;
    mount(
        Some("/"),
        stage,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind the initramfs: {e}"))?;
    nix::unistd::chdir(stage).map_err(|e| format!("chdir {stage}: {e}"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("move the initramfs bind over /: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot into the initramfs bind: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))
}

/// A mount: source, target, filesystem type, flags and data.
type Mount<'a> = (&'a str, &'a str, &'a str, MsFlags, Option<&'a str>);

const NO_DEV_EXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

fn mount_standard() -> Result<(), String> {
    mount_all(&[
        ("proc", "/proc", "proc", NO_DEV_EXEC, None),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        ),
        ("shm", "/dev/shm", "tmpfs", NO_DEV_EXEC, Some("mode=1777")),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        // favordynmods: moving a process into a cgroup (every launch does)
        // then waits for no RCU grace period, at a small cost to fork.
        (
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            NO_DEV_EXEC,
            Some("favordynmods"),
        ),
    ])
}

fn mount_all(mounts: &[Mount]) -> Result<(), String> {
    for &(source, target, fstype, flags, data) in mounts {
        make_dir(target)?;
        mount(Some(source), target, Some(fstype), flags, data)
            .map_err(|e| format!("mount {fstype} on {target}: {e}"))?;
    }
    Ok(())
}

/// Creates a directory (and its parents), accepting one that exists.
pub fn make_dir(path: &str) -> Result<(), String> {
    let mut current = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        current.push('/');
        current.push_str(part);
        match mkdir(current.as_str(), Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(format!("mkdir {current}: {e}")),
        }
    }
    Ok(())
}

fn load_modules() -> Result<(), String> {
    let order = match std::fs::read_to_string(MODULE_ORDER) {
        Ok(order) => order,
        // A kernel with everything built in needs no modules.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("read {MODULE_ORDER}: {e}")),
    };
    let no_params = CString::default();
    for name in order.lines().filter(|l| !l.is_empty()) {
        let path = Path::new("/modules").join(name);
        let file = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        match finit_module(&file, &no_params, ModuleInitFlags::empty()) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(format!("load module {name}: {e}")),
        }
    }
    Ok(())
}
