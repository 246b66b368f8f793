//! The macOS backend: Virtualization.framework through `objc2-virtualization`.
//!
//! Kept as thin as the framework allows, so that everything above it is the
//! code our Linux tests run. The one rule the framework imposes: a
//! `VZVirtualMachine` and its devices are used only on the serial dispatch
//! queue the machine was created with, and its completion handlers and
//! delegate calls arrive there too. Every such call below is submitted to
//! that queue, and answers come back to tokio through channels.
//!
//! On Linux this module is only type-checked (scripts/check-macos).

use std::cell::Cell;
use std::ffi::{CString, c_char, c_int};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use block2::RcBlock;
use dispatch2::{DispatchQueue, DispatchQueueAttr, DispatchRetained};
use futures::FutureExt;
use objc2::rc::{Retained, autoreleasepool};
use objc2::runtime::{NSObject, NSObjectProtocol, ProtocolObject};
use objc2::{AllocAnyThread, DefinedClass, define_class, msg_send};
use objc2_foundation::{NSArray, NSError, NSString, NSURL};
use objc2_virtualization::{
    VZDiskImageCachingMode, VZDiskImageStorageDeviceAttachment, VZDiskImageSynchronizationMode,
    VZFileSerialPortAttachment, VZLinuxBootLoader, VZMACAddress, VZNATNetworkDeviceAttachment,
    VZSharedDirectory, VZSingleDirectoryShare, VZVirtioBlockDeviceConfiguration,
    VZVirtioConsoleDeviceSerialPortConfiguration, VZVirtioEntropyDeviceConfiguration,
    VZVirtioFileSystemDeviceConfiguration, VZVirtioNetworkDeviceConfiguration,
    VZVirtioSocketConnection, VZVirtioSocketDevice, VZVirtioSocketDeviceConfiguration,
    VZVirtioSocketListener, VZVirtioSocketListenerDelegate, VZVirtualMachine,
    VZVirtualMachineConfiguration, VZVirtualMachineDelegate, VZVirtualMachineState,
};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::{AgentLink, Disk, DiskFormat, Error, NicAttachment, VirtualMachine, VmConfig};
use crate::io_error::io;

/// The guest's console is a virtio console (`hvc0`), not a UART.
///
/// `panic=-1`: a panicking guest asks for a reset at once. Apple's
/// `container` passes `panic=0` (Kernel.swift's default), which leaves a
/// panicked guest spinning with its vsock connections open, so nothing on
/// the host learns of it (apple/container#946: stop hangs after a guest
/// panic). A reset, by contrast, is seen whichever way the framework takes
/// it: if it stops the VM, the delegate reports the stop; if it restarted
/// the guest in place, the reset would still drop every vsock connection,
/// the supervisor would see its agent connection break and stop the VM
/// (`kill`), and during boot `connect_agent` gives up after its timeout. So
/// no crash loop outlives the supervisor, with or without QEMU's
/// `-no-reboot`, which Virtualization.framework has no equivalent of.
const COMMAND_LINE: &[&str] = &["console=hvc0", "panic=-1", "quiet"];

/// A framework object that may only be touched on its VM's queue.
struct OnQueue<T>(T);

// SAFETY: the objects are not thread-safe, but they never need to be: they
// are only dereferenced inside work submitted to the VM's serial queue, which
// runs one item at a time. Moving the handle between threads is harmless.
unsafe impl<T> Send for OnQueue<T> {}
unsafe impl<T> Sync for OnQueue<T> {}

type Machine = Arc<OnQueue<Retained<VZVirtualMachine>>>;

pub struct VzVm {
    queue: DispatchRetained<DispatchQueue>,
    machine: Machine,
    /// The machine holds its delegate weakly; this keeps it alive.
    _observer: OnQueue<Retained<StopObserver>>,
    /// Why the VM stopped, once it has.
    stopped: watch::Receiver<Option<String>>,
    stop_reason: watch::Sender<Option<String>>,
}

