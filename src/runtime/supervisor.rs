//! The supervisor: one process per running container, owning its VM.
//!
//! It is this binary re-executed as `container __supervise ID`, in its own
//! session so it outlives the CLI that started it. It boots the VM, starts
//! the container's main process, appends its output to `stdio.log`,
//! forwards calls on the container's agent socket to vminitd, records every state
//! change atomically, and on every way out stops the VM. Its exit code is
//! the workload's, which is how an attached `run` learns it.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use agent_proto::create_process_request::Target;
use agent_proto::{
    ContainerConfig, CreateProcessRequest, NewContainer, PingRequest, ProcessSpec, SetTimeRequest,
    ShutdownRequest,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixListener;
use tonic::Code;
use tonic::transport::Channel;

use super::container::{Container, Containers, State, Status, now};
use super::mounts::Plan;
use super::plugged::{Plug, Plugged};
use super::{Error, agent, logs, process_ref};
use crate::io_error::io;
use crate::phases::Phases;
use crate::vm::{self, VirtualMachine, VmConfig};

/// The hidden CLI command that runs a supervisor.
pub const SUPERVISE_COMMAND: &str = "__supervise";
/// The agent's ID for a container's main process.
pub const INIT_PROCESS: &str = "init";
/// Where a guest mounts the container's root disk.
const ROOTFS: &str = "/run/container/rootfs";
/// Guest memory on top of what the container asked for, for the guest
/// kernel and vminitd (Apple's runtime adds the same).
const MEMORY_OVERHEAD_MIB: u64 = 128;
/// The VM's size when the container names none.
const DEFAULT_CPUS: u32 = 2;
const DEFAULT_MEMORY_MIB: u64 = 1024;
/// How long a cold boot may take before we give up. Generous: software
/// emulation on a loaded 2-core host is slow.
pub(crate) const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after its link breaks a VM that died is seen to have exited.
const EXIT_SEEN_WITHIN: Duration = Duration::from_millis(250);
/// How often the guest's clock is set from the host's while the container
/// runs, as Apple's runtime does (TimeSyncer.swift). A guest's clock stops
/// while the host sleeps (a Mac's lid closes) and drifts under emulation;
/// nothing in the guest corrects it (no NTP, no network at all for some).
const TIME_SYNC_INTERVAL: Duration = Duration::from_secs(30);
/// The exit code for a container the runtime could not run (Docker's).
pub const EXIT_RUNTIME_ERROR: i32 = 125;

/// The descriptor a detached supervisor reports its start on.
const REPORT_FD: i32 = 3;

/// A started supervisor: the process, and for a detached one the read end
/// of its start report.
pub struct Spawned {
    pub child: tokio::process::Child,
    report: Option<std::os::fd::OwnedFd>,
}

/// Starts a container's supervisor. Attached, it reports errors on our
/// stderr; detached, in the container's supervisor.log, and whether the
/// container started on a pipe [`wait_started`] reads: the container's
/// files may be gone by then (`--rm`), the pipe cannot be.
pub fn spawn(
    app_root: &Path,
    container: &Container,
    attached: bool,
    size: Option<(u32, u32)>,
) -> Result<Spawned, Error> {
    let exe = std::env::current_exe().map_err(io("find the running binary"))?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("--app-root")
        .arg(app_root)
        .arg(SUPERVISE_COMMAND)
        .arg(container.id());
    if let Some((rows, cols)) = size {
        command.arg(format!("{rows}x{cols}"));
    }
    let (stderr, report) = if attached {
        (Stdio::inherit(), None)
    } else {
        let log = container.dir.join("supervisor.log");
        let log = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&log)
            .map_err(io(format!("create {}", log.display())))?;
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io("create the start report pipe")(e.into()))?;
        command.arg("--report-fd").arg(REPORT_FD.to_string());
        (log.into(), Some((read, write)))
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let report_write = report.as_ref().map(|(_, write)| write.as_raw_fd());
    // SAFETY: setsid and dup2 are async-signal-safe. A session of its own
    // keeps the supervisor (and the container) alive when the CLI or its
    // terminal goes; dup2 leaves the copy open across exec.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if let Some(fd) = report_write
                && libc::dup2(fd, REPORT_FD) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(io("start the container's supervisor"))?;
    // Our copy of the write end closes here, so the read end sees end of
    // file if the supervisor dies without reporting.
    Ok(Spawned {
        child,
        report: report.map(|(read, _)| read),
    })
}

/// What a detached supervisor writes on its report descriptor: one line,
/// `running` once the container's process runs and its agent socket
/// serves, or `failed REASON`.
struct Report(Option<std::fs::File>);

