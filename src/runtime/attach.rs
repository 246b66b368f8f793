//! Attaching the user's terminal to a container process: its output to our
//! stdout and stderr, our stdin to it, our terminal's size and signals.

use std::io::{IsTerminal, Write};

use agent_proto::output_chunk::Stream as OutputStream;
use agent_proto::{
    OutputChunk, ProcessRef, ResizeProcessRequest, SignalProcessRequest, StdinChunk,
};
use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::StreamExt;
use tonic::Streaming;

use super::{Error, agent, io};

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

/// One process's attachment.
pub struct Session {
    pub agent: agent::Client,
    pub process: String,
}

impl Session {
    /// Pumps until the process's output ends, then returns its exit code.
    pub async fn run(
        &self,
        mut output: Streaming<OutputChunk>,
        stdin: bool,
        terminal: Option<Terminal>,
    ) -> Result<i32, Error> {
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
                self.clone_agent().forward_signals(self.process.clone()),
            ));
        }
        let result = async {
            while let Some(chunk) = output.message().await? {
                let written = match OutputStream::try_from(chunk.stream) {
                    Ok(OutputStream::Stderr) => {
                        write_all_flush(&mut std::io::stderr().lock(), &chunk.data)
                    }
                    _ => write_all_flush(&mut std::io::stdout().lock(), &chunk.data),
                };
                written.map_err(io("write the container's output"))?;
            }
            let mut agent = self.agent.clone();
            let exit = agent
                .wait_process(ProcessRef {
                    id: self.process.clone(),
                })
                .await?
                .into_inner();
            Ok(exit.exit_code)
        }
        .await;
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
    async fn forward_signals(mut self, id: String) {
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
        while let Some((number, ())) = streams.next().await {
            let _ = self
                .agent
                .signal_process(SignalProcessRequest {
                    id: id.clone(),
                    signal: number,
                })
                .await;
        }
    }
}

fn write_all_flush(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    out.write_all(data)?;
    out.flush()
}
