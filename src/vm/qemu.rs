//! The Linux backend: QEMU's `microvm` machine with virtio-mmio devices. The
//! guest agent's link is a virtio console port whose other end is a Unix
//! socket of ours: unlike a vhost-user vsock device (our hosts have no
//! /dev/vhost-vsock), it needs no device process, and QEMU can save a VM
//! that has one.
//!
//! Each VM owns QEMU and the helper processes its devices need (a
//! virtiofsd per shared directory). All get
//! SIGKILL if the process that started them dies, and are killed when the
//! [`QemuVm`] is dropped, so no VM outlives its owner. Each kind of device
//! knows its own QEMU arguments and helpers ([`QemuDevice`]); one this
//! backend cannot attach is an error, never silently left out.

use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::process::{Child, Command};

use super::{
    AgentLink, Disk, DiskFormat, Error, Nic, NicAttachment, Share, ShareCache, VirtualMachine,
    VmConfig,
};
use crate::io_error::io;

mod qmp;
mod template;

pub struct QemuVm {
    qemu: Child,
    /// The devices' helper processes, stopped with the VM.
    helpers: Vec<Child>,
    /// Where QEMU connects the agent's port, until the agent's link is taken.
    agent_port: Option<tokio::net::UnixListener>,
    /// What the guest says and hears first on the agent's link.
    greeting: Greeting,
}

/// How a VM starts: booted cold, booted to be saved as a template, or
/// restored from one.
enum Start<'a> {
    Cold,
    /// Booted with its RAM in this file, to be saved once vminitd is ready.
    Save {
        ram: &'a Path,
    },
    Restore(&'a template::Template),
}

/// The first words on the agent's link (see agent_proto::READY and GO).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Greeting {
    /// A cold boot: vminitd says READY, we answer GO.
    Both,
    /// Booting a template: vminitd says READY, and waits for a GO that
    /// only the VMs restored from the template will hear.
    ReadyOnly,
    /// Restored: vminitd said READY before the template was saved.
    GoOnly,
}

/// Which accelerator to use, and why. KVM only where the host has a real one:
/// the nested "PVM" KVM on our machines accepts the VM but dies on a stock
/// kernel with an emulation failure, and QEMU's own fallback does not catch
/// that.
fn accelerator() -> (&'static str, String) {
    match std::env::var("CONTAINER_ACCEL").as_deref() {
        Ok("kvm") => return ("kvm", "CONTAINER_ACCEL=kvm".into()),
        Ok("tcg") => return ("tcg", "CONTAINER_ACCEL=tcg".into()),
        _ => {}
    }
    let real_kvm =
        Path::new("/sys/module/kvm_intel").exists() || Path::new("/sys/module/kvm_amd").exists();
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    match (real_kvm, opened) {
        (true, Ok(_)) => ("kvm", "/dev/kvm is a hardware KVM we can open".into()),
        (_, Err(e)) => ("tcg", format!("/dev/kvm cannot be opened: {e}")),
        (false, Ok(_)) => (
            "tcg",
            "/dev/kvm is not a hardware KVM (no kvm_intel or kvm_amd module); \
             a nested one fails on stock guest kernels"
                .into(),
        ),
    }
}

/// What boots VMs here, for `container system status`.
pub fn host() -> super::Host {
    let (accel, reason) = accelerator();
    let programs = ["qemu-system-x86_64", "virtiofsd"]
        .into_iter()
        .map(|program| {
            let version = std::process::Command::new(program)
                .arg("--version")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .map_err(|e| spawn_error(program, e).to_string())
                .map(|out| {
                    let text = String::from_utf8_lossy(&out.stdout);
                    text.lines().next().unwrap_or_default().trim().to_string()
                });
            (program.to_string(), version.unwrap_or_else(|e| e))
        })
        .collect();
    super::Host {
        backend: "QEMU",
        accelerator: accel.to_uppercase(),
        accelerator_reason: reason,
        programs,
    }
}

