//! The processes vminitd runs for the host, and the reaper every PID 1 needs.
//!
//! vminitd never waits on a child directly: one reaper collects every exit
//! (launchers and re-parented orphans alike) and hands the status to the
//! process that owns the PID. Waiting per child would race the reaper.
//! Each process is put in place by a launcher (see launch.rs), whose exit
//! mirrors the workload's.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use agent_proto::ProcessSpec;
use nix::fcntl::OFlag;
use nix::pty::{Winsize, openpty};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use prost::Message;
use tokio::sync::watch;

use crate::launch::{self, Launch};

/// How a process ended, as a shell reports it.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub code: i32,
    pub signal: i32,
}

/// The host's side of a process's output.
pub enum Output {
    Pipes {
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A terminal's master side: stdout and stderr arrive merged.
    Terminal(OwnedFd),
}

/// Where a process runs.
pub enum Target {
    NewContainer {
        root: String,
        config: agent_proto::ContainerConfig,
    },
    /// Inside the container of this (running) process.
    ExecIn(String),
}

pub struct Process {
    spec: ProcessSpec,
    target: Target,
    /// The launcher's stdin, stdout, stderr, held between create and start.
    child_stdio: Mutex<Option<[OwnedFd; 3]>>,
    /// Taken by the one ReadOutput call.
    pub output: Mutex<Option<Output>>,
    /// Taken by the one WriteStdin call.
    pub stdin: Mutex<Option<OwnedFd>>,
    /// The terminal's master side, for resizing.
    terminal: Option<OwnedFd>,
    /// The workload (or its init) as seen from the guest.
    pid: Mutex<Option<Pid>>,
    exit: watch::Sender<Option<Exit>>,
}

impl Process {
    pub fn pid(&self) -> Option<Pid> {
        *self.pid.lock().unwrap()
    }

    pub fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// Resolves once the process has exited.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit.subscribe();
        loop {
            if let Some(exit) = *rx.borrow_and_update() {
                return exit;
            }
            if rx.changed().await.is_err() {
                unreachable!("the sender lives in self");
            }
        }
    }

