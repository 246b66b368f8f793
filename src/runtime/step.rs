//! Build steps: a `RUN` executed in its own VM over its parent's root
//! filesystem, with exactly its changes captured as a layer.
//!
//! The parent's snapshot is the guest's read-only `/dev/vda` and the lower
//! directory of an overlayfs whose upper directory lives on a scratch disk
//! (`/dev/vdb`). The command runs in a container on that overlay, as `run`
//! would run it (same launcher, user resolution, capabilities), and what
//! the overlay's upper directory then holds is the step's change set, which
//! vminitd streams back as an OCI layer tar (`ReadLayer`).

use std::io::Write;
use std::path::{Path, PathBuf};

use agent_proto::{
    AGENT_PORT, ContainerConfig, MountRequest, ProcessSpec, READY_PORT, ReadLayerRequest,
    ShutdownRequest, StdinChunk,
};

use super::plugged::{Plug, Plugged};
use super::supervisor::{
    BOOT_TIMEOUT, INIT_PROCESS, create_init, machine, start_with_output, stop_vm, wait_init,
};
use super::{Error, agent};
use crate::io_error::io;
use crate::network::dns::DnsConfig;
use crate::network::{Endpoint, Lease, Networks};
use crate::vm::{self, VirtualMachine};

/// Guest paths of the step's filesystems.
const LOWER: &str = "/run/build/lower";
const SCRATCH: &str = "/run/build/scratch";
const ROOT: &str = "/run/build/root";
/// The scratch disk holds the step's changes; sparse, so only what the
/// step writes takes space.
const SCRATCH_BYTES: u64 = 64 << 30;
/// What the launcher writes into every container's root: not the step's.
const RUNTIME_FILES: [&str; 3] = ["etc/hosts", "etc/hostname", "etc/resolv.conf"];
/// The host name RUN steps see (BuildKit's, which some scripts expect).
const HOSTNAME: &str = "buildkitsandbox";

/// One `RUN`: the parent's root filesystem and the process to run on it.
#[derive(Debug, Clone)]
pub struct Step {
    /// The parent state's ext4 snapshot; the guest only reads it.
    pub parent: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// As `run --user` takes it; empty for root.
    pub user: String,
    /// What the process reads on its stdin (a heredoc script for its
    /// interpreter); none: stdin is empty.
    pub stdin: Option<Vec<u8>>,
    /// SOURCE_DATE_EPOCH: no file in the layer is dated later.
    pub clamp_mtime: Option<u64>,
    /// The network the step's VM joins, as `run --network` names it; none:
    /// only loopback.
    pub network: Option<String>,
    /// The VM's size; `run`'s defaults when None.
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
}

/// How a step ended: its exit code (127 and 126 when the command could not
/// start, as a shell says), and with 0 the layer is written.
pub async fn run_step(
    app_root: &Path,
    step: &Step,
    output: &mut (dyn FnMut(&[u8]) + Send),
    layer: &mut (dyn Write + Send),
) -> Result<i32, Error> {
    let work = WorkDir::create(app_root)?;
    let joined = match &step.network {
        Some(name) => Some(Joined::join(app_root, name, &work.id)?),
        None => None,
    };
    let scratch = work.path.join("scratch.ext4");
    format_scratch(&scratch)?;
    let mut config = machine(
        app_root,
        step.cpus,
        step.memory_mib,
        work.path.clone(),
        work.path.join("boot.log"),
    )?;
    config.disks = vec![
        vm::Disk {
            path: step.parent.clone(),
            format: vm::DiskFormat::Raw,
            read_only: true,
        },
        vm::Disk {
            path: scratch,
            format: vm::DiskFormat::Raw,
            read_only: false,
        },
    ];
    let mut plugged = match &joined {
        Some(joined) => Plugged::plug(Plug {
            app_root,
            id: &work.id,
            hostname: HOSTNAME,
            endpoint: Some(joined.endpoint.clone()),
            publish: &[],
        })?,
        None => None,
    };
    config.nics = plugged.iter().map(|p| p.nic.clone()).collect();
    let result = boot_and_drive(&config, plugged.as_mut(), step, output, layer).await;
    // The VM is gone and our copy of the tap closes here.
    drop(config);
    if let Some(plugged) = plugged {
        plugged.unplug().await;
    }
    result
}

async fn boot_and_drive(
    config: &vm::VmConfig,
    plugged: Option<&mut Plugged>,
    step: &Step,
    output: &mut (dyn FnMut(&[u8]) + Send),
    layer: &mut (dyn Write + Send),
) -> Result<i32, Error> {
    let mut vm = vm::boot(config).await?;
    let result = match drive(&mut vm, &config.console_log, plugged, step, output, layer).await {
        // A broken agent connection usually means the VM died: say so.
        Err(Error::Agent(message)) => Err(Error::Agent(match vm.exited() {
            Some(reason) => format!("the VM stopped unexpectedly ({reason})"),
            None => message,
        })),
        other => other,
    };
    // Nothing in the VM outlives the step: its disks are thrown away.
    stop_vm(vm, &config.console_log, false).await;
    result
}

