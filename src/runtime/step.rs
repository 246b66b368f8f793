//! Build steps: a build's `RUN`s, run one after another in one VM (a
//! builder), each over the root filesystem the steps before it left, with
//! exactly its changes captured as a layer.
//!
//! The builder boots with a snapshot of the first step's parent as its
//! read-only `/dev/vda` and a scratch disk (`/dev/vdb`). Each step runs, as
//! `run` would run it (same launcher, user resolution, capabilities), in a
//! container on an overlayfs: the snapshot at the bottom, above it the
//! layers since (earlier steps' upper directories, and layers made on the
//! host, such as a `COPY`'s, unpacked by vminitd's `WriteLayer`), and a new
//! upper directory on the scratch disk, which then holds the step's change
//! set; vminitd streams it back as an OCI layer tar (`ReadLayer`). One VM
//! for many steps because a boot costs more than a short step.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use std::collections::HashMap;

use agent_proto::container_mount::Kind as MountKind;
use agent_proto::{
    ContainerConfig, ContainerMount, MountRequest, ProcessSpec, ReadLayerRequest, StdinChunk,
    UmountRequest, WriteLayerChunk,
};
use tokio_stream::StreamExt;

use super::plugged::{Plug, Plugged};
use super::supervisor::{
    INIT_PROCESS, create_init, explain, start_with_output, stop_vm, wait_init,
};
use super::{Error, agent, process_ref};
use crate::io_error::io;
use crate::network::dns::DnsConfig;
use crate::network::{Endpoint, Lease, Networks};
use crate::vm;

/// Guest paths of the builder's filesystems.
const LOWER: &str = "/run/build/lower";
const SCRATCH: &str = "/run/build/scratch";
const ROOT: &str = "/run/build/root";
/// Where the cache mounts' disks are mounted, one directory each.
const CACHES: &str = "/run/build/cache";
/// How many cache mount disks a builder takes: with its own two disks, its
/// agent port and a network device, well within microvm's 24 virtio-mmio slots.
pub const MAX_CACHE_DISKS: usize = 8;
/// The scratch disk holds the steps' changes; sparse, so only what the
/// steps write takes space.
const SCRATCH_BYTES: u64 = 64 << 30;
/// How many directories a builder stacks on its snapshot at most: the
/// overlay's options must fit in a page (a path here is under 30 bytes).
const MAX_STACK: usize = 100;
/// What the launcher writes into every container's root: not the step's.
const RUNTIME_FILES: [&str; 3] = ["etc/hosts", "etc/hostname", "etc/resolv.conf"];
/// The host name RUN steps see (BuildKit's, which some scripts expect).
const HOSTNAME: &str = "buildkitsandbox";

/// The VM a builder boots: its root filesystem and what it joins.
#[derive(Debug, Clone)]
pub struct Machine {
    /// An ext4 snapshot of the first step's parent; the guest only reads it.
    pub base: PathBuf,
    /// The network the steps join, as `run --network` names it; none: only
    /// loopback.
    pub network: Option<String>,
    /// The VM's size; `run`'s defaults when None.
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    /// Disks that keep cache mounts between builds, by cache id; the ids
    /// without one get a directory on the scratch disk.
    pub caches: Vec<(String, PathBuf)>,
}

/// One `RUN`: the process to run on the builder's current root.
#[derive(Debug, Clone)]
pub struct Step {
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
    /// Mounted over the root for this step, in order; targets absolute.
    pub mounts: Vec<StepMount>,
}

/// What a step sees at `target` while it runs (`RUN --mount`), never part
/// of its layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepMount {
    /// `type=cache`: a directory the steps with the same `id` share: on
    /// its disk (`Machine::caches`), kept between builds, or else on the
    /// scratch disk for as long as the builder runs.
    Cache {
        id: String,
        target: String,
        /// The directory's mode and owner when it is made.
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// `type=tmpfs`: an empty tmpfs.
    Tmpfs { target: String, size: Option<u64> },
}

impl StepMount {
    pub fn target_mut(&mut self) -> &mut String {
        match self {
            StepMount::Cache { target, .. } | StepMount::Tmpfs { target, .. } => target,
        }
    }
}

