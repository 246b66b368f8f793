//! Virtual machines: the one seam between the runtime and a hypervisor.
//!
//! The runtime describes a VM with [`VmConfig`], boots it with [`boot`], and
//! reaches the guest agent through [`connect_agent`]. Which backend
//! runs (QEMU on Linux, Virtualization.framework on macOS) is decided here
//! and nowhere else.

mod elf;
pub mod initfs;
pub mod kernel;
#[cfg(target_os = "linux")]
mod qcow2;
// The macOS backend's disk decisions, tested on Linux too.
#[cfg(target_os = "linux")]
mod qemu;
#[cfg(any(target_os = "macos", feature = "vz-check", test))]
mod raw;
// `vz-check` compiles the macOS backend on Linux only to type-check it
// (scripts/check-macos); nothing calls it there, so its dead code is expected.
#[cfg(any(target_os = "macos", feature = "vz-check"))]
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
mod vz;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use tokio::net::UnixStream;

use crate::io_error::io;

pub use kernel::Kernel;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} not found: {hint}")]
    Missing { what: String, hint: String },
    #[error("{program} is not installed: it comes with {provider}, which scripts/setup installs")]
    NotInstalled {
        program: String,
        provider: &'static str,
    },
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("the VM stopped during boot ({reason}): {log}")]
    BootFailed { reason: String, log: String },
    #[error("the guest agent did not answer within {0} seconds")]
    AgentTimeout(u64),
    #[error("the link to the guest agent failed: {0}")]
    Link(std::io::Error),
    #[error("QEMU's monitor: {0}")]
    Monitor(String),
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
    #[error("{0}")]
    Initfs(#[from] initfs::Error),
    #[error("kernel {} is {found}, but {backend} boots {expected}", path.display())]
    KernelFormat {
        path: PathBuf,
        found: String,
        backend: &'static str,
        expected: &'static str,
    },
    #[error("the {backend} backend cannot attach {device}")]
    Unsupported {
        backend: &'static str,
        device: String,
    },
}

/// A block device for the guest, in the order the guest sees them
/// (`/dev/vda`, `/dev/vdb`, ...).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Disk {
    pub path: PathBuf,
    pub format: DiskFormat,
    pub read_only: bool,
    /// Thrown away with the VM (a build's scratch disk): the guest's
    /// flushes need not reach the host's disk. Every other writable disk
    /// (a container's, a volume's, a build's cache) keeps data a user
    /// expects to survive a host crash once the guest synced it.
    #[serde(default)]
    pub scratch: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DiskFormat {
    Raw,
    /// A copy-on-write overlay over a raw base image (Linux only).
    Qcow2,
}

/// A host directory the guest mounts by its tag with virtio-fs (through a
/// virtiofsd under QEMU; Virtualization.framework's own device on macOS).
#[derive(Debug, Clone)]
pub struct Share {
    pub tag: String,
    pub path: PathBuf,
    pub read_only: bool,
    pub cache: ShareCache,
}

/// What the guest may cache of a shared directory (QEMU's virtiofsd;
/// Virtualization.framework decides for itself). Ordered from the
/// strictest: a directory shared for several mounts gets the strictest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShareCache {
    /// Nothing: every change on the host is seen at once (Docker's
    /// `consistent`).
    #[default]
    Never,
    /// Names and attributes for a second, file data until it changes:
    /// the host's changes may show a second late (`cached`).
    Brief,
    /// Everything, for long: the guest's view wins (`delegated`).
    Long,
}

/// A network interface and what its other end is plugged into.
#[derive(Debug, Clone)]
pub struct Nic {
    pub mac: MacAddress,
    pub attachment: NicAttachment,
}

#[derive(Debug, Clone)]
pub enum NicAttachment {
    /// The host's NAT, which also hands out the guest's address by DHCP
    /// (Virtualization.framework's `VZNATNetworkDeviceAttachment`).
    Nat,
    /// A tap device the runtime opened and put on a network's bridge; the
    /// VM owns the descriptor, and the tap goes away when the last copy of
    /// it closes (Linux).
    Tap(Arc<std::os::fd::OwnedFd>),
    /// QEMU's user-mode network stack (slirp), for users without root: the
    /// guest is 10.0.2.15 behind QEMU's own NAT (gateway 10.0.2.2, DNS
    /// 10.0.2.3), reachable from the host only through `forwards`.
    User { forwards: Vec<PortForward> },
}

