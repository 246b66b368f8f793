//! Attaching the user's terminal to a container process: its output to
//! where the caller says ([`Output`]), our stdin to it, our terminal's size
//! and signals. Nothing here prints or exits: how an attachment ended is
//! returned ([`Ended`]) for the CLI to tell.

use std::io::IsTerminal;

use agent_proto::output_chunk::Stream as OutputStream;
use agent_proto::{OutputChunk, ResizeProcessRequest, SignalProcessRequest, StdinChunk};
use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::StreamExt;
use tonic::Streaming;

use super::container::Container;
use super::supervisor::INIT_PROCESS;
use super::{Error, agent, logs, process_ref};
use crate::io_error::io;

/// Where an attached process's output goes: the runtime moves the bytes,
/// the CLI decides where they land (its own stdout and stderr).
pub trait Output: Sync {
    fn write(&self, stream: logs::Stream, data: &[u8]) -> std::io::Result<()>;
}

/// How an attachment ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The process exited with this code.
    Exited(i32),
    /// It could not be started (no such command, not executable): the
    /// agent's words, and Docker's code for it (127, 126).
    NotStarted { message: String, code: i32 },
    /// SIGINT or SIGTERM came a third time: we let go of a process that
    /// ignores them, and it keeps running. The signal that did it.
    Abandoned(i32),
}

impl Ended {
    /// The exit code as Docker gives it: the process's, 126 or 127 when it
    /// could not start, 128 + the signal when we let go.
    pub fn code(&self) -> i32 {
        match self {
            Ended::Exited(code) | Ended::NotStarted { code, .. } => *code,
            Ended::Abandoned(signal) => 128 + signal,
        }
    }
}

/// Our terminal in raw mode for the duration of a `-t` session, so keys
/// (Ctrl-C included) go to the container's terminal, not ours. The mode is
/// restored on drop, on every way out.
pub struct Terminal {
    original: Option<Termios>,
}

impl Terminal {
    pub fn open() -> std::io::Result<Terminal> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(Terminal { original: None });
        }
        let original = tcgetattr(&stdin)?;
        let mut raw = original.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw)?;
        Ok(Terminal {
            original: Some(original),
        })
    }

    /// Rows and columns of our terminal, if we have one.
    pub fn size(&self) -> Option<(u32, u32)> {
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
            // SAFETY: TIOCGWINSZ writes into the struct we pass.
            if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0 && size.ws_row > 0 {
                return Some((u32::from(size.ws_row), u32::from(size.ws_col)));
            }
        }
        None
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(original) = &self.original {
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, original);
        }
    }
}