/// The VM a build runs its RUN steps in. Dropped without [`BuildVm::stop`] (a cancelled build),
/// its VM is killed and its disks deleted all the same.
pub struct BuildVm {
    vm: vm::Vm,
    agent: agent::Client,
    console_log: PathBuf,
    /// What each step's container is told: its name, hosts and resolver.
    container: ContainerConfig,
    /// Guest directories stacked on the snapshot, the newest last.
    lowers: Vec<String>,
    /// Numbers the guest directories of steps, layers and caches.
    next: usize,
    /// The guest directory of each cache mount's id, once a step used it.
    caches: HashMap<String, String>,
    /// The cache ids whose disks are attached, in disk order.
    cache_disks: Vec<String>,
    plugged: Option<Plugged>,
    config: vm::VmConfig,
    _joined: Option<Joined>,
    _work: WorkDir,
}

impl BuildVm {
    pub async fn boot(app_root: &Path, machine: &Machine) -> Result<BuildVm, Error> {
        let work = WorkDir::create(app_root)?;
        let joined = match &machine.network {
            Some(name) => Some(Joined::join(app_root, name, &work.id)?),
            None => None,
        };
        let scratch = work.path.join("scratch.ext4");
        format_scratch(&scratch)?;
        let mut config = super::supervisor::machine(
            app_root,
            machine.cpus,
            machine.memory_mib,
            work.path.clone(),
            work.path.join("boot.log"),
        )?;
        config.disks = vec![
            vm::Disk {
                path: machine.base.clone(),
                format: vm::DiskFormat::Raw,
                read_only: true,
                scratch: false,
            },
            vm::Disk {
                path: scratch,
                format: vm::DiskFormat::Raw,
                read_only: false,
                scratch: true,
            },
        ];
        config
            .disks
            .extend(machine.caches.iter().map(|(_, path)| vm::Disk {
                path: path.clone(),
                format: vm::DiskFormat::Raw,
                read_only: false,
                scratch: false,
            }));
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
        let mut vm = match vm::boot(&config).await {
            Ok(vm) => vm,
            Err(e) => {
                unplug(config, plugged).await;
                return Err(e.into());
            }
        };
        let caches = machine.caches.len();
        match connect(&mut vm, &config.console_log, plugged.as_mut(), caches).await {
            Ok((agent, container)) => Ok(BuildVm {
                vm,
                agent,
                console_log: config.console_log.clone(),
                container,
                lowers: Vec::new(),
                next: 0,
                caches: HashMap::new(),
                cache_disks: machine.caches.iter().map(|(id, _)| id.clone()).collect(),
                plugged,
                config,
                _joined: joined,
                _work: work,
            }),
            Err(e) => {
                let e = explain(&mut vm, e).await;
                stop_vm(vm, &config.console_log, false).await;
                unplug(config, plugged).await;
                Err(e)
            }
        }
    }

    /// Whether `more` layers can still be stacked on this builder's root.
    pub fn can_stack(&self, more: usize) -> bool {
        self.lowers.len() + more < MAX_STACK
    }

    /// Stacks a layer (an uncompressed OCI layer tar) on the root the next
    /// step runs on.
    pub async fn add_layer(&mut self, layer: Box<dyn Read + Send>) -> Result<(), Error> {
        self.next += 1;
        let dir = format!("{SCRATCH}/{}/layer", self.next);
        self.unpack(&dir, layer).await?;
        self.lowers.push(dir);
        Ok(())
    }