/// The host TSC rate, for guests under TCG. There the guest's TSC is the
/// host's, but the guest kernel calibrates it against the emulated PIT, and on
/// a busy host that calibration fails; the kernel then hangs waiting for a
/// timer (seen in half the boots while two compilers ran). Passing
/// `tsc_early_khz` skips the calibration.
struct TscSample {
    tsc: u64,
    at: Instant,
}

impl TscSample {
    /// The shortest measurement: keeps the error near 0.1% at 1 µs timer resolution.
    const MIN: Duration = Duration::from_millis(2);

    fn now() -> TscSample {
        TscSample {
            tsc: rdtsc(),
            at: Instant::now(),
        }
    }

    async fn khz(&self) -> u64 {
        if let Some(rest) = Self::MIN.checked_sub(self.at.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        let ticks = rdtsc().wrapping_sub(self.tsc) as u128;
        (ticks * 1_000_000 / self.at.elapsed().as_nanos().max(1)) as u64
    }
}

#[cfg(target_arch = "x86_64")]
fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe { std::arch::x86_64::_rdtsc() }
}

/// Why `program` did not start: not installed (naming what provides it, as
/// scripts/setup installs it), or another failure.
fn spawn_error(program: &str, source: std::io::Error) -> Error {
    let provider = match program {
        "qemu-system-x86_64" => "the Debian package qemu-system-x86",
        "virtiofsd" => "`cargo install virtiofsd`",
        _ => "",
    };
    if source.kind() == std::io::ErrorKind::NotFound && !provider.is_empty() {
        return Error::NotInstalled {
            program: program.to_string(),
            provider,
        };
    }
    Error::Spawn {
        program: program.to_string(),
        source,
    }
}

/// Spawns a helper that dies with us: SIGKILL when our thread exits.
/// `fds` are descriptors it inherits, at the numbers given.
fn spawn(
    program: &str,
    args: &[String],
    stderr: Stdio,
    fds: Vec<(RawFd, RawFd)>,
) -> Result<Child, Error> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true);
    // SAFETY: prctl and dup2 are async-signal-safe and touch no memory of ours.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 leaves the copy open across exec.
            for &(fd, at) in &fds {
                if libc::dup2(fd, at) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command
        .spawn()
        .map_err(|source| spawn_error(program, source))
}

/// How QEMU attaches one device: its command-line arguments, the
/// descriptors QEMU must inherit for them, and the vhost-user processes
/// that implement it.
#[derive(Default)]
struct Attachment {
    args: Vec<String>,
    /// (our descriptor, the number QEMU sees it as)
    fds: Vec<(RawFd, RawFd)>,
    helpers: Vec<Helper>,
}

/// A vhost-user device process, started before QEMU, which must find its
/// socket listening.
struct Helper {
    program: &'static str,
    args: Vec<String>,
    socket: PathBuf,
    /// Where its stderr goes (None: nowhere).
    log: Option<PathBuf>,
}

/// A device as QEMU's microvm machine attaches it (virtio-mmio).
trait QemuDevice {
    /// `index` counts devices of this kind; `next_fd` is the first free
    /// descriptor number in QEMU, for devices that pass one; `run_dir` is
    /// the VM's private directory, for helpers' sockets.
    fn attach(&self, index: usize, next_fd: RawFd, run_dir: &Path) -> Result<Attachment, Error>;
}

/// The agent's link: a virtio console port named AGENT_PORT_NAME, whose
/// chardev QEMU connects, as it starts, to our Unix socket `path`.
struct AgentPort {
    path: PathBuf,
}

impl QemuDevice for AgentPort {
    fn attach(&self, _: usize, _: RawFd, _: &Path) -> Result<Attachment, Error> {
        Ok(Attachment {
            args: vec![
                "-device".into(),
                "virtio-serial-device".into(),
                "-chardev".into(),
                format!("socket,id=agent,path={}", self.path.display()),
                "-device".into(),
                format!(
                    "virtserialport,chardev=agent,name={}",
                    agent_proto::AGENT_PORT_NAME
                ),
            ],
            ..Attachment::default()
        })
    }
}

