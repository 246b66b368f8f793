//! The workload as Docker runs it, checked inside real VMs: namespaces,
//! users, environment, working directory, hostname, mounts and devices,
//! exit codes, `--init`, a read-only root and dropped capabilities. Each test
//! boots one VM and checks as much as that one configuration allows.

mod common;

use common::{Cli, Registry, text};

#[test]
fn isolation_user_env_workdir_hostname_and_devices() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let script = "ps -o pid,user,comm; echo ---; id; pwd; hostname; echo FOO=$FOO HOME=$HOME; \
                  echo ---; cat /etc/hosts; echo ---; ls /dev; echo ---; \
                  for m in /proc /sys /sys/fs/cgroup /dev/pts /dev/shm /dev/mqueue; do \
                  grep -q \" $m \" /proc/mounts && echo mounted $m; done; \
                  cat /proc/kcore | wc -c";
    let output = cli.run(&[
        "run",
        "--rm",
        "--name",
        "web",
        "-e",
        "FOO=bar",
        "-w",
        "/work/new",
        "-u",
        "app",
        &image,
        "sh",
        "-c",
        script,
    ]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    let parts: Vec<&str> = stdout.split("---\n").collect();
    assert_eq!(parts.len(), 5, "{stdout}");
    // The workload is PID 1 and sees only its own processes: vminitd is invisible.
    assert_eq!(
        parts[0],
        "PID   USER     COMMAND\n    1 app      sh\n    2 app      ps\n"
    );
    // -u by name: uid, gid and the supplementary group from the image's /etc/group.
    assert_eq!(
        parts[1],
        "uid=1000(app) gid=1000(app) groups=50(staff)\n/work/new\nweb\nFOO=bar HOME=/home/app\n"
    );
    assert!(
        parts[2].starts_with("127.0.0.1\tlocalhost\n"),
        "{}",
        parts[2]
    );
    let devices: Vec<&str> = parts[3].lines().collect();
    for device in [
        "full", "null", "ptmx", "pts", "random", "shm", "tty", "urandom", "zero", "fd", "stdin",
    ] {
        assert!(
            devices.contains(&device),
            "/dev lacks {device}: {devices:?}"
        );
    }
    assert!(
        !devices.contains(&"vda"),
        "the VM's disk must not show in the container"
    );
    assert_eq!(
        parts[4],
        "mounted /proc\nmounted /sys\nmounted /sys/fs/cgroup\nmounted /dev/pts\nmounted /dev/shm\nmounted /dev/mqueue\n0\n"
    );
}

#[test]
fn numeric_user_init_reaps_zombies_and_sigterm_exits_143() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    // The subshell exits at once, orphaning its sleep; the orphan's exit must
    // be reaped by the init, not left as a zombie. Then the workload (PID 2
    // under --init, so SIGTERM is not ignored) kills itself.
    let script = "id; (sleep 0.2 &); sleep 1.5; ps -o pid,stat,comm; kill -TERM $$";
    // Apple's --uid and --gid name the user as -u 1000:4000 would.
    let output = cli.run(&[
        "run", "--rm", "--init", "--uid", "1000", "--gid", "4000", &image, "sh", "-c", script,
    ]);
    let (stdout, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(143),
        "stdout: {stdout} stderr: {stderr}"
    );
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("uid=1000(app) gid=4000"));
    let ps: Vec<&str> = lines.collect();
    assert_eq!(
        ps[0].split_whitespace().collect::<Vec<_>>(),
        ["PID", "STAT", "COMMAND"]
    );
    assert_eq!(
        ps[1].split_whitespace().collect::<Vec<_>>(),
        ["1", "S", "init"]
    );
    assert_eq!(
        ps[2].split_whitespace().collect::<Vec<_>>(),
        ["2", "S", "sh"]
    );
    assert_eq!(ps.len(), 4, "a zombie or stray process is left: {ps:?}");
    assert!(!stdout.contains(" Z "), "{stdout}");
}

#[test]
fn read_only_root_and_dropped_capability_refuse() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let script = "touch /x 2>&1; echo touch=$?; touch /dev/shm/f; chown 1000 /dev/shm/f 2>&1; echo chown=$?; \
                  chown 1000 /dev/shm 2>/dev/null; grep CapEff /proc/self/status";
    let output = cli.run(&[
        "run",
        "--rm",
        "--read-only",
        "--cap-drop",
        "CHOWN",
        &image,
        "sh",
        "-c",
        script,
    ]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(
        stdout,
        "touch: /x: Read-only file system\ntouch=1\nchown: /dev/shm/f: Operation not permitted\nchown=1\n\
         CapEff:\t00000000a80425fa\n"
    );
}

