//! The agent API server: what the host can ask of the guest.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::pin::Pin;
use std::sync::Arc;

use agent_proto::agent_server::{Agent, AgentServer};
use agent_proto::create_process_request::Target as RequestTarget;
use agent_proto::output_chunk::Stream as OutputStream;
use agent_proto::*;
use futures::Stream;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::signal::{Signal, kill};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::boot::make_dir;
use crate::process::{self, Output, Table, Target};
use crate::{cgroup, launch, link, log, resize};

/// Serves the agent API once `setup` has set the guest up; `started` is
/// when vminitd started, on the boot clock.
pub async fn serve(
    started: std::time::Duration,
    setup: std::thread::JoinHandle<Result<(), String>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut service = Service {
        init_started: started,
        ..Service::default()
    };
    let processes = service.processes.clone();
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        while sigchld.recv().await.is_some() {
            processes.reap();
        }
    });
    // The link opens and says it is ready at once, beside the rest of the
    // guest's setup: the host's first requests wait in the link until it
    // serves.
    let fd = tokio::task::spawn_blocking(link::open)
        .await?
        .map_err(|e| format!("open the link to the host: {e}"))?;
    let link = link::Link::new(fd)?;
    log::info("the host answered ready with go; reseeded the kernel's random numbers");
    tokio::task::spawn_blocking(move || setup.join())
        .await?
        .map_err(|_| "boot setup panicked")?
        .map_err(|e| format!("boot failed: {e}"))?;
    service.agent_ready = log::since_boot();
    // One connection, then none: the agent serves until the VM stops.
    let incoming = futures::stream::once(async { Ok::<_, std::io::Error>(link) })
        .chain(futures::stream::pending());
    tonic::transport::Server::builder()
        .add_service(AgentServer::new(service))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

#[derive(Default)]
struct Service {
    processes: Arc<Table>,
    /// What the host mounted, newest last, so shutdown can unmount it.
    mounts: Arc<std::sync::Mutex<Vec<String>>>,
    /// When vminitd started and when the agent listened (boot clock).
    init_started: std::time::Duration,
    agent_ready: std::time::Duration,
}

fn status(e: process::Error) -> Status {
    use process::Error::*;
    match e {
        NotFound(_) => Status::not_found(e.to_string()),
        Exists(_) => Status::already_exists(e.to_string()),
        AlreadyStarted(_) | NotRunning(_) | StillRunning(_) | NoTerminal => {
            Status::failed_precondition(e.to_string())
        }
        // The shell's exit codes travel as gRPC codes the host maps back.
        Start {
            code: launch::EXIT_NOT_FOUND,
            ..
        } => Status::not_found(e.to_string()),
        Start {
            code: launch::EXIT_CANNOT_RUN,
            ..
        } => Status::permission_denied(e.to_string()),
        Start { .. } => Status::invalid_argument(e.to_string()),
        Io(_) | Sys(_) => Status::internal(e.to_string()),
    }
}

/// A netlink connection per request: they are rare (a few per container
/// start), and a connection costs one socket.
fn network() -> Result<crate::network::Network, Status> {
    crate::network::Network::connect().map_err(net_status)
}

fn net_status(e: crate::network::Error) -> Status {
    use crate::network::Error::*;
    match e {
        NoInterface(_) => Status::not_found(e.to_string()),
        BadCidr(_) | BadMac(_) | MixedFamilies(..) => Status::invalid_argument(e.to_string()),
        Netlink(_) | Io(_) => Status::internal(e.to_string()),
    }
}

/// Drops what the guest has cached of a block device before it is mounted.
/// A VM restored from a template has cached what its kernel read of the
/// template's placeholder disk when it probed it; the disk is now another.
fn forget_cached(source: &str) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    /// _IO(0x12, 97) from linux/fs.h, which the libc crate does not carry.
    const BLKFLSBUF: libc::c_ulong = 0x1261;
    match std::fs::metadata(source) {
        Ok(meta) if meta.file_type().is_block_device() => {}
        _ => return Ok(()),
    }
    let disk = std::fs::File::open(source)?;
    // SAFETY: takes no argument.
    if unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&disk), BLKFLSBUF as _) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn internal(context: &str) -> impl FnOnce(std::io::Error) -> Status + '_ {
    move |e| Status::internal(format!("{context}: {e}"))
}

