//! `container run` end to end: a real registry on loopback, a real VM under
//! QEMU, the real vminitd.

mod common;

use common::{Cli, Registry, text};

#[test]
fn echo_prints_exactly_its_output_and_leaves_nothing_running() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let output = cli.run(&["run", "--rm", &image, "echo", "hello"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(stdout, "hello\n", "stderr: {stderr}");
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(
        cli.lingering(),
        Vec::<String>::new(),
        "VM processes left behind"
    );
    // --rm removed the container; the image and its snapshot stay.
    let ls = cli.run(&["ls", "-a", "-q"]);
    assert_eq!(text(&ls).0, "");
    let containers = cli.app_root.path().join("containers");
    let left: Vec<_> = std::fs::read_dir(&containers)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let snapshots: Vec<_> = std::fs::read_dir(cli.app_root.path().join("snapshots"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ext4"))
        .collect();
    assert_eq!(snapshots.len(), 1);
    // The image's disk, written by our ext4 writer, passes the real fsck.
    let fsck = std::process::Command::new("e2fsck")
        .arg("-fn")
        .arg(&snapshots[0])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

#[test]
fn stderr_is_separate_and_the_exit_code_comes_back() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let output = cli.run(&[
        "run",
        "--rm",
        &image,
        "sh",
        "-c",
        "echo out; echo e >&2; exit 7",
    ]);
    let (stdout, stderr) = text(&output);
    assert_eq!(stdout, "out\n");
    assert_eq!(stderr, "e\n");
    assert_eq!(output.status.code(), Some(7));
}

#[test]
fn a_missing_command_exits_127() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let output = cli.run(&["run", "--rm", &image, "no-such-command"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(127));
    assert_eq!(stdout, "");
    assert!(stderr.contains("no-such-command"), "stderr: {stderr}");
    assert_eq!(cli.lingering(), Vec::<String>::new());
}

#[test]
fn an_unknown_image_is_one_clear_line() {
    let registry = Registry::start();
    let cli = Cli::new();
    let image = format!("{}/nothing-here:latest", registry.addr());
    let output = cli.run(&["run", "--rm", &image, "true"]);
    let (_, stderr) = text(&output);
    assert_eq!(
        output.status.code(),
        Some(125),
        "Docker's code for a run that failed"
    );
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(
        stderr.starts_with("Error: ") && stderr.contains("not found"),
        "stderr: {stderr}"
    );
}

#[test]
fn a_bad_flag_is_refused() {
    let cli = Cli::new();
    let output = cli.run(&["run", "--memory", "10M", "busybox"]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr.contains("minimum"), "stderr: {stderr}");
}

/// `--version` and `system version` name the commit the binary was built
/// from, as `git` names this checkout's HEAD.
#[test]
fn the_version_names_the_commit() {
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(common::repo_root())
        .output()
        .unwrap();
    assert!(head.status.success());
    let head = String::from_utf8(head.stdout).unwrap().trim().to_string();
    let cli = Cli::new();
    let (version, _) = text(&cli.run(&["--version"]));
    let expected = format!("container {} (commit {head}", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&expected), "{version}");
    let (json, _) = text(&cli.run(&["system", "version", "--format", "json"]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        json["commit"].as_str().unwrap().starts_with(&head),
        "{json}"
    );
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
}

/// Containers start from a VM template where they can: the first saves it,
/// the next are restored from it, each with random numbers of its own, and
/// a template that no longer restores is replaced, the VM booting cold.
#[test]
fn vms_are_restored_from_a_template_apart_and_a_broken_one_is_replaced() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let uuid = |debug: bool| {
        let mut args = vec!["run", "--rm", &image, "cat", "/proc/sys/kernel/random/uuid"];
        if debug {
            args.insert(0, "--debug");
        }
        let output = cli.run(&args);
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
        (stdout, stderr)
    };
    let (first, saving) = uuid(true);
    assert!(saving.contains("saved a VM template"), "{saving}");
    let templates = cli.app_root.path().join("kernel/templates");
    let saved: Vec<_> = std::fs::read_dir(&templates)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    let state = saved[0].join("state");
    assert!(saved[0].join("ram").is_file() && state.is_file());

    let (second, restoring) = uuid(true);
    assert!(
        restoring.contains("restore the VM, agent ready"),
        "{restoring}"
    );
    assert!(!restoring.contains("saved a VM template"), "{restoring}");
    // Each restore reseeds the guest's kernel from the host (the guest's
    // console says so), and the same saved guest gives different numbers.
    // (Here the kernel would also drift apart by itself, from interrupt
    // timings within its first minutes; the reseed does not wait for that.)
    assert!(
        restoring.contains("reseeded the kernel's random numbers"),
        "{restoring}"
    );
    let (third, _) = uuid(false);
    assert_ne!(second, third);
    assert_ne!(first, second);

    std::fs::write(&state, b"not a migration stream").unwrap();
    let (_, fallback) = uuid(true);
    assert!(
        fallback.contains("restoring the VM template failed"),
        "{fallback}"
    );
    assert!(
        fallback.contains("kernel to vminitd"),
        "booted cold: {fallback}"
    );
    assert!(!saved[0].exists(), "the broken template is gone");
    let (_, again) = uuid(true);
    assert!(again.contains("saved a VM template"), "{again}");
    assert_eq!(cli.lingering(), Vec::<String>::new());
}
