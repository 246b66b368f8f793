//! The agent's one link to the host: a virtio console port named
//! [`AGENT_PORT_NAME`] (QEMU), or a vsock connection vminitd dials to the
//! host (Virtualization.framework). Either way the host gets a single byte
//! stream, and HTTP/2 carries every request on it.
//!
//! Written by hand over `AsyncFd` because no crate wraps a character device
//! as a tokio stream (tokio's own pipe types accept FIFOs only), and the same
//! few lines then serve the vsock socket too.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use agent_proto::{AGENT_PORT_NAME, AGENT_VSOCK_PORT, GO, READY, SEED_BYTES};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, VsockAddr, connect, socket};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long the link may take to appear: a modular guest kernel announces
/// its console ports a moment after the driver loads.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(10);

/// The virtio device ID of a vsock device (virtio spec 5.10).
const VIRTIO_ID_VSOCK: &str = "0x0013";

/// The host's vsock context ID.
const VMADDR_CID_HOST: u32 = 2;

/// Opens the link and says [`READY`] on it. Blocks: call it off the runtime.
/// Needs /sys and /dev mounted.
pub fn open() -> io::Result<OwnedFd> {
    // A File for std's read_exact and write_all: any descriptor will do.
    let mut link: std::fs::File = if has_vsock()? {
        dial_host()?.into()
    } else {
        let path = wait_for_port()?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?
    };
    link.write_all(READY)?;
    // A VM saved as a template stops here, and every restore resumes here.
    let mut go = [0u8; GO.len() + SEED_BYTES];
    link.read_exact(&mut go)?;
    if &go[..GO.len()] != GO {
        return Err(io::Error::other(format!(
            "the host said {:?} where it says go",
            String::from_utf8_lossy(&go[..GO.len()])
        )));
    }
    reseed(&go[GO.len()..])?;
    let fd = OwnedFd::from(link);
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    Ok(fd)
}

/// Whether the VM has a vsock device, and so no agent port.
fn has_vsock() -> io::Result<bool> {
    let devices = match std::fs::read_dir("/sys/bus/virtio/devices") {
        Ok(devices) => devices,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for device in devices {
        let id = std::fs::read_to_string(device?.path().join("device")).unwrap_or_default();
        if id.trim() == VIRTIO_ID_VSOCK {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The device node of the console port named AGENT_PORT_NAME, once the
/// kernel has it.
fn wait_for_port() -> io::Result<PathBuf> {
    let started = Instant::now();
    loop {
        if let Some(port) = find_port()? {
            return Ok(port);
        }
        if started.elapsed() > APPEAR_TIMEOUT {
            return Err(io::Error::other(format!(
                "no virtio console port named {AGENT_PORT_NAME:?} and no vsock device"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn find_port() -> io::Result<Option<PathBuf>> {
    let ports = match std::fs::read_dir("/sys/class/virtio-ports") {
        Ok(ports) => ports,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for port in ports {
        let port = port?;
        let name = std::fs::read_to_string(port.path().join("name")).unwrap_or_default();
        if name.trim() == AGENT_PORT_NAME {
            let node = PathBuf::from("/dev").join(port.file_name());
            if node.exists() {
                return Ok(Some(node));
            }
        }
    }
    Ok(None)
}

/// Dials the host's AGENT_VSOCK_PORT, retrying while the host is not yet
/// listening (it starts to just after it starts the VM).
fn dial_host() -> io::Result<OwnedFd> {
    let started = Instant::now();
    loop {
        let fd = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let host = VsockAddr::new(VMADDR_CID_HOST, AGENT_VSOCK_PORT);
        match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &host) {
            Ok(()) => return Ok(fd),
            Err(e) if started.elapsed() > APPEAR_TIMEOUT => {
                return Err(io::Error::other(format!(
                    "dial host vsock port {AGENT_VSOCK_PORT}: {e}"
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Mixes the host's `seed` into the kernel's entropy, credited in full, and
/// reseeds the kernel's generator from it at once: VMs restored from one
/// template would otherwise share their random numbers from then on.
fn reseed(seed: &[u8]) -> io::Result<()> {
    /// _IOW('R', 0x03, int[2]) and _IO('R', 0x07) from linux/random.h,
    /// which the libc crate does not carry.
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
    let random = OpenOptions::new().write(true).open("/dev/urandom")?;
    // struct rand_pool_info: entropy_count (bits), buf_size (bytes), buf.
    let mut info = Vec::with_capacity(8 + seed.len());
    info.extend_from_slice(&((seed.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(seed.len() as i32).to_ne_bytes());
    info.extend_from_slice(seed);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&random);
    // SAFETY: the kernel reads a rand_pool_info of buf_size bytes of buf,
    // which `info` holds.
    if unsafe { libc::ioctl(fd, RNDADDENTROPY as _, info.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: takes no argument.
    if unsafe { libc::ioctl(fd, RNDRESEEDCRNG as _) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The open link as a tokio byte stream, which tonic serves.
pub struct Link(AsyncFd<OwnedFd>);

impl Link {
    /// Registers a non-blocking descriptor from [`open`]; needs the runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Link> {
        // SAFETY: an OwnedFd stays open, and is the same descriptor, for as
        // long as the AsyncFd that owns it lives.
        let registered = unsafe { AsyncFd::register(fd) };
        registered.map(Link).map_err(io::Error::from)
    }
}

impl AsyncRead for Link {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| Ok(nix::unistd::read(fd.get_ref().as_fd(), unfilled)?)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Link {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| Ok(nix::unistd::write(fd.get_ref(), bytes)?)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// A console port cannot be half-closed; the host sees the end when the
    /// VM stops.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl tonic::transport::server::Connected for Link {
    type ConnectInfo = ();

    fn connect_info(&self) {}
}
