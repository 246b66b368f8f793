//! Containers as users live with them: detached containers, exec, logs,
//! stop, kill, rm, inspect, stdin, terminals, crashes, several at once.
//! Real registry, real VMs; each test boots as few VMs as it can.

mod common;
mod ext4_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cli, Registry, Tmux, text};
use ext4_support::fsck::fsck;

fn stdout(cli: &Cli, args: &[&str]) -> String {
    let output = cli.run(args);
    let (out, err) = text(&output);
    assert_eq!(output.status.code(), Some(0), "container {args:?}: {err}");
    out
}

/// `kill -SIGNAL PID`, which must succeed.
fn send_signal(signal: &str, pid: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), pid])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal} {pid}");
}

/// The first line a child writes on its piped stdout.
fn first_line(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    line
}

fn inspect(cli: &Cli, name: &str) -> serde_json::Value {
    let all: serde_json::Value = serde_json::from_str(&stdout(cli, &["inspect", name])).unwrap();
    all[0].clone()
}

#[test]
fn a_detached_container_is_listed_exec_d_logged_stopped_and_removed() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let id = stdout(
        &cli,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--cpus",
            "2",
            &image,
            "sh",
            "-c",
            "echo started; while true; do sleep 1; done",
        ],
    );
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");

    let ls = stdout(&cli, &["ls"]);
    let row = ls.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with(&id[..12]) && row.contains("Up") && row.ends_with("web"),
        "{ls}"
    );
    assert_eq!(stdout(&cli, &["ls", "-q"]), format!("{id}\n"));
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&cli, &["ls", "--format", "json"])).unwrap();
    assert_eq!(json[0]["status"], "running");
    let running = inspect(&cli, "web");
    assert_eq!(running["id"], id);
    assert_eq!(running["image"], image.as_str());
    assert!(running["exit_code"].is_null());

    // exec: exit codes, user, working directory, environment, stdin.
    assert_eq!(
        cli.run(&["exec", "web", "sh", "-c", "exit 3"])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        stdout(&cli, &["exec", "-u", "app", "web", "id", "-u"]),
        "1000\n"
    );
    assert_eq!(
        stdout(&cli, &["exec", "-w", "/tmp", "web", "pwd"]),
        "/tmp\n"
    );
    assert_eq!(
        stdout(&cli, &["exec", "--cwd", "/root", "web", "pwd"]),
        "/root\n"
    );
    // Apple's --uid and --gid: together, alone, and beaten by -u.
    for (flags, id) in [
        (
            &["--uid", "1000", "--gid", "4000"][..],
            "uid=1000(app) gid=4000",
        ),
        (
            &["--uid", "1000"],
            "uid=1000(app) gid=1000(app) groups=50(staff)",
        ),
        (&["--gid", "4000"], "uid=0(root) gid=4000"),
        (
            &["-u", "app", "--uid", "5"],
            "uid=1000(app) gid=1000(app) groups=50(staff)",
        ),
    ] {
        let mut args = vec!["exec"];
        args.extend(flags);
        args.extend(["web", "id"]);
        assert_eq!(stdout(&cli, &args), format!("{id}\n"), "{flags:?}");
    }
    assert_eq!(
        stdout(&cli, &["exec", "-e", "X=42", "web", "sh", "-c", "echo $X"]),
        "42\n"
    );
    // exec -t: under a real terminal (script(1) gives the CLI one), the
    // process gets a pty of its own.
    let script = format!(
        "CONTAINER_APP_ROOT={} {} exec -t web sh -c 'tty; exit 6'",
        cli.app_root.path().display(),
        env!("CARGO_BIN_EXE_container")
    );
    let tty = Command::new("script")
        .args(["-qec", &script, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&tty.stdout).contains("/dev/pts/"),
        "{}",
        String::from_utf8_lossy(&tty.stdout)
    );
    assert_eq!(tty.status.code(), Some(6));
    let mut cat = cli
        .command()
        .args(["exec", "-i", "web", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    cat.stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    assert_eq!(
        String::from_utf8(cat.wait_with_output().unwrap().stdout).unwrap(),
        "through stdin\n"
    );
    // --cpus sets the container's cgroup limit.
    assert_eq!(
        stdout(&cli, &["exec", "web", "cat", "/sys/fs/cgroup/cpu.max"]),
        "200000 100000\n"
    );
    // The exec'd processes are in the container's PID namespace, beside its PID 1.
    let ps = stdout(&cli, &["exec", "web", "ps", "-o", "pid,comm"]);
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "sh"]),
        "{ps}"
    );

    assert_eq!(stdout(&cli, &["logs", "web"]), "started\n");

    // cp both ways: a tree into a directory, a file to a new name, back out,
    // and a tar stream on stdout.
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(host.path().join("tree/sub")).unwrap();
    std::fs::write(host.path().join("tree/sub/f"), "deep\n").unwrap();
    let tree = host.path().join("tree");
    stdout(&cli, &["copy", tree.to_str().unwrap(), "web:/root/"]);
    assert_eq!(
        stdout(&cli, &["exec", "web", "cat", "/root/tree/sub/f"]),
        "deep\n"
    );
    let copy = host.path().join("hosts-copy");
    stdout(&cli, &["cp", "web:/etc/hostname", copy.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "web\n");
    let tar = cli
        .command()
        .args(["cp", "web:/root/tree", "-"])
        .output()
        .unwrap();
    let mut names: Vec<String> = tar::Archive::new(tar.stdout.as_slice())
        .entries()
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["tree", "tree/sub", "tree/sub/f"]);
    // export: the whole filesystem, without /proc and the like.
    let exported = host.path().join("web.tar");
    stdout(&cli, &["export", "-o", exported.to_str().unwrap(), "web"]);
    let mut archive = tar::Archive::new(std::fs::File::open(&exported).unwrap());
    let mut hostname = None;
    let mut entries = 0;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        assert!(
            !path.starts_with("proc/") && !path.starts_with("sys/"),
            "{path}"
        );
        if path == "etc/hostname" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            hostname = Some(text);
        }
        entries += 1;
    }
    assert_eq!(hostname.as_deref(), Some("web\n"));
    assert!(entries > 250, "{entries} entries");
    let missing = cli.run(&["cp", "web:/nope", copy.to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing).1.contains("/nope: No such file"),
        "{}",
        text(&missing).1
    );
    // A destination ending in / must be an existing directory, both ways:
    // one line, and no file named after the missing directory.
    let into_missing = cli.run(&["cp", copy.to_str().unwrap(), "web:/nonexistent/"]);
    assert_eq!(
        text(&into_missing),
        (
            String::new(),
            "Error: in the container: /nonexistent/: no such directory \
             (a destination ending in / must be an existing directory)\n"
                .to_string()
        )
    );
    assert_eq!(into_missing.status.code(), Some(1));
    assert_eq!(
        cli.run(&["exec", "web", "ls", "/nonexistent"])
            .status
            .code(),
        Some(1)
    );
    let host_missing = host.path().join("nonexistent/");
    let out_to_missing = cli.run(&["cp", "web:/etc/hostname", host_missing.to_str().unwrap()]);
    assert_eq!(out_to_missing.status.code(), Some(1));
    assert_eq!(
        text(&out_to_missing).1,
        format!(
            "Error: write {}: no such directory \
             (a destination ending in / must be an existing directory)\n",
            host_missing.display()
        )
    );
    assert!(!host.path().join("nonexistent").exists());
    // CPU %: a busy loop keeps one of the VM's CPUs near 100%.
    stdout(
        &cli,
        &["exec", "-d", "web", "sh", "-c", "while :; do :; done"],
    );
    let stats: serde_json::Value =
        serde_json::from_str(&stdout(&cli, &["stats", "--no-stream", "--format", "json"])).unwrap();
    assert!(stats[0]["memory_bytes"].as_u64().unwrap() > 0, "{stats}");
    let cpu = stats[0]["cpu_percent"].as_f64().unwrap();
    assert!((20.0..=210.0).contains(&cpu), "{stats}");
    let table = stdout(&cli, &["stats", "--no-stream", "web"]);
    let mut lines = table.lines().map(|l| {
        l.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
    });
    assert_eq!(lines.next().unwrap()[2], "CPU %", "{table}");
    assert!(lines.next().unwrap()[2].ends_with('%'), "{table}");
    let line = stdout(
        &cli,
        &[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.CPUPerc}} {{.PIDs}}",
            "web",
        ],
    );
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[0], "web", "{line}");
    assert!(
        fields[1].ends_with('%') && fields[2].parse::<u64>().unwrap() > 0,
        "{line}"
    );
    stats_refresh_in_place_on_a_terminal(&cli);

    // sh as PID 1 ignores SIGTERM: stop waits its timeout, then kills.
    let start = Instant::now();
    assert_eq!(stdout(&cli, &["stop", "-t", "1", "web"]), "web\n");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "stop took {:?}",
        start.elapsed()
    );
    let stopped = inspect(&cli, "web");
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(stopped["exit_code"], 137);
    assert_eq!(cli.lingering(), Vec::<String>::new());
    assert_eq!(stdout(&cli, &["rm", "web"]), "web\n");
    assert_eq!(stdout(&cli, &["ls", "-a", "-q"]), "");
    let output = cli.run(&["inspect", "web"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output).1, "Error: no such container: web\n");
}