fn vz_error(context: &str, error: &NSError) -> Error {
    let error = std::io::Error::other(error.localizedDescription().to_string());
    io(context)(error).into()
}

fn file_url(path: &Path) -> Result<Retained<NSURL>, Error> {
    url(path, false)
}

fn directory_url(path: &Path) -> Result<Retained<NSURL>, Error> {
    url(path, true)
}

/// NSURL's own Path conversion is missing from the GNUstep build the Linux
/// type-check uses, so go through the path's text.
fn url(path: &Path, is_dir: bool) -> Result<Retained<NSURL>, Error> {
    let text = path.to_str().ok_or_else(|| Error::Missing {
        what: path.display().to_string(),
        hint: "Virtualization.framework needs a UTF-8 path".into(),
    })?;
    Ok(NSURL::fileURLWithPath_isDirectory(
        &NSString::from_str(text),
        is_dir,
    ))
}

/// Runs `work` in an autorelease pool of its own. The framework hands back
/// some objects autoreleased (the NSError of every `..._error` method,
/// convenience constructors such as `fileURLWithPath:`, array getters):
/// on tokio's threads, which have no pool, they would pile up for the life
/// of the thread, and a dispatch queue drains its pool only when it sees
/// fit. Every entry into Objective-C below goes through this.
fn pooled<R>(work: impl FnOnce() -> R) -> R {
    autoreleasepool(|_| work())
}

/// Runs `work` on the VM's queue and returns what it returns.
fn on_queue<R: Send>(queue: &DispatchQueue, work: impl FnOnce() -> R + Send) -> R {
    let mut result = None;
    queue.exec_sync(|| result = Some(pooled(work)));
    result.expect("exec_sync runs its work before returning")
}

fn disk(disk: &Disk) -> Result<Retained<VZVirtioBlockDeviceConfiguration>, Error> {
    if disk.format != DiskFormat::Raw {
        let raw_only = std::io::Error::other("Virtualization.framework boots raw disk images only");
        return Err(io(format!("attach {}", disk.path.display()))(raw_only).into());
    }
    // Cached: per-container disks are clonefile(2) copies of one image
    // snapshot and share its blocks, so the host page cache serves every
    // container of an image at once. Fsync for writable disks: volumes hold
    // data users keep, and a guest flush then costs one fsync rather than
    // the full drive-cache flush of `Full`. A read-only disk has nothing to
    // flush, and a scratch disk nothing worth it (as under QEMU).
    let sync = if disk.keeps_flushes() {
        VZDiskImageSynchronizationMode::Fsync
    } else {
        VZDiskImageSynchronizationMode::None
    };
    let attachment = unsafe {
        VZDiskImageStorageDeviceAttachment::initWithURL_readOnly_cachingMode_synchronizationMode_error(
            VZDiskImageStorageDeviceAttachment::alloc(),
            &*file_url(&disk.path)?,
            disk.read_only,
            VZDiskImageCachingMode::Cached,
            sync,
        )
    }
    .map_err(|e| vz_error(&format!("attach {}", disk.path.display()), &e))?;
    Ok(unsafe {
        VZVirtioBlockDeviceConfiguration::initWithAttachment(
            VZVirtioBlockDeviceConfiguration::alloc(),
            &attachment,
        )
    })
}