impl QemuDevice for Disk {
    fn attach(&self, index: usize, _: RawFd, _: &Path) -> Result<Attachment, Error> {
        let format = match self.format {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        };
        let read_only = if self.read_only { ",read-only=on" } else { "" };
        // writeback: a guest flush (fsync, a journal commit) reaches the
        // host's disk, as Virtualization.framework's Fsync mode does, so a
        // container's files and a volume's data outlive a host crash.
        // unsafe: a disk that is thrown away, or never written, has
        // nothing worth a host flush.
        let cache = if self.keeps_flushes() {
            "writeback"
        } else {
            "unsafe"
        };
        let args = vec![
            "-drive".into(),
            format!(
                "id=disk{index},file={},format={format},if=none,cache={cache},discard=unmap{read_only}",
                self.path.display()
            ),
            "-device".into(),
            // The guest reads ahead twice the optimal I/O size; its default
            // of 128 KiB took a dozen round trips to load a program, 25 ms of
            // a `run` under TCG. The disk is a local file: larger reads are free.
            format!("virtio-blk-device,drive=disk{index},opt_io_size={OPTIMAL_IO_BYTES}"),
        ];
        Ok(Attachment {
            args,
            ..Attachment::default()
        })
    }
}

impl QemuDevice for Nic {
    fn attach(&self, index: usize, next_fd: RawFd, _: &Path) -> Result<Attachment, Error> {
        let (netdev, fds) = match &self.attachment {
            NicAttachment::Tap(tap) => (
                format!("tap,id=net{index},fd={next_fd}"),
                vec![(tap.as_raw_fd(), next_fd)],
            ),
            NicAttachment::User { forwards } => {
                let mut netdev = format!("user,id=net{index},net=10.0.2.0/24");
                for forward in forwards {
                    let protocol = if forward.udp { "udp" } else { "tcp" };
                    // QEMU writes IPv6 host addresses in brackets too.
                    netdev += &format!(
                        ",hostfwd={protocol}:{}-:{}",
                        forward.host, forward.guest_port
                    );
                }
                (netdev, vec![])
            }
            NicAttachment::Nat => {
                return Err(Error::Unsupported {
                    backend: "QEMU",
                    device: "a network interface on the host's NAT (use a network's bridge)".into(),
                });
            }
        };
        Ok(Attachment {
            args: vec![
                "-netdev".into(),
                netdev,
                "-device".into(),
                format!("virtio-net-device,netdev=net{index},mac={}", self.mac),
            ],
            fds,
            helpers: vec![],
        })
    }
}

/// A shared directory: virtio-fs served by a virtiofsd of its own. One
/// process per directory because virtiofsd exports exactly one tree, and
/// joining several into one would need bind mounts on the host (root, and
/// a place for them); each costs a few MiB.
impl QemuDevice for Share {
    fn attach(&self, index: usize, _: RawFd, run_dir: &Path) -> Result<Attachment, Error> {
        let socket = run_dir.join(format!("fs{index}.sock"));
        let mut args = vec![
            format!("--shared-dir={}", self.path.display()),
            format!("--socket-path={}", socket.display()),
            // By default correct before fast: the guest caches neither names,
            // attributes nor data, so a change on the host (or from another
            // container on the same volume) is seen at once.
            match self.cache {
                ShareCache::Never => "--cache=never",
                ShareCache::Brief => "--cache=auto",
                ShareCache::Long => "--cache=always",
            }
            .into(),
            "--log-level=error".into(),
        ];
        if nix::unistd::geteuid().is_root() {
            // Owners are kept both ways; the daemon sees only the shared tree.
            args.push("--sandbox=namespace".into());
        } else {
            // Without root neither a sandbox nor other owners are possible:
            // files are the user's, as with any of their processes.
            args.extend(["--sandbox=none".into(), "--rlimit-nofile=0".into()]);
        }
        if self.read_only {
            args.push("--readonly".into());
        }
        let id = format!("fs{index}");
        Ok(Attachment {
            args: vec![
                "-chardev".into(),
                format!("socket,id={id},path={}", socket.display()),
                "-device".into(),
                // The tag is QEMU's to announce: virtiofsd's --tag crashes QEMU 7.
                format!("vhost-user-fs-device,chardev={id},tag={}", self.tag),
            ],
            fds: vec![],
            helpers: vec![Helper {
                program: "virtiofsd",
                args,
                log: Some(run_dir.join(format!("{id}.log"))),
                socket,
            }],
        })
    }
}

