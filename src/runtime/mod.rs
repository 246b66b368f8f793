//! Running containers: from an image reference to a workload's exit code.
//!
//! The runtime resolves the image, gives the container a copy-on-write root
//! disk, boots its VM, and drives vminitd through the agent API.

pub mod agent;
mod attach;
mod id;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use agent_proto::Rlimit;
use agent_proto::create_process_request::Target;
use agent_proto::{
    AGENT_PORT, ContainerConfig, CreateProcessRequest, MountRequest, NewContainer, PingRequest,
    ProcessRef, ProcessSpec, READY_PORT, ShutdownRequest,
};
use tonic::Code;

use crate::image::{self, ImageStore, PullOptions, Reference};
use crate::vm::{self, VirtualMachine, VmConfig};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Vm(#[from] vm::Error),
    #[error("the guest agent: {0}")]
    Agent(String),
    #[error("the image has no command to run and none was given")]
    NoCommand,
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Agent(status.message().to_string())
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(e: tonic::transport::Error) -> Self {
        Error::Agent(e.to_string())
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// What `run` was asked for.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    pub image: String,
    /// Replaces the image's Cmd when not empty.
    pub args: Vec<String>,
    /// Replaces the image's Entrypoint (and then its Cmd too, as in Docker).
    pub entrypoint: Option<String>,
    /// Added after the image's environment (later entries win).
    pub env: Vec<String>,
    /// Docker's `-u`: name, uid, name:group or uid:gid; empty: the image's.
    pub user: String,
    pub workdir: Option<String>,
    pub name: Option<String>,
    /// CPUs and memory the container may use: its cgroup limits. None: the
    /// VM's size, without a limit inside it.
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub init: bool,
    pub read_only: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub ulimits: Vec<Rlimit>,
    pub interactive: bool,
    pub tty: bool,
    /// Delete the container when it exits.
    pub remove: bool,
    pub pull: PullOptions,
}

/// Where a guest mounts the container's root disk.
const ROOTFS: &str = "/run/container/rootfs";
/// The one process `run` starts; exec'd processes get their own IDs.
const INIT_PROCESS: &str = "init";
/// Guest memory on top of what the container asked for, for the guest
/// kernel and vminitd (Apple's runtime adds the same).
const MEMORY_OVERHEAD_MIB: u64 = 128;
/// The VM's size when the container names none.
const DEFAULT_CPUS: u32 = 2;
const DEFAULT_MEMORY_MIB: u64 = 1024;
/// How long a cold boot may take before we give up. Generous: software
/// emulation on a loaded 2-core host is slow.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a container in the foreground and returns its exit code.
pub async fn run(app_root: &Path, spec: &RunSpec) -> Result<i32, Error> {
    let store = ImageStore::open(app_root)?;
    let reference: Reference = spec.image.parse()?;
    let image = match store.lookup(&reference)? {
        Some(image) => image,
        None => store.pull(&reference, &spec.pull).await?,
    };
    // Building a snapshot writes gigabytes at worst: keep it off the async threads.
    let snapshot = {
        let image = image.clone();
        tokio::task::spawn_blocking(move || store.snapshot(&image))
            .await
            .map_err(|e| Error::Io {
                context: "build the image snapshot".into(),
                source: std::io::Error::other(e),
            })??
    };

    let args = command(&image.config, spec);
    if args.is_empty() {
        return Err(Error::NoCommand);
    }
    let mut env = image.config.env.clone();
    env.extend(spec.env.iter().cloned());
    let id = id::new()?;
    let process = ProcessSpec {
        args,
        env,
        cwd: spec
            .workdir
            .clone()
            .unwrap_or_else(|| image.config.working_dir.clone()),
        user: if spec.user.is_empty() {
            image.config.user.clone()
        } else {
            spec.user.clone()
        },
        terminal: spec.tty,
        stdin: spec.interactive,
        rlimits: spec.ulimits.clone(),
        cap_add: spec.cap_add.clone(),
        cap_drop: spec.cap_drop.clone(),
        no_new_privileges: false,
        rows: 0,
        cols: 0,
    };
    let container = ContainerConfig {
        // Docker's default hostname: the short ID.
        hostname: spec.name.clone().unwrap_or_else(|| id[..12].to_string()),
        read_only_root: spec.read_only,
        init: spec.init,
        hosts: vec![],
        resolv_conf: String::new(),
        memory_limit_bytes: spec.memory_mib.unwrap_or(0) * 1024 * 1024,
        cpu_quota_millicpus: spec.cpus.unwrap_or(0) * 1000,
    };

    let dir = app_root.join("containers").join(&id);
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    let result = run_in_vm(app_root, &dir, &snapshot, spec, process, container).await;
    if spec.remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// The command line, Docker's way: the image's Entrypoint then its Cmd; args
/// replace Cmd; `--entrypoint` replaces Entrypoint and drops the image's Cmd
/// (an empty one leaves just the args).
fn command(image: &image::RunConfig, spec: &RunSpec) -> Vec<String> {
    let (mut args, cmd) = match &spec.entrypoint {
        Some(entrypoint) if entrypoint.is_empty() => (vec![], vec![]),
        Some(entrypoint) => (vec![entrypoint.clone()], vec![]),
        None => (image.entrypoint.clone(), image.cmd.clone()),
    };
    args.extend(if spec.args.is_empty() {
        cmd
    } else {
        spec.args.clone()
    });
    args
}

async fn run_in_vm(
    app_root: &Path,
    dir: &Path,
    snapshot: &Path,
    spec: &RunSpec,
    process: ProcessSpec,
    container: ContainerConfig,
) -> Result<i32, Error> {
    let kernel = vm::Kernel::find(app_root)?;
    let vminitd = vm::initfs::vminitd_path().map_err(vm::Error::from)?;
    let initfs =
        vm::initfs::ensure(&app_root.join("kernel"), &vminitd, &kernel).map_err(vm::Error::from)?;
    let rootfs = vm::clone_disk(snapshot, dir).await?;
    let console_log = dir.join("boot.log");
    let config = VmConfig {
        kernel,
        initfs,
        kernel_args: vec![],
        cpus: spec.cpus.unwrap_or(DEFAULT_CPUS),
        memory_mib: spec.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB) + MEMORY_OVERHEAD_MIB,
        disks: vec![rootfs],
        nics: vec![vm::Nic {
            mac: vm::MacAddress::derive(&dir.to_string_lossy()),
        }],
        shares: vec![],
        run_dir: run_dir(app_root, dir)?,
        console_log: console_log.clone(),
    };
    let mut vm = vm::boot(&config).await?;
    let result = drive(&mut vm, &config, process, container).await;
    // Whatever happened, the VM goes: give the guest a moment to power off
    // cleanly (the agent was asked to), then pull the plug.
    if tokio::time::timeout(Duration::from_secs(5), vm.wait())
        .await
        .is_err()
    {
        tracing::debug!("the VM did not power off in time; killing it");
    }
    vm.kill().await;
    let _ = std::fs::remove_dir_all(&config.run_dir);
    if tracing::enabled!(tracing::Level::DEBUG) {
        for line in std::fs::read_to_string(&console_log)
            .unwrap_or_default()
            .lines()
        {
            tracing::debug!(target: "guest", "{line}");
        }
    }
    result
}

/// A directory for the VM's Unix sockets: `run/<short id>` under the app
/// root, or under the temp dir when that path would be too long for a socket
/// address (108 bytes, with room for the socket names).
fn run_dir(app_root: &Path, dir: &Path) -> Result<PathBuf, Error> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let short = &name[..name.len().min(12)];
    let mut run = app_root.join("run").join(short);
    if run.as_os_str().len() > 80 {
        run = std::env::temp_dir().join(format!("container-{short}"));
    }
    std::fs::create_dir_all(&run).map_err(io(format!("create {}", run.display())))?;
    Ok(run)
}