/// The framework's description of the VM, validated.
fn configuration(
    config: &VmConfig,
    initfs: &Path,
) -> Result<Retained<VZVirtualMachineConfiguration>, Error> {
    let mut command_line: Vec<&str> = COMMAND_LINE.to_vec();
    command_line.extend(config.kernel_args.iter().map(String::as_str));
    // SAFETY (all blocks below): plain setters and initialisers on objects
    // this function created and still owns alone; no queue is involved yet.
    let boot_loader = unsafe {
        let loader = VZLinuxBootLoader::initWithKernelURL(
            VZLinuxBootLoader::alloc(),
            &*file_url(&config.kernel.image)?,
        );
        loader.setInitialRamdiskURL(Some(&*file_url(initfs)?));
        loader.setCommandLine(&NSString::from_str(&command_line.join(" ")));
        loader
    };

    let disks = config
        .disks
        .iter()
        .map(|d| disk(d).map(Retained::into_super))
        .collect::<Result<Vec<_>, _>>()?;

    let mut nics = Vec::new();
    for nic in &config.nics {
        if !matches!(nic.attachment, NicAttachment::Nat) {
            return Err(Error::Unsupported {
                backend: "Virtualization.framework",
                device: "a network interface on a tap device or QEMU's user-mode stack (only the host's NAT)".into(),
            });
        }
        let mac = unsafe {
            VZMACAddress::initWithString(
                VZMACAddress::alloc(),
                &NSString::from_str(&nic.mac.to_string()),
            )
        }
        .ok_or_else(|| {
            let invalid = std::io::Error::other(format!("invalid MAC address {}", nic.mac));
            io("configure the network")(invalid)
        })?;
        let device = unsafe {
            let device = VZVirtioNetworkDeviceConfiguration::new();
            device.setMACAddress(&mac);
            device.setAttachment(Some(&VZNATNetworkDeviceAttachment::new()));
            device
        };
        nics.push(device.into_super());
    }

    let mut shares = Vec::new();
    for share in &config.shares {
        let tag = NSString::from_str(&share.tag);
        unsafe { VZVirtioFileSystemDeviceConfiguration::validateTag_error(&tag) }
            .map_err(|e| vz_error(&format!("share tag {:?}", share.tag), &e))?;
        let device = unsafe {
            let directory = VZSharedDirectory::initWithURL_readOnly(
                VZSharedDirectory::alloc(),
                &*directory_url(&share.path)?,
                share.read_only,
            );
            let single = VZSingleDirectoryShare::initWithDirectory(
                VZSingleDirectoryShare::alloc(),
                &directory,
            );
            let device = VZVirtioFileSystemDeviceConfiguration::initWithTag(
                VZVirtioFileSystemDeviceConfiguration::alloc(),
                &tag,
            );
            device.setShare(Some(&single));
            device
        };
        shares.push(device.into_super());
    }

    let console = unsafe {
        let file = VZFileSerialPortAttachment::initWithURL_append_error(
            VZFileSerialPortAttachment::alloc(),
            &*file_url(&config.console_log)?,
            false,
        )
        .map_err(|e| vz_error("open the console log", &e))?;
        let port = VZVirtioConsoleDeviceSerialPortConfiguration::new();
        port.setAttachment(Some(&file));
        port.into_super()
    };

    let vz = unsafe {
        let vz = VZVirtualMachineConfiguration::new();
        vz.setBootLoader(Some(&boot_loader));
        vz.setCPUCount(config.cpus as usize);
        vz.setMemorySize(config.memory_mib << 20);
        vz.setStorageDevices(&NSArray::from_retained_slice(&disks));
        vz.setNetworkDevices(&NSArray::from_retained_slice(&nics));
        vz.setDirectorySharingDevices(&NSArray::from_retained_slice(&shares));
        vz.setSerialPorts(&NSArray::from_retained_slice(&[console]));
        vz.setSocketDevices(&NSArray::from_retained_slice(&[
            VZVirtioSocketDeviceConfiguration::new().into_super(),
        ]));
        // The guest kernel seeds its RNG from this instead of waiting for
        // entropy a fresh VM does not have.
        vz.setEntropyDevices(&NSArray::from_retained_slice(&[
            VZVirtioEntropyDeviceConfiguration::new().into_super(),
        ]));
        vz
    };
    unsafe { vz.validateWithError() }.map_err(|e| vz_error("invalid VM configuration", &e))?;
    Ok(vz)
}

