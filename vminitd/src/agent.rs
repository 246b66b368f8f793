//! The agent API server: what the host can ask of the guest.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use agent_proto::agent_server::{Agent, AgentServer};
use agent_proto::output_chunk::Stream as OutputStream;
use agent_proto::*;
use futures::Stream;
use nix::mount::{MsFlags, mount};
use nix::sys::signal::{Signal, kill};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_vsock::{VMADDR_CID_ANY, VMADDR_CID_HOST, VsockAddr, VsockListener, VsockStream};
use tonic::{Request, Response, Status, Streaming};

use crate::boot::make_dir;
use crate::log;
use crate::process::{self, Table};

pub async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let service = Service::default();
    let processes = service.processes.clone();
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        while sigchld.recv().await.is_some() {
            processes.reap();
        }
    });
    let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, AGENT_PORT))?;
    log::info(&format!("agent listening on vsock port {AGENT_PORT}"));
    tokio::spawn(announce_ready());
    tonic::transport::Server::builder()
        .add_service(AgentServer::new(service))
        .serve_with_incoming(listener.incoming())
        .await?;
    Ok(())
}

/// Tells the host the agent is listening by dialling its READY_PORT. The
/// host binds that port before boot, so one try normally suffices; a few
/// more cover a host that is slow to accept.
async fn announce_ready() {
    for attempt in 0..50 {
        match VsockStream::connect(VsockAddr::new(VMADDR_CID_HOST, READY_PORT)).await {
            Ok(_) => return,
            Err(e) if attempt == 49 => {
                log::error(&format!("could not tell the host we are ready: {e}"))
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

#[derive(Default)]
struct Service {
    processes: Arc<Table>,
    /// Roots whose /proc, /sys and /dev are already mounted.
    prepared_roots: Mutex<HashSet<String>>,
}

impl Service {
    /// Gives a container root the kernel filesystems a process expects.
    fn prepare_root(&self, root: &str) -> Result<(), Status> {
        if root == "/" || !self.prepared_roots.lock().unwrap().insert(root.to_string()) {
            return Ok(());
        }
        let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let mounts: [(&str, &str, &str, MsFlags); 3] = [
            ("proc", "proc", "proc", nodev),
            ("sysfs", "sys", "sysfs", nodev),
            ("/dev", "dev", "", MsFlags::MS_BIND | MsFlags::MS_REC),
        ];
        for (source, dir, fstype, flags) in mounts {
            let target = format!("{root}/{dir}");
            make_dir(&target).map_err(Status::internal)?;
            let fstype = (!fstype.is_empty()).then_some(fstype);
            mount(Some(source), target.as_str(), fstype, flags, None::<&str>)
                .map_err(|e| Status::internal(format!("mount {source} on {target}: {e}")))?;
        }
        Ok(())
    }
}

fn status(e: process::Error) -> Status {
    match e {
        process::Error::NotFound(_) => Status::not_found(e.to_string()),
        process::Error::Exists(_) => Status::already_exists(e.to_string()),
        process::Error::AlreadyStarted(_) => Status::failed_precondition(e.to_string()),
        process::Error::TerminalUnsupported => Status::unimplemented(e.to_string()),
        process::Error::NoArgs | process::Error::Nul => Status::invalid_argument(e.to_string()),
        process::Error::Spawn(ref io) if io.kind() == std::io::ErrorKind::NotFound => {
            Status::not_found(e.to_string())
        }
        process::Error::Spawn(ref io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            Status::permission_denied(e.to_string())
        }
        process::Error::Pipe(_) | process::Error::Spawn(_) => Status::internal(e.to_string()),
    }
}

type OutputStreamBox = Pin<Box<dyn Stream<Item = Result<OutputChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for Service {
    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Response::new(PingResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_release: release,
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
                other => data.push(other),
            }
        }
        let data = data.join(",");
        mount(
            Some(m.source.as_str()),
            m.target.as_str(),
            Some(m.fstype.as_str()),
            flags,
            Some(data.as_str()),
        )
        .map_err(|e| Status::internal(format!("mount {} on {}: {e}", m.source, m.target)))?;
        log::info(&format!("mounted {} on {}", m.source, m.target));
        Ok(Response::new(MountResponse {}))
    }

    async fn create_process(
        &self,
        request: Request<CreateProcessRequest>,
    ) -> Result<Response<CreateProcessResponse>, Status> {
        let r = request.into_inner();
        let spec = r
            .process
            .ok_or_else(|| Status::invalid_argument("missing process spec"))?;
        let root = if r.root.is_empty() {
            "/".to_string()
        } else {
            r.root
        };
        self.prepare_root(&root)?;
        if !spec.cwd.is_empty() {
            make_dir(&format!("{root}/{}", spec.cwd)).map_err(Status::internal)?;
        }
        self.processes.create(&r.id, &root, spec).map_err(status)?;
        Ok(Response::new(CreateProcessResponse {}))
    }

    async fn start_process(
        &self,
        request: Request<ProcessRef>,
    ) -> Result<Response<StartProcessResponse>, Status> {
        let pid = self
            .processes
            .start(&request.into_inner().id)
            .map_err(status)?;
        Ok(Response::new(StartProcessResponse { pid: pid.as_raw() }))
    }

    type ReadOutputStream = OutputStreamBox;

    async fn read_output(
        &self,
        request: Request<ProcessRef>,
    ) -> Result<Response<Self::ReadOutputStream>, Status> {
        let id = request.into_inner().id;
        let process = self.processes.get(&id).map_err(status)?;
        let output = process.output.lock().unwrap().take();
        let Some((stdout, stderr)) = output else {
            return Err(Status::failed_precondition(format!(
                "output of process {id} is already being read"
            )));
        };
        let (tx, rx) = mpsc::channel(16);
        for (fd, which) in [
            (stdout, OutputStream::Stdout),
            (stderr, OutputStream::Stderr),
        ] {
            let tx = tx.clone();
            let mut reader =
                pipe::Receiver::from_owned_fd(fd).map_err(|e| Status::internal(e.to_string()))?;
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let chunk = OutputChunk {
                                stream: which as i32,
                                data: buf[..n].to_vec(),
                            };
                            if tx.send(Ok(chunk)).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
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
            pipe::Sender::from_owned_fd(fd).map_err(|e| Status::internal(e.to_string()))?;
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
        Ok(Response::new(WaitProcessResponse {
            exit_code: exit.code,
            signal: exit.signal,
        }))
    }

    async fn signal_process(
        &self,
        request: Request<SignalProcessRequest>,
    ) -> Result<Response<SignalProcessResponse>, Status> {
        let r = request.into_inner();
        let process = self.processes.get(&r.id).map_err(status)?;
        let pid = process.pid().ok_or_else(|| {
            Status::failed_precondition(format!("process {} is not started", r.id))
        })?;
        let signal = Signal::try_from(r.signal)
            .map_err(|_| Status::invalid_argument(format!("bad signal {}", r.signal)))?;
        kill(pid, signal).map_err(|e| Status::internal(format!("signal process {}: {e}", r.id)))?;
        Ok(Response::new(SignalProcessResponse {}))
    }

    async fn shutdown(
        &self,
        _: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        let processes = self.processes.clone();
        // Answer first, then power off: the host waits for the VM to end.
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            for pid in processes.running() {
                let _ = kill(pid, Signal::SIGKILL);
            }
            nix::unistd::sync();
            log::info("powering off");
            let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
        });
        Ok(Response::new(ShutdownResponse {}))
    }
}
