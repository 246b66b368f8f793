//! `container system kernel set --binary`, black-box.

mod common;

use std::process::Command;

#[test]
fn kernel_set_binary_installs_the_kernel_runs_use() {
    let app_root = tempfile::tempdir().unwrap();
    let source = tempfile::tempdir().unwrap();
    let binary = source.path().join("vmlinux-6.9.9-test");
    // Only the boot header QEMU needs of a bzImage: the format is checked,
    // the kernel is not booted here.
    let mut kernel = vec![0u8; 0x400];
    kernel[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(&binary, &kernel).unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_container"))
        .env("CONTAINER_APP_ROOT", app_root.path())
        .args(["system", "kernel", "set", "--binary"])
        .arg(&binary)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let installed = app_root.path().join("kernel/vmlinux-6.9.9-test");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("kernel set to {}", installed.display())
    );
    assert_eq!(std::fs::read(&installed).unwrap(), kernel);
    assert_eq!(
        std::fs::canonicalize(app_root.path().join("kernel/default")).unwrap(),
        std::fs::canonicalize(&installed).unwrap()
    );

    // A file the backend cannot boot is refused, in one line saying why.
    let not_a_kernel = source.path().join("vmlinux-6.9.10-test");
    std::fs::write(&not_a_kernel, b"not really a kernel").unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_container"))
        .env("CONTAINER_APP_ROOT", app_root.path())
        .args(["system", "kernel", "set", "--binary"])
        .arg(&not_a_kernel)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("is not a kernel image we recognise, but QEMU"),
        "{stderr}"
    );
    assert!(!app_root.path().join("kernel/vmlinux-6.9.10-test").exists());

    // Neither or both of --binary and --recommended is a usage error.
    let status = Command::new(env!("CARGO_BIN_EXE_container"))
        .env("CONTAINER_APP_ROOT", app_root.path())
        .args(["system", "kernel", "set"])
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(2));

    let missing = Command::new(env!("CARGO_BIN_EXE_container"))
        .env("CONTAINER_APP_ROOT", app_root.path())
        .args(["s", "kernel", "set", "--binary", "/nonexistent/vmlinux"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/vmlinux"),
        "{missing:?}"
    );
}

/// A kernel copied under a name without its version still finds its
/// modules (by the release in its own boot header) and boots.
#[test]
fn a_kernel_named_without_its_version_boots() {
    use common::{Cli, Registry, text};
    let host_kernel = std::fs::read_dir("/boot")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.to_string_lossy().contains("vmlinuz-") && p.to_string_lossy().contains("-cloud-")
        })
        .max()
        .expect("a Debian cloud kernel in /boot (scripts/setup installs it)");
    let source = tempfile::tempdir().unwrap();
    let captured = source.path().join("captured-kernel");
    std::fs::copy(&host_kernel, &captured).unwrap();
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let set = cli.run(&[
        "system",
        "kernel",
        "set",
        "--binary",
        captured.to_str().unwrap(),
    ]);
    assert!(set.status.success(), "{}", text(&set).1);
    let output = cli.run(&["run", "--rm", &image, "uname", "-r"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let release =
        host_kernel.file_name().unwrap().to_string_lossy()["vmlinuz-".len()..].to_string();
    assert_eq!(stdout.trim(), release);

    // A file that is no kernel is refused for its format, in one line.
    let junk = source.path().join("junk");
    std::fs::write(&junk, b"not a kernel").unwrap();
    let refused = cli.run(&[
        "system",
        "kernel",
        "set",
        "--binary",
        junk.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused).1;
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("is not a kernel image we recognise"),
        "{stderr}"
    );
}

/// By default the guest boots our own kernel, built from
/// kernel/config-x86_64 by scripts/build-kernel: every option of that file
/// is in the running kernel's config, and it has no modules to load.
#[test]
fn the_guest_runs_our_own_kernel_by_default() {
    use common::{Cli, Registry, text};
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let output = cli.run(&[
        "run",
        "--rm",
        &image,
        "sh",
        "-c",
        "uname -r; test -e /proc/modules && echo modules; zcat /proc/config.gz",
    ]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    let mut lines = stdout.lines();
    let release = lines.next().unwrap();
    assert!(release.ends_with("-container"), "guest kernel {release:?}");
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(release, host.trim());
    let running: Vec<&str> = lines.collect();
    assert!(
        !running.contains(&"modules"),
        "the guest kernel has modules"
    );
    let wanted = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel/config-x86_64"),
    )
    .unwrap();
    for line in wanted.lines().filter(|l| l.starts_with("CONFIG_")) {
        let found = match line.strip_suffix("=n") {
            Some(name) => !running.contains(&format!("{name}=y").as_str()),
            None => running.contains(&line),
        };
        assert!(found, "the guest kernel lacks {line}");
    }
}

/// On Linux, `--recommended` installs our own kernel, named by its release.
#[test]
fn kernel_set_recommended_installs_our_own() {
    let app_root = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_container"))
        .env("CONTAINER_APP_ROOT", app_root.path())
        .args(["system", "kernel", "set", "--recommended"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let installed = std::fs::canonicalize(app_root.path().join("kernel/default")).unwrap();
    let name = installed.file_name().unwrap().to_string_lossy();
    assert!(
        name.starts_with("vmlinux-6.1.") && name.ends_with("-container"),
        "{name}"
    );
    assert_eq!(
        stdout.trim(),
        format!("kernel set to {}", installed.display())
    );
    let ours = std::path::Path::new(env!("CARGO_BIN_EXE_container")).with_file_name("vmlinux");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(ours).unwrap()
    );
}