define_class!(
    /// Hears the machine stop, whoever stopped it. Objective-C classes
    /// share one namespace per process: the prefix keeps ours apart from
    /// any other library's.
    #[unsafe(super(NSObject))]
    #[name = "ContainerRsVZStopObserver"]
    #[ivars = watch::Sender<Option<String>>]
    struct StopObserver;

    unsafe impl NSObjectProtocol for StopObserver {}

    unsafe impl VZVirtualMachineDelegate for StopObserver {
        #[unsafe(method(guestDidStopVirtualMachine:))]
        fn guest_did_stop(&self, _machine: &VZVirtualMachine) {
            self.ivars().send_replace(Some("the guest stopped".into()));
        }

        #[unsafe(method(virtualMachine:didStopWithError:))]
        fn did_stop_with_error(&self, _machine: &VZVirtualMachine, error: &NSError) {
            self.ivars().send_replace(Some(format!(
                "stopped with an error: {}",
                error.localizedDescription()
            )));
        }
    }
);

impl StopObserver {
    fn new(reason: watch::Sender<Option<String>>) -> Retained<StopObserver> {
        let this = StopObserver::alloc().set_ivars(reason);
        unsafe { msg_send![super(this), init] }
    }
}

define_class!(
    /// Accepts every connection the guest dials to one port.
    #[unsafe(super(NSObject))]
    #[name = "ContainerRsVZPortListener"]
    #[ivars = mpsc::UnboundedSender<std::os::unix::net::UnixStream>]
    struct PortListener;

    unsafe impl NSObjectProtocol for PortListener {}

    unsafe impl VZVirtioSocketListenerDelegate for PortListener {
        #[unsafe(method(listener:shouldAcceptNewConnection:fromSocketDevice:))]
        fn should_accept(
            &self,
            _listener: &VZVirtioSocketListener,
            connection: &VZVirtioSocketConnection,
            _device: &VZVirtioSocketDevice,
        ) -> bool {
            match take_fd(connection) {
                Ok(fd) => self.ivars().send(fd.into()).is_ok(),
                Err(e) => {
                    tracing::debug!("refused a guest connection: {e}");
                    false
                }
            }
        }
    }
);

impl PortListener {
    fn new(incoming: mpsc::UnboundedSender<std::os::unix::net::UnixStream>) -> Retained<Self> {
        let this = PortListener::alloc().set_ivars(incoming);
        unsafe { msg_send![super(this), init] }
    }
}