    pub fn resize(&self, rows: u32, cols: u32) -> Result<(), Error> {
        let master = self.terminal.as_ref().ok_or(Error::NoTerminal)?;
        let size = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ reads the struct we pass.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
            return Err(Error::Io(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("process {0} already exists")]
    Exists(String),
    #[error("process {0} not found")]
    NotFound(String),
    #[error("process {0} was already started")]
    AlreadyStarted(String),
    #[error("process {0} is not running")]
    NotRunning(String),
    #[error("process {0} is still running")]
    StillRunning(String),
    #[error("process has no terminal")]
    NoTerminal,
    #[error("{message}")]
    Start { code: i32, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Sys(#[from] nix::Error),
}

#[derive(Default)]
pub struct Table {
    processes: Mutex<HashMap<String, Arc<Process>>>,
    /// Launcher PID -> owner, consulted by the reaper. Spawning inserts under
    /// this lock, so the reaper never sees a PID before its owner is recorded.
    by_pid: Mutex<HashMap<i32, Arc<Process>>>,
}

fn winsize(rows: u32, cols: u32) -> Winsize {
    Winsize {
        ws_row: rows as u16,
        ws_col: cols as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

fn set_cloexec(fd: &OwnedFd) -> Result<(), Error> {
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(())
}

/// An exec'd process is confined exactly as the container's first process,
/// whatever the exec request says: its capabilities, resource limits and
/// no_new_privs come from the container, as in Docker and Apple's runtime.
/// (Its cgroup, namespaces and masked paths come with joining the container.)
fn confined_like(mut spec: ProcessSpec, first: &ProcessSpec) -> ProcessSpec {
    spec.cap_add = first.cap_add.clone();
    spec.cap_drop = first.cap_drop.clone();
    spec.rlimits = first.rlimits.clone();
    spec.no_new_privileges = first.no_new_privileges;
    spec
}

impl Table {
    pub fn get(&self, id: &str) -> Result<Arc<Process>, Error> {
        self.processes
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    pub fn create(&self, id: &str, target: Target, spec: ProcessSpec) -> Result<(), Error> {
        let mut processes = self.processes.lock().unwrap();
        if processes.contains_key(id) {
            return Err(Error::Exists(id.to_string()));
        }
        let (child_stdio, output, stdin, terminal) = if spec.terminal {
            let pty = openpty(Some(&winsize(spec.rows, spec.cols)), None)?;
            set_cloexec(&pty.master)?;
            set_cloexec(&pty.slave)?;
            let stdio = [pty.slave.try_clone()?, pty.slave.try_clone()?, pty.slave];
            let stdin = spec.stdin.then(|| pty.master.try_clone()).transpose()?;
            let resize = pty.master.try_clone()?;
            (stdio, Output::Terminal(pty.master), stdin, Some(resize))
        } else {
            let (stdin_child, stdin_host) = if spec.stdin {
                let (r, w) = cloexec_pipe()?;
                (r, Some(w))
            } else {
                (std::fs::File::open("/dev/null")?.into(), None)
            };
            let (stdout_host, stdout_child) = cloexec_pipe()?;
            let (stderr_host, stderr_child) = cloexec_pipe()?;
            let output = Output::Pipes {
                stdout: stdout_host,
                stderr: stderr_host,
            };
            (
                [stdin_child, stdout_child, stderr_child],
                output,
                stdin_host,
                None,
            )
        };
        let process = Process {
            spec,
            target,
            child_stdio: Mutex::new(Some(child_stdio)),
            output: Mutex::new(Some(output)),
            stdin: Mutex::new(stdin),
            terminal,
            pid: Mutex::new(None),
            exit: watch::channel(None).0,
        };
        processes.insert(id.to_string(), Arc::new(process));
        Ok(())
    }

    /// Starts a created process; blocks until the workload runs (or failed
    /// to), so call it off the async threads.
    pub fn start(&self, id: &str) -> Result<Pid, Error> {
        let process = self.get(id)?;
        let stdio = process
            .child_stdio
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| Error::AlreadyStarted(id.to_string()))?;
        let launch = match &process.target {
            Target::NewContainer { root, config } => Launch {
                process: Some(process.spec.clone()),
                root: root.clone(),
                config: Some(config.clone()),
                join_pid: 0,
            },
            Target::ExecIn(other) => {
                let other = self.get(other)?;
                let pid = match (other.pid(), other.exited()) {
                    (Some(pid), None) => pid,
                    _ => return Err(Error::NotRunning(id.to_string())),
                };
                Launch {
                    process: Some(confined_like(process.spec.clone(), &other.spec)),
                    root: String::new(),
                    config: None,
                    join_pid: pid.as_raw(),
                }
            }
        };
        let (status_read, status_write) = cloexec_pipe()?;
        let [stdin, stdout, stderr] = stdio;
        // Our own binary by its path (not /proc/self/exe), so ps in a
        // container with --init names its PID 1 `init`.
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg0("vminitd")
            .arg(launch::ARG)
            .env_clear()
            .env(launch::ENV, launch::encode_hex(&launch.encode_to_vec()))
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        let status_fd = status_write.as_raw_fd();
        // SAFETY: dup2 is async-signal-safe; it clears close-on-exec on the copy.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(status_fd, launch::STATUS_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        {
            let mut by_pid = self.by_pid.lock().unwrap();
            let launcher = command.spawn()?;
            by_pid.insert(launcher.id() as i32, process.clone());
        }
        drop(command);
        drop(status_write);
        let mut pid = None;
        for line in BufReader::new(std::fs::File::from(status_read)).lines() {
            let line = line?;
            if let Some(n) = line.strip_prefix("pid ") {
                pid = n.parse().ok().map(Pid::from_raw);
                *process.pid.lock().unwrap() = pid;
            } else if let Some(rest) = line.strip_prefix("error ") {
                let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
                if code.parse() == Ok(launch::EXIT_CONTAINER_GONE) {
                    return Err(Error::NotRunning(id.to_string()));
                }
                return Err(Error::Start {
                    code: code.parse().unwrap_or(1),
                    message: message.to_string(),
                });
            }
        }
        pid.ok_or_else(|| Error::Start {
            code: 1,
            message: "the launcher died before starting the process".into(),
        })
    }

    /// Whether a killed exec'd process went with its container: the
    /// container's first process ends too. When that process dies, the
    /// kernel kills the rest of its PID namespace at once and the reaper
    /// takes the exits in any order, so its end may follow a moment later.
    pub async fn went_with_container(&self, process: &Process) -> bool {
        let Target::ExecIn(first) = &process.target else {
            return false;
        };
        let Ok(first) = self.get(first) else {
            return false;
        };
        let moment = std::time::Duration::from_millis(500);
        tokio::time::timeout(moment, first.wait()).await.is_ok()
    }

    /// Forgets an exited process.
    pub fn delete(&self, id: &str) -> Result<(), Error> {
        let process = self.get(id)?;
        if process.pid().is_some() && process.exited().is_none() {
            return Err(Error::StillRunning(id.to_string()));
        }
        self.processes.lock().unwrap().remove(id);
        Ok(())
    }

    /// Collects every exited child and reports it to its owner. Called on
    /// each SIGCHLD; orphans reparented to us are reaped too.
    pub fn reap(&self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => status,
            };
            let (pid, exit) = match status {
                WaitStatus::Exited(pid, code) => (pid, Exit { code, signal: 0 }),
                WaitStatus::Signaled(pid, signal, _) => (
                    pid,
                    Exit {
                        code: 128 + signal as i32,
                        signal: signal as i32,
                    },
                ),
                _ => continue,
            };
            if let Some(process) = self.by_pid.lock().unwrap().remove(&pid.as_raw()) {
                process.exit.send_replace(Some(exit));
            }
        }
    }

    /// Workload PIDs of every started process that has not exited.
    pub fn running(&self) -> Vec<Pid> {
        self.by_pid
            .lock()
            .unwrap()
            .values()
            .filter_map(|p| p.pid())
            .collect()
    }
}