#[test]
fn the_agent_configures_links_addresses_and_routes() {
    use agent_proto::{IpAddrAddRequest, IpLinkSetRequest, IpRouteAddRequest};
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let run = cli.run(&["run", "-d", "--name", "net", &image, "sleep", "1000"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run).1);
    let container = container::runtime::Containers::open(cli.app_root.path())
        .unwrap()
        .find("net")
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // The agent, reached the way every CLI reaches it: the supervisor's socket.
        let mut agent = container::runtime::agent::connect_socket(&container.agent_socket())
            .await
            .unwrap();
        let link = IpLinkSetRequest {
            interface: "lo".into(),
            up: true,
            mtu: 60000,
            mac: String::new(),
        };
        agent.ip_link_set(link).await.unwrap();
        let bad_mac = IpLinkSetRequest {
            interface: "lo".into(),
            up: true,
            mtu: 0,
            mac: "02:00:00:00:00".into(),
        };
        let error = agent.ip_link_set(bad_mac).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error}");
        let addr = IpAddrAddRequest {
            interface: "lo".into(),
            address: "10.200.0.1/32".into(),
        };
        agent.ip_addr_add(addr).await.unwrap();
        let route = IpRouteAddRequest {
            destination: "10.201.0.0/16".into(),
            gateway: String::new(),
            interface: "lo".into(),
        };
        agent.ip_route_add(route).await.unwrap();
        let missing = IpAddrAddRequest {
            interface: "nope0".into(),
            address: "10.0.0.1/24".into(),
        };
        let error = agent.ip_addr_add(missing).await.unwrap_err();
        assert_eq!(
            (error.code(), error.message()),
            (tonic::Code::NotFound, "no network interface named nope0")
        );
        let bad = IpAddrAddRequest {
            interface: "lo".into(),
            address: "10.0.0.1/40".into(),
        };
        assert_eq!(
            agent.ip_addr_add(bad).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    });
    let addresses = text(&cli.run(&["exec", "net", "ip", "addr", "show", "lo"])).0;
    assert!(
        addresses.contains("mtu 60000") && addresses.contains("inet 10.200.0.1/32"),
        "{addresses}"
    );
    let routes = text(&cli.run(&["exec", "net", "ip", "route"])).0;
    assert!(routes.contains("10.201.0.0/16 dev lo"), "{routes}");
}

#[test]
fn exec_is_confined_like_the_container_and_signals_start_at_their_defaults() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let run = cli.run(&[
        "run",
        "-d",
        "--name",
        "confined",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "KILL",
        "--ulimit",
        "nproc=256",
        &image,
        "sleep",
        "300",
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run).1);
    // The exec'd shell and PID 1 (the main process) alike: only CAP_KILL
    // (bit 5), the container's nproc limit, no signal ignored or blocked.
    let script = "for p in self 1; do grep -E '^(CapEff|CapBnd|SigIgn|SigBlk)' /proc/$p/status; \
                  grep 'Max processes' /proc/$p/limits | tr -s ' '; done";
    let output = cli.run(&["exec", "confined", "sh", "-c", script]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let one = "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n\
               CapEff:\t0000000000000020\nCapBnd:\t0000000000000020\n\
               Max processes 256 256 processes \n";
    assert_eq!(stdout, format!("{one}{one}"));
    // With SIGPIPE at its default, `yes` dies when `head` is done and the
    // pipeline ends; ignored, it would spin until the timeout.
    let output = cli.run(&[
        "exec",
        "confined",
        "sh",
        "-c",
        "timeout 30 sh -c 'yes | head -c 100000 | wc -c'; echo rc=$?",
    ]);
    assert_eq!(text(&output).0, "100000\nrc=0\n", "{}", text(&output).1);
    // The root filesystem has a journal and is mounted data=ordered.
    let output = cli.run(&[
        "exec",
        "confined",
        "sh",
        "-c",
        "ls /proc/fs/jbd2; grep -x data=ordered /proc/fs/ext4/vda/options",
    ]);
    assert_eq!(
        text(&output).0,
        "vda-8\ndata=ordered\n",
        "{}",
        text(&output).1
    );
}