#[test]
fn kill_wait_and_force_removal() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    // Under --init the workload is not PID 1, so SIGTERM ends it: 143.
    stdout(
        &cli,
        &[
            "run", "-d", "--init", "--name", "a", &image, "sleep", "1000",
        ],
    );
    stdout(&cli, &["run", "-d", "--name", "b", &image, "sleep", "1000"]);
    // kill -a signals both; b's PID 1 has no handler, so only a ends.
    let mut killed: Vec<String> = stdout(&cli, &["kill", "-a", "-s", "TERM"])
        .lines()
        .map(String::from)
        .collect();
    killed.sort();
    assert_eq!(killed, ["a", "b"]);
    assert_eq!(stdout(&cli, &["wait", "a"]), "143\n");
    let output = cli.run(&["rm", "b"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("is running"),
        "{}",
        text(&output).1
    );
    // An exec that ignores Ctrl-C does not trap the user: the third one
    // lets go of it (exit 128 + SIGINT), and it keeps running.
    let mut stubborn = cli
        .command()
        .args([
            "exec",
            "b",
            "sh",
            "-c",
            "trap '' INT TERM; echo ready; exec sleep 1001",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(first_line(&mut stubborn), "ready\n");
    for _ in 0..3 {
        let pid = stubborn.id().to_string();
        send_signal("INT", &pid);
        std::thread::sleep(Duration::from_millis(300));
    }
    let let_go = stubborn.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&let_go.stderr),
        "got 3 SIGINT/SIGTERM, exiting; the container keeps running\n"
    );
    assert_eq!(let_go.status.code(), Some(130));
    assert!(stdout(&cli, &["exec", "b", "ps"]).contains("sleep 1001"));
    assert_eq!(stdout(&cli, &["rm", "-f", "b"]), "b\n");
    assert_eq!(cli.lingering(), Vec::<String>::new());
    let a = inspect(&cli, "a")["id"].as_str().unwrap().to_string();
    assert_eq!(stdout(&cli, &["prune"]), format!("{a}\n"));
    assert_eq!(stdout(&cli, &["ls", "-a", "-q"]), "");

    // start -a -i forwards stdin; exec -d leaves its process running (its
    // output, more than a pipe holds, drained in the guest); stop -a with a
    // signal; rm -a.
    stdout(
        &cli,
        &[
            "create",
            "-i",
            "--name",
            "c",
            &image,
            "sh",
            "-c",
            "read line; echo got $line; sleep 1000",
        ],
    );
    let mut attached = cli
        .command()
        .args(["start", "-a", "-i", "c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    attached
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"hello\n")
        .unwrap();
    assert_eq!(first_line(&mut attached), "got hello\n");
    assert_eq!(
        stdout(
            &cli,
            &[
                "exec",
                "-d",
                "c",
                "sh",
                "-c",
                "sleep 0.2; echo detached > /tmp/mark"
            ]
        ),
        ""
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        stdout(&cli, &["exec", "c", "cat", "/tmp/mark"]),
        "detached\n"
    );
    assert_eq!(
        stdout(&cli, &["stop", "-a", "-s", "KILL", "-t", "1"]),
        "c\n"
    );
    assert_eq!(attached.wait().unwrap().code(), Some(137));
    assert_eq!(stdout(&cli, &["rm", "-a"]), "c\n");
    assert_eq!(stdout(&cli, &["ls", "-a", "-q"]), "");
}

#[test]
fn stdin_pipes_through_and_logs_follow_to_the_end() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let mut run = cli
        .command()
        .args(["run", "-i", "--rm", &image, "sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    run.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let output = run.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "hi\ndone\n");
    assert_eq!(output.status.code(), Some(0));

    stdout(
        &cli,
        &[
            "run",
            "-d",
            "--name",
            "counter",
            &image,
            "sh",
            "-c",
            "for i in 1 2 3; do echo $i; sleep 0.5; done",
        ],
    );
    assert_eq!(stdout(&cli, &["logs", "-f", "counter"]), "1\n2\n3\n");
    assert_eq!(stdout(&cli, &["logs", "-n", "1", "counter"]), "3\n");
    assert_eq!(inspect(&cli, "counter")["exit_code"], 0);
}

#[test]
fn a_vm_or_supervisor_killed_from_outside_marks_the_container_stopped() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    stdout(
        &cli,
        &["run", "-d", "--name", "victim", &image, "sleep", "1000"],
    );
    let root = cli.app_root.path().to_string_lossy().into_owned();
    let qemu = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.starts_with("qemu-system") && cmdline.contains(&root)
        })
        .expect("the container's qemu process");
    let pid = qemu.file_name().to_string_lossy().into_owned();
    send_signal("9", &pid);
    assert_eq!(stdout(&cli, &["wait", "victim"]), "125\n");
    let state = inspect(&cli, "victim");
    assert_eq!(state["status"], "stopped");
    let reason = state["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("VM stopped unexpectedly"), "{reason}");
    assert_eq!(stdout(&cli, &["rm", "victim"]), "victim\n");
    assert_eq!(cli.lingering(), Vec::<String>::new());

    // The supervisor SIGKILLed: its QEMU and virtiofsd (a
    // shared directory) die with it, none is left orphaned, and the
    // container reads as stopped, saying why.
    let shared = tempfile::tempdir().unwrap();
    let volume = format!("{}:/data", shared.path().display());
    stdout(
        &cli,
        &[
            "run", "-d", "--name", "orphan", "-v", &volume, &image, "sleep", "1000",
        ],
    );
    let id = inspect(&cli, "orphan")["id"].as_str().unwrap().to_string();
    let helpers = cli.processes();
    let supervisor = helpers
        .iter()
        .position(|cmdline| cmdline.contains("__supervise") && cmdline.contains(&id))
        .expect("the container's supervisor");
    for helper in ["qemu-system", "virtiofsd"] {
        assert!(
            helpers.iter().any(|cmdline| cmdline.contains(helper)),
            "no {helper} among {helpers:?}"
        );
    }
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).replace('\0', " ") == helpers[supervisor]
        })
        .expect("the supervisor's pid")
        .file_name()
        .to_string_lossy()
        .into_owned();
    send_signal("9", &pid);
    assert_eq!(cli.lingering(), Vec::<String>::new(), "orphaned helpers");
    let state = inspect(&cli, "orphan");
    assert_eq!(state["status"], "stopped");
    assert_eq!(state["reason"], "its supervisor died");
    assert_eq!(stdout(&cli, &["ls", "-a", "-q"]).trim(), id);
    assert_eq!(stdout(&cli, &["rm", "orphan"]), "orphan\n");
    assert!(!cli.app_root.path().join("run").join(&id[..12]).exists());
}

