//! The processes vminitd runs for the host, and the reaper every PID 1 needs.
//!
//! vminitd never waits on a child directly: one reaper collects every exit
//! (its own children and re-parented orphans alike) and hands the status to
//! the process that owns the PID. Waiting per child would race the reaper.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use agent_proto::ProcessSpec;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Gid, Pid, Uid, chdir, chroot, setgid, setgroups, setuid};
use tokio::sync::watch;

/// How a process ended, as a shell reports it.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub code: i32,
    pub signal: i32,
}

/// The ends the child gets, held between create and start.
struct ChildEnds {
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

pub struct Process {
    root: String,
    spec: ProcessSpec,
    child_ends: Mutex<Option<ChildEnds>>,
    /// Read ends of stdout and stderr, taken by the one ReadOutput call.
    pub output: Mutex<Option<(OwnedFd, OwnedFd)>>,
    /// Write end of stdin, taken by the one WriteStdin call.
    pub stdin: Mutex<Option<OwnedFd>>,
    pid: Mutex<Option<Pid>>,
    exit: watch::Sender<Option<Exit>>,
}

impl Process {
    pub fn pid(&self) -> Option<Pid> {
        *self.pid.lock().unwrap()
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
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("process {0} already exists")]
    Exists(String),
    #[error("process {0} not found")]
    NotFound(String),
    #[error("process {0} was already started")]
    AlreadyStarted(String),
    #[error("a terminal for the process is not supported yet")]
    TerminalUnsupported,
    #[error("process has no command to run")]
    NoArgs,
    #[error("argument contains a NUL byte")]
    Nul,
    #[error("create pipes: {0}")]
    Pipe(nix::Error),
    #[error("{0}")]
    Spawn(std::io::Error),
}

#[derive(Default)]
pub struct Table {
    processes: Mutex<HashMap<String, Arc<Process>>>,
    /// PID -> owner, consulted by the reaper. Spawning inserts under this
    /// lock, so the reaper never sees a PID before its owner is recorded.
    by_pid: Mutex<HashMap<i32, Arc<Process>>>,
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

    pub fn create(&self, id: &str, root: &str, spec: ProcessSpec) -> Result<(), Error> {
        if spec.terminal {
            return Err(Error::TerminalUnsupported);
        }
        if spec.args.is_empty() {
            return Err(Error::NoArgs);
        }
        let mut processes = self.processes.lock().unwrap();
        if processes.contains_key(id) {
            return Err(Error::Exists(id.to_string()));
        }
        let (stdin_child, stdin_host) = if spec.stdin {
            let (r, w) = pipe()?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        let (stdout_host, stdout_child) = pipe()?;
        let (stderr_host, stderr_child) = pipe()?;
        let process = Process {
            root: root.to_string(),
            spec,
            child_ends: Mutex::new(Some(ChildEnds {
                stdin: stdin_child,
                stdout: stdout_child,
                stderr: stderr_child,
            })),
            output: Mutex::new(Some((stdout_host, stderr_host))),
            stdin: Mutex::new(stdin_host),
            pid: Mutex::new(None),
            exit: watch::channel(None).0,
        };
        processes.insert(id.to_string(), Arc::new(process));
        Ok(())
    }

    pub fn start(&self, id: &str) -> Result<Pid, Error> {
        let process = self.get(id)?;
        let ends = process
            .child_ends
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| Error::AlreadyStarted(id.to_string()))?;
        let mut command = build_command(&process.root, &process.spec)?;
        command.stdin(ends.stdin.map(Stdio::from).unwrap_or_else(Stdio::null));
        command.stdout(Stdio::from(ends.stdout));
        command.stderr(Stdio::from(ends.stderr));
        let mut by_pid = self.by_pid.lock().unwrap();
        let child = command.spawn().map_err(Error::Spawn)?;
        let pid = Pid::from_raw(child.id() as i32);
        *process.pid.lock().unwrap() = Some(pid);
        by_pid.insert(pid.as_raw(), process);
        Ok(pid)
    }

    /// Collects every exited child and reports it to its owner. Called on
    /// each SIGCHLD; orphans the workload left behind are reaped too.
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

    /// PIDs of every started process that has not exited.
    pub fn running(&self) -> Vec<Pid> {
        self.by_pid
            .lock()
            .unwrap()
            .keys()
            .map(|p| Pid::from_raw(*p))
            .collect()
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Error::Pipe)
}

/// The command for a process: entered into its root, as its user, in its
/// working directory. Everything happens in `pre_exec` because chroot must
/// come before dropping privileges, and std would set the user first.
fn build_command(root: &str, spec: &ProcessSpec) -> Result<Command, Error> {
    let cstring = |s: &str| CString::new(s).map_err(|_| Error::Nul);
    let root = cstring(root)?;
    let cwd = cstring(if spec.cwd.is_empty() { "/" } else { &spec.cwd })?;
    let user = spec.user.clone().unwrap_or_default();
    let groups: Vec<Gid> = user
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    let mut command = Command::new(&spec.args[0]);
    command.args(&spec.args[1..]).env_clear();
    for pair in &spec.env {
        if let Some((key, value)) = pair.split_once('=') {
            command.env(key, value);
        }
    }
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls on data prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            chroot(root.as_c_str())?;
            chdir(cwd.as_c_str())?;
            setgroups(&groups)?;
            setgid(Gid::from_raw(user.gid))?;
            setuid(Uid::from_raw(user.uid))?;
            Ok(())
        });
    }
    Ok(command)
}