/// Attached to a container's main process: its output from stdio.log (the
/// supervisor writes it), our stdin, terminal size and signals through the
/// agent socket once the supervisor serves it. Returns the supervisor's
/// exit code, which is the workload's.
pub async fn follow(
    container: &Container,
    mut supervisor: tokio::process::Child,
    terminal: Option<Terminal>,
    stdin: bool,
    output: &dyn Output,
) -> Result<Ended, Error> {
    let spec = &container.config.spec;
    let socket = container.agent_socket();
    // Only a container created with -i has a stdin to write to.
    let (stdin, tty) = (stdin && spec.interactive, spec.tty);
    let (abandon, mut abandoned) = tokio::sync::oneshot::channel();
    let forwarding = tokio::spawn(async move {
        // The socket appears once the main process has started.
        let agent = loop {
            if socket.exists()
                && let Ok(agent) = agent::connect_socket(&socket).await
            {
                break agent;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        let mut tasks = Vec::new();
        if stdin {
            tasks.push(tokio::spawn(
                Forwarder {
                    agent: agent.clone(),
                }
                .forward_stdin(INIT_PROCESS.into()),
            ));
        }
        if tty {
            tasks.push(tokio::spawn(
                Forwarder {
                    agent: agent.clone(),
                }
                .forward_resizes(INIT_PROCESS.into()),
            ));
        } else {
            tasks.push(tokio::spawn(
                Forwarder { agent }.forward_signals(INIT_PROCESS.into(), abandon),
            ));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
    let mut offset = 0u64;
    let mut log = None;
    let ended = loop {
        let exited = supervisor
            .try_wait()
            .map_err(io("wait for the supervisor"))?;
        if log.is_none() {
            log = std::fs::File::open(container.stdio_log()).ok();
        }
        let progressed = match &mut log {
            Some(file) => copy_new_records(file, &mut offset, output)?,
            None => false,
        };
        if let Some(status) = exited {
            // One last read: what was written before it exited.
            if let Some(file) = &mut log {
                copy_new_records(file, &mut offset, output)?;
            }
            break Ended::Exited(
                status
                    .code()
                    .unwrap_or(super::supervisor::EXIT_RUNTIME_ERROR),
            );
        }
        if let Ok(signal) = abandoned.try_recv() {
            break Ended::Abandoned(signal);
        }
        if !progressed {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    forwarding.abort();
    drop(terminal);
    Ok(ended)
}

/// Copies the complete records after `offset` to `output`.
pub fn copy_new_records(
    file: &mut std::fs::File,
    offset: &mut u64,
    output: &dyn Output,
) -> Result<bool, Error> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(*offset))
        .map_err(io("read stdio.log"))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io("read stdio.log"))?;
    let (records, used) = logs::parse(&bytes);
    for record in &records {
        write(output, record.stream, record.data)?;
    }
    *offset += used as u64;
    Ok(used > 0)
}

/// One piece of a container's output, to `output`.
pub fn write(output: &dyn Output, stream: logs::Stream, data: &[u8]) -> Result<(), Error> {
    Ok(output
        .write(stream, data)
        .map_err(io("write the container's output"))?)
}

/// Creates a process beside a container's main one, not yet started.
async fn create_in_container(
    agent: &mut agent::Client,
    id: &str,
    process: agent_proto::ProcessSpec,
) -> Result<(), Error> {
    let target = agent_proto::create_process_request::Target::ExecIn(INIT_PROCESS.into());
    agent
        .create_process(agent_proto::CreateProcessRequest {
            id: id.into(),
            process: Some(process),
            target: Some(target),
        })
        .await?;
    Ok(())
}

/// Starts a created process and opens its output, both requests at once
/// (each answer waited for costs a round trip into the guest); a pipe keeps
/// what the process writes before its output is open.
async fn start_reading(
    agent: &mut agent::Client,
    id: &str,
) -> (
    Result<Streaming<OutputChunk>, Error>,
    Result<(), tonic::Status>,
) {
    let mut reader = agent.clone();
    let (output, started) = tokio::join!(
        reader.read_output(process_ref(id)),
        agent.start_process(process_ref(id))
    );
    (
        output.map(|o| o.into_inner()).map_err(Error::from),
        started.map(drop),
    )
}

/// Runs a process in the running container `name` and attaches to it
/// (unless detached).
pub async fn exec(
    mut agent: agent::Client,
    name: &str,
    process: agent_proto::ProcessSpec,
    detach: bool,
    output: &dyn Output,
) -> Result<Ended, Error> {
    let id = format!("exec-{}", &super::id::new()?[..12]);
    let terminal = if process.terminal && !detach {
        Some(Terminal::open().map_err(io("set up the terminal"))?)
    } else {
        None
    };
    let mut process = process;
    if let Some((rows, cols)) = terminal.as_ref().and_then(|t| t.size()) {
        (process.rows, process.cols) = (rows, cols);
    }
    let stdin = process.stdin && !detach;
    let mut phases = crate::phases::Phases::start();
    create_in_container(&mut agent, &id, process).await?;
    phases.done("exec: create");
    let (stream, started) = start_reading(&mut agent, &id).await;
    if let Err(status) = started {
        let code =
            super::supervisor::not_started(&status).ok_or_else(|| Error::from(status.clone()))?;
        return Ok(Ended::NotStarted {
            message: status.message().to_string(),
            code,
        });
    }
    let stream = stream?;
    phases.done("exec: process started");
    if detach {
        // vminitd drains the output of a process nobody reads.
        return Ok(Ended::Exited(0));
    }
    let end = Session { agent, process: id }
        .run(stream, stdin, terminal, output)
        .await?;
    phases.done("exec: process ran");
    match end {
        SessionEnd::Exited(exit) if exit.container_ended => {
            Err(Error::NotRunning(name.to_string()))
        }
        SessionEnd::Exited(exit) => Ok(Ended::Exited(exit.exit_code)),
        SessionEnd::Abandoned(signal) => Ok(Ended::Abandoned(signal)),
    }
}

/// How a session ended: the agent's word on the process, or our letting go.
pub enum SessionEnd {
    Exited(agent_proto::WaitProcessResponse),
    Abandoned(i32),
}

/// One process's attachment.
pub struct Session {
    pub agent: agent::Client,
    pub process: String,
}

impl Session {
    /// Pumps until the process's output ends, then returns how it ended.
    pub async fn run(
        &self,
        mut stream: Streaming<OutputChunk>,
        stdin: bool,
        terminal: Option<Terminal>,
        output: &dyn Output,
    ) -> Result<SessionEnd, Error> {
        let (abandon, abandoned) = tokio::sync::oneshot::channel();
        let mut background = Vec::new();
        if stdin {
            background.push(tokio::spawn(
                self.clone_agent().forward_stdin(self.process.clone()),
            ));
        }
        if let Some(terminal) = &terminal {
            if terminal.original.is_some() {
                background.push(tokio::spawn(
                    self.clone_agent().forward_resizes(self.process.clone()),
                ));
            }
        } else {
            background.push(tokio::spawn(
                self.clone_agent()
                    .forward_signals(self.process.clone(), abandon),
            ));
        }
        let pump = async {
            while let Some(chunk) = stream.message().await? {
                let which = match OutputStream::try_from(chunk.stream) {
                    Ok(OutputStream::Stderr) => logs::Stream::Stderr,
                    _ => logs::Stream::Stdout,
                };
                write(output, which, &chunk.data)?;
            }
            Ok::<_, Error>(())
        };
        // Asked with the output open, answered at the exit: no round trip after.
        let mut waiter = self.agent.clone();
        let wait = async {
            Ok::<_, Error>(
                waiter
                    .wait_process(process_ref(&self.process))
                    .await?
                    .into_inner(),
            )
        };
        let finished =
            async { tokio::try_join!(pump, wait).map(|((), exit)| SessionEnd::Exited(exit)) };
        // With a terminal nothing lets go: keys reach the process as bytes.
        let let_go = async {
            match abandoned.await {
                Ok(signal) => signal,
                Err(_) => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            result = finished => result,
            signal = let_go => Ok(SessionEnd::Abandoned(signal)),
        };
        for task in background {
            task.abort();
        }
        drop(terminal);
        result
    }

    fn clone_agent(&self) -> Forwarder {
        Forwarder {
            agent: self.agent.clone(),
        }
    }
}

/// Background work of a session, each with its own agent handle.
struct Forwarder {
    agent: agent::Client,
}

impl Forwarder {
    /// Our stdin to the process; our end of file closes its stdin.
    async fn forward_stdin(mut self, id: String) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let reader = tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut first = Some(id);
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = stdin.read(&mut buf).await.unwrap_or(0);
                // The first message names the process, even when stdin is empty.
                if n == 0 && first.is_none() {
                    break;
                }
                let chunk = StdinChunk {
                    id: first.take().unwrap_or_default(),
                    data: buf[..n].to_vec(),
                };
                if tx.send(chunk).await.is_err() || n == 0 {
                    break;
                }
            }
        });
        let _ = self
            .agent
            .write_stdin(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        reader.abort();
    }

    async fn forward_resizes(mut self, id: String) {
        let Ok(mut winch) = signal(SignalKind::window_change()) else {
            return;
        };
        while winch.recv().await.is_some() {
            if let Some((rows, cols)) = (Terminal { original: None }).size() {
                let _ = self
                    .agent
                    .resize_process(ResizeProcessRequest {
                        id: id.clone(),
                        rows,
                        cols,
                    })
                    .await;
            }
        }
    }

    /// Without a terminal, our signals are the process's: Ctrl-C, `kill`.
    /// A workload that ignores Ctrl-C must not trap the user: the third
    /// interrupt or terminate is sent on `abandon`, to let go of it.
    async fn forward_signals(mut self, id: String, abandon: tokio::sync::oneshot::Sender<i32>) {
        let kinds = [
            (SignalKind::interrupt(), libc::SIGINT),
            (SignalKind::terminate(), libc::SIGTERM),
            (SignalKind::hangup(), libc::SIGHUP),
            (SignalKind::quit(), libc::SIGQUIT),
        ];
        let mut streams = tokio_stream::StreamMap::new();
        for (kind, number) in kinds {
            if let Ok(s) = signal(kind) {
                streams.insert(number, tokio_stream::wrappers::SignalStream::new(s));
            }
        }
        let mut stops = 0;
        while let Some((number, ())) = streams.next().await {
            let _ = self
                .agent
                .signal_process(SignalProcessRequest {
                    id: id.clone(),
                    signal: number,
                })
                .await;
            if number == libc::SIGINT || number == libc::SIGTERM {
                stops += 1;
                if stops == 3 {
                    let _ = abandon.send(number);
                    return;
                }
            }
        }
    }
}

/// Runs one of vminitd's built-in tools in a running container, feeding it
/// `input` (if any) and handing its stdout to `output` as it comes.
pub async fn builtin(
    mut agent: agent::Client,
    builtin: agent_proto::Builtin,
    path: &str,
    input: Option<tokio::sync::mpsc::Receiver<Vec<u8>>>,
    output: std::sync::mpsc::SyncSender<Vec<u8>>,
) -> Result<(), Error> {
    let id = format!("copy-{}", &super::id::new()?[..12]);
    let mut process = agent_proto::ProcessSpec {
        args: vec![path.to_string()],
        stdin: input.is_some(),
        ..Default::default()
    };
    process.set_builtin(builtin);
    create_in_container(&mut agent, &id, process).await?;
    let (stream, started) = start_reading(&mut agent, &id).await;
    started?;
    let mut stream = stream?;
    if let Some(input) = input {
        let mut writer = agent.clone();
        // The first chunk names the process; the rest stream as they come.
        let chunks = tokio_stream::once(StdinChunk {
            id: id.clone(),
            data: vec![],
        })
        .chain(
            tokio_stream::wrappers::ReceiverStream::new(input).map(|data| StdinChunk {
                id: String::new(),
                data,
            }),
        );
        tokio::spawn(async move {
            let _ = writer.write_stdin(chunks).await;
        });
    }
    let mut errors = Vec::new();
    while let Some(chunk) = stream.message().await? {
        match OutputStream::try_from(chunk.stream) {
            Ok(OutputStream::Stderr) => errors.extend_from_slice(&chunk.data),
            _ => {
                if output.send(chunk.data).is_err() {
                    break;
                }
            }
        }
    }
    // Unread output must not hold the tool up: the guest drains what nobody reads.
    drop(stream);
    let exit = agent.wait_process(process_ref(&id)).await?.into_inner();
    if exit.exit_code != 0 {
        return Err(Error::InContainer(
            String::from_utf8_lossy(&errors).trim().to_string(),
        ));
    }
    Ok(())
}