/// Takes the connection's socket for ourselves: a duplicate that is closed
/// on exec (no container process may inherit a guest connection), after
/// which the framework's own descriptor is closed.
fn take_fd(connection: &VZVirtioSocketConnection) -> std::io::Result<OwnedFd> {
    let fd = unsafe { libc::fcntl(connection.fileDescriptor(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    unsafe { connection.close() };
    // SAFETY: fcntl just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The machine's one vsock device (configuration() adds exactly one).
/// Call on the queue.
fn socket_device(machine: &VZVirtualMachine) -> Option<Retained<VZVirtioSocketDevice>> {
    let devices = unsafe { machine.socketDevices() };
    devices.firstObject()?.downcast().ok()
}

impl VzVm {
    pub async fn boot(config: &VmConfig, initfs: &Path) -> Result<VzVm, Error> {
        super::create_console_log(&config.console_log)?;
        let vz_config = OnQueue(pooled(|| configuration(config, initfs))?);
        let queue = DispatchQueue::new("container.vm", DispatchQueueAttr::SERIAL);
        let (stop_reason, stopped) = watch::channel(None);
        let observer = OnQueue(StopObserver::new(stop_reason.clone()));
        let (started_tx, started) = oneshot::channel::<Result<(), String>>();
        // Borrow the wrappers whole: a closure naming `vz_config.0` would
        // capture the unwrapped, non-Send object.
        let (vz_config, observer_ref, queue_ref) = (&vz_config, &observer, &*queue);
        let machine = on_queue(&queue, move || {
            let machine = unsafe {
                VZVirtualMachine::initWithConfiguration_queue(
                    VZVirtualMachine::alloc(),
                    &vz_config.0,
                    queue_ref,
                )
            };
            let started_tx = Cell::new(Some(started_tx));
            let handler = RcBlock::new(move |error: *mut NSError| {
                // SAFETY: nil or a valid error for the duration of the call.
                let result = match unsafe { error.as_ref() } {
                    None => Ok(()),
                    Some(error) => Err(error.localizedDescription().to_string()),
                };
                if let Some(tx) = started_tx.take() {
                    let _ = tx.send(result);
                }
            });
            unsafe {
                machine.setDelegate(Some(ProtocolObject::from_ref(&*observer_ref.0)));
                machine.startWithCompletionHandler(&handler);
            }
            OnQueue(machine)
        });
        let vm = VzVm {
            queue,
            machine: Arc::new(machine),
            _observer: observer,
            stopped,
            stop_reason,
        };
        match started.await {
            Ok(Ok(())) => Ok(vm),
            Ok(Err(reason)) => Err(Error::BootFailed {
                reason,
                log: super::console_tail(&config.console_log),
            }),
            Err(_) => Err(Error::BootFailed {
                reason: "the framework dropped the start request".into(),
                log: super::console_tail(&config.console_log),
            }),
        }
    }

    /// Force-stops the machine if it still runs; `done` hears when it has.
    fn force_stop(&self, done: oneshot::Sender<()>) {
        let machine = self.machine.clone();
        self.queue.exec_async(move || {
            pooled(|| {
                let machine = &machine.0;
                if !unsafe { machine.canStop() } {
                    let _ = done.send(());
                    return;
                }
                let done = Cell::new(Some(done));
                // The block holds the machine until the framework is done with it.
                let keep = machine.clone();
                let handler = RcBlock::new(move |_error: *mut NSError| {
                    let _ = &keep;
                    if let Some(done) = done.take() {
                        let _ = done.send(());
                    }
                });
                unsafe { machine.stopWithCompletionHandler(&handler) };
            })
        });
    }
}

impl VirtualMachine for VzVm {
    /// vminitd dials the host's AGENT_VSOCK_PORT once it serves: listen
    /// there for that one connection.
    fn agent(&mut self) -> AgentLink {
        let port = agent_proto::AGENT_VSOCK_PORT;
        let (sender, mut incoming) = mpsc::unbounded_channel();
        let delegate = OnQueue(PortListener::new(sender));
        let (machine, delegate_ref) = (&self.machine, &delegate);
        let installed = on_queue(&self.queue, move || {
            let device = socket_device(&machine.0)?;
            unsafe {
                let listener = VZVirtioSocketListener::new();
                listener.setDelegate(Some(ProtocolObject::from_ref(&*delegate_ref.0)));
                device.setSocketListener_forPort(&listener, port);
            }
            Some(())
        });
        let listening = Listening {
            queue: self.queue.clone(),
            machine: self.machine.clone(),
            delegate: Some(delegate),
            port,
        };
        async move {
            let no_vsock = || std::io::Error::other("the VM has no vsock device");
            installed.ok_or_else(no_vsock).map_err(Error::Link)?;
            let link = incoming.recv().await;
            drop(listening);
            let gone = || std::io::Error::other("the VM stopped listening");
            let link = link.ok_or_else(gone).map_err(Error::Link)?;
            let mut link = link
                .set_nonblocking(true)
                .and_then(|()| UnixStream::from_std(link))
                .map_err(Error::Link)?;
            super::read_ready(&mut link).await?;
            super::go(&mut link).await?;
            Ok(link)
        }
        .boxed()
    }

    fn exited(&mut self) -> Option<String> {
        if let Some(reason) = self.stopped.borrow().clone() {
            return Some(reason);
        }
        // A failed start or an internal error reaches no delegate method.
        let machine = self.machine.clone();
        let state = on_queue(&self.queue, move || unsafe { machine.0.state() });
        (state == VZVirtualMachineState::Error).then(|| "the VM is in an error state".into())
    }

    async fn wait(&mut self) -> Result<(), Error> {
        // We hold a sender ourselves, so the channel cannot close first.
        let _ = self.stopped.wait_for(Option::is_some).await;
        Ok(())
    }

    /// The framework's `stop`: the guest gets no chance to shut down. The
    /// graceful path is the agent's Shutdown call, after which the guest
    /// powers off and the observer reports it.
    async fn kill(&mut self) {
        let (done, stopped) = oneshot::channel();
        self.force_stop(done);
        let _ = stopped.await;
        self.stop_reason.send_modify(|reason| {
            reason.get_or_insert_with(|| "killed".into());
        });
    }
}

/// A listener on a host vsock port, removed when dropped.
struct Listening {
    queue: DispatchRetained<DispatchQueue>,
    machine: Machine,
    delegate: Option<OnQueue<Retained<PortListener>>>,
    port: u32,
}

impl Drop for Listening {
    fn drop(&mut self) {
        let (machine, delegate, port) = (self.machine.clone(), self.delegate.take(), self.port);
        self.queue.exec_async(move || {
            pooled(|| {
                if let Some(device) = socket_device(&machine.0) {
                    unsafe { device.removeSocketListenerForPort(port) };
                }
            });
            // The listener holds its delegate weakly: release it only now.
            drop(delegate);
        });
    }
}

impl Drop for VzVm {
    fn drop(&mut self) {
        let (done, _) = oneshot::channel();
        self.force_stop(done);
    }
}

unsafe extern "C" {
    /// clonefile(2), declared here rather than taken from `libc` so that the
    /// Linux type-check (where libc has no such function) covers its use.
    fn clonefile(src: *const c_char, dst: *const c_char, flags: u32) -> c_int;
}

/// What boots VMs here, for `container system status`: the framework runs
/// on the Hypervisor framework and needs no program of ours besides vminitd.
pub fn host() -> super::Host {
    super::Host {
        backend: "Virtualization.framework",
        accelerator: "VZ".into(),
        accelerator_reason: "Virtualization.framework runs guests on the Hypervisor framework"
            .into(),
        programs: Default::default(),
    }
}

/// Clones the image snapshot to `dir/rootfs.ext4` with clonefile(2): APFS
/// shares every block until the container writes one, so this takes
/// milliseconds whatever the image's size, and the VM boots a plain raw file.
/// An app root on a volume that cannot clone (not APFS) or on another
/// volume than the file gets a sparse copy instead, as Apple's `container`
/// copies when it cannot clone: slower, never wrong.
pub async fn clone_disk(base: &Path, dir: &Path, size: Option<u64>) -> Result<super::Disk, Error> {
    let path = dir.join("rootfs.ext4");
    let c_path = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| io(format!("clone {}", base.display()))(e.into()))
    };
    let (src, dst) = (c_path(base)?, c_path(&path)?);
    if unsafe { clonefile(src.as_ptr(), dst.as_ptr(), 0) } != 0 {
        let error = std::io::Error::last_os_error();
        if !super::raw::clone_falls_back(&error) {
            return Err(
                io(format!("clone {} to {}", base.display(), path.display()))(error).into(),
            );
        }
        tracing::debug!("clonefile: {error}; copying {} instead", base.display());
        let (from, to) = (base.to_path_buf(), path.clone());
        let copied = tokio::task::spawn_blocking(move || super::raw::copy_sparse(&from, &to))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(source) = copied {
            let _ = std::fs::remove_file(&path);
            return Err(
                io(format!("copy {} to {}", base.display(), path.display()))(source).into(),
            );
        }
    }
    if let Some(bytes) = size.map(super::raw::disk_size) {
        // Growing a clone is a hole at its end: nothing is copied or written.
        let grow = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_len(bytes));
        if let Err(source) = grow {
            let _ = std::fs::remove_file(&path);
            return Err(io(format!("grow {} to {bytes} bytes", path.display()))(source).into());
        }
    }
    Ok(Disk {
        path,
        format: DiskFormat::Raw,
        read_only: false,
        scratch: false,
    })
}
