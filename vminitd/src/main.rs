//! vminitd: PID 1 inside every container's VM.
//!
//! It prepares the guest (mounts, kernel modules), then serves the agent API
//! on its link to the host (a virtio console port, or vsock on macOS) so the
//! host can mount the container's disk and run processes.
//! Nothing else runs in the guest besides the workload, so if vminitd fails
//! it exits: the kernel panics, and `panic=-1` plus QEMU's `-no-reboot` turn
//! that into the VM stopping, which the host reports.

mod agent;
mod boot;
mod caps;
mod cgroup;
mod copy_tree;
mod dhcp;
mod env;
mod launch;
mod link;
mod log;
mod mounts;
mod network;
mod process;
mod resize;
mod rlimit;
mod user;

fn main() {
    if std::env::args().nth(1).as_deref() == Some(launch::ARG) {
        launch::main();
    }
    if std::process::id() != 1 {
        eprintln!("vminitd: must run as PID 1 inside a container VM");
        std::process::exit(1);
    }
    let started = log::since_boot();
    log::info("started");
    if let Err(e) = boot::first() {
        log::error(&format!("boot failed: {e}"));
        std::process::exit(1);
    }
    // The rest of the guest's setup runs beside the agent's own start: the
    // agent opens its link and tells the host at once, and serves once the
    // guest is set up (the host's first requests wait in the link).
    let setup = std::thread::spawn(boot::setup);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(agent::serve(started, setup)),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = result {
        log::error(&format!("agent stopped: {e}"));
    }
    std::process::exit(1);
}