async fn drive(
    vm: &mut vm::Vm,
    console_log: &Path,
    plugged: Option<&mut Plugged>,
    step: &Step,
    output: &mut (dyn FnMut(&[u8]) + Send),
    layer: &mut (dyn Write + Send),
) -> Result<i32, Error> {
    let mut ready = vm.listen(READY_PORT)?;
    vm::wait_ready(vm, &mut ready, BOOT_TIMEOUT, console_log).await?;
    let mut agent = agent::connect(vm.dialer(), AGENT_PORT).await?;
    for mount in mounts() {
        agent.mount(mount).await?;
    }
    let mut config = ContainerConfig {
        hostname: HOSTNAME.into(),
        ..Default::default()
    };
    if let Some(plugged) = plugged {
        plugged.configure_guest(&mut agent).await?;
        config.hosts = vec![format!("{}\t{HOSTNAME}", plugged.endpoint.address)];
        config.resolv_conf = DnsConfig::default()
            .resolv_conf(plugged.dns_server)
            .unwrap_or_default();
    }
    let process = ProcessSpec {
        args: step.args.clone(),
        env: step.env.clone(),
        cwd: step.cwd.clone(),
        user: step.user.clone(),
        stdin: step.stdin.is_some(),
        ..Default::default()
    };
    create_init(&mut agent, ROOT, process, config).await?;
    let mut stream = match start_with_output(&mut agent).await? {
        Ok(stream) => stream,
        Err((code, message)) => {
            output(format!("{message}\n").as_bytes());
            return Ok(code);
        }
    };
    let wait = wait_init(agent.clone());
    let pump = async {
        while let Some(chunk) = stream.message().await? {
            output(&chunk.data);
        }
        Ok::<_, Error>(())
    };
    let mut writer = agent.clone();
    let feed = async {
        if let Some(data) = &step.stdin {
            let chunk = StdinChunk {
                id: INIT_PROCESS.into(),
                data: data.clone(),
            };
            // The stream's end closes the process's stdin.
            writer.write_stdin(tokio_stream::iter([chunk])).await?;
        }
        Ok::<_, Error>(())
    };
    let ((), exit, ()) = tokio::try_join!(pump, wait, feed)?;
    if exit != 0 {
        return Ok(exit);
    }
    let mut chunks = agent
        .read_layer(ReadLayerRequest {
            upper: format!("{SCRATCH}/upper"),
            clamp_mtime: step.clamp_mtime,
            exclude: RUNTIME_FILES.iter().map(|f| f.to_string()).collect(),
        })
        .await?
        .into_inner();
    while let Some(chunk) = chunks.message().await? {
        layer
            .write_all(&chunk.data)
            .map_err(io("write the step's layer"))?;
    }
    let _ = agent.shutdown(ShutdownRequest {}).await;
    Ok(0)
}

/// The parent read-only, the scratch disk, and the overlay of the two
/// that becomes the container's root. Redirects and metacopy stay off so
/// that every change is a plain file, directory or whiteout in the upper
/// directory, which is what a layer can say.
fn mounts() -> Vec<MountRequest> {
    let ext4 = |source: &str, target: &str, options: &[&str]| MountRequest {
        source: source.into(),
        target: target.into(),
        fstype: "ext4".into(),
        options: options.iter().map(|o| o.to_string()).collect(),
        grow: false,
    };
    vec![
        ext4("/dev/vda", LOWER, &["ro", "noload"]),
        ext4("/dev/vdb", SCRATCH, &[]),
        MountRequest {
            source: "overlay".into(),
            target: ROOT.into(),
            fstype: "overlay".into(),
            options: vec![
                format!("lowerdir={LOWER}"),
                format!("upperdir={SCRATCH}/upper"),
                format!("workdir={SCRATCH}/work"),
                "redirect_dir=off".into(),
                "metacopy=off".into(),
                "index=off".into(),
            ],
            grow: false,
        },
    ]
}

/// An empty ext4 with the overlay's `upper` and `work` directories.
fn format_scratch(path: &Path) -> Result<(), Error> {
    let mut tar = agent_proto::layer::Writer::new(Vec::new(), None);
    let meta = agent_proto::layer::Meta {
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
    };
    let fail = |e| io(format!("prepare {}", path.display()))(e);
    tar.dir("upper", meta, &[]).map_err(fail)?;
    tar.dir("work", meta, &[]).map_err(fail)?;
    let tar = tar.finish().map_err(fail)?;
    let mut fs = crate::ext4::Formatter::create(
        path,
        crate::ext4::FormatOptions {
            size_bytes: SCRATCH_BYTES,
        },
    )
    .map_err(crate::image::Error::from)?;
    fs.unpack_layer(&tar[..])
        .map_err(crate::image::Error::from)?;
    fs.finish().map_err(crate::image::Error::from)?;
    Ok(())
}

/// The step's scratch disk and VM sockets; removed however the step ends.
struct WorkDir {
    /// Names the step's tap and network lease.
    id: String,
    path: PathBuf,
}

impl WorkDir {
    fn create(app_root: &Path) -> Result<WorkDir, Error> {
        let id = format!("b{}", crate::id::random().map_err(io("read /dev/urandom"))?);
        let path = super::run_dir(app_root, &id);
        crate::app_root::private_dir(&path).map_err(io(format!("create {}", path.display())))?;
        Ok(WorkDir { id, path })
    }
}

/// The step's address on its network, given back however the step ends.
struct Joined {
    networks: Networks,
    endpoint: Endpoint,
}

impl Joined {
    fn join(app_root: &Path, name: &str, id: &str) -> Result<Joined, Error> {
        let networks = Networks::open(app_root)?;
        let endpoint = networks.attach(
            name,
            &Lease {
                container: id.to_string(),
                name: HOSTNAME.to_string(),
            },
        )?;
        Ok(Joined { networks, endpoint })
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        let _ = self.networks.release(&self.endpoint);
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