/// Talks to the agent: mount the root disk, run the process, stream its
/// output, return its exit code, and ask the guest to power off.
async fn drive(
    vm: &mut vm::Vm,
    config: &VmConfig,
    process: ProcessSpec,
    container: ContainerConfig,
) -> Result<i32, Error> {
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
    let result = run_process(&mut agent, process, container).await;
    let _ = agent.shutdown(ShutdownRequest {}).await;
    result
}

async fn run_process(
    agent: &mut agent::Client,
    mut process: ProcessSpec,
    container: ContainerConfig,
) -> Result<i32, Error> {
    agent
        .mount(MountRequest {
            source: "/dev/vda".into(),
            target: ROOTFS.into(),
            fstype: "ext4".into(),
            options: vec![],
        })
        .await?;
    let terminal = process
        .terminal
        .then(attach::Terminal::open)
        .transpose()
        .map_err(io("set up the terminal"))?;
    if let Some((rows, cols)) = terminal.as_ref().and_then(|t| t.size()) {
        (process.rows, process.cols) = (rows, cols);
    }
    let stdin = process.stdin;
    agent
        .create_process(CreateProcessRequest {
            id: INIT_PROCESS.into(),
            process: Some(process),
            target: Some(Target::Container(NewContainer {
                root: ROOTFS.into(),
                config: Some(container),
            })),
        })
        .await?;
    let process_ref = ProcessRef {
        id: INIT_PROCESS.into(),
    };
    let output = agent.read_output(process_ref.clone()).await?.into_inner();
    match agent.start_process(process_ref.clone()).await {
        Ok(_) => {}
        // The exit codes a shell (and Docker) use for these.
        Err(status) if status.code() == Code::NotFound => {
            eprintln!("Error: {}", status.message());
            return Ok(127);
        }
        Err(status) if status.code() == Code::PermissionDenied => {
            eprintln!("Error: {}", status.message());
            return Ok(126);
        }
        Err(status) => return Err(status.into()),
    }
    let session = attach::Session {
        agent: agent.clone(),
        process: INIT_PROCESS.to_string(),
    };
    session.run(output, stdin, terminal).await
}
