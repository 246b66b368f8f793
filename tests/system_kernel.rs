//! `container system kernel set --binary`, black-box.

use std::process::Command;

#[test]
fn kernel_set_binary_installs_the_kernel_runs_use() {
    let app_root = tempfile::tempdir().unwrap();
    let source = tempfile::tempdir().unwrap();
    let binary = source.path().join("vmlinux-6.9.9-test");
    std::fs::write(&binary, b"not really a kernel").unwrap();

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
    assert_eq!(std::fs::read(&installed).unwrap(), b"not really a kernel");
    assert_eq!(
        std::fs::canonicalize(app_root.path().join("kernel/default")).unwrap(),
        std::fs::canonicalize(&installed).unwrap()
    );

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
