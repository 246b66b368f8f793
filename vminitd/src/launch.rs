//! The launcher: a fresh, single-threaded vminitd process that puts one
//! workload process in place. vminitd (multi-threaded, running tokio)
//! re-executes itself as `vminitd launch` for every process it starts,
//! because namespaces, pivot_root and dropping privileges are only safe and
//! simple in a process with one thread.
//!
//! For a new container the launcher unshares mount, UTS, IPC, cgroup and PID
//! namespaces, builds the container's filesystem view and pivots into it;
//! for `exec` it joins the namespaces of the container's first process.
//! Then it forks: the child is PID 1 of the container (or a process in it),
//! execs the workload (or, with `--init`, runs a tiny init that does), and
//! the launcher waits and exits the way the child did, so vminitd's reaper
//! sees the workload's status.
//!
//! Progress goes back to vminitd on fd 3: `pid N` once forked, `error CODE
//! MESSAGE` on failure. Fd 3 is close-on-exec, so end of file there means
//! the workload is running.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};

use agent_proto::{ContainerConfig, ProcessSpec};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};
use prost::Message;

use crate::{cgroup, env, mounts, rlimit, user};

/// `--init`: the container's PID 1 when asked for, forking the workload
/// this launcher execs.
mod init;

/// The environment variable carrying the encoded [`Launch`].
pub const ENV: &str = "VMINITD_LAUNCH";
/// The status pipe's descriptor in the launcher.
pub const STATUS_FD: i32 = 3;
pub const ARG: &str = "launch";

/// What vminitd asks the launcher to do.
#[derive(Clone, PartialEq, Message)]
pub struct Launch {
    #[prost(message, optional, tag = "1")]
    pub process: Option<ProcessSpec>,
    /// Set for a new container: the guest path of its root filesystem.
    #[prost(string, tag = "2")]
    pub root: String,
    #[prost(message, optional, tag = "3")]
    pub config: Option<ContainerConfig>,
    /// Set for exec: a process in the container whose namespaces to join.
    #[prost(int32, tag = "4")]
    pub join_pid: i32,
}

/// Exit codes a shell uses when it cannot run a command.
pub const EXIT_NOT_FOUND: i32 = 127;
pub const EXIT_CANNOT_RUN: i32 = 126;
/// The launcher's code when the container to exec into is gone (its first
/// process exited while we joined it): vminitd reports "not running".
pub const EXIT_CONTAINER_GONE: i32 = 3;

pub(crate) struct Failure {
    code: i32,
    message: String,
}

pub(crate) fn fail(message: impl Into<String>) -> Failure {
    Failure {
        code: 1,
        message: message.into(),
    }
}