/// Streams one file descriptor into the output channel until end of file.
/// A terminal's master reports EIO once the last slave closes: that is its end.
fn pump(
    fd: std::os::fd::OwnedFd,
    which: OutputStream,
    tx: mpsc::Sender<Result<OutputChunk, Status>>,
) -> Result<(), Status> {
    let mut reader =
        pipe::Receiver::from_owned_fd_unchecked(fd).map_err(internal("read output"))?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let chunk = OutputChunk {
                stream: which as i32,
                data: buf[..n].to_vec(),
            };
            // With nobody reading any more (exec -d, a client gone), keep
            // draining: the process must neither block on a full pipe nor
            // die of SIGPIPE.
            let _ = tx.send(Ok(chunk)).await;
        }
    });
    Ok(())
}

type OutputStreamBox = Pin<Box<dyn Stream<Item = Result<OutputChunk, Status>> + Send>>;
type LayerStreamBox = Pin<Box<dyn Stream<Item = Result<LayerChunk, Status>> + Send>>;

/// Hands what a blocking writer writes to an async stream in chunks.
struct ChunkSender(mpsc::Sender<Result<LayerChunk, Status>>);

impl std::io::Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let chunk = LayerChunk { data: buf.to_vec() };
        self.0
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the host stopped reading"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tonic::async_trait]
impl Agent for Service {
    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Response::new(PingResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_release: release,
            init_started_us: self.init_started.as_micros() as u64,
            agent_ready_us: self.agent_ready.as_micros() as u64,
        }))
    }

    async fn mount(
        &self,
        request: Request<MountRequest>,
    ) -> Result<Response<MountResponse>, Status> {
        let m = request.into_inner();
        make_dir(&m.target).map_err(Status::internal)?;
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        for option in &m.options {
            match option.as_str() {
                "ro" => flags |= MsFlags::MS_RDONLY,
                "nosuid" => flags |= MsFlags::MS_NOSUID,
                "nodev" => flags |= MsFlags::MS_NODEV,
                "noexec" => flags |= MsFlags::MS_NOEXEC,
                "bind" => flags |= MsFlags::MS_BIND,
                other => data.push(other),
            }
            // An overlay's upper and work directories are made like the target.
            if let Some(dir) = option
                .strip_prefix("upperdir=")
                .or_else(|| option.strip_prefix("workdir="))
            {
                make_dir(dir).map_err(Status::internal)?;
            }
        }
        let data = data.join(",");
        forget_cached(&m.source).map_err(internal("drop the cached blocks of a disk"))?;
        mount(
            Some(m.source.as_str()),
            m.target.as_str(),
            Some(m.fstype.as_str()),
            flags,
            Some(data.as_str()),
        )
        .map_err(|e| Status::internal(format!("mount {} on {}: {e}", m.source, m.target)))?;
        log::info(&format!("mounted {} on {}", m.source, m.target));
        self.mounts.lock().unwrap().push(m.target.clone());
        if m.grow {
            let bytes = resize::grow(&m.source, &m.target).map_err(Status::internal)?;
            log::info(&format!("grew {} to {bytes} bytes", m.target));
        }
        Ok(Response::new(MountResponse {}))
    }

    async fn umount(
        &self,
        request: Request<UmountRequest>,
    ) -> Result<Response<UmountResponse>, Status> {
        let r = request.into_inner();
        let flags = if r.lazy {
            MntFlags::MNT_DETACH
        } else {
            MntFlags::empty()
        };
        umount2(r.target.as_str(), flags)
            .map_err(|e| Status::internal(format!("unmount {}: {e}", r.target)))?;
        Ok(Response::new(UmountResponse {}))
    }

    async fn create_process(
        &self,
        request: Request<CreateProcessRequest>,
    ) -> Result<Response<CreateProcessResponse>, Status> {
        let r = request.into_inner();
        let spec = r
            .process
            .ok_or_else(|| Status::invalid_argument("missing process spec"))?;
        if spec.args.is_empty() {
            return Err(Status::invalid_argument(
                "the process has no command to run",
            ));
        }
        let target = match r
            .target
            .ok_or_else(|| Status::invalid_argument("missing process target"))?
        {
            RequestTarget::Container(c) => {
                let config = c.config.unwrap_or_default();
                cgroup::create(config.memory_limit_bytes, config.cpu_quota_millicpus)
                    .map_err(Status::internal)?;
                Target::NewContainer {
                    root: c.root,
                    config,
                }
            }
            RequestTarget::ExecIn(id) => Target::ExecIn(id),
        };
        self.processes.create(&r.id, target, spec).map_err(status)?;
        Ok(Response::new(CreateProcessResponse {}))
    }

    async fn start_process(
        &self,
        request: Request<ProcessRef>,
    ) -> Result<Response<StartProcessResponse>, Status> {
        let processes = self.processes.clone();
        let id = request.into_inner().id;
        let pid = tokio::task::spawn_blocking(move || processes.start(&id))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(StartProcessResponse { pid: pid.as_raw() }))
    }

    async fn read_output(
        &self,
        request: Request<ProcessRef>,
    ) -> Result<Response<OutputStreamBox>, Status> {
        let id = request.into_inner().id;
        let process = self.processes.get(&id).map_err(status)?;
        let output = process.output.lock().unwrap().take();
        let output = output.ok_or_else(|| {
            Status::failed_precondition(format!("output of process {id} is already being read"))
        })?;
        let (tx, rx) = mpsc::channel(16);
        match output {
            Output::Pipes { stdout, stderr } => {
                pump(stdout, OutputStream::Stdout, tx.clone())?;
                pump(stderr, OutputStream::Stderr, tx)?;
            }
            Output::Terminal(master) => pump(master, OutputStream::Stdout, tx)?,
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn write_stdin(
        &self,
        request: Request<Streaming<StdinChunk>>,
    ) -> Result<Response<WriteStdinResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty stdin stream"))??;
        let process = self.processes.get(&first.id).map_err(status)?;
        let fd = process.stdin.lock().unwrap().take();
        let fd = fd.ok_or_else(|| {
            Status::failed_precondition(format!("process {} has no stdin to write", first.id))
        })?;
        let mut writer =
            pipe::Sender::from_owned_fd_unchecked(fd).map_err(internal("write stdin"))?;
        let mut chunk = Some(first);
        while let Some(c) = chunk {
            if writer.write_all(&c.data).await.is_err() {
                break; // the process closed its stdin; the rest has nowhere to go
            }
            chunk = stream.next().await.transpose()?;
        }
        Ok(Response::new(WriteStdinResponse {}))
    }

    async fn wait_process(
        &self,
        request: Request<ProcessRef>,
    ) -> Result<Response<WaitProcessResponse>, Status> {
        let process = self
            .processes
            .get(&request.into_inner().id)
            .map_err(status)?;
        let exit = process.wait().await;
        let container_ended = exit.signal == Signal::SIGKILL as i32
            && self.processes.went_with_container(&process).await;
        Ok(Response::new(WaitProcessResponse {
            exit_code: exit.code,
            signal: exit.signal,
            container_ended,
        }))
    }

    async fn signal_process(
        &self,
        request: Request<SignalProcessRequest>,
    ) -> Result<Response<SignalProcessResponse>, Status> {
        let r = request.into_inner();
        let process = self.processes.get(&r.id).map_err(status)?;
        let pid = match (process.pid(), process.exited()) {
            (Some(pid), None) => pid,
            _ => return Err(status(process::Error::NotRunning(r.id))),
        };
        let signal = Signal::try_from(r.signal)
            .map_err(|_| Status::invalid_argument(format!("bad signal {}", r.signal)))?;
        kill(pid, signal).map_err(|e| Status::internal(format!("signal process {}: {e}", r.id)))?;
        Ok(Response::new(SignalProcessResponse {}))
    }

    async fn resize_process(
        &self,
        request: Request<ResizeProcessRequest>,
    ) -> Result<Response<ResizeProcessResponse>, Status> {
        let r = request.into_inner();
        self.processes
            .get(&r.id)
            .and_then(|p| p.resize(r.rows, r.cols))
            .map_err(status)?;
        Ok(Response::new(ResizeProcessResponse {}))
    }

    async fn delete_process(
        &self,
        request: Request<ProcessRef>,
    ) -> Result<Response<DeleteProcessResponse>, Status> {
        self.processes
            .delete(&request.into_inner().id)
            .map_err(status)?;
        Ok(Response::new(DeleteProcessResponse {}))
    }

    async fn write_file(
        &self,
        request: Request<WriteFileRequest>,
    ) -> Result<Response<WriteFileResponse>, Status> {
        let r = request.into_inner();
        if let Some(parent) = std::path::Path::new(&r.path).parent() {
            make_dir(&parent.to_string_lossy()).map_err(Status::internal)?;
        }
        let mode = if r.mode == 0 { 0o644 } else { r.mode };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .append(r.append)
            .truncate(!r.append)
            .mode(mode)
            .open(&r.path)
            .map_err(internal(&r.path))?;
        std::io::Write::write_all(&mut file, &r.data).map_err(internal(&r.path))?;
        Ok(Response::new(WriteFileResponse {}))
    }

    async fn stat(&self, request: Request<StatRequest>) -> Result<Response<StatResponse>, Status> {
        let path = request.into_inner().path;
        let meta = std::fs::symlink_metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Status::not_found(format!("{path}: no such file or directory"))
            }
            _ => Status::internal(format!("{path}: {e}")),
        })?;
        Ok(Response::new(StatResponse {
            mode: meta.mode(),
            size: meta.size(),
            uid: meta.uid(),
            gid: meta.gid(),
            mtime_seconds: meta.mtime(),
        }))
    }

    async fn sysctl(
        &self,
        request: Request<SysctlRequest>,
    ) -> Result<Response<SysctlResponse>, Status> {
        let r = request.into_inner();
        if r.key.is_empty() || r.key.contains("..") || r.key.contains('/') {
            return Err(Status::invalid_argument(format!(
                "invalid sysctl key {:?}",
                r.key
            )));
        }
        let path = format!("/proc/sys/{}", r.key.replace('.', "/"));
        std::fs::write(&path, &r.value).map_err(internal(&path))?;
        Ok(Response::new(SysctlResponse {}))
    }

    async fn set_time(
        &self,
        request: Request<SetTimeRequest>,
    ) -> Result<Response<SetTimeResponse>, Status> {
        let r = request.into_inner();
        let time = nix::sys::time::TimeSpec::new(r.seconds, i64::from(r.nanos));
        nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, time)
            .map_err(|e| Status::internal(format!("set the clock: {e}")))?;
        Ok(Response::new(SetTimeResponse {}))
    }

    async fn ip_link_set(
        &self,
        request: Request<IpLinkSetRequest>,
    ) -> Result<Response<IpLinkSetResponse>, Status> {
        let r = request.into_inner();
        network()?
            .link_set(&r.interface, r.up, r.mtu, &r.mac)
            .await
            .map_err(net_status)?;
        Ok(Response::new(IpLinkSetResponse {}))
    }

    async fn ip_addr_add(
        &self,
        request: Request<IpAddrAddRequest>,
    ) -> Result<Response<IpAddrAddResponse>, Status> {
        let r = request.into_inner();
        network()?
            .addr_add(&r.interface, &r.address)
            .await
            .map_err(net_status)?;
        Ok(Response::new(IpAddrAddResponse {}))
    }

    async fn ip_route_add(
        &self,
        request: Request<IpRouteAddRequest>,
    ) -> Result<Response<IpRouteAddResponse>, Status> {
        let r = request.into_inner();
        network()?
            .route_add(&r.destination, &r.gateway, &r.interface)
            .await
            .map_err(net_status)?;
        Ok(Response::new(IpRouteAddResponse {}))
    }

    async fn dhcp_acquire(
        &self,
        request: Request<DhcpAcquireRequest>,
    ) -> Result<Response<DhcpAcquireResponse>, Status> {
        let r = request.into_inner();
        let timeout = std::time::Duration::from_millis(r.timeout_ms.into());
        let lease = crate::dhcp::acquire(&r.interface, &r.hostname, timeout)
            .await
            .map_err(|e| match e {
                crate::dhcp::Error::NoAnswer { .. } => Status::deadline_exceeded(e.to_string()),
                _ => Status::unavailable(e.to_string()),
            })?;
        Ok(Response::new(DhcpAcquireResponse {
            address: format!("{}/{}", lease.address, lease.prefix),
            gateway: lease.router.map(|r| r.to_string()).unwrap_or_default(),
            dns: lease.dns.iter().map(ToString::to_string).collect(),
            mtu: lease.mtu.map_or(0, u32::from),
            lease_seconds: lease.seconds.unwrap_or(0),
        }))
    }

    async fn statistics(
        &self,
        _: Request<StatisticsRequest>,
    ) -> Result<Response<StatisticsResponse>, Status> {
        let u = cgroup::usage();
        Ok(Response::new(StatisticsResponse {
            cpu_usage_usec: u.cpu_usage_usec,
            memory_current_bytes: u.memory_current_bytes,
            memory_max_bytes: u.memory_max_bytes,
            io_read_bytes: u.io_read_bytes,
            io_write_bytes: u.io_write_bytes,
            pids_current: u.pids_current,
        }))
    }

    async fn read_layer(
        &self,
        request: Request<ReadLayerRequest>,
    ) -> Result<Response<LayerStreamBox>, Status> {
        let r = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::task::spawn_blocking(move || {
            let errors = tx.clone();
            // Tar writes 512-byte blocks; send them in bigger messages.
            let out = std::io::BufWriter::with_capacity(1 << 16, ChunkSender(tx));
            let upper = std::path::Path::new(&r.upper);
            if let Err(e) = agent_proto::layer::pack_upper(upper, r.clamp_mtime, &r.exclude, out) {
                let status = Status::internal(format!("read the changes in {}: {e}", r.upper));
                let _ = errors.blocking_send(Err(status));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn write_layer(
        &self,
        request: Request<Streaming<WriteLayerChunk>>,
    ) -> Result<Response<WriteLayerResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty layer stream"))??;
        let dir = first.dir.clone();
        let (read, write) = nix::unistd::pipe().map_err(|e| internal("make a pipe")(e.into()))?;
        let mut writer =
            pipe::Sender::from_owned_fd_unchecked(write).map_err(internal("make a pipe"))?;
        let target = dir.clone();
        let unpack = tokio::task::spawn_blocking(move || {
            let input = std::io::BufReader::with_capacity(1 << 16, std::fs::File::from(read));
            agent_proto::layer::unpack_lower(input, std::path::Path::new(&target))
        });
        let mut chunk = Some(first);
        while let Some(c) = chunk {
            if writer.write_all(&c.data).await.is_err() {
                break; // the unpacking failed; it says why below
            }
            chunk = stream.next().await.transpose()?;
        }
        drop(writer);
        unpack
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("unpack a layer into {dir}: {e}")))?;
        Ok(Response::new(WriteLayerResponse {}))
    }

    async fn shutdown(
        &self,
        _: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        let processes = self.processes.clone();
        let mounts = self.mounts.clone();
        // Answer first, then power off: the host waits for the VM to end.
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            for pid in processes.running() {
                let _ = kill(pid, Signal::SIGKILL);
            }
            // Their mounts go with them; give the reaper a moment.
            for _ in 0..50 {
                if processes.running().is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            nix::unistd::sync();
            // Unmounted, the container's disk is left clean for its next start.
            for target in mounts.lock().unwrap().iter().rev() {
                if let Err(e) = umount2(target.as_str(), MntFlags::empty()) {
                    log::error(&format!("unmount {target}: {e}"));
                }
            }
            log::info(&format!("powering off; peak memory {}", log::peak_memory()));
            let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
        });
        Ok(Response::new(ShutdownResponse {}))
    }
}
