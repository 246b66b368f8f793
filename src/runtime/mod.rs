//! Containers: creating them from images, running each in its own VM under
//! a supervisor process, and the operations users run against them.
//!
//! `create` resolves the image and records the container with a
//! copy-on-write root disk. `start` spawns the container's supervisor (this
//! binary, re-executed in a hidden mode, detached): it owns the VM for the
//! container's whole life, writes its output to `stdio.log`, records each
//! state change, and proxies connections on the container's agent socket
//! to vminitd, which is how `exec`, `kill`, `stop`, `stats` and attached
//! terminals reach the guest.

pub mod agent;
mod attach;
pub mod container;
mod id;
pub mod logs;
mod mounts;
mod plugged;
mod step;
mod supervisor;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_proto::{ProcessRef, Rlimit, SignalProcessRequest};
use serde::{Deserialize, Serialize};

pub use attach::{Ended, Output};
pub use container::{Container, Containers, State, Status};
pub use step::{BuildVm, MAX_CACHE_DISKS, Machine, Step, StepMount};
pub use supervisor::{EXIT_RUNTIME_ERROR, SUPERVISE_COMMAND, supervise};

use crate::image::{self, ImageStore, PullOptions};
use crate::io_error::io;
use crate::network::{self, Networks};
use crate::vm;
use crate::volume::{self, Volumes};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Atomic(#[from] crate::atomic::Error),
    #[error(transparent)]
    Vm(#[from] vm::Error),
    #[error(transparent)]
    Network(#[from] crate::network::Error),
    #[error(transparent)]
    Properties(#[from] crate::properties::Error),
    #[error(transparent)]
    Volume(#[from] volume::Error),
    #[error("the guest agent: {0}")]
    Agent(String),
    /// One of vminitd's tools (`cp`, `export`) failed inside the container.
    #[error("in the container: {0}")]
    InContainer(String),
    #[error("the image has no command to run and none was given")]
    NoCommand,
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    #[error("{0:?} matches more than one container; give more of the ID")]
    Ambiguous(String),
    #[error("the name {0:?} is already in use by another container")]
    NameInUse(String),
    #[error(
        "invalid container name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("container {0} is running: stop it first, or use --force")]
    Running(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} is already running")]
    AlreadyRunning(String),
    #[error("the container could not start: {0}")]
    NotStarted(String),
    #[error(transparent)]
    Unreadable(#[from] container::Unreadable),
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_string();
        Error::Agent(crate::causes::with_causes(
            message,
            std::error::Error::source(&status),
        ))
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(e: tonic::transport::Error) -> Self {
        Error::Agent(crate::causes::with_causes(
            e.to_string(),
            std::error::Error::source(&e),
        ))
    }
}

/// The network a VM joins: the one asked for, else the `network.default`
/// setting, else `default` (`none` means none).
pub fn network_name(app_root: &Path, requested: Option<&str>) -> Result<String, Error> {
    Ok(match requested {
        Some(name) => name.to_string(),
        None => crate::properties::Properties::open(app_root)
            .get(crate::properties::NETWORK_DEFAULT)?
            .unwrap_or_else(|| network::DEFAULT.to_string()),
    })
}

/// A resource limit as `--ulimit` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// What a container is created with (`run` and `create` flags). A field
/// missing from a record (one written before the field was added) takes
/// its default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSpec {
    pub image: String,
    /// Replaces the image's Cmd when not empty.
    pub args: Vec<String>,
    /// Replaces the image's Entrypoint (and then its Cmd too, as in Docker).
    pub entrypoint: Option<String>,
    /// Added after the image's environment (later entries win).
    pub env: Vec<String>,
    /// Docker's `-u`: name, uid, name:group or uid:gid; empty: the image's.
    /// `create` records the user the container runs as, from this, `uid`,
    /// `gid` and the image's (see [`user_with_ids`]).
    pub user: String,
    /// Apple's `--uid` and `--gid`; only read by `create`, which records
    /// the user they make in `user`.
    #[serde(skip)]
    pub uid: Option<u32>,
    #[serde(skip)]
    pub gid: Option<u32>,
    pub workdir: Option<String>,
    pub name: Option<String>,
    /// CPUs and memory the container may use: its cgroup limits, and the
    /// VM's size. None: the default VM size, without a limit inside it.
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    /// The root filesystem's size when bigger than the image's: the disk is
    /// made this big and the guest grows the filesystem to fill it.
    #[serde(default)]
    pub rootfs_bytes: Option<u64>,
    /// Size of the container's /dev/shm; None: Docker's 64 MiB.
    #[serde(default)]
    pub shm_size_bytes: Option<u64>,
    pub init: bool,
    pub read_only: bool,
    /// Capabilities as `CAP_NAME` or `ALL` (`create` normalizes them).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub ulimits: Vec<Ulimit>,
    pub labels: Vec<String>,
    pub interactive: bool,
    pub tty: bool,
    /// Delete the container when it exits.
    pub remove: bool,
    /// The network to attach to (`none`: loopback only); None: the default.
    #[serde(default)]
    pub network: Option<String>,
    /// `-p`: host ports relayed to the container's.
    #[serde(default)]
    pub publish: Vec<network::ports::Port>,
    /// Its resolv.conf and extra /etc/hosts entries.
    #[serde(default)]
    pub dns: network::dns::DnsConfig,
    /// `-v`, `--mount` and `--tmpfs`. `create` adds an anonymous volume
    /// for each of the image's `VOLUME`s not mounted over, and names the
    /// anonymous volumes.
    #[serde(default)]
    pub mounts: Vec<volume::spec::Mount>,
}

/// Creates a container: resolves (or pulls, for `pull.platform` if given)
/// the image, builds its snapshot once, and records the container with a
/// copy-on-write root disk. Bad input is refused before anything is made.
pub async fn create(
    app_root: &Path,
    spec: &RunSpec,
    pull: &PullOptions,
) -> Result<Container, Error> {
    if let Some(name) = &spec.name
        && !crate::name::valid(name)
    {
        return Err(Error::InvalidName(name.clone()));
    }
    let networks = Networks::open(app_root)?;
    let network_name = network_name(app_root, spec.network.as_deref())?;
    if network_name == network::NONE {
        if !spec.publish.is_empty() {
            return Err(network::Error::NoNetwork("publishing a port (-p)").into());
        }
        spec.dns.hosts_lines(None)?;
    } else {
        networks.get(&network_name)?;
        if network::mode_for(&network_name)? == network::Mode::User
            && let Some(port) = spec.publish.iter().find(|p| p.host_ip.is_ipv6())
        {
            return Err(network::Error::InvalidPort {
                spec: port.to_string(),
                reason:
                    "without root, QEMU's user-mode network forwards from IPv4 host addresses only"
                        .into(),
            }
            .into());
        }
    }
    network::ports::check_unique(&spec.publish)?;
    let mut spec = spec.clone();
    volume::spec::check(&mut spec.mounts)?;
    spec.cap_add = normalize_capabilities(&spec.cap_add)?;
    spec.cap_drop = normalize_capabilities(&spec.cap_drop)?;
    let mut phases = crate::phases::Phases::start();
    let store = ImageStore::open(app_root)?;
    let reference = store.parse_reference(&spec.image)?;
    // From the image's lookup to the record that pins it: an `image rm`
    // meanwhile waits, then sees the image in use (else it could collect
    // the snapshot the new disk is backed by).
    let _pinning = store.adding_content()?;
    let image = store.get_or_pull(&reference, pull).await?;
    phases.done("resolve the image");
    spec.user = user_with_ids(&spec.user, spec.uid, spec.gid, &image.config.user);
    // Building a snapshot writes gigabytes at worst: keep it off the async threads.
    let snapshot = {
        let image = image.clone();
        tokio::task::spawn_blocking(move || store.snapshot(&image))
            .await
            .map_err(|e| io("build the image snapshot")(std::io::Error::other(e)))??
    };
    phases.done("build the snapshot");
    let command = command(&image.config, &spec);
    if command.is_empty() {
        return Err(Error::NoCommand);
    }
    add_image_volumes(&mut spec.mounts, &image.config.volumes);
    let id = id::new()?;
    // Docker names containers with random words; the short ID serves as well.
    let name = spec.name.clone().unwrap_or_else(|| id[..12].to_string());
    let containers = Containers::open(app_root)?;
    let pending = containers.reserve(&id, &name)?;
    let mut disk = vm::clone_disk(&snapshot, pending.dir(), spec.rootfs_bytes).await?;
    // A container deleted when it exits keeps nothing a flush would save.
    disk.scratch = spec.remove;
    phases.done("clone the disk");
    let volumes = Volumes::open(app_root)?;
    if let Err(e) = attach_volumes(&volumes, &mut spec.mounts, &id) {
        release_volumes(&volumes, &spec.mounts, &id, true);
        return Err(e);
    }
    let endpoint = match network_name.as_str() {
        network::NONE => None,
        on => match networks.attach(
            on,
            &network::Lease {
                container: id.clone(),
                name: name.clone(),
            },
        ) {
            Ok(endpoint) => Some(endpoint),
            Err(e) => {
                release_volumes(&volumes, &spec.mounts, &id, true);
                return Err(e.into());
            }
        },
    };
    let (mounts, container_id) = (spec.mounts.clone(), id.clone());
    let committed = pending.commit(container::Config {
        id,
        name,
        image: reference.to_string(),
        image_digest: image.digest.clone(),
        created: container::now(),
        spec,
        command,
        image_env: image.config.env.clone(),
        image_workdir: image.config.working_dir.clone(),
        image_user: image.config.user.clone(),
        disk,
        endpoint: endpoint.clone(),
    });
    if committed.is_err() {
        if let Some(endpoint) = &endpoint {
            let _ = networks.release(endpoint);
        }
        release_volumes(&volumes, &mounts, &container_id, true);
    }
    committed
}

/// An anonymous volume for each of the image's `VOLUME` paths that no
/// mount of the user's covers, as Docker gives them.
fn add_image_volumes(mounts: &mut Vec<volume::spec::Mount>, image_volumes: &[String]) {
    for path in image_volumes {
        let Some(target) = volume::spec::image_volume_target(path) else {
            tracing::warn!("the image's VOLUME {path:?} is not an absolute path; skipped");
            continue;
        };
        if mounts.iter().all(|m| m.target != target) {
            mounts.push(volume::spec::Mount {
                kind: volume::spec::Kind::Volume {
                    name: String::new(),
                    anonymous: true,
                    no_copy: false,
                },
                target,
                read_only: false,
                consistency: Default::default(),
            });
        }
    }
}

/// Creates the container's volumes that do not exist yet (named ones on
/// first use, every anonymous one), and records it as their user.
fn attach_volumes(
    volumes: &Volumes,
    mounts: &mut [volume::spec::Mount],
    container: &str,
) -> Result<(), Error> {
    for mount in mounts {
        if let volume::spec::Kind::Volume {
            name, anonymous, ..
        } = &mut mount.kind
        {
            if *anonymous {
                *name = volumes.create_anonymous()?.name;
            } else {
                volumes.create(Some(name), Default::default(), &Default::default())?;
            }
            volumes.attach(name, container)?;
        }
    }
    Ok(())
}

/// Forgets the container as a user of its volumes; with `anonymous` its
/// anonymous volumes go too (`rm -v`, `--rm`). Best effort: a volume
/// removed meanwhile is no error.
fn release_volumes(
    volumes: &Volumes,
    mounts: &[volume::spec::Mount],
    container: &str,
    anonymous: bool,
) {
    for mount in mounts {
        if let volume::spec::Kind::Volume {
            name,
            anonymous: is_anonymous,
            ..
        } = &mount.kind
            && !name.is_empty()
        {
            let _ = volumes.detach(name, container);
            if anonymous && *is_anonymous {
                let _ = volumes.remove(name, false);
            }
        }
    }
}

/// Capability names in the one form records keep and `inspect` shows
/// (`mknod` -> `CAP_MKNOD`, `ALL`), so an unknown one is refused at create
/// rather than when the container starts.
fn normalize_capabilities(names: &[String]) -> Result<Vec<String>, Error> {
    names
        .iter()
        .map(|name| {
            agent_proto::caps::normalize(name).ok_or_else(|| Error::UnknownCapability(name.clone()))
        })
        .collect()
}

/// The user a process runs as, from `-u` and Apple's `--uid`/`--gid`, as
/// Apple combines them: `-u` wins; `--uid` and `--gid` make `UID:GID`; a
/// uid alone takes its group from the image's /etc/passwd; a gid alone
/// keeps the `default` user (the image's, or for exec the container's) in
/// that group; with none of them, the default user it is.
pub fn user_with_ids(user: &str, uid: Option<u32>, gid: Option<u32>, default: &str) -> String {
    match (uid, gid) {
        _ if !user.is_empty() => user.to_string(),
        (Some(uid), Some(gid)) => format!("{uid}:{gid}"),
        (Some(uid), None) => uid.to_string(),
        (None, Some(gid)) => {
            let name = default.split(':').next().unwrap_or_default();
            format!("{name}:{gid}")
        }
        (None, None) => default.to_string(),
    }
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

/// How a started container's supervisor reports to the user.
pub enum Attach<'a> {
    /// Detached: report to the container's supervisor.log; return once it runs.
    No,
    /// Attached: the supervisor reports errors on our stderr; we pump the
    /// container's output to `output` until it ends and return its exit
    /// code. With `stdin` (and a container created with -i) our stdin goes
    /// to it too.
    Yes {
        stdin: bool,
        output: &'a dyn attach::Output,
    },
}

/// Starts a created or stopped container. Detached, it returns once the
/// container runs (exited 0), or fails with why it could not start; a
/// running container is left as it is (as in Docker). Attached, it returns
/// how the container ended.
pub async fn start(
    app_root: &Path,
    container: &Container,
    attach: Attach<'_>,
) -> Result<attach::Ended, Error> {
    if container.state()?.status == Status::Running {
        return match attach {
            Attach::No => Ok(attach::Ended::Exited(0)),
            Attach::Yes { .. } => Err(Error::AlreadyRunning(container.config.name.clone())),
        };
    }
    let terminal = match attach {
        Attach::Yes { .. } if container.config.spec.tty => {
            Some(attach::Terminal::open().map_err(io("set up the terminal"))?)
        }
        _ => None,
    };
    let size = terminal.as_ref().and_then(|t| t.size());
    let supervisor = supervisor::spawn(
        app_root,
        container,
        matches!(attach, Attach::Yes { .. }),
        size,
    )?;
    match attach {
        Attach::No => supervisor::wait_started(container, supervisor)
            .await
            .map(attach::Ended::Exited),
        Attach::Yes { stdin, output } => {
            attach::follow(container, supervisor.child, terminal, stdin, output).await
        }
    }
}

/// Sends a signal to a running container's main process.
pub async fn kill(container: &Container, signal: i32) -> Result<(), Error> {
    if container.state()?.status != Status::Running {
        return Err(Error::NotRunning(container.config.name.clone()));
    }
    let mut agent = agent::connect_socket(&container.agent_socket()).await?;
    agent
        .signal_process(SignalProcessRequest {
            id: supervisor::INIT_PROCESS.into(),
            signal,
        })
        .await?;
    Ok(())
}

/// Stops a container: `signal`, then SIGKILL after `timeout`, then the VM
/// itself if even that does not end it. One that is removed meanwhile
/// (`--rm`) is stopped.
pub async fn stop(container: &Container, signal: i32, timeout: Duration) -> Result<(), Error> {
    match stop_running(container, signal, timeout).await {
        Err(Error::NoSuchContainer(_)) => return Ok(()),
        other => other?,
    }
    // A --rm container's supervisor removes it right after recording the
    // stop: return once it is gone, so the next command does not see it.
    if container.config.spec.remove {
        poll(Duration::from_secs(10), || {
            Ok(matches!(container.state(), Err(Error::NoSuchContainer(_))))
        })
        .await?;
    }
    Ok(())
}

async fn stop_running(container: &Container, signal: i32, timeout: Duration) -> Result<(), Error> {
    if container.state()?.status != Status::Running {
        return Ok(());
    }
    if kill(container, signal).await.is_ok() && wait_stopped(container, timeout).await? {
        return Ok(());
    }
    if kill(container, libc::SIGKILL).await.is_ok()
        && wait_stopped(container, Duration::from_secs(5)).await?
    {
        return Ok(());
    }
    kill_supervisor(container).await
}

/// Ends a container at once by killing its supervisor; its VM and helpers
/// die with it (they hold PR_SET_PDEATHSIG), and the record says so.
async fn kill_supervisor(container: &Container) -> Result<(), Error> {
    let state = container.state()?;
    if let (Status::Running, Some(pid)) = (state.status, state.supervisor_pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        wait_stopped(container, Duration::from_secs(10)).await?;
        let mut state = container.state()?;
        state.supervisor_pid = None;
        state.finished.get_or_insert_with(container::now);
        state.exit_code.get_or_insert(137);
        state.reason = Some("killed".into());
        container.save_state(&state)?;
    }
    Ok(())
}

/// Waits until the container is stopped; false if `timeout` passed first.
pub async fn wait_stopped(container: &Container, timeout: Duration) -> Result<bool, Error> {
    poll(timeout, || Ok(container.state()?.status != Status::Running)).await
}

/// Asks `done` every 20 ms until it says yes (true) or `timeout` passes
/// (false). What is waited for here (a record written, a process gone)
/// has no event to wait on across processes.
async fn poll(
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool, Error>,
) -> Result<bool, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if done()? {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes a container; a running one only with `force` (it is killed);
/// with `volumes` its anonymous volumes too (Docker's `rm -v`). One that is
/// removed meanwhile (`--rm`, another CLI) is removed.
pub async fn remove(
    app_root: &Path,
    container: &Container,
    force: bool,
    volumes: bool,
) -> Result<(), Error> {
    // A supervisor starting it meanwhile has marked it running, or waits.
    let _lock = Containers::open(app_root)?.lock()?;
    let status = match container.state() {
        Err(Error::NoSuchContainer(_)) => return Ok(()),
        other => other?.status,
    };
    if status == Status::Running {
        if !force {
            return Err(Error::Running(container.config.name.clone()));
        }
        match kill_supervisor(container).await {
            Err(Error::NoSuchContainer(_)) => return Ok(()),
            other => other?,
        }
    }
    // A killed supervisor could not take its network down nor remove its
    // run directory (sockets, helpers' logs); we do.
    if let Some(endpoint) = &container.config.endpoint
        && endpoint.mode == network::Mode::Bridge
    {
        unplug(app_root, &endpoint.network, container.id()).await?;
    }
    let _ = std::fs::remove_dir_all(container.run_dir());
    forget(app_root, container, volumes)
}

/// Takes a container's host side of a bridge network down (its tap), if
/// its killed supervisor left it.
async fn unplug(app_root: &Path, network: &str, id: &str) -> Result<(), Error> {
    #[cfg(target_os = "linux")]
    {
        let networks = Networks::open(app_root)?;
        if let Ok(network) = networks.get(network) {
            let host = network::bridge::Host::new(networks.root(), &network);
            let id = id.to_string();
            tokio::task::spawn_blocking(move || host.unplug(&id))
                .await
                .map_err(|e| io("take the network down")(std::io::Error::other(e)))??;
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (app_root, network, id);
    Ok(())
}

/// Removes what creations killed midway left: their directories, and the
/// addresses and volume uses they had taken (their anonymous volumes are
/// left unused, for `volume prune`).
pub fn remove_incomplete(app_root: &Path) -> Result<(), Error> {
    let networks = Networks::open(app_root)?;
    let volumes = Volumes::open(app_root)?;
    Containers::open(app_root)?.remove_incomplete(|id| {
        let _ = networks.release_all(id);
        let _ = volumes.detach_all(id);
    })
}

/// The process serving an agent socket: the container's supervisor, found
/// this way when the state that names it cannot be read.
async fn serving(socket: &Path) -> Option<i32> {
    let stream = tokio::net::UnixStream::connect(socket).await.ok()?;
    stream.peer_cred().ok()?.pid()
}

/// Removes a container whose record cannot be read (`rm -f` names it by
/// ID). What its config would have told is found by its ID instead: its
/// supervisor (named by its state, or serving its agent socket) is killed
/// (its VM dies with it), its
/// addresses are given back and its volumes forget it; then it goes.
/// Its anonymous volumes cannot be told from named ones: `volume prune`
/// removes them once unused.
pub async fn remove_unreadable(
    app_root: &Path,
    record: &container::Unreadable,
) -> Result<(), Error> {
    let containers = Containers::open(app_root)?;
    let socket = run_dir(app_root, &record.id).join("agent.sock");
    let supervisor = match containers.supervisor_of(&record.id) {
        Some(pid) => Some(pid),
        None => serving(&socket).await,
    };
    if let Some(pid) = supervisor {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        poll(Duration::from_secs(10), || {
            Ok(!container::supervisor_alive(pid, &record.id))
        })
        .await?;
    }
    for network in Networks::open(app_root)?.release_all(&record.id)? {
        unplug(app_root, &network, &record.id).await?;
    }
    Volumes::open(app_root)?.detach_all(&record.id)?;
    let _ = std::fs::remove_dir_all(run_dir(app_root, &record.id));
    containers.remove_unreadable(record)
}

/// Deletes a stopped container's record, gives its address back and stops
/// using its volumes; with `volumes` its anonymous volumes go too.
pub(crate) fn forget(app_root: &Path, container: &Container, volumes: bool) -> Result<(), Error> {
    if let Some(endpoint) = &container.config.endpoint {
        Networks::open(app_root)?.release(endpoint)?;
    }
    Containers::open(app_root)?.remove(container)?;
    // After the record: a container never outlives its volumes.
    let mounts = &container.config.spec.mounts;
    release_volumes(&Volumes::open(app_root)?, mounts, container.id(), volumes);
    Ok(())
}

/// Runs another process in a running container and returns its exit code.
pub async fn exec(
    container: &Container,
    process: agent_proto::ProcessSpec,
    detach: bool,
    output: &dyn attach::Output,
) -> Result<attach::Ended, Error> {
    if container.state()?.status != Status::Running {
        return Err(Error::NotRunning(container.config.name.clone()));
    }
    let mut phases = crate::phases::Phases::start();
    let result = match agent::connect_socket(&container.agent_socket()).await {
        Ok(agent) => {
            phases.done("exec: connect");
            attach::exec(agent, &container.config.name, process, detach, output).await
        }
        Err(e) => Err(e.into()),
    };
    match result {
        // The container ended between our look and the agent's answer, or
        // under the process. Its supervisor records that within seconds (it
        // powers the VM off first): wait, so the next command sees it stopped.
        Err(Error::Agent(_) | Error::NotRunning(_))
            if !matches!(
                wait_stopped(container, Duration::from_secs(10)).await,
                Ok(false)
            ) =>
        {
            Err(Error::NotRunning(container.config.name.clone()))
        }
        other => other,
    }
}

/// What an `exec` asks for besides its command: Docker's flags.
#[derive(Default)]
pub struct ExecOptions {
    /// `KEY=VALUE` entries added to the container's environment.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub workdir: Option<String>,
    pub interactive: bool,
    pub tty: bool,
}

/// The process spec of an `exec` into `container`: its defaults are the
/// container's (see [`container::Config::base_process`]), the flags go on
/// top. vminitd confines it as the container's first process whatever it
/// asks for.
pub fn exec_process(
    container: &Container,
    args: Vec<String>,
    options: ExecOptions,
) -> agent_proto::ProcessSpec {
    let base = container.config.base_process();
    let mut env = base.env;
    env.extend(options.env);
    agent_proto::ProcessSpec {
        args,
        env,
        cwd: options.workdir.unwrap_or(base.cwd),
        user: user_with_ids(
            options.user.as_deref().unwrap_or_default(),
            options.uid,
            options.gid,
            &base.user,
        ),
        terminal: options.tty,
        stdin: options.interactive,
        ..Default::default()
    }
}

/// A running container's resource use at one moment.
pub struct Statistics {
    /// What its cgroup says.
    pub cgroup: agent_proto::StatisticsResponse,
    /// When the reading arrived.
    pub at: std::time::Instant,
}

impl Statistics {
    /// CPU use between an `earlier` reading and this one, as Docker and
    /// Apple show it: 100 is one CPU busy all the time, so a container can
    /// show up to 100 times its CPUs.
    pub fn cpu_percent(&self, earlier: &Statistics) -> f64 {
        let wall = self.at.saturating_duration_since(earlier.at).as_micros();
        if wall == 0 {
            return 0.0;
        }
        let used = self
            .cgroup
            .cpu_usage_usec
            .saturating_sub(earlier.cgroup.cpu_usage_usec);
        used as f64 * 100.0 / wall as f64
    }
}

/// Resource use of a running container, from its cgroup.
pub async fn statistics(container: &Container) -> Result<Statistics, Error> {
    let mut agent = agent::connect_socket(&container.agent_socket()).await?;
    let cgroup = agent
        .statistics(agent_proto::StatisticsRequest {})
        .await?
        .into_inner();
    Ok(Statistics {
        cgroup,
        at: std::time::Instant::now(),
    })
}

/// Exit code of the main process once it has ended (waiting for it).
pub async fn wait(container: &Container) -> Result<i32, Error> {
    while !wait_stopped(container, Duration::from_secs(3600)).await? {}
    Ok(container.state()?.exit_code.unwrap_or(-1))
}

impl From<&Ulimit> for Rlimit {
    fn from(u: &Ulimit) -> Rlimit {
        Rlimit {
            r#type: u.kind.clone(),
            soft: u.soft,
            hard: u.hard,
        }
    }
}

pub(crate) fn process_ref(id: &str) -> ProcessRef {
    ProcessRef { id: id.to_string() }
}

/// A directory for the VM's Unix sockets: `run/<short id>` under the app
/// root, or under the temp dir when that path would be too long for a socket
/// address (108 bytes, with room for the socket names).
pub(crate) fn run_dir(app_root: &Path, id: &str) -> PathBuf {
    let short = &id[..id.len().min(12)];
    let run = app_root.join("run").join(short);
    if run.as_os_str().len() > 80 {
        std::env::temp_dir().join(format!("container-{short}"))
    } else {
        run
    }
}

/// Copies a container's output (the last `tail` lines) to `output`,
/// following it while the container runs when `follow` is set.
pub async fn logs(
    container: &Container,
    tail: Option<usize>,
    follow: bool,
    output: &dyn attach::Output,
) -> Result<(), Error> {
    let path = container.stdio_log();
    let bytes = std::fs::read(&path).unwrap_or_default();
    let (records, used) = logs::parse(&bytes);
    let (first, offset) = tail.map_or((0, 0), |n| logs::tail_start(&records, n));
    for (i, record) in records.iter().enumerate().skip(first) {
        let data = if i == first {
            &record.data[offset..]
        } else {
            record.data
        };
        attach::write(output, record.stream, data)?;
    }
    if !follow {
        return Ok(());
    }
    let mut at = used as u64;
    loop {
        let running = container.state()?.status == Status::Running;
        if let Ok(mut file) = std::fs::File::open(&path) {
            attach::copy_new_records(&mut file, &mut at, output)?;
        }
        if !running {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where `cp` and `export` write what they read out of a container.
pub enum CopyEnd {
    /// A host path, unpacked there (`cp`).
    Path(PathBuf),
    /// A tar stream to a writer of the caller's (the CLI's stdout for `-`).
    Stream(Box<dyn std::io::Write + Send>),
    /// A tar file (`export -o`).
    File(PathBuf),
}

/// Copies `path` out of a container to `to`: a host path (Docker's
/// rules, see `agent_proto::copy`) or a tar stream.
pub async fn copy_out(container: &Container, path: &str, to: CopyEnd) -> Result<(), Error> {
    read_out(container, agent_proto::Builtin::CopyOut, path, to).await
}

/// Writes a tar of a container's whole filesystem to `to` (a file or a
/// stream).
pub async fn export(container: &Container, to: CopyEnd) -> Result<(), Error> {
    read_out(container, agent_proto::Builtin::Export, "/", to).await
}

async fn read_out(
    container: &Container,
    builtin: agent_proto::Builtin,
    path: &str,
    to: CopyEnd,
) -> Result<(), Error> {
    let (agent, borrowed) = reach(container).await?;
    let result = read_out_with(agent, builtin, path, to).await;
    if let Some(borrowed) = borrowed {
        borrowed.finish().await;
    }
    result
}

async fn read_out_with(
    agent: agent::Client,
    builtin: agent_proto::Builtin,
    path: &str,
    to: CopyEnd,
) -> Result<(), Error> {
    let context = match &to {
        CopyEnd::Path(path) | CopyEnd::File(path) => format!("write {}", path.display()),
        CopyEnd::Stream(_) => "write the copy".to_string(),
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    let sink = tokio::task::spawn_blocking(move || match to {
        CopyEnd::Stream(mut out) => {
            rx.iter().try_for_each(|chunk| out.write_all(&chunk))?;
            out.flush()
        }
        CopyEnd::Path(dest) => agent_proto::copy::unpack(ChannelReader::new(rx), &dest),
        CopyEnd::File(file) => {
            let mut out = std::io::BufWriter::new(std::fs::File::create(file)?);
            rx.iter()
                .try_for_each(|chunk| std::io::Write::write_all(&mut out, &chunk))?;
            std::io::Write::flush(&mut out)
        }
    });
    let copied = attach::builtin(agent, builtin, path, None, tx).await;
    let written = sink
        .await
        .map_err(|e| io("copy")(std::io::Error::other(e)))?;
    // A refused destination stops the reading first: that is the cause.
    written.map_err(io(context))?;
    copied
}

/// Copies `from` (a host path, or with None a tar on stdin) into a
/// container at `path`.
pub async fn copy_in(
    container: &Container,
    from: Option<PathBuf>,
    path: &str,
) -> Result<(), Error> {
    let (agent, borrowed) = reach(container).await?;
    let result = copy_in_with(agent, from, path).await;
    if let Some(borrowed) = borrowed {
        borrowed.finish().await;
    }
    result
}

async fn copy_in_with(
    agent: agent::Client,
    from: Option<PathBuf>,
    path: &str,
) -> Result<(), Error> {
    let (rx, source) = chunks_from(move |out| match from {
        None => std::io::copy(&mut std::io::stdin().lock(), out).map(drop),
        Some(src) => agent_proto::copy::pack(&src, out),
    });
    let (sink, _) = std::sync::mpsc::sync_channel(1);
    let copied = attach::builtin(agent, agent_proto::Builtin::CopyIn, path, Some(rx), sink).await;
    let read = source
        .await
        .map_err(|e| io("copy")(std::io::Error::other(e)))?;
    read.map_err(io("read the copy's source"))?;
    copied
}

/// The agent of a container's VM: its supervisor's when it runs; else a
/// VM booted for the moment, which the caller finishes.
async fn reach(
    container: &Container,
) -> Result<(agent::Client, Option<supervisor::Borrowed>), Error> {
    if container.state()?.status == Status::Running {
        return Ok((
            agent::connect_socket(&container.agent_socket()).await?,
            None,
        ));
    }
    let borrowed = supervisor::borrow(container).await?;
    Ok((borrowed.agent.clone(), Some(borrowed)))
}

/// Blocking reads from chunks sent by async code.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl ChannelReader {
    fn new(rx: std::sync::mpsc::Receiver<Vec<u8>>) -> ChannelReader {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => (self.chunk, self.at) = (chunk, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// What a blocking writer makes (a tar being packed, a file read), as
/// chunks for async code: `produce` runs on a blocking thread, and tar's
/// 512-byte blocks travel in 64 KiB messages. The handle, awaited once the
/// chunks are consumed, has the writer's own error.
pub(crate) fn chunks_from<F>(
    produce: F,
) -> (
    tokio::sync::mpsc::Receiver<Vec<u8>>,
    tokio::task::JoinHandle<std::io::Result<()>>,
)
where
    F: FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send + 'static,
{
    use std::io::Write;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let source = tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(1 << 16, ChannelWriter(tx));
        produce(&mut out)?;
        out.flush()
    });
    (rx, source)
}

/// Blocking writes that become chunks for async code.
struct ChannelWriter(tokio::sync::mpsc::Sender<Vec<u8>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(buf.to_vec())
            .map_err(|_| std::io::Error::other("the container stopped reading"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_and_gid_combine_with_user_as_apple_does() {
        assert_eq!(user_with_ids("app", Some(5), Some(6), "root"), "app");
        assert_eq!(
            user_with_ids("", Some(1000), Some(4000), "app"),
            "1000:4000"
        );
        assert_eq!(user_with_ids("", Some(1000), None, "app:app"), "1000");
        assert_eq!(user_with_ids("", None, Some(4000), "app:staff"), "app:4000");
        assert_eq!(user_with_ids("", None, Some(4000), ""), ":4000");
        assert_eq!(user_with_ids("", None, None, "app"), "app");
    }

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time() {
        let reading = |usec, at| Statistics {
            cgroup: agent_proto::StatisticsResponse {
                cpu_usage_usec: usec,
                ..Default::default()
            },
            at,
        };
        let start = std::time::Instant::now();
        let first = reading(1_000_000, start);
        let half = reading(1_250_000, start + Duration::from_millis(500));
        assert_eq!(half.cpu_percent(&first), 50.0);
        let two_cpus = reading(2_000_000, start + Duration::from_millis(500));
        assert_eq!(two_cpus.cpu_percent(&first), 200.0);
        assert_eq!(first.cpu_percent(&first), 0.0);
        // A counter that went back (a restarted container) is no use, not negative.
        assert_eq!(
            reading(0, start + Duration::from_secs(1)).cpu_percent(&first),
            0.0
        );
    }

    #[test]
    fn capabilities_are_normalized_or_refused() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            normalize_capabilities(&names(&["mknod", "CAP_NET_ADMIN", "all"])).unwrap(),
            ["CAP_MKNOD", "CAP_NET_ADMIN", "ALL"]
        );
        assert!(matches!(
            normalize_capabilities(&names(&["chown", "fly"])),
            Err(Error::UnknownCapability(name)) if name == "fly"
        ));
    }
}