/// Entry point of `vminitd launch`. Never returns.
pub fn main() -> ! {
    // SAFETY: fd 3 was set up by vminitd for us and nothing else owns it.
    let mut status = unsafe { File::from_raw_fd(STATUS_FD) };
    let _ = nix::fcntl::fcntl(
        &status,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let failure = match run(&mut status) {
        Ok(never) => match never {},
        Err(failure) => failure,
    };
    report(&mut status, failure)
}

/// Tells vminitd why the process could not start, and exits with that.
fn report(status: &mut File, failure: Failure) -> ! {
    let _ = writeln!(
        status,
        "error {} {}",
        failure.code,
        failure.message.replace('\n', " ")
    );
    std::process::exit(failure.code);
}

enum Never {}

fn run(status: &mut File) -> Result<Never, Failure> {
    let encoded = std::env::var(ENV).map_err(|_| fail("no launch request"))?;
    let bytes = decode_hex(&encoded).ok_or_else(|| fail("malformed launch request"))?;
    let launch = Launch::decode(bytes.as_slice())
        .map_err(|e| fail(format!("malformed launch request: {e}")))?;
    let process = launch.process.clone().unwrap_or_default();
    let config = launch.config.clone().unwrap_or_default();
    let new_container = launch.join_pid == 0;

    cgroup::join().map_err(fail)?;
    if new_container {
        enter_new_container(&launch.root, &config)?;
    } else {
        join_container(launch.join_pid)?;
    }

    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let who = user::resolve(
        &process.user,
        &user::parse_passwd(&read("/etc/passwd")),
        &user::parse_group(&read("/etc/group")),
    )
    .map_err(|e| fail(e.to_string()))?;
    let cwd = if process.cwd.is_empty() {
        "/".to_string()
    } else {
        process.cwd.clone()
    };
    crate::boot::make_dir(&cwd).map_err(fail)?;
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let environment = env::finalize(&process.env, &who.home, &hostname, process.terminal);
    let workload = Workload::prepare(&process, who, &cwd, environment)?;

    // SAFETY: this process has one thread, so the child may do anything.
    let forked = unsafe { fork() }.map_err(|e| match e {
        // Forking into a PID namespace whose init has exited fails so: the
        // container ended while we joined it.
        nix::errno::Errno::ENOMEM if !new_container => gone(format!("fork: {e}")),
        _ => fail(format!("fork: {e}")),
    });
    match forked? {
        ForkResult::Child => report(status, child(new_container, config.init, &workload)),
        ForkResult::Parent { child } => {
            let _ = writeln!(status, "pid {child}");
            // Our copy must close, or vminitd would never see end of file.
            // SAFETY: the fd is ours and not used again.
            unsafe { libc::close(status.as_raw_fd()) };
            mirror_exit(child)
        }
    }
}

fn enter_new_container(root: &str, config: &ContainerConfig) -> Result<(), Failure> {
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWCGROUP;
    unshare(flags).map_err(|e| fail(format!("unshare namespaces: {e}")))?;
    // Nothing the container mounts may propagate back to the guest.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| fail(format!("make mounts private: {e}")))?;
    if !config.hostname.is_empty() {
        nix::unistd::sethostname(&config.hostname)
            .map_err(|e| fail(format!("set hostname: {e}")))?;
    }
    write_etc_files(root, config)?;
    mounts::apply(&mounts::root(root, config.shm_size_bytes)).map_err(fail)?;
    mounts::apply(&mounts::user(root, &config.mounts).map_err(fail)?).map_err(fail)?;
    mounts::enter(root, config.read_only_root).map_err(fail)
}

/// /etc/hosts and /etc/hostname as Docker writes them, and resolv.conf when
/// the host gave one. Written into the container's own disk before it can
/// become read-only.
fn write_etc_files(root: &str, config: &ContainerConfig) -> Result<(), Failure> {
    let etc = format!("{root}/etc");
    crate::boot::make_dir(&etc).map_err(fail)?;
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for line in &config.hosts {
        hosts.push_str(line);
        hosts.push('\n');
    }
    let mut files = vec![("hosts", hosts)];
    if !config.hostname.is_empty() {
        files.push(("hostname", format!("{}\n", config.hostname)));
    }
    if !config.resolv_conf.is_empty() {
        files.push(("resolv.conf", config.resolv_conf.clone()));
    }
    for (name, contents) in files {
        let path = format!("{etc}/{name}");
        // A symlink here (resolv.conf often is one) must not lead outside the root.
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, contents).map_err(|e| fail(format!("write {path}: {e}")))?;
    }
    Ok(())
}