#[test]
fn four_containers_at_once() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let runs: Vec<_> = (0..4)
        .map(|i| {
            cli.command()
                .args([
                    "run",
                    "--rm",
                    &image,
                    "sh",
                    "-c",
                    &format!("echo container {i}; exit {i}"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let output = run.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("container {i}\n")
        );
        assert_eq!(
            output.status.code(),
            Some(i as i32),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(cli.lingering(), Vec::<String>::new());
}

#[test]
fn an_interactive_terminal_session() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let status_file = cli.app_root.path().join("exit-status");
    let command = format!(
        "CONTAINER_APP_ROOT={} {} run -it --rm {image} sh; echo $? > {}",
        cli.app_root.path().display(),
        env!("CARGO_BIN_EXE_container"),
        status_file.display()
    );
    let tmux = Tmux::start("container-test", 80, 24, &command);
    let wait_for = |needle: &str| tmux.wait_for(needle, Duration::from_secs(60));
    wait_for("/ #");
    tmux.send(&["tty; stty size", "Enter"]);
    let s = wait_for("24 80");
    assert!(s.contains("/dev/pts/"), "{s}");
    tmux.resize(100, 30);
    std::thread::sleep(Duration::from_millis(500));
    tmux.send(&["stty size", "Enter"]);
    wait_for("30 100");
    tmux.send(&["exit 3", "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !status_file.exists() {
        assert!(
            Instant::now() < deadline,
            "the session did not end; screen:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read_to_string(&status_file).unwrap().trim(), "3");
}

#[test]
fn create_flags_then_start_attached_and_ctrl_c_reaches_the_workload() {
    use std::io::BufRead;
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env");
    std::fs::write(&env_file, "# settings\nFROMFILE=yes\n").unwrap();
    let cidfile = dir.path().join("cid");
    let script = "df -k / | awk 'NR == 2 { print $2 }'; \
                  pwd; df -k /dev/shm | awk 'NR == 2 { print $2 }'; \
                  echo $FROMFILE; cat /sys/fs/cgroup/memory.max; ulimit -n; ulimit -Hn; \
                  grep CapEff /proc/self/status; trap 'echo got INT; exit 5' INT; echo ready; \
                  sleep 30 & wait";
    let id = stdout(
        &cli,
        &[
            "create",
            "--name",
            "flags",
            "--env-file",
            env_file.to_str().unwrap(),
            "--entrypoint",
            "sh",
            "--cidfile",
            cidfile.to_str().unwrap(),
            "-l",
            "tier=web",
            "-m",
            "300M",
            "--ulimit",
            "nofile=1000:2000",
            "--cap-add",
            "net_admin",
            "--storage-opt",
            "size=20G",
            "--shm-size",
            "100M",
            "--cwd",
            "/srv",
            &image,
            "-c",
            script,
        ],
    );
    assert_eq!(std::fs::read_to_string(&cidfile).unwrap(), id.trim());
    let created = inspect(&cli, "flags");
    assert_eq!(created["status"], "created");
    assert_eq!(created["config"]["labels"][0], "tier=web");
    // Capability names are stored in one form, checked at create.
    assert_eq!(
        created["config"]["cap_add"],
        serde_json::json!(["CAP_NET_ADMIN"])
    );

    let mut attached = cli
        .command()
        .args(["start", "-a", "flags"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(attached.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.ends_with("ready\n") {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "output ended early: {seen}"
        );
        seen.push_str(&line);
    }
    // The root filesystem grew from the image's 8 GiB to fill its 20 GiB
    // disk; df counts it without ext4's own metadata (under 2%).
    let (df, seen) = seen.split_once('\n').unwrap();
    let kib: u64 = df.parse().unwrap();
    assert!((19_u64 << 20..20 << 20).contains(&kib), "df: {kib} KiB");
    // --cwd, a 100 MiB /dev/shm, and NET_ADMIN (bit 12) on top of
    // Docker's default set.
    assert_eq!(
        seen,
        "/srv\n102400\nyes\n314572800\n1000\n2000\nCapEff:\t00000000a80435fb\nready\n"
    );
    // Ctrl-C on the attached CLI reaches the workload's trap.
    send_signal("INT", &attached.id().to_string());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "got INT\n");
    assert_eq!(attached.wait().unwrap().code(), Some(5));
    assert!(stdout(&cli, &["logs", "--boot", "flags"]).contains("vminitd"));

    // The grown filesystem is whole: e2fsck on the disk as the guest left it.
    let disk = inspect(&cli, "flags")["disk"].as_str().unwrap().to_string();
    let raw = dir.path().join("rootfs.raw");
    let convert = Command::new("qemu-img")
        .args(["convert", "-O", "raw", &disk])
        .arg(&raw)
        .status()
        .unwrap();
    assert!(convert.success());
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 20 << 30);
    fsck(&raw);
    let refused = cli.run(&["create", "--storage-opt", "size=1G", &image]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused).1.contains("cannot shrink"));
    // An unknown capability: one line, and no container left behind.
    let refused = cli.run(&["create", "--cap-add", "chown", "--cap-drop", "fly", &image]);
    assert_eq!(refused.status.code(), Some(125));
    assert_eq!(text(&refused).1, "Error: unknown capability \"fly\"\n");
    assert_eq!(stdout(&cli, &["ls", "-a", "-q"]), id);
}

#[test]
fn containers_that_go_away_and_commands_on_several_names() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    // start of a running container is a no-op; stop of a --rm container,
    // which is removed during the stop, succeeds.
    stdout(
        &cli,
        &[
            "run", "-d", "--rm", "--name", "gone", &image, "sleep", "1000",
        ],
    );
    assert_eq!(stdout(&cli, &["start", "gone"]), "gone\n");
    let output = cli.run(&["stop", "-t", "1", "gone"]);
    assert_eq!(text(&output), ("gone\n".into(), String::new()));
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout(&cli, &["ls", "-a", "-q"]), "");

    // A --rm -d container that cannot start says why, though its record is gone.
    let cases: [(&[&str], &[&str], &str); 2] = [
        (&[], &["nosuchcmd"], "nosuchcmd: executable file not found"),
        (&["-u", "nobody1"], &["true"], "nobody1"),
    ];
    for (flags, command, cause) in cases {
        let mut run = vec!["run", "--rm", "-d"];
        run.extend(flags);
        run.push(&image);
        run.extend(command);
        let output = cli.run(&run);
        let (_, stderr) = text(&output);
        assert_ne!(output.status.code(), Some(0), "{run:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("Error: the container could not start: ") && stderr.contains(cause),
            "{stderr}"
        );
    }
    assert_eq!(stdout(&cli, &["ls", "-a", "-q"]), "");

    // exec into a container that is ending: "not running", at every moment,
    // and for a process the container's end takes with it.
    stdout(
        &cli,
        &["run", "-d", "--name", "short", &image, "sleep", "2"],
    );
    let long = cli
        .command()
        .args(["exec", "short", "sleep", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let output = cli.run(&["exec", "short", "true"]);
        if !output.status.success() {
            break output;
        }
        assert!(Instant::now() < deadline, "the container never stopped");
    };
    for failed in [failed, long.wait_with_output().unwrap()] {
        assert_eq!(failed.status.code(), Some(1));
        assert_eq!(text(&failed).1, "Error: container short is not running\n");
    }

    // Several names: each is acted on once, a missing one is reported and
    // the rest still go; names and --all together are a usage error.
    for name in ["a", "b"] {
        stdout(&cli, &["create", "--name", name, &image, "true"]);
    }
    assert_eq!(cli.run(&["rm", "--all", "a"]).status.code(), Some(2));
    let output = cli.run(&["rm", "a", "nosuch", "b", "b", "short"]);
    assert_eq!(
        text(&output),
        (
            "a\nb\nshort\n".into(),
            "Error: no such container: nosuch\n".into()
        )
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&cli, &["ls", "-a", "-q"]), "");
}

#[test]
fn an_unreadable_record_is_named_removable_and_hides_nothing() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let good = stdout(&cli, &["create", "--name", "good", &image, "true"]);
    let bad = stdout(
        &cli,
        &[
            "create",
            "--name",
            "bad",
            "-v",
            "data:/data",
            &image,
            "true",
        ],
    );
    let running = stdout(
        &cli,
        &["run", "-d", "--name", "running", &image, "sleep", "1000"],
    );
    let [good, bad, running] = [good, bad, running].map(|id| id.trim().to_string());
    let truncate = |id: &str, file: &str| {
        let path = cli.app_root.path().join("containers").join(id).join(file);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    };
    truncate(&bad, "config.json");
    // Its state names the supervisor: that one is found by its socket.
    truncate(&running, "state.json");
    let named = |stderr: &str, id: &str| {
        let short = &id[..12];
        stderr.lines().any(|l| {
            l.starts_with(&format!(
                "Error: container {short} has an unreadable record ("
            )) && l.ends_with(&format!("; remove it with `container rm -f {short}`"))
        })
    };

    // Listed: the others; named: each broken one, on a line of its own.
    let output = cli.run(&["ls", "-a", "-q"]);
    let (out, err) = text(&output);
    assert_eq!(out, format!("{good}\n"));
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(named(&err, &bad) && named(&err, &running), "{err}");
    assert_eq!(output.status.code(), Some(1));

    // Any command on it says how to remove it; only rm -f does.
    for command in [&["start"][..], &["rm"], &["logs"]] {
        let mut args = command.to_vec();
        args.push(&bad[..8]);
        let output = cli.run(&args);
        let (_, err) = text(&output);
        assert!(named(&err, &bad) && err.lines().count() == 1, "{err}");
        assert_eq!(output.status.code(), Some(1), "{args:?}");
    }
    assert_ne!(cli.run(&["volume", "rm", "data"]).status.code(), Some(0));
    let output = cli.run(&["rm", "-f", &bad[..12], &running[..12]]);
    assert_eq!(
        text(&output),
        (
            format!("{}\n{}\n", &bad[..12], &running[..12]),
            String::new()
        )
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(cli.lingering(), Vec::<String>::new());
    assert_eq!(stdout(&cli, &["ls", "-a", "-q"]), format!("{good}\n"));
    // The lost record's use of its volume went with it.
    assert_eq!(stdout(&cli, &["volume", "rm", "data"]), "data\n");
}

#[test]
fn the_app_root_is_private_and_the_agent_serves_only_its_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let root = cli.app_root.path();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().mode() & 0o777;
    let open_up = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    // Made wide (an older version did): the next command narrows it.
    open_up(root, 0o755);
    let id = stdout(&cli, &["run", "-d", "--name", "c", &image, "sleep", "1000"]);
    let id = id.trim();
    assert_eq!(mode(root), 0o700);
    let dir = root.join("containers").join(id);
    let run = root.join("run").join(&id[..12]);
    for private in [
        dir.join("stdio.log"),
        dir.join("supervisor.log"),
        dir.join("boot.log"),
        run.join("agent.sock"),
    ] {
        assert_eq!(mode(&private), 0o600, "{}", private.display());
    }
    assert_eq!(mode(&run), 0o700);

    // With every directory and the socket opened up by hand, the agent
    // still answers only its owner: another user's connection is dropped.
    for dir in [root, &root.join("run"), &run] {
        open_up(dir, 0o755);
    }
    open_up(&run.join("agent.sock"), 0o666);
    let bin = tempfile::tempdir().unwrap();
    open_up(bin.path(), 0o755);
    let copy = bin.path().join("container");
    std::fs::copy(env!("CARGO_BIN_EXE_container"), &copy).unwrap();
    let stranger = Command::new(&copy)
        .args(["stats", "--no-stream", "c"])
        .env("CONTAINER_APP_ROOT", root)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let (_, err) = text(&stranger);
    assert_ne!(stranger.status.code(), Some(0), "{err}");
    assert!(
        err.starts_with("Error: ") && err.lines().count() == 1,
        "{err}"
    );
    // The one line names the cause, not just tonic's "transport error".
    assert!(!err.trim_end().ends_with("transport error"), "{err}");
    assert_ne!(std::fs::metadata(root).unwrap().uid(), 65534);
    let owner = cli.run(&["stats", "--no-stream", "c"]);
    assert!(owner.status.success(), "{}", text(&owner).1);
    // Its killed supervisor leaves no run directory behind either.
    assert_eq!(stdout(&cli, &["rm", "-f", "c"]), "c\n");
    assert!(!run.exists());
}

#[test]
fn a_create_killed_midway_leaves_nothing_usable_and_prune_clears_it() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    // The snapshot is built once; the kills below land in the create itself.
    stdout(&cli, &["create", "--name", "warm", &image, "true"]);
    for (i, delay) in [0, 5, 10, 20, 40, 80, 160].into_iter().enumerate() {
        let (name, volume) = (format!("k{i}"), format!("data{i}:/data"));
        let mut create = cli
            .command()
            .args(["create", "--name", &name, "-v", &volume, &image, "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        create.kill().unwrap();
        create.wait().unwrap();
    }
    // Whatever is listed is whole: it can be inspected and removed.
    let listed = stdout(&cli, &["ls", "-a", "-q"]);
    for id in listed.lines() {
        stdout(&cli, &["inspect", id]);
        stdout(&cli, &["rm", id]);
    }
    // The rest is cleared by prune, and no volume is left in use.
    stdout(&cli, &["prune"]);
    let containers = cli.app_root.path().join("containers");
    let left: Vec<_> = std::fs::read_dir(&containers)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    for volume in stdout(&cli, &["volume", "ls", "-q"]).lines() {
        assert_eq!(
            stdout(&cli, &["volume", "rm", volume]),
            format!("{volume}\n")
        );
    }
}

#[test]
fn racing_clis_one_wins_and_nothing_is_left_inconsistent() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let spawn = |args: &[&str]| {
        cli.command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let one_line_or_none = |output: &std::process::Output| {
        let (_, err) = text(output);
        assert!(
            output.status.success() == err.is_empty() && err.lines().count() <= 1,
            "{err}"
        );
    };

    // `rm -f` against `start`: whichever wins, the container is gone and
    // so is everything it ran.
    for delay in [0, 300] {
        stdout(&cli, &["create", "--name", "c", &image, "sleep", "1000"]);
        let start = spawn(&["start", "c"]);
        std::thread::sleep(Duration::from_millis(delay));
        let rm = cli.run(&["rm", "-f", "c"]);
        assert_eq!(text(&rm), ("c\n".into(), String::new()));
        one_line_or_none(&start.wait_with_output().unwrap());
        assert_eq!(stdout(&cli, &["ls", "-a", "-q"]), "");
        assert_eq!(cli.lingering(), Vec::<String>::new());
    }

    // `image rm` against `create`: the image is refused as in use, or
    // removed before the create looks (which then pulls it again); either
    // way each container made can start, its disk's base intact.
    for (i, delay) in [0, 10, 40].into_iter().enumerate() {
        let name = format!("m{i}");
        let create = spawn(&["create", "--name", &name, &image, "true"]);
        std::thread::sleep(Duration::from_millis(delay));
        let rm = cli.run(&["image", "rm", &image]);
        one_line_or_none(&rm);
        one_line_or_none(&create.wait_with_output().unwrap());
    }
    for id in stdout(&cli, &["ls", "-a", "-q"]).lines() {
        let output = cli.run(&["start", "-a", id]);
        assert!(output.status.success(), "{}", text(&output).1);
    }
}

/// `stats` on a terminal redraws its table at the top of the screen, as
/// `docker stats` does, instead of scrolling a new table every 2 s.
fn stats_refresh_in_place_on_a_terminal(cli: &Cli) {
    let command = format!(
        "CONTAINER_APP_ROOT={} {} stats web",
        cli.app_root.path().display(),
        env!("CARGO_BIN_EXE_container"),
    );
    let tmux = Tmux::start("container-stats", 100, 24, &command);
    // The first table comes after a 0.5 s sample, the next ones 2 s apart.
    std::thread::sleep(Duration::from_millis(5500));
    let screen = tmux.screen();
    drop(tmux);
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2, "one table, redrawn in place:\n{screen}");
    assert!(lines[0].starts_with("CONTAINER ID"), "{screen}");
    assert!(lines[1].contains("web"), "{screen}");
}