/// Every device's arguments, descriptors and helpers, in the order the
/// guest numbers them: the agent's port, disks (`/dev/vda`, ...),
/// interfaces (`eth0`, ...), shared directories.
fn attach_all(config: &VmConfig, agent: &AgentPort) -> Result<Attachment, Error> {
    let mut all = Attachment::default();
    let devices = std::iter::once((0, agent as &dyn QemuDevice))
        .chain(
            config
                .disks
                .iter()
                .enumerate()
                .map(|(i, d)| (i, d as &dyn QemuDevice)),
        )
        .chain(
            config
                .nics
                .iter()
                .enumerate()
                .map(|(i, n)| (i, n as &dyn QemuDevice)),
        )
        .chain(
            config
                .shares
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s as &dyn QemuDevice)),
        );
    for (index, device) in devices {
        // 0-2 are stdio; our own descriptors are numbered from there.
        let next_fd = 3 + all.fds.len() as RawFd;
        let attached = device.attach(index, next_fd, &config.run_dir)?;
        all.args.extend(attached.args);
        all.fds.extend(attached.fds);
        all.helpers.extend(attached.helpers);
    }
    Ok(all)
}

/// Starts the helpers together and waits until each listens on its socket.
/// If one fails, those started die with the returned error.
async fn start_helpers(helpers: &[Helper]) -> Result<Vec<Child>, Error> {
    let mut children = Vec::new();
    for helper in helpers {
        let _ = std::fs::remove_file(&helper.socket);
        let stderr = match &helper.log {
            Some(log) => std::fs::File::create(log)
                .map_err(io(format!("create {}", log.display())))?
                .into(),
            None => Stdio::null(),
        };
        children.push(spawn(helper.program, &helper.args, stderr, vec![])?);
    }
    let started = Instant::now();
    for (helper, child) in helpers.iter().zip(&mut children) {
        while !helper.socket.exists() {
            let reason = match child.try_wait() {
                Ok(Some(status)) => {
                    let log = helper
                        .log
                        .as_ref()
                        .and_then(|l| std::fs::read_to_string(l).ok());
                    let log = log.unwrap_or_default();
                    Some(format!("exited with {status} {}", log.trim()))
                }
                _ if started.elapsed() > HELPER_TIMEOUT => Some("no socket after 10 s".into()),
                _ => None,
            };
            if let Some(reason) = reason {
                return Err(Error::Spawn {
                    program: helper.program.into(),
                    source: std::io::Error::other(reason.trim().to_string()),
                });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(children)
}

/// What a disk tells the guest its optimal I/O size is (see `Disk`).
const OPTIMAL_IO_BYTES: u32 = 1 << 20;

/// How long a helper may take to listen.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

impl QemuVm {
    /// Boots a VM: restored from the template for VMs like it, where it can
    /// have one (saved on first use), else cold.
    pub async fn boot(config: &VmConfig, initfs: &Path) -> Result<QemuVm, Error> {
        let (accel, _) = accelerator();
        if let Some(template) = template::for_vm(config, initfs, accel).await {
            match QemuVm::start(config, initfs, accel, Start::Restore(&template)).await {
                Ok(vm) => return Ok(vm),
                Err(e) => {
                    // QEMU's own words, before the cold boot's replace them.
                    let log = std::fs::read_to_string(config.run_dir.join("qemu.log"));
                    let log = log.unwrap_or_default();
                    let said = log.lines().collect::<Vec<_>>().join(" | ");
                    tracing::debug!("restoring the VM template failed, booting cold: {e} {said}");
                    template.discard();
                }
            }
        }
        QemuVm::start(config, initfs, accel, Start::Cold).await
    }

    /// `accel` is what [`accelerator`] chose, once per boot.
    async fn start(
        config: &VmConfig,
        initfs: &Path,
        accel: &'static str,
        start: Start<'_>,
    ) -> Result<QemuVm, Error> {
        let run = &config.run_dir;
        // Not `agent.sock`: that name is the supervisor's, for other CLIs.
        let agent = AgentPort {
            path: run.join("agent-port.sock"),
        };
        // Before any process starts: a device we cannot attach fails the boot.
        let devices = attach_all(config, &agent)?;
        crate::app_root::private_dir(run).map_err(io(format!("create {}", run.display())))?;
        let _ = std::fs::remove_file(&agent.path);
        let agent_port = tokio::net::UnixListener::bind(&agent.path)
            .map_err(io(format!("listen on {}", agent.path.display())))?;
        super::create_console_log(&config.console_log)?;
        // Measured across the helpers' start-up, which we wait for anyway.
        let tsc = TscSample::now();
        // Dropped on an early return: kill_on_drop ends them.
        let helpers = start_helpers(&devices.helpers).await?;

        let memory = format!("{}M", config.memory_mib);
        let mut cmdline = ["console=ttyS0", "panic=-1", "quiet", "reboot=t"].join(" ");
        for arg in &config.kernel_args {
            cmdline.push(' ');
            cmdline.push_str(arg);
        }
        // A restored guest booted long ago: it reads no command line.
        if accel == "tcg" && !matches!(start, Start::Restore(_)) {
            // TCG's TSC follows the host's clock on every vCPU, but the
            // guest's synchronization check fails under emulation and falls
            // back to jiffies: 4 ms steps for every clock read and timer.
            cmdline.push_str(&format!(" tsc_early_khz={} tsc=reliable", tsc.khz().await));
        }
        let mut args: Vec<String> = vec![
            "-M".into(),
            "microvm,acpi=on,memory-backend=mem".into(),
            "-accel".into(),
            if accel == "tcg" {
                "tcg,thread=multi".into()
            } else {
                "kvm".into()
            },
            "-cpu".into(),
            if accel == "tcg" {
                "max".into()
            } else {
                "host".into()
            },
            "-smp".into(),
            config.cpus.to_string(),
            "-m".into(),
            memory.clone(),
            "-object".into(),
            match start {
                // vhost-user needs guest memory its device processes
                // (virtiofsd) can map.
                Start::Cold => format!("memory-backend-memfd,id=mem,size={memory},share=on"),
                // The template's RAM is the file: saving skips it.
                Start::Save { ram } => format!(
                    "memory-backend-file,id=mem,size={memory},mem-path={},share=on",
                    ram.display()
                ),
                // Mapped privately: the guest's writes go to memory of its
                // own, and it reads only the template pages it touches.
                Start::Restore(template) => format!(
                    "memory-backend-file,id=mem,size={memory},mem-path={},share=off",
                    template.ram().display()
                ),
            },
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-nographic".into(),
            "-no-reboot".into(),
            "-kernel".into(),
            config.kernel.image.display().to_string(),
            "-initrd".into(),
            initfs.display().to_string(),
            "-append".into(),
            cmdline,
            "-chardev".into(),
            format!("file,id=console,path={}", config.console_log.display()),
            "-serial".into(),
            "chardev:console".into(),
            // Free page reporting: memory the guest frees (the init
            // filesystem once unpacked, a finished build's page cache)
            // goes back to the host instead of staying in QEMU's share.
            "-device".into(),
            "virtio-balloon-device,free-page-reporting=on".into(),
        ];
        args.extend(devices.args);
        let monitor = run.join("qmp.sock");
        if !matches!(start, Start::Cold) {
            let _ = std::fs::remove_file(&monitor);
            args.push("-qmp".into());
            args.push(format!("unix:{},server=on,wait=off", monitor.display()));
        }
        if matches!(start, Start::Restore(_)) {
            args.extend(["-incoming".into(), "defer".into()]);
        }
        tracing::debug!(accel, "starting qemu-system-x86_64 {}", args.join(" "));
        let qemu_stderr =
            std::fs::File::create(run.join("qemu.log")).map_err(io("create qemu.log"))?;
        let qemu = spawn("qemu-system-x86_64", &args, qemu_stderr.into(), devices.fds)?;
        let greeting = match start {
            Start::Cold => Greeting::Both,
            Start::Save { .. } => Greeting::ReadyOnly,
            Start::Restore(_) => Greeting::GoOnly,
        };
        let vm = QemuVm {
            qemu,
            helpers,
            agent_port: Some(agent_port),
            greeting,
        };
        if let Start::Restore(template) = start {
            template.restore(&monitor).await?;
        }
        Ok(vm)
    }
}

impl VirtualMachine for QemuVm {
    fn agent(&mut self) -> AgentLink {
        let listener = self.agent_port.take();
        let greeting = self.greeting;
        async move {
            let taken = || std::io::Error::other("the agent's link was taken already");
            let listener = listener.ok_or_else(taken).map_err(Error::Link)?;
            // QEMU connected as it started.
            let (mut link, _) = listener.accept().await.map_err(Error::Link)?;
            if greeting != Greeting::GoOnly {
                super::read_ready(&mut link).await?;
            }
            if greeting != Greeting::ReadyOnly {
                super::go(&mut link).await?;
            }
            Ok(link)
        }
        .boxed()
    }

    fn restored(&self) -> bool {
        self.greeting == Greeting::GoOnly
    }

    fn exited(&mut self) -> Option<String> {
        match self.qemu.try_wait() {
            Ok(Some(status)) => Some(format!("qemu {status}")),
            Ok(None) => None,
            Err(e) => Some(format!("qemu: {e}")),
        }
    }

    async fn wait(&mut self) -> Result<(), Error> {
        let status = self.qemu.wait().await.map_err(io("wait for qemu"))?;
        tracing::debug!(%status, "qemu exited");
        self.kill_helpers().await;
        Ok(())
    }

    async fn kill(&mut self) {
        let _ = self.qemu.kill().await;
        self.kill_helpers().await;
    }
}

impl QemuVm {
    async fn kill_helpers(&mut self) {
        for helper in &mut self.helpers {
            let _ = helper.kill().await;
        }
    }
}

/// Creates `dir/rootfs.qcow2`, a qcow2 overlay whose reads fall through to
/// the raw base image, of `size` bytes or the base's. A reflink would need a
/// host filesystem that has them (our hosts' ext4 does not); qcow2 works
/// wherever QEMU does.
pub async fn clone_disk(base: &Path, dir: &Path, size: Option<u64>) -> Result<Disk, Error> {
    let path = dir.join("rootfs.qcow2");
    let (base_owned, path_owned) = (base.to_path_buf(), path.clone());
    tokio::task::spawn_blocking(move || {
        let size = match size {
            Some(size) => size,
            None => std::fs::metadata(&base_owned)?.len(),
        };
        super::qcow2::create_overlay(&path_owned, &base_owned, size)
    })
    .await
    .map_err(|e| io("create the container's disk")(std::io::Error::other(e)))?
    .map_err(io("create the container's disk"))?;
    Ok(Disk {
        path,
        format: DiskFormat::Qcow2,
        read_only: false,
        scratch: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `-drive` option QEMU gets for a disk.
    fn drive(read_only: bool, scratch: bool) -> String {
        let disk = Disk {
            path: "/disk".into(),
            format: DiskFormat::Raw,
            read_only,
            scratch,
        };
        disk.attach(0, -1, Path::new("/run")).unwrap().args[1].clone()
    }

    #[test]
    fn only_disks_thrown_away_or_never_written_skip_host_flushes() {
        assert!(drive(false, false).contains(",cache=writeback,"));
        assert!(drive(false, true).contains(",cache=unsafe,"));
        let read_only = drive(true, false);
        assert!(read_only.contains(",cache=unsafe,"), "{read_only}");
        assert!(read_only.ends_with(",read-only=on"), "{read_only}");
    }
}