impl Report {
    fn from_fd(fd: Option<i32>) -> Report {
        // SAFETY: the CLI that started us put this descriptor there for us alone.
        let file = fd.map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
        // Not for the VM's helpers: only our own end of it may keep the CLI waiting.
        if let Some(file) = &file {
            let _ = nix::fcntl::fcntl(
                file,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
        }
        Report(file)
    }

    /// Says one line, once; a CLI that stopped listening is no failure.
    fn say(&mut self, line: &str) {
        if let Some(mut file) = self.0.take() {
            let _ = writeln!(file, "{}", line.replace('\n', " "));
        }
    }
}

/// Waits until a detached container runs, or reports why it could not start.
pub async fn wait_started(container: &Container, spawned: Spawned) -> Result<i32, Error> {
    let Spawned { mut child, report } = spawned;
    let report = report.expect("a detached supervisor has a report pipe");
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(
        tokio::net::unix::pipe::Receiver::from_owned_fd(report)
            .map_err(io("read the supervisor's report"))?,
    );
    tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut line)
        .await
        .map_err(io("read the supervisor's report"))?;
    let line = line.trim_end();
    if line == "running" {
        return Ok(0);
    }
    if let Some(reason) = line.strip_prefix("failed ") {
        return Err(Error::NotStarted(reason.to_string()));
    }
    // It died without a word (killed, crashed): its log may say why.
    let status = child.wait().await.map_err(io("wait for the supervisor"))?;
    let log = std::fs::read_to_string(container.dir.join("supervisor.log")).unwrap_or_default();
    let reason = log
        .lines()
        .last()
        .map(String::from)
        .unwrap_or_else(|| format!("its supervisor exited with {status}"));
    Err(Error::NotStarted(reason))
}

/// The supervisor's main: returns the process exit code.
pub async fn supervise(
    app_root: &Path,
    id: &str,
    size: Option<(u32, u32)>,
    report_fd: Option<i32>,
) -> i32 {
    let mut report = Report::from_fd(report_fd);
    let started = State {
        status: Status::Running,
        supervisor_pid: Some(std::process::id() as i32),
        started: Some(now()),
        ..State::created()
    };
    // Under the lock `rm` removes under: the record is found and marked
    // running (so an `rm` after sees it running), or it is gone.
    let claimed = Containers::open(app_root).and_then(|containers| {
        let _lock = containers.lock()?;
        let container = containers.find(id)?;
        container.save_state(&started)?;
        Ok(container)
    });
    let container = match claimed {
        Ok(container) => container,
        Err(e) => {
            eprintln!("Error: {e}");
            report.say(&format!("failed {e}"));
            return EXIT_RUNTIME_ERROR;
        }
    };
    let (code, reason) = match run(&container, size, &mut report).await {
        Ok(Ended::Exited(code)) => (code, None),
        Ok(Ended::NotStarted(code, message)) => {
            eprintln!("Error: {message}");
            (code, Some(message))
        }
        Err(e) => {
            eprintln!("Error: {e}");
            (EXIT_RUNTIME_ERROR, Some(e.to_string()))
        }
    };
    let _ = std::fs::remove_dir_all(container.run_dir());
    let stopped = State {
        status: Status::Stopped,
        supervisor_pid: None,
        finished: Some(now()),
        exit_code: Some(code),
        reason: reason.clone(),
        ..started
    };
    if let Err(e) = container.save_state(&stopped) {
        eprintln!("Error: {e}");
    }
    if container.config.spec.remove {
        let _ = super::forget(app_root, &container, true);
    }
    // Last, so the CLI that waits returns to a settled record (or none).
    if let Some(reason) = &reason {
        report.say(&format!("failed {reason}"));
    }
    code
}

enum Ended {
    Exited(i32),
    /// The process could not be started: a shell's exit code and why.
    NotStarted(i32, String),
}

async fn run(
    container: &Container,
    size: Option<(u32, u32)>,
    report: &mut Report,
) -> Result<Ended, Error> {
    let mut phases = Phases::start();
    let run_dir = container.run_dir();
    crate::app_root::private_dir(&run_dir).map_err(io(format!("create {}", run_dir.display())))?;
    let mounts = super::mounts::plan_for(container)?;
    let mut plugged = Plugged::plug(Plug::container(container))?;
    let nics = plugged.iter().map(|p| p.nic.clone()).collect();
    let config = vm_config(container, nics, &mounts, run_dir, container.boot_log())?;
    phases.done("plan mounts and network");
    let result = match vm::boot(&config).await {
        Ok(mut vm) => {
            phases.done("spawn helpers and QEMU");
            let log = &config.console_log;
            let result = drive(
                &mut vm,
                container,
                plugged.as_mut(),
                &mounts,
                log,
                size,
                report,
                &mut phases,
            )
            .await;
            stop_vm(vm, log, !disposable(container, &mounts)).await;
            phases.done("VM gone");
            result
        }
        Err(e) => Err(e.into()),
    };
    // The VM is gone and our copy of the tap closes here: the network can
    // come down if this was its last container.
    drop(config);
    if let Some(plugged) = plugged {
        plugged.unplug().await;
    }
    result
}