/// A host port QEMU's user-mode stack forwards to a guest port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    pub udp: bool,
    pub host: std::net::SocketAddr,
    pub guest_port: u16,
}

/// The guest kernel modules each kind of device needs (for a modular
/// kernel; their dependencies come from modules.dep).
impl Disk {
    pub const GUEST_MODULES: &[&str] = &["virtio_blk"];

    /// Whether the guest's flushes must reach the host's disk: a writable
    /// disk that outlives its VM.
    pub fn keeps_flushes(&self) -> bool {
        !self.read_only && !self.scratch
    }
}

impl Nic {
    pub const GUEST_MODULES: &[&str] = &["virtio_net"];
}

impl Share {
    pub const GUEST_MODULES: &[&str] = &["virtiofs"];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// A locally administered unicast address derived from `seed` (the
    /// container's identity): stable across restarts, so the guest keeps its
    /// DHCP lease, and different for every container.
    pub fn derive(seed: &str) -> MacAddress {
        let hash = Sha256::digest(seed.as_bytes());
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&hash[..6]);
        mac[0] = (mac[0] & 0xfc) | 0x02;
        MacAddress(mac)
    }
}

impl std::fmt::Display for MacAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Everything a backend needs to boot one VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: Kernel,
    /// The guest's init; [`boot`] packs it, with the modules the devices
    /// need, into an initfs cached in `cache_dir`.
    pub vminitd: PathBuf,
    pub cache_dir: PathBuf,
    /// Extra kernel command-line arguments, after the backend's own.
    pub kernel_args: Vec<String>,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    pub shares: Vec<Share>,
    /// A private directory for the VM's sockets and helper state.
    pub run_dir: PathBuf,
    /// Where the guest console (kernel and vminitd messages) is written.
    pub console_log: PathBuf,
}

impl VmConfig {
    /// The modules the guest loads at boot: the transport, the agent's link
    /// (a console port; vsock on macOS) and the memory balloon every VM
    /// has, then what its devices need.
    pub fn guest_modules(&self) -> Vec<&'static str> {
        let link = if cfg!(target_os = "macos") {
            "vmw_vsock_virtio_transport"
        } else {
            "virtio_console"
        };
        let mut modules = vec!["virtio_mmio", link, "virtio_balloon"];
        let kinds = [
            (!self.disks.is_empty(), Disk::GUEST_MODULES),
            (!self.nics.is_empty(), Nic::GUEST_MODULES),
            (!self.shares.is_empty(), Share::GUEST_MODULES),
        ];
        for (present, needed) in kinds {
            if present {
                modules.extend(needed);
            }
        }
        modules
    }
}

/// The guest agent's link, once vminitd has said it serves: one stream per
/// VM, which carries every request (HTTP/2 multiplexes them).
pub type AgentLink = BoxFuture<'static, Result<UnixStream, Error>>;

/// A running VM. Dropping it kills the VM and its helpers.
pub trait VirtualMachine: Send {
    /// Waits for the guest agent's link. There is one: a second call fails.
    /// Owns what it needs, so the caller can watch the VM meanwhile.
    fn agent(&mut self) -> AgentLink;
    /// Whether the VM was restored from a template rather than booted.
    fn restored(&self) -> bool {
        false
    }
    /// Why the VM stopped, if it has.
    fn exited(&mut self) -> Option<String>;
    /// Resolves when the VM has stopped, whatever stopped it.
    fn wait(&mut self) -> impl Future<Output = Result<(), Error>> + Send;
    /// Stops the VM now, without asking the guest.
    fn kill(&mut self) -> impl Future<Output = ()> + Send;
}

/// The backend for this platform.
#[cfg(target_os = "linux")]
pub type Vm = qemu::QemuVm;
#[cfg(target_os = "macos")]
pub type Vm = vz::VzVm;

/// What boots VMs on this host: the backend, its accelerator and why that
/// one, and the versions of the programs it runs (an error text in place of
/// a version for one that does not run).
#[derive(Debug, serde::Serialize)]
pub struct Host {
    pub backend: &'static str,
    pub accelerator: String,
    pub accelerator_reason: String,
    pub programs: std::collections::BTreeMap<String, String>,
}

