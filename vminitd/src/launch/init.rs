//! `--init`: a minimal PID 1 for the container. It starts the workload as
//! its child, forwards every signal it gets to it, reaps every zombie
//! (orphans of the workload land here), and exits the way the workload did.
//! Without it the workload itself is PID 1, which neither reaps orphans nor
//! gets default signal actions.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use super::{Failure, STATUS_FD, fail, forwardable};

/// Runs as init; `start` becomes the workload in a child. Returns only if
/// the child could not be made.
pub fn run(start: impl FnOnce() -> Failure) -> Failure {
    let all = SigSet::all();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), None) {
        return fail(format!("block signals: {e}"));
    }
    // SAFETY: the calling process has one thread.
    let workload = match unsafe { fork() } {
        Err(e) => return fail(format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&all), None);
            return start();
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    // Only the workload reports to vminitd, and its exec must end the report.
    // SAFETY: closing our copy of the status descriptor.
    unsafe { libc::close(STATUS_FD) };
    loop {
        let Ok(signal) = all.wait() else { continue };
        if signal != Signal::SIGCHLD {
            if forwardable(signal) {
                let _ = kill(workload, signal);
            }
            continue;
        }
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            match status {
                WaitStatus::Exited(pid, code) if pid == workload => std::process::exit(code),
                WaitStatus::Signaled(pid, signal, _) if pid == workload => {
                    std::process::exit(128 + signal as i32)
                }
                WaitStatus::StillAlive => break,
                _ => {}
            }
        }
    }
}