    /// The guest directory of the cache mount `id`, made (or, on its disk,
    /// given the mount's mode and owner) on the builder's first use.
    async fn cache_dir(
        &mut self,
        id: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<String, Error> {
        if let Some(dir) = self.caches.get(id) {
            return Ok(dir.clone());
        }
        let parent = match self.cache_disks.iter().position(|d| d == id) {
            Some(index) => format!("{CACHES}/{index}"),
            None => {
                self.next += 1;
                format!("{SCRATCH}/{}", self.next)
            }
        };
        let meta = agent_proto::layer::Meta {
            mode,
            uid,
            gid,
            mtime: 0,
        };
        let mut tar = agent_proto::layer::Writer::new(Vec::new(), None);
        let tar = tar
            .dir("cache", meta, &[])
            .and_then(|()| tar.finish())
            .map_err(io("make a cache directory"))?;
        self.unpack(&parent, Box::new(std::io::Cursor::new(tar)))
            .await?;
        let dir = format!("{parent}/cache");
        self.caches.insert(id.to_string(), dir.clone());
        Ok(dir)
    }

    /// Unpacks a layer tar into a new guest directory.
    async fn unpack(&mut self, dir: &str, mut layer: Box<dyn Read + Send>) -> Result<(), Error> {
        let (rx, source) = super::chunks_from(move |out| std::io::copy(&mut layer, out).map(drop));
        let chunks = tokio_stream::once(WriteLayerChunk {
            dir: dir.to_string(),
            data: vec![],
        })
        .chain(tokio_stream::wrappers::ReceiverStream::new(rx).map(|data| {
            WriteLayerChunk {
                dir: String::new(),
                data,
            }
        }));
        let written = self.agent.write_layer(chunks).await;
        let read = source
            .await
            .map_err(|e| io("read a layer")(std::io::Error::other(e)))?;
        // The guest's error says more than a reader cut short by it.
        if let Err(status) = written {
            return Err(explain(&mut self.vm, status.into()).await);
        }
        Ok(read.map_err(io("read a layer"))?)
    }

    /// Runs a step on the root the steps and layers before it left. How it
    /// ended: its exit code (127 and 126 when the command could not start,
    /// as a shell says), and with 0 its changes are written to `layer` and
    /// become part of the root the next step runs on.
    pub async fn run(
        &mut self,
        step: &Step,
        output: &mut (dyn FnMut(&[u8]) + Send),
        layer: &mut (dyn Write + Send),
    ) -> Result<i32, Error> {
        self.next += 1;
        let dir = format!("{SCRATCH}/{}", self.next);
        let root = format!("{ROOT}/{}", self.next);
        let result = self.drive(step, &dir, &root, output, layer).await;
        match result {
            Ok(code) => Ok(code),
            Err(e) => Err(explain(&mut self.vm, e).await),
        }
    }

    async fn drive(
        &mut self,
        step: &Step,
        dir: &str,
        root: &str,
        output: &mut (dyn FnMut(&[u8]) + Send),
        layer: &mut (dyn Write + Send),
    ) -> Result<i32, Error> {
        let upper = format!("{dir}/upper");
        let mut container = self.container.clone();
        for mount in &step.mounts {
            container.mounts.push(match mount {
                StepMount::Cache {
                    id,
                    target,
                    mode,
                    uid,
                    gid,
                } => ContainerMount {
                    kind: MountKind::Bind.into(),
                    source: self.cache_dir(id, *mode, *uid, *gid).await?,
                    target: target.clone(),
                    ..Default::default()
                },
                StepMount::Tmpfs { target, size } => ContainerMount {
                    kind: MountKind::Tmpfs.into(),
                    target: target.clone(),
                    options: size.map(|s| format!("size={s}")).unwrap_or_default(),
                    ..Default::default()
                },
            });
        }
        let agent = &mut self.agent;
        agent
            .mount(overlay(root, &self.lowers, &upper, &format!("{dir}/work")))
            .await?;
        let process = ProcessSpec {
            args: step.args.clone(),
            env: step.env.clone(),
            cwd: step.cwd.clone(),
            user: step.user.clone(),
            stdin: step.stdin.is_some(),
            ..Default::default()
        };
        create_init(agent, root, process, container).await?;
        let exit = match start_with_output(agent).await? {
            Ok(stream) => pump(agent, stream, step, output).await?,
            Err((code, message)) => {
                output(format!("{message}\n").as_bytes());
                code
            }
        };
        // The step's container went with its first process: its root can go.
        agent.delete_process(process_ref(INIT_PROCESS)).await?;
        agent
            .umount(UmountRequest {
                target: root.to_string(),
                lazy: true,
            })
            .await?;
        if exit != 0 {
            return Ok(exit);
        }
        let mut chunks = agent
            .read_layer(ReadLayerRequest {
                upper: upper.clone(),
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
        self.lowers.push(upper);
        Ok(0)
    }

    /// Powers the builder off and gives back its address and disks.
    pub async fn stop(self) {
        let BuildVm {
            vm,
            mut agent,
            console_log,
            plugged,
            config,
            cache_disks,
            ..
        } = self;
        // The cache mounts' disks outlive the build: unmounted, the guest
        // has written them out. The rest is thrown away unwritten.
        for index in 0..cache_disks.len() {
            let target = format!("{CACHES}/{index}");
            let unmounted = agent.umount(UmountRequest {
                target: target.clone(),
                lazy: false,
            });
            if let Err(e) = unmounted.await {
                tracing::debug!("unmount the cache disk at {target}: {e}");
            }
        }
        stop_vm(vm, &console_log, false).await;
        unplug(config, plugged).await;
    }
}

/// The agent once the guest is up, and what each step's container is told.
async fn connect(
    vm: &mut vm::Vm,
    console_log: &Path,
    plugged: Option<&mut Plugged>,
    caches: usize,
) -> Result<(agent::Client, ContainerConfig), Error> {
    let mut agent = agent::Client::new(agent::connect(vm, console_log).await?);
    for mount in disks(caches) {
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
    Ok((agent, config))
}

/// The step's output to `output` and its stdin in, until it exits.
async fn pump(
    agent: &mut agent::Client,
    mut stream: tonic::Streaming<agent_proto::OutputChunk>,
    step: &Step,
    output: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<i32, Error> {
    let wait = wait_init(agent.clone());
    let pump = async {
        while let Some(chunk) = stream.message().await? {
            output(&chunk.data);
        }
        Ok::<_, Error>(())
    };
    let feed = async {
        if let Some(data) = &step.stdin {
            let chunk = StdinChunk {
                id: INIT_PROCESS.into(),
                data: data.clone(),
            };
            // The stream's end closes the process's stdin.
            agent.write_stdin(tokio_stream::iter([chunk])).await?;
        }
        Ok::<_, Error>(())
    };
    let ((), exit, ()) = tokio::try_join!(pump, wait, feed)?;
    Ok(exit)
}

/// With the VM gone, our copy of its tap closes, then the tap goes.
async fn unplug(config: vm::VmConfig, plugged: Option<Plugged>) {
    drop(config);
    if let Some(plugged) = plugged {
        plugged.unplug().await;
    }
}

/// The snapshot read-only, the scratch disk, and the cache mounts' disks.
fn disks(caches: usize) -> Vec<MountRequest> {
    let ext4 = |source: &str, target: &str, options: &[&str]| MountRequest {
        source: source.into(),
        target: target.into(),
        fstype: "ext4".into(),
        options: options.iter().map(|o| o.to_string()).collect(),
        grow: false,
    };
    let mut disks = vec![
        ext4("/dev/vda", LOWER, &["ro", "noload"]),
        ext4("/dev/vdb", SCRATCH, &[]),
    ];
    // The next disks, in order: vdc, vdd, ...
    for (index, letter) in (b'c'..=b'z').take(caches).enumerate() {
        let device = format!("/dev/vd{}", letter as char);
        disks.push(ext4(&device, &format!("{CACHES}/{index}"), &[]));
    }
    disks
}

/// A step's root: its new upper directory over the layers since the
/// snapshot, newest on top, over the snapshot. Redirects and metacopy stay
/// off so that every change is a plain file, directory or whiteout in the
/// upper directory, which is what a layer can say.
fn overlay(root: &str, lowers: &[String], upper: &str, work: &str) -> MountRequest {
    let stack: Vec<&str> = lowers
        .iter()
        .rev()
        .map(String::as_str)
        .chain([LOWER])
        .collect();
    MountRequest {
        source: "overlay".into(),
        target: root.into(),
        fstype: "overlay".into(),
        options: vec![
            format!("lowerdir={}", stack.join(":")),
            format!("upperdir={upper}"),
            format!("workdir={work}"),
            "redirect_dir=off".into(),
            "metacopy=off".into(),
            "index=off".into(),
        ],
        grow: false,
    }
}

/// An empty ext4 for the steps' directories.
fn format_scratch(path: &Path) -> Result<(), Error> {
    let fs = crate::ext4::Formatter::create(
        path,
        crate::ext4::FormatOptions {
            size_bytes: SCRATCH_BYTES,
        },
    )
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
