//! The supervisor: one process per running container, owning its VM.
//!
//! It is this binary re-executed as `container __supervise ID`, in its own
//! session so it outlives the CLI that started it. It boots the VM, starts
//! the container's main process, appends its output to `stdio.log`,
//! proxies the container's agent socket to vminitd, records every state
//! change atomically, and on every way out stops the VM. Its exit code is
//! the workload's, which is how an attached `run` learns it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use agent_proto::create_process_request::Target;
use agent_proto::{
    AGENT_PORT, ContainerConfig, CreateProcessRequest, MountRequest, NewContainer, PingRequest,
    ProcessSpec, READY_PORT, ShutdownRequest,
};
use tokio::net::UnixListener;
use tonic::Code;

use super::container::{Container, Containers, State, Status, now};
use super::{Error, agent, io, logs, process_ref};
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
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// The exit code for a container the runtime could not run (Docker's).
pub(crate) const EXIT_RUNTIME_ERROR: i32 = 125;

/// Starts a container's supervisor. Attached, it reports errors on our
/// stderr; detached, in the container's supervisor.log.
pub fn spawn(
    app_root: &Path,
    container: &Container,
    attached: bool,
    size: Option<(u32, u32)>,
) -> Result<tokio::process::Child, Error> {
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
    let stderr = if attached {
        Stdio::inherit()
    } else {
        let log = container.dir.join("supervisor.log");
        std::fs::File::create(&log)
            .map_err(io(format!("create {}", log.display())))?
            .into()
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // SAFETY: setsid is async-signal-safe. A session of its own keeps the
    // supervisor (and the container) alive when the CLI or its terminal goes.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    command
        .spawn()
        .map_err(io("start the container's supervisor"))
}

/// Waits until a detached container runs, or reports why it could not start.
pub async fn wait_started(
    container: &Container,
    supervisor: &mut tokio::process::Child,
) -> Result<i32, Error> {
    loop {
        let state = container.state()?;
        if state.status == Status::Running && container.agent_socket().exists() {
            return Ok(0);
        }
        if let Ok(Some(_)) = supervisor.try_wait() {
            let state = container.state()?;
            if state.status == Status::Stopped && state.reason.is_none() {
                return Ok(0); // it ran, and already ended
            }
            let log =
                std::fs::read_to_string(container.dir.join("supervisor.log")).unwrap_or_default();
            let reason = state
                .reason
                .or_else(|| log.lines().last().map(String::from))
                .unwrap_or_default();
            return Err(Error::Agent(format!(
                "the container could not start: {reason}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The supervisor's main: returns the process exit code.
pub async fn supervise(app_root: &Path, id: &str, size: Option<(u32, u32)>) -> i32 {
    let container = match Containers::open(app_root).and_then(|c| c.find(id)) {
        Ok(container) => container,
        Err(e) => {
            eprintln!("Error: {e}");
            return EXIT_RUNTIME_ERROR;
        }
    };
    let started = State {
        status: Status::Running,
        supervisor_pid: Some(std::process::id() as i32),
        started: Some(now()),
        ..State::created()
    };
    if let Err(e) = container.save_state(&started) {
        eprintln!("Error: {e}");
        return EXIT_RUNTIME_ERROR;
    }
    let (code, reason) = match run(&container, size).await {
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
        reason,
        ..started
    };
    if let Err(e) = container.save_state(&stopped) {
        eprintln!("Error: {e}");
    }
    if container.config.spec.remove {
        let _ = Containers::open(app_root).and_then(|c| c.remove(&container));
    }
    code
}

enum Ended {
    Exited(i32),
    /// The process could not be started: a shell's exit code and why.
    NotStarted(i32, String),
}

async fn run(container: &Container, size: Option<(u32, u32)>) -> Result<Ended, Error> {
    let app_root = container.app_root();
    let spec = &container.config.spec;
    let kernel = vm::Kernel::find(app_root)?;
    let vminitd = vm::initfs::vminitd_path().map_err(vm::Error::from)?;
    let initfs =
        vm::initfs::ensure(&app_root.join("kernel"), &vminitd, &kernel).map_err(vm::Error::from)?;
    let run_dir = container.run_dir();
    std::fs::create_dir_all(&run_dir).map_err(io(format!("create {}", run_dir.display())))?;
    let config = VmConfig {
        kernel,
        initfs,
        kernel_args: vec![],
        cpus: spec.cpus.unwrap_or(DEFAULT_CPUS),
        memory_mib: spec.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB) + MEMORY_OVERHEAD_MIB,
        disks: vec![container.config.disk.clone()],
        nics: vec![vm::Nic {
            mac: vm::MacAddress::derive(container.id()),
        }],
        shares: vec![],
        run_dir,
        console_log: container.boot_log(),
    };
    let mut vm = vm::boot(&config).await?;
    let result = drive(&mut vm, container, &config, size).await;
    // Whatever happened, the VM goes: give the guest a moment to power off
    // (the agent was asked to), then pull the plug.
    if tokio::time::timeout(Duration::from_secs(5), vm.wait())
        .await
        .is_err()
    {
        tracing::debug!("the VM did not power off in time; killing it");
    }
    vm.kill().await;
    if tracing::enabled!(tracing::Level::DEBUG) {
        for line in std::fs::read_to_string(&config.console_log)
            .unwrap_or_default()
            .lines()
        {
            tracing::debug!(target: "guest", "{line}");
        }
    }
    result
}

async fn drive(
    vm: &mut vm::Vm,
    container: &Container,
    config: &VmConfig,
    size: Option<(u32, u32)>,
) -> Result<Ended, Error> {
    // Listen right after boot: vminitd dials well over a second later, and
    // retries if it is early.
    let mut ready = vm.listen(READY_PORT)?;
    vm::wait_ready(vm, &mut ready, BOOT_TIMEOUT, &config.console_log).await?;
    let mut agent = agent::connect(vm.dialer(), AGENT_PORT).await?;
    let ping = agent.ping(PingRequest {}).await?.into_inner();
    tracing::debug!(
        kernel = ping.kernel_release,
        version = ping.version,
        "agent ready"
    );
    let result = run_main_process(&mut agent, vm, container, size).await;
    let _ = agent.shutdown(ShutdownRequest {}).await;
    match result {
        // A broken agent connection usually means the VM died: say so.
        Err(Error::Agent(message)) => match vm.exited() {
            Some(reason) => Err(Error::Agent(format!(
                "the VM stopped unexpectedly ({reason})"
            ))),
            None => Err(Error::Agent(message)),
        },
        other => other,
    }
}

async fn run_main_process(
    agent: &mut agent::Client,
    vm: &vm::Vm,
    container: &Container,
    size: Option<(u32, u32)>,
) -> Result<Ended, Error> {
    agent
        .mount(MountRequest {
            source: "/dev/vda".into(),
            target: ROOTFS.into(),
            fstype: "ext4".into(),
            options: vec![],
            grow: container.config.spec.rootfs_bytes.is_some(),
        })
        .await?;
    let (process, config) = main_process(container, size);
    agent
        .create_process(CreateProcessRequest {
            id: INIT_PROCESS.into(),
            process: Some(process),
            target: Some(Target::Container(NewContainer {
                root: ROOTFS.into(),
                config: Some(config),
            })),
        })
        .await?;
    let mut output = agent
        .read_output(process_ref(INIT_PROCESS))
        .await?
        .into_inner();
    if let Err(status) = agent.start_process(process_ref(INIT_PROCESS)).await {
        return match not_started(&status) {
            Some(code) => Ok(Ended::NotStarted(code, status.message().into())),
            None => Err(status.into()),
        };
    }
    let proxy = serve_agent_socket(container, vm.dialer())?;
    let mut log = logs::Writer::open(&container.stdio_log()).map_err(io("open stdio.log"))?;
    while let Some(chunk) = output.message().await? {
        let stream = match agent_proto::output_chunk::Stream::try_from(chunk.stream) {
            Ok(agent_proto::output_chunk::Stream::Stderr) => logs::Stream::Stderr,
            _ => logs::Stream::Stdout,
        };
        log.write(stream, &chunk.data)
            .map_err(io("write stdio.log"))?;
    }
    let exit = agent
        .wait_process(process_ref(INIT_PROCESS))
        .await?
        .into_inner();
    proxy.abort();
    let _ = std::fs::remove_file(container.agent_socket());
    Ok(Ended::Exited(exit.exit_code))
}

/// The container's main process and its container-wide settings.
fn main_process(container: &Container, size: Option<(u32, u32)>) -> (ProcessSpec, ContainerConfig) {
    let c = &container.config;
    let spec = &c.spec;
    let mut env = c.image_env.clone();
    env.extend(spec.env.iter().cloned());
    let (rows, cols) = size.unwrap_or((0, 0));
    let process = ProcessSpec {
        args: c.command.clone(),
        env,
        cwd: spec
            .workdir
            .clone()
            .unwrap_or_else(|| c.image_workdir.clone()),
        user: if spec.user.is_empty() {
            c.image_user.clone()
        } else {
            spec.user.clone()
        },
        terminal: spec.tty,
        stdin: spec.interactive,
        rlimits: spec.ulimits.iter().map(Into::into).collect(),
        cap_add: spec.cap_add.clone(),
        cap_drop: spec.cap_drop.clone(),
        no_new_privileges: false,
        rows,
        cols,
        builtin: agent_proto::Builtin::None as i32,
    };
    let config = ContainerConfig {
        hostname: c.name.clone(),
        read_only_root: spec.read_only,
        init: spec.init,
        hosts: vec![],
        resolv_conf: String::new(),
        memory_limit_bytes: spec.memory_mib.unwrap_or(0) * 1024 * 1024,
        cpu_quota_millicpus: spec.cpus.unwrap_or(0) * 1000,
        shm_size_bytes: spec.shm_size_bytes.unwrap_or(0),
    };
    (process, config)
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

/// Proxies each connection on the container's agent socket to vminitd, so
/// other CLIs (exec, kill, stats, an attached terminal) reach the guest.
fn serve_agent_socket(
    container: &Container,
    dial: vm::Dial,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let path = container.agent_socket();
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).map_err(io(format!("listen on {}", path.display())))?;
    Ok(tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let dial = dial.clone();
            tokio::spawn(async move {
                if let Ok(mut guest) = dial(AGENT_PORT).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut guest).await;
                }
            });
        }
    }))
}