/// This host's [`Host`].
pub fn host() -> Host {
    #[cfg(target_os = "linux")]
    {
        qemu::host()
    }
    #[cfg(target_os = "macos")]
    {
        vz::host()
    }
}

/// Boots a VM with this platform's backend.
pub async fn boot(config: &VmConfig) -> Result<Vm, Error> {
    let initfs = initfs::ensure(
        &config.cache_dir,
        &config.vminitd,
        &config.kernel,
        &config.guest_modules(),
    )?;
    #[cfg(target_os = "linux")]
    {
        qemu::QemuVm::boot(config, &initfs).await
    }
    #[cfg(target_os = "macos")]
    {
        vz::VzVm::boot(config, &initfs).await
    }
}

/// A copy-on-write clone of a raw disk image in `dir`, in the form this
/// platform's backend boots fastest: creating a container copies nothing.
/// With `size` (never below the base's) the clone is that big, and the
/// space past the base's end reads as zeros until the guest grows into it.
pub async fn clone_disk(base: &Path, dir: &Path, size: Option<u64>) -> Result<Disk, Error> {
    #[cfg(target_os = "linux")]
    {
        qemu::clone_disk(base, dir, size).await
    }
    #[cfg(target_os = "macos")]
    {
        vz::clone_disk(base, dir, size).await
    }
}

/// The guest agent's link, once vminitd says it serves. Fails early, with
/// the end of the console log, if the VM stops.
pub async fn connect_agent(
    vm: &mut impl VirtualMachine,
    timeout: Duration,
    console_log: &Path,
) -> Result<UnixStream, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut link = vm.agent();
    loop {
        // Poll for an early exit between waits: a VM that died never answers.
        let poll = tokio::time::Instant::now() + Duration::from_millis(50);
        if let Ok(link) = tokio::time::timeout_at(poll.min(deadline), &mut link).await {
            return link;
        }
        if let Some(reason) = vm.exited() {
            return Err(Error::BootFailed {
                reason,
                log: console_tail(console_log),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::AgentTimeout(timeout.as_secs()));
        }
    }
}

/// Reads vminitd's READY, which it says once it serves. Then the host
/// answers [`go`], and after that the link is the agent's.
pub(crate) async fn read_ready(link: &mut UnixStream) -> Result<(), Error> {
    use tokio::io::AsyncReadExt;
    let mut said = [0u8; agent_proto::READY.len()];
    link.read_exact(&mut said).await.map_err(Error::Link)?;
    if said != agent_proto::READY {
        let said = String::from_utf8_lossy(&said).into_owned();
        return Err(Error::Link(std::io::Error::other(format!(
            "the guest said {said:?} where vminitd says it is ready"
        ))));
    }
    Ok(())
}

/// Tells vminitd to go on, with a new seed for its random numbers.
pub(crate) async fn go(link: &mut UnixStream) -> Result<(), Error> {
    use tokio::io::AsyncWriteExt;
    let mut go = agent_proto::GO.to_vec();
    let mut seed = [0u8; agent_proto::SEED_BYTES];
    getrandom(&mut seed).map_err(Error::Link)?;
    go.extend_from_slice(&seed);
    link.write_all(&go).await.map_err(Error::Link)
}

/// Fills `buf` from the host's kernel random source (Linux and macOS both
/// have /dev/urandom; libc's getrandom is Linux's only).
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// The last lines of the guest console, for an error message.
/// Creates (empties) the console log readable by its owner only, before
/// the backend opens it: the guest's console may show what the container
/// prints.
fn create_console_log(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    Ok(std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(io(format!("create {}", path.display())))?)
}

fn console_tail(console_log: &Path) -> String {
    let text = std::fs::read_to_string(console_log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() {
        format!("console log {} is empty", console_log.display())
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_mac_is_local_unicast_and_stable() {
        let a = MacAddress::derive("container-a");
        assert_eq!(a, MacAddress::derive("container-a"));
        assert_ne!(a, MacAddress::derive("container-b"));
        assert_eq!(a.0[0] & 0x03, 0x02, "locally administered, not multicast");
        let text = a.to_string();
        assert_eq!(text.len(), 17);
        assert_eq!(text.split(':').count(), 6);
    }
}
