//! scripts/setup, black-box: it must leave every program it provides
//! runnable, even when one was taken away (as an apt transaction can do), and
//! put `container` on the PATH. Its own test binary, so no other test runs a
//! container while a package is away.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Cli, Registry, repo_root, text};

fn root_or_sudo(args: &[&str]) -> Command {
    let mut command = if unsafe { libc::geteuid() } == 0 {
        Command::new(args[0])
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", args[0]]);
        sudo
    };
    command.args(&args[1..]);
    command
}

fn which(program: &str) -> Option<PathBuf> {
    let output = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap();
    output
        .status
        .success()
        .then(|| PathBuf::from(text(&output).0.trim()))
}

#[test]
fn setup_installs_again_what_was_removed_and_links_container() {
    // Gone while dpkg still lists its package: the state an apt transaction
    // that removed it looks like to a check of dpkg's list made before it.
    let qemu = which("qemu-system-x86_64").expect("QEMU is installed before the test");
    let removed = root_or_sudo(&["rm", qemu.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(removed.status.success(), "{removed:?}");
    assert_eq!(which("qemu-system-x86_64"), None);

    // The runtime names the package when the program is missing.
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let output = cli.run(&["run", "--rm", &image, "true"]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "Error: qemu-system-x86_64 is not installed: it comes with the Debian package qemu-system-x86, which scripts/setup installs"
    );

    let setup = Command::new(repo_root().join("scripts/setup"))
        .output()
        .unwrap();
    assert!(setup.status.success(), "{}", text(&setup).1);
    assert_eq!(which("qemu-system-x86_64"), Some(qemu));

    // `container` is on the PATH, linked to this build, and runs from anywhere.
    let bin = if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/usr/local/bin")
    } else {
        PathBuf::from(std::env::var("HOME").unwrap()).join(".local/bin")
    };
    let linked = bin.join("container");
    assert_eq!(
        std::fs::canonicalize(&linked).unwrap(),
        std::fs::canonicalize(env!("CARGO_BIN_EXE_container")).unwrap()
    );
    let output = Command::new(&linked)
        .current_dir("/")
        .env("CONTAINER_APP_ROOT", cli.app_root.path())
        .args(["run", "--rm", &image, "uname", "-r"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(!stdout.trim().is_empty(), "{stdout}");
}