/// A VM whose disks are deleted when it ends (`--rm`, no volume disks)
/// needs no orderly shutdown: nothing in it must reach a disk (shared
/// directories are written through at once), so it is killed.
fn disposable(container: &Container, mounts: &Plan) -> bool {
    container.config.spec.remove && mounts.disks.is_empty()
}

/// Whatever happened, the VM goes: if `graceful`, give the guest a moment
/// to power off (the agent was asked to), then pull the plug.
pub(crate) async fn stop_vm(mut vm: impl VirtualMachine, console_log: &Path, graceful: bool) {
    if graceful
        && tokio::time::timeout(Duration::from_secs(5), vm.wait())
            .await
            .is_err()
    {
        tracing::debug!("the VM did not power off in time; killing it");
    }
    vm.kill().await;
    if tracing::enabled!(tracing::Level::DEBUG) {
        for line in std::fs::read_to_string(console_log)
            .unwrap_or_default()
            .lines()
        {
            tracing::debug!(target: "guest", "{line}");
        }
    }
}

/// Everything between boot and power-off, for any backend (a fake one in
/// the tests below).
async fn drive(
    vm: &mut impl VirtualMachine,
    container: &Container,
    plugged: Option<&mut Plugged>,
    mounts: &Plan,
    console_log: &Path,
    size: Option<(u32, u32)>,
    report: &mut Report,
    phases: &mut Phases,
) -> Result<Ended, Error> {
    let channel = agent::connect(vm, console_log).await?;
    let mut agent = agent::Client::new(channel.clone());
    let restored = vm.restored();
    let result = run_main_process(
        &mut agent, channel, restored, container, plugged, mounts, size, report, phases,
    )
    .await;
    if !disposable(container, mounts) {
        let _ = agent.shutdown(ShutdownRequest {}).await;
    }
    match result {
        Ok(ended) => Ok(ended),
        Err(e) => Err(explain(vm, e).await),
    }
}