fn join_container(pid: i32) -> Result<(), Failure> {
    // Open every namespace first: once in the container's mount namespace,
    // /proc/<pid> may not name the same process any more.
    let kinds = [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut files = Vec::new();
    for (name, flag) in kinds {
        let path = format!("/proc/{pid}/ns/{name}");
        let file = File::open(&path).map_err(|e| gone(format!("{path}: {e}")))?;
        files.push((file, flag, name));
    }
    for (file, flag, name) in files {
        setns(&file, flag).map_err(|e| gone(format!("join its {name} namespace: {e}")))?;
    }
    Ok(())
}

/// A container that cannot be joined has ended (or is ending).
fn gone(detail: String) -> Failure {
    Failure {
        code: EXIT_CONTAINER_GONE,
        message: format!("the container is not running ({detail})"),
    }
}

/// Everything the child needs, prepared before the fork so the child only
/// makes system calls.
struct Workload {
    args: Vec<CString>,
    env: Vec<(String, String)>,
    cwd: CString,
    user: user::User,
    terminal: bool,
    rlimits: Vec<(rlimit::Resource, u64, u64)>,
    capabilities: std::collections::HashSet<caps::Capability>,
    no_new_privileges: bool,
    builtin: agent_proto::Builtin,
}

impl Workload {
    fn prepare(
        process: &ProcessSpec,
        user: user::User,
        cwd: &str,
        env: Vec<String>,
    ) -> Result<Workload, Failure> {
        let cstring =
            |s: &str| CString::new(s).map_err(|_| fail(format!("{s:?} contains a NUL byte")));
        if process.args.is_empty() {
            return Err(fail("no command to run"));
        }
        let args = process
            .args
            .iter()
            .map(|a| cstring(a))
            .collect::<Result<_, _>>()?;
        let mut rlimits = Vec::new();
        for limit in &process.rlimits {
            let resource = rlimit::resource(&limit.r#type).map_err(|e| fail(e.to_string()))?;
            rlimits.push((resource, limit.soft, limit.hard));
        }
        let capabilities = crate::caps::resolve(&process.cap_add, &process.cap_drop)
            .map_err(|e| fail(e.to_string()))?;
        let env = env
            .into_iter()
            .map(|e| {
                e.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .unwrap_or((e, String::new()))
            })
            .collect();
        Ok(Workload {
            args,
            env,
            cwd: cstring(cwd)?,
            user,
            terminal: process.terminal,
            rlimits,
            capabilities,
            no_new_privileges: process.no_new_privileges,
            builtin: process.builtin(),
        })
    }
}

/// In the forked child: finish the container (as its PID 1), then become
/// the workload. Returns only on failure.
fn child(new_container: bool, init: bool, workload: &Workload) -> Failure {
    // The container must not outlive its launcher (and so vminitd's view of it).
    // SAFETY: prctl with these arguments has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if new_container && let Err(e) = mounts::apply(&mounts::proc()) {
        return fail(e);
    }
    if new_container && init {
        return init::run(|| exec(workload));
    }
    exec(workload)
}

/// Becomes the workload: session, terminal, limits, user, capabilities,
/// directory, environment, exec. Returns only on failure.
fn exec(w: &Workload) -> Failure {
    if w.builtin != agent_proto::Builtin::None {
        run_builtin(w);
    }
    if let Err(e) = nix::unistd::setsid() {
        return fail(format!("setsid: {e}"));
    }
    // SAFETY: TIOCSCTTY on our stdin, which is the terminal's slave side.
    if w.terminal && unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return fail(format!(
            "set controlling terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    for (resource, soft, hard) in &w.rlimits {
        let limit = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(*resource, &limit) } != 0 {
            return fail(format!("set rlimit: {}", std::io::Error::last_os_error()));
        }
    }
    if let Err(e) = drop_privileges(w) {
        return e;
    }
    if let Err(e) = nix::unistd::chdir(w.cwd.as_c_str()) {
        return fail(format!("chdir to {:?}: {e}", w.cwd));
    }
    for (key, _) in std::env::vars_os() {
        // SAFETY: this process has one thread.
        unsafe { std::env::remove_var(key) };
    }
    for (key, value) in &w.env {
        // SAFETY: as above.
        unsafe { std::env::set_var(key, value) };
    }
    reset_signals();
    // execvp searches the PATH we just set, inside the container's root.
    let error = nix::unistd::execvp(&w.args[0], &w.args).unwrap_err();
    let name = w.args[0].to_string_lossy();
    match error {
        nix::errno::Errno::ENOENT => Failure {
            code: EXIT_NOT_FOUND,
            message: format!("{name}: executable file not found"),
        },
        nix::errno::Errno::EACCES => Failure {
            code: EXIT_CANNOT_RUN,
            message: format!("{name}: permission denied"),
        },
        e => Failure {
            code: EXIT_CANNOT_RUN,
            message: format!("exec {name}: {e}"),
        },
    }
}

/// Every signal back to its default action and unblocked, as runc does
/// before exec: vminitd is a Rust program, which ignores SIGPIPE, and exec
/// keeps ignored signals ignored, so without this `yes | head` would never
/// end in a container. Errors (SIGKILL, SIGSTOP, numbers libc reserves)
/// change nothing, so they are not failures.
fn reset_signals() {
    // Raw numbers, to include the real-time signals nix's enum lacks.
    for number in 1..=libc::SIGRTMAX() {
        // SAFETY: SIG_DFL installs no handler of ours.
        unsafe { libc::signal(number, libc::SIG_DFL) };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// vminitd's own tools, run as root inside the container (as Docker's cp
/// does), so images need no tar of their own. Exits with the outcome.
fn run_builtin(w: &Workload) -> ! {
    // Running is what an exec would have signalled by closing the status pipe.
    // SAFETY: closing our copy of the status descriptor.
    unsafe { libc::close(STATUS_FD) };
    let path = std::path::Path::new(w.args[0].to_str().unwrap_or_default());
    let result = match w.builtin {
        agent_proto::Builtin::CopyOut => agent_proto::copy::pack(path, std::io::stdout().lock()),
        agent_proto::Builtin::CopyIn => agent_proto::copy::unpack(std::io::stdin().lock(), path),
        agent_proto::Builtin::Export => {
            agent_proto::copy::pack_filesystem(path, std::io::stdout().lock())
        }
        agent_proto::Builtin::Pause => loop {
            nix::unistd::pause();
        },
        agent_proto::Builtin::None => Ok(()),
    };
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            std::process::exit(1);
        }
    }
}

fn drop_privileges(w: &Workload) -> Result<(), Failure> {
    use caps::CapSet;
    for cap in caps::all() {
        if !w.capabilities.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| fail(format!("drop {cap}: {e}")))?;
        }
    }
    let groups: Vec<Gid> = w.user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(|e| fail(format!("setgroups: {e}")))?;
    nix::unistd::setgid(Gid::from_raw(w.user.gid))
        .map_err(|e| fail(format!("setgid {}: {e}", w.user.gid)))?;
    nix::unistd::setuid(Uid::from_raw(w.user.uid))
        .map_err(|e| fail(format!("setuid {}: {e}", w.user.uid)))?;
    // Root keeps exactly the container's set; setuid to anyone else already
    // cleared everything, as with Docker.
    if w.user.uid == 0 {
        for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
            caps::set(None, set, &w.capabilities)
                .map_err(|e| fail(format!("set capabilities: {e}")))?;
        }
    }
    if w.no_new_privileges {
        // SAFETY: prctl with these arguments has no memory effects.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(fail(format!(
                "no_new_privs: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// Waits for the child and ends the same way, so our parent reads the
/// child's status as ours: its exit code, or death by its signal.
fn mirror_exit(child: Pid) -> ! {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                // SAFETY: restoring the default action is always valid.
                let _ = unsafe {
                    nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl)
                };
                let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&SigSet::all()), None);
                let _ = kill(Pid::this(), signal);
                std::process::exit(128 + signal as i32);
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => std::process::exit(1),
        }
    }
}

/// Signals a process may not be stopped by in a container's PID 1 unless it
/// asked for them; SIGKILL and SIGSTOP cannot be caught anyway.
pub fn forwardable(signal: Signal) -> bool {
    !matches!(signal, Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGCHLD)
}

pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_requests_round_trip_through_the_environment() {
        let launch = Launch {
            process: Some(ProcessSpec {
                args: vec!["sh".into()],
                user: "app".into(),
                ..Default::default()
            }),
            root: "/run/container/rootfs".into(),
            config: Some(ContainerConfig {
                hostname: "web".into(),
                ..Default::default()
            }),
            join_pid: 0,
        };
        let text = encode_hex(&launch.encode_to_vec());
        assert_eq!(
            Launch::decode(decode_hex(&text).unwrap().as_slice()).unwrap(),
            launch
        );
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
