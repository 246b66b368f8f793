//! Virtual machines: the one seam between the runtime and a hypervisor.
//!
//! The runtime describes a VM with [`VmConfig`], boots it with [`boot`], and
//! reaches the guest agent through [`VirtualMachine::connect`]. Which backend
//! runs (QEMU on Linux, Virtualization.framework on macOS) is decided here
//! and nowhere else.

pub mod initfs;
pub mod kernel;
#[cfg(target_os = "linux")]
mod qemu;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::net::UnixStream;

pub use kernel::Kernel;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} not found: {hint}")]
    Missing { what: String, hint: String },
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("the VM stopped during boot ({reason}): {log}")]
    BootFailed { reason: String, log: String },
    #[error("the guest agent did not answer within {0} seconds")]
    AgentTimeout(u64),
    #[error("connect to guest port {port}: {source}")]
    Connect { port: u32, source: std::io::Error },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Initfs(#[from] initfs::Error),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// A block device for the guest, in the order the guest sees them
/// (`/dev/vda`, `/dev/vdb`, ...).
#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    pub format: DiskFormat,
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    /// A copy-on-write overlay over a raw base image (Linux only).
    Qcow2,
}

/// Everything a backend needs to boot one VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: Kernel,
    pub initfs: PathBuf,
    /// Extra kernel command-line arguments, after the backend's own.
    pub kernel_args: Vec<String>,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disks: Vec<Disk>,
    /// A private directory for the VM's sockets and helper state.
    pub run_dir: PathBuf,
    /// Where the guest console (kernel and vminitd messages) is written.
    pub console_log: PathBuf,
    /// Host vsock ports the guest may dial; they listen from before boot.
    pub listen_ports: Vec<u32>,
}

/// Opens a stream to a vsock port the guest listens on. Cloneable and
/// `'static` so a gRPC channel can redial with it.
pub type Dial = Arc<dyn Fn(u32) -> BoxFuture<'static, Result<UnixStream, Error>> + Send + Sync>;

/// A running VM. Dropping it kills the VM and its helpers.
pub trait VirtualMachine: Send {
    fn dialer(&self) -> Dial;
    /// Accepts the next connection the guest made to one of `listen_ports`.
    fn accept(&self, port: u32) -> impl Future<Output = Result<UnixStream, Error>> + Send;
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

/// Boots a VM with this platform's backend.
pub async fn boot(config: &VmConfig) -> Result<Vm, Error> {
    #[cfg(target_os = "linux")]
    {
        qemu::QemuVm::boot(config).await
    }
}

/// A copy-on-write clone of a raw disk image in `dir`, in the form this
/// platform's backend boots fastest: creating a container copies nothing.
pub async fn clone_disk(base: &Path, dir: &Path) -> Result<Disk, Error> {
    #[cfg(target_os = "linux")]
    {
        qemu::clone_disk(base, dir).await
    }
}

/// Waits for the guest to dial `port` (vminitd does once its agent
/// listens). Fails early, with the end of the console log, if the VM stops.
pub async fn wait_ready(
    vm: &mut impl VirtualMachine,
    port: u32,
    timeout: Duration,
    console_log: &Path,
) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Poll for an early exit between waits: a VM that died never dials.
        let poll = tokio::time::Instant::now() + Duration::from_millis(50);
        match tokio::time::timeout_at(poll.min(deadline), vm.accept(port)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {}
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

/// The last lines of the guest console, for an error message.
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