/// A broken agent connection usually means the VM died: say so. The link
/// breaks a moment before the VM's exit can be seen (a process's
/// descriptors close before it becomes waitable), so an agent error waits
/// that moment for it.
pub(crate) async fn explain(vm: &mut impl VirtualMachine, e: Error) -> Error {
    let Error::Agent(message) = e else {
        return e;
    };
    let deadline = tokio::time::Instant::now() + EXIT_SEEN_WITHIN;
    loop {
        if let Some(reason) = vm.exited() {
            return Error::Agent(format!("the VM stopped unexpectedly ({reason})"));
        }
        if tokio::time::Instant::now() >= deadline {
            return Error::Agent(message);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn run_main_process(
    agent: &mut agent::Client,
    channel: Channel,
    restored: bool,
    container: &Container,
    mut plugged: Option<&mut Plugged>,
    mounts: &Plan,
    size: Option<(u32, u32)>,
    report: &mut Report,
    phases: &mut Phases,
) -> Result<Ended, Error> {
    // Requests that do not wait on each other's answers go out together
    // (HTTP/2 carries them side by side): each answer the host waits for
    // costs a round trip through the emulated guest, 10-25 ms under TCG.
    let ping = {
        let mut agent = agent.clone();
        let phases = &mut *phases;
        async move {
            let ping = agent.ping(PingRequest {}).await?.into_inner();
            tracing::debug!(
                kernel = ping.kernel_release,
                version = ping.version,
                "agent ready"
            );
            if restored {
                // The guest's clocks tell of the template's boot.
                phases.done("restore the VM, agent ready");
                return Ok(());
            }
            // The guest's clock starts with its kernel: what it does not
            // account for is QEMU's start (and our connecting, a few ms).
            let (init, ready) = (
                Duration::from_micros(ping.init_started_us),
                Duration::from_micros(ping.agent_ready_us),
            );
            phases.done_in_parts(
                "QEMU to kernel",
                &[
                    ("kernel to vminitd", init),
                    ("vminitd to agent ready", ready.saturating_sub(init)),
                ],
            );
            Ok::<_, Error>(())
        }
    };
    let create = async {
        if let Some(plugged) = plugged.as_deref_mut() {
            // A lease's address is recorded for `ls` and `inspect`.
            if let Some(address) = plugged.configure_guest(&mut agent.clone()).await? {
                let mut state = container.state()?;
                state.address = Some(address);
                container.save_state(&state)?;
            }
        }
        let (process, config) = main_process(container, plugged.as_deref(), size)?;
        create_container(&mut agent.clone(), container, mounts, process, config).await
    };
    // Before the process starts: the clock the guest boots with is the
    // RTC's, to the second at best (none at all on some backends).
    let clock = set_guest_time(agent.clone());
    let (pinged, created, ()) = tokio::join!(ping, create, clock);
    pinged?;
    created?;
    phases.done("network, mounts, create");
    let mut output = match start_with_output(agent).await? {
        Ok(output) => output,
        Err((code, message)) => return Ok(Ended::NotStarted(code, message)),
    };
    phases.done("process started");
    let proxy = serve_agent_socket(container, channel)?;
    report.say("running");
    let mut log = logs::Writer::open(&container.stdio_log()).map_err(io("open stdio.log"))?;
    let pump = async {
        while let Some(chunk) = output.message().await? {
            let stream = match agent_proto::output_chunk::Stream::try_from(chunk.stream) {
                Ok(agent_proto::output_chunk::Stream::Stderr) => logs::Stream::Stderr,
                _ => logs::Stream::Stdout,
            };
            log.write(stream, &chunk.data)
                .map_err(io("write stdio.log"))?;
        }
        Ok::<_, Error>(())
    };
    // Asked with the output open, answered at the exit: no round trip after.
    let wait = wait_init(agent.clone());
    let ((), exit) = tokio::select! {
        done = async { tokio::try_join!(pump, wait) } => done?,
        never = keep_guest_time(agent.clone()) => match never {},
    };
    phases.done("process ran");
    proxy.abort();
    let _ = std::fs::remove_file(container.agent_socket());
    Ok(Ended::Exited(exit))
}

/// SetTime's request for the wall-clock time `now`.
fn time_request(now: SystemTime) -> SetTimeRequest {
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SetTimeRequest {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: since.subsec_nanos(),
    }
}

/// Sets the guest's clock to the host's. A failure costs the container
/// only a clock that is off, so it is logged, not fatal.
async fn set_guest_time(mut agent: agent::Client) {
    if let Err(status) = agent.set_time(time_request(SystemTime::now())).await {
        tracing::debug!("could not set the guest's clock: {}", status.message());
    }
}

/// Sets the guest's clock every [`TIME_SYNC_INTERVAL`], for as long as it
/// is polled (the main process's life). The interval is measured on the
/// monotonic clock, so the first tick after the host wakes comes at most
/// one interval later.
async fn keep_guest_time(agent: agent::Client) -> std::convert::Infallible {
    let start = tokio::time::Instant::now() + TIME_SYNC_INTERVAL;
    let mut ticks = tokio::time::interval_at(start, TIME_SYNC_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        set_guest_time(agent.clone()).await;
    }
}

/// Starts the created main process with its output already open (a pipe
/// keeps what the process writes before the stream opens). The inner
/// error is a process that could not start: the exit code a shell gives
/// for that, and why.
pub(crate) async fn start_with_output(
    agent: &mut agent::Client,
) -> Result<Result<tonic::Streaming<agent_proto::OutputChunk>, (i32, String)>, Error> {
    let mut reader = agent.clone();
    let (output, started) = tokio::join!(
        reader.read_output(process_ref(INIT_PROCESS)),
        agent.start_process(process_ref(INIT_PROCESS))
    );
    if let Err(status) = started {
        return match not_started(&status) {
            Some(code) => Ok(Err((code, status.message().into()))),
            None => Err(status.into()),
        };
    }
    Ok(Ok(output?.into_inner()))
}

/// Mounts the container's disk and shares in the guest, and creates its
/// main process (not started) in a new container with its mounts.
async fn create_container(
    agent: &mut agent::Client,
    container: &Container,
    mounts: &Plan,
    process: ProcessSpec,
    mut config: ContainerConfig,
) -> Result<(), Error> {
    agent
        .mount(super::mounts::disk_mount(
            "/dev/vda".into(),
            ROOTFS.into(),
            container.config.spec.rootfs_bytes.is_some(),
        ))
        .await?;
    for share in &mounts.guest {
        agent.mount(share.clone()).await?;
    }
    config.mounts = mounts.container.clone();
    create_init(agent, ROOTFS, process, config).await
}

/// The main process's exit code, once it exits.
pub(crate) async fn wait_init(mut agent: agent::Client) -> Result<i32, Error> {
    let exit = agent.wait_process(process_ref(INIT_PROCESS)).await?;
    Ok(exit.into_inner().exit_code)
}

/// Creates the main process (not started) in a new container on `root`.
pub(crate) async fn create_init(
    agent: &mut agent::Client,
    root: &str,
    process: ProcessSpec,
    config: ContainerConfig,
) -> Result<(), Error> {
    agent
        .create_process(CreateProcessRequest {
            id: INIT_PROCESS.into(),
            process: Some(process),
            target: Some(Target::Container(NewContainer {
                root: root.into(),
                config: Some(config),
            })),
        })
        .await?;
    Ok(())
}

/// A stopped (or never started) container's VM, booted only to reach its
/// files (`cp`, `export`): its disk and mounts as when it runs, no
/// network, and a main process that only waits, so the copy tools run
/// inside the container as they do in a running one. Its state stays as it
/// was, and its sockets live apart from those of a supervisor.
pub(crate) struct Borrowed {
    vm: vm::Vm,
    pub agent: agent::Client,
    config: VmConfig,
    /// Holds the sized volumes' disks for this VM while it runs.
    _mounts: Plan,
}

pub(crate) async fn borrow(container: &Container) -> Result<Borrowed, Error> {
    let short = &container.id()[..12];
    let run_dir = std::env::temp_dir().join(format!("container-{short}-{}", std::process::id()));
    let mounts = super::mounts::plan_for(container)?;
    let config = vm_config(
        container,
        vec![],
        &mounts,
        run_dir.clone(),
        run_dir.join("boot.log"),
    )?;
    let mut vm = vm::boot(&config).await?;
    let agent = async {
        let mut agent = agent::Client::new(agent::connect(&mut vm, &config.console_log).await?);
        let (_, config) = main_process(container, None, None)?;
        let mut pause = ProcessSpec {
            args: vec!["pause".into()],
            ..Default::default()
        };
        pause.set_builtin(agent_proto::Builtin::Pause);
        create_container(&mut agent, container, &mounts, pause, config).await?;
        agent.start_process(process_ref(INIT_PROCESS)).await?;
        Ok::<_, Error>(agent)
    }
    .await;
    match agent {
        Ok(agent) => Ok(Borrowed {
            vm,
            agent,
            config,
            _mounts: mounts,
        }),
        Err(e) => {
            stop_vm(vm, &config.console_log, true).await;
            let _ = std::fs::remove_dir_all(&run_dir);
            Err(e)
        }
    }
}

impl Borrowed {
    /// Powers the VM off; the guest syncs and unmounts the disk first.
    pub async fn finish(mut self) {
        let _ = self.agent.shutdown(ShutdownRequest {}).await;
        stop_vm(self.vm, &self.config.console_log, true).await;
        let _ = std::fs::remove_dir_all(&self.config.run_dir);
    }
}

/// The VM a container runs in: its size, disk, interfaces and shares.
fn vm_config(
    container: &Container,
    nics: Vec<vm::Nic>,
    mounts: &Plan,
    run_dir: std::path::PathBuf,
    console_log: std::path::PathBuf,
) -> Result<VmConfig, Error> {
    let spec = &container.config.spec;
    let mut config = machine(
        container.app_root(),
        spec.cpus,
        spec.memory_mib,
        run_dir,
        console_log,
    )?;
    config.disks = std::iter::once(container.config.disk.clone())
        .chain(mounts.disks.iter().cloned())
        .collect();
    config.nics = nics;
    config.shares = mounts.shares.clone();
    Ok(config)
}

/// A VM with our kernel and init and no devices yet: `cpus` and `memory_mib`
/// as asked (the defaults otherwise), plus the guest's own overhead.
pub(crate) fn machine(
    app_root: &Path,
    cpus: Option<u32>,
    memory_mib: Option<u64>,
    run_dir: std::path::PathBuf,
    console_log: std::path::PathBuf,
) -> Result<VmConfig, Error> {
    Ok(VmConfig {
        kernel: vm::Kernel::find(app_root)?,
        vminitd: vm::initfs::vminitd_path().map_err(vm::Error::from)?,
        cache_dir: app_root.join("kernel"),
        kernel_args: vec![],
        cpus: cpus.unwrap_or(DEFAULT_CPUS),
        memory_mib: memory_mib.unwrap_or(DEFAULT_MEMORY_MIB) + MEMORY_OVERHEAD_MIB,
        disks: vec![],
        nics: vec![],
        shares: vec![],
        run_dir,
        console_log,
    })
}

/// The container's main process and its container-wide settings.
fn main_process(
    container: &Container,
    plugged: Option<&Plugged>,
    size: Option<(u32, u32)>,
) -> Result<(ProcessSpec, ContainerConfig), Error> {
    let c = &container.config;
    let spec = &c.spec;
    let (rows, cols) = size.unwrap_or((0, 0));
    let process = ProcessSpec {
        terminal: spec.tty,
        stdin: spec.interactive,
        rlimits: spec.ulimits.iter().map(Into::into).collect(),
        cap_add: spec.cap_add.clone(),
        cap_drop: spec.cap_drop.clone(),
        no_new_privileges: false,
        rows,
        cols,
        ..c.base_process()
    };
    let gateway = plugged.map(|p| p.network.gateway);
    let dns_server = plugged.and_then(|p| p.dns_server);
    // Its own name at its own address, as Docker writes it, then --add-host's.
    let mut hosts: Vec<String> = plugged
        .map(|p| format!("{}\t{}", p.endpoint.address, c.name))
        .into_iter()
        .collect();
    hosts.extend(spec.dns.hosts_lines(gateway)?);
    let config = ContainerConfig {
        hostname: c.name.clone(),
        read_only_root: spec.read_only,
        init: spec.init,
        hosts,
        resolv_conf: spec.dns.resolv_conf(dns_server).unwrap_or_default(),
        memory_limit_bytes: spec.memory_mib.unwrap_or(0) * 1024 * 1024,
        cpu_quota_millicpus: spec.cpus.unwrap_or(0) * 1000,
        shm_size_bytes: spec.shm_size_bytes.unwrap_or(0),
        mounts: vec![],
    };
    Ok((process, config))
}

/// The exit code for a process that could not start, as a shell (and
/// Docker) reports it; None for failures of the runtime itself.
pub(crate) fn not_started(status: &tonic::Status) -> Option<i32> {
    match status.code() {
        Code::NotFound => Some(127),
        Code::PermissionDenied => Some(126),
        Code::InvalidArgument => Some(EXIT_RUNTIME_ERROR),
        _ => None,
    }
}

/// Serves the container's agent socket, so other CLIs (exec, kill, stats,
/// an attached terminal) reach the guest: each call they make goes on to
/// vminitd on the VM's one channel, beside the supervisor's own.
fn serve_agent_socket(
    container: &Container,
    channel: Channel,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let path = container.agent_socket();
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).map_err(io(format!("listen on {}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("make {} private", path.display())))?;
    let owner = nix::unistd::geteuid().as_raw();
    Ok(tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            // The guest agent runs anything as root in the container: only
            // its owner (or root) may talk to it, whatever the socket's mode.
            let peer = client.peer_cred().map(|c| c.uid());
            if !matches!(peer, Ok(uid) if uid == owner || uid == 0) {
                continue;
            }
            let channel = channel.clone();
            // Each request goes through as it came: gRPC needs nothing of
            // the proxy but HTTP/2.
            let forward = hyper::service::service_fn(move |request: http::Request<_>| {
                let call = tower::ServiceExt::oneshot(
                    channel.clone(),
                    request.map(tonic::body::Body::new),
                );
                async move {
                    Ok::<_, std::convert::Infallible>(call.await.unwrap_or_else(|e| {
                        let status = tonic::Status::unavailable(crate::causes::describe(&e));
                        status.into_http()
                    }))
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(client), forward),
            );
        }
    }))
}

#[cfg(test)]
mod tests {
    //! The supervisor against a fake VM whose "guest" is an in-process
    //! agent: the macOS path (address by DHCP, published ports relayed to
    //! it), checked on any host.

    use std::sync::{Arc, Mutex};

    use agent_proto::agent_server::{Agent, AgentServer};
    use agent_proto::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tonic::{Request, Response, Status};

    use super::*;
    use crate::network::{self, Endpoint};
    use crate::runtime::RunSpec;

    /// The guest: records what it is asked, leases 127.0.0.1/8 (so the
    /// relay reaches the test's server), and ends the main process's output
    /// when `finish` is notified.
    #[derive(Clone, Default)]
    struct FakeAgent {
        calls: Arc<Mutex<Vec<String>>>,
        config: Arc<Mutex<Option<ContainerConfig>>>,
        finish: Arc<tokio::sync::Notify>,
    }

    impl FakeAgent {
        fn call(&self, text: String) {
            self.calls.lock().unwrap().push(text);
        }
    }

    #[tonic::async_trait]
    impl Agent for FakeAgent {
        async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
            Ok(Response::new(PingResponse::default()))
        }
        async fn ip_link_set(
            &self,
            r: Request<IpLinkSetRequest>,
        ) -> Result<Response<IpLinkSetResponse>, Status> {
            self.call(format!(
                "link {} up={}",
                r.get_ref().interface,
                r.get_ref().up
            ));
            Ok(Response::new(IpLinkSetResponse {}))
        }
        async fn dhcp_acquire(
            &self,
            r: Request<DhcpAcquireRequest>,
        ) -> Result<Response<DhcpAcquireResponse>, Status> {
            self.call(format!(
                "dhcp {} as {}",
                r.get_ref().interface,
                r.get_ref().hostname
            ));
            Ok(Response::new(DhcpAcquireResponse {
                address: "127.0.0.1/8".into(),
                gateway: "127.0.0.254".into(),
                dns: vec!["127.0.0.53".into()],
                mtu: 0,
                lease_seconds: 86400,
            }))
        }
        async fn ip_addr_add(
            &self,
            r: Request<IpAddrAddRequest>,
        ) -> Result<Response<IpAddrAddResponse>, Status> {
            self.call(format!(
                "addr {} {}",
                r.get_ref().interface,
                r.get_ref().address
            ));
            Ok(Response::new(IpAddrAddResponse {}))
        }
        async fn ip_route_add(
            &self,
            r: Request<IpRouteAddRequest>,
        ) -> Result<Response<IpRouteAddResponse>, Status> {
            let r = r.get_ref();
            self.call(format!(
                "route {} via {} dev {}",
                r.destination, r.gateway, r.interface
            ));
            Ok(Response::new(IpRouteAddResponse {}))
        }
        async fn mount(&self, r: Request<MountRequest>) -> Result<Response<MountResponse>, Status> {
            let m = r.into_inner();
            self.call(format!("mount {} {} on {}", m.fstype, m.source, m.target));
            Ok(Response::new(MountResponse {}))
        }
        async fn create_process(
            &self,
            r: Request<CreateProcessRequest>,
        ) -> Result<Response<CreateProcessResponse>, Status> {
            if let Some(Target::Container(new)) = &r.get_ref().target {
                *self.config.lock().unwrap() = new.config.clone();
            }
            Ok(Response::new(CreateProcessResponse::default()))
        }
        async fn read_output(
            &self,
            _: Request<ProcessRef>,
        ) -> Result<Response<tonic::codegen::BoxStream<OutputChunk>>, Status> {
            // One chunk, then the end once the test says so.
            let finish = self.finish.clone();
            let output = futures::stream::unfold(true, move |first| {
                let finish = finish.clone();
                async move {
                    if first {
                        let chunk = OutputChunk {
                            stream: output_chunk::Stream::Stdout as i32,
                            data: b"hello\n".to_vec(),
                        };
                        return Some((Ok(chunk), false));
                    }
                    finish.notified().await;
                    None
                }
            });
            Ok(Response::new(Box::pin(output)))
        }
        async fn start_process(
            &self,
            _: Request<ProcessRef>,
        ) -> Result<Response<StartProcessResponse>, Status> {
            self.call("start".into());
            Ok(Response::new(StartProcessResponse::default()))
        }
        async fn wait_process(
            &self,
            _: Request<ProcessRef>,
        ) -> Result<Response<WaitProcessResponse>, Status> {
            Ok(Response::new(WaitProcessResponse {
                exit_code: 3,
                ..Default::default()
            }))
        }
        async fn shutdown(
            &self,
            _: Request<ShutdownRequest>,
        ) -> Result<Response<ShutdownResponse>, Status> {
            self.call("shutdown".into());
            Ok(Response::new(ShutdownResponse {}))
        }
    }

    /// A VM that is always up: its agent link reaches the fake agent.
    struct FakeVm(FakeAgent);

    impl VirtualMachine for FakeVm {
        fn agent(&mut self) -> vm::AgentLink {
            let agent = self.0.clone();
            Box::pin(async move {
                let (mut ours, mut theirs) =
                    tokio::net::UnixStream::pair().map_err(io("connect to the fake agent"))?;
                tokio::spawn(async move {
                    // As vminitd: READY, then GO and its seed, then gRPC.
                    theirs.write_all(READY).await.unwrap();
                    let mut go = [0u8; GO.len() + SEED_BYTES];
                    theirs.read_exact(&mut go).await.unwrap();
                    assert!(go.starts_with(GO));
                    let incoming = futures::stream::iter([Ok::<_, std::io::Error>(theirs)]);
                    tonic::transport::Server::builder()
                        .add_service(AgentServer::new(agent))
                        .serve_with_incoming(incoming)
                        .await
                });
                vm::read_ready(&mut ours).await?;
                vm::go(&mut ours).await?;
                Ok(ours)
            })
        }
        fn exited(&mut self) -> Option<String> {
            None
        }
        async fn wait(&mut self) -> Result<(), vm::Error> {
            Ok(())
        }
        async fn kill(&mut self) {}
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn behind_a_nat_the_guest_takes_a_lease_and_published_ports_follow_it() {
        // The "container's" server, reached through the published port.
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let container_port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut stream, _) = server.accept().await.unwrap();
            stream.write_all(b"from the container").await.unwrap();
        });
        let host_port = free_port();

        let root = tempfile::tempdir().unwrap();
        let id = "f".repeat(64);
        let pending = Containers::open(root.path())
            .unwrap()
            .reserve(&id, "web")
            .unwrap();
        let disk = vm::Disk {
            path: pending.dir().join("rootfs.img"),
            format: vm::DiskFormat::Raw,
            read_only: false,
            scratch: false,
        };
        let spec = RunSpec {
            publish: network::ports::parse(&format!("127.0.0.1:{host_port}:{container_port}"))
                .unwrap(),
            ..RunSpec::default()
        };
        let container = pending
            .commit(crate::runtime::container::Config {
                id: id.clone(),
                name: "web".into(),
                image: "test".into(),
                image_digest: String::new(),
                created: 0,
                spec,
                command: vec!["true".into()],
                image_env: vec![],
                image_workdir: "/".into(),
                image_user: String::new(),
                disk,
                endpoint: Some(Endpoint {
                    network: network::DEFAULT.into(),
                    address: std::net::Ipv4Addr::UNSPECIFIED,
                    mode: network::Mode::Nat,
                }),
            })
            .unwrap();
        std::fs::create_dir_all(container.run_dir()).unwrap();

        let mut plugged = Plugged::plug(Plug::container(&container)).unwrap().unwrap();
        assert!(matches!(plugged.nic.attachment, vm::NicAttachment::Nat));
        let agent = FakeAgent::default();
        let mut fake = FakeVm(agent.clone());
        let console = root.path().join("boot.log");
        let mut report = Report(None);
        let mounts = crate::runtime::mounts::plan(
            &[crate::volume::spec::parse_volume(
                &format!("{}:/src:ro", root.path().display()),
                root.path(),
            )
            .unwrap()],
            &crate::volume::Volumes::open(root.path()).unwrap(),
        )
        .unwrap();
        let mut phases = Phases::start();
        let supervised = drive(
            &mut fake,
            &container,
            Some(&mut plugged),
            &mounts,
            &console,
            None,
            &mut report,
            &mut phases,
        );
        let client = async {
            // Running: the lease's address is recorded, and the port relays to it.
            loop {
                if container.state().unwrap().address.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", host_port))
                .await
                .unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).await.unwrap();
            agent.finish.notify_one();
            text
        };
        let (ended, text) = tokio::join!(supervised, client);
        assert!(matches!(ended, Ok(Ended::Exited(3))));
        assert_eq!(text, "from the container");
        assert_eq!(
            *agent.calls.lock().unwrap(),
            [
                "link eth0 up=true",
                "dhcp eth0 as web",
                "addr eth0 127.0.0.1/8",
                "route default via 127.0.0.254 dev eth0",
                "mount ext4 /dev/vda on /run/container/rootfs",
                "mount virtiofs share0 on /run/container/shares/share0",
                "start",
                "shutdown",
            ]
        );
        let config = agent.config.lock().unwrap().clone().unwrap();
        assert_eq!(config.hosts, ["127.0.0.1\tweb"]);
        assert_eq!(config.resolv_conf, "nameserver 127.0.0.53\n");
        let bound = &config.mounts[0];
        assert_eq!(
            (
                bound.source.as_str(),
                bound.target.as_str(),
                bound.read_only
            ),
            ("/run/container/shares/share0", "/src", true)
        );
        assert_eq!(
            container.state().unwrap().address,
            Some(std::net::Ipv4Addr::LOCALHOST)
        );
        // stdio.log frames its records: the bytes are in there.
        let log = std::fs::read(container.stdio_log()).unwrap();
        assert!(log.windows(6).any(|w| w == b"hello\n"), "{log:?}");
    }

    #[test]
    fn the_guest_is_told_the_host_time_to_the_nanosecond() {
        let now = SystemTime::UNIX_EPOCH + Duration::new(1_765_000_000, 123_456_789);
        let request = time_request(now);
        assert_eq!(
            (request.seconds, request.nanos),
            (1_765_000_000, 123_456_789)
        );
        // A host clock before 1970 is not sent as a negative time.
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(
            (time_request(before).seconds, time_request(before).nanos),
            (0, 0)
        );
    }
}
