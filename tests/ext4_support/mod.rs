//! Fixtures for the ext4 integration tests: images made of layers we build,
//! pushed to the test registry, and the snapshot a run leaves behind.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod fsck;
pub mod layer;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Cli, Registry, repo_root, test_image};

/// Pushes an image made of these layer files (lowest first; tar or tar.gz)
/// as `NAME:latest` and returns its reference.
pub fn push_layers(registry: &Registry, name: &str, layers: &[&Path]) -> String {
    let layout = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let status = Command::new(repo_root().join("scripts/make-layered-image"))
        .arg(layout.path())
        .arg("latest")
        .args(layers)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run scripts/make-layered-image");
    assert!(status.success(), "scripts/make-layered-image failed");
    registry.push_layout(layout.path(), "latest", name, "latest");
    format!("{}/{name}:latest", registry.addr())
}

/// The busybox test image's only layer, a gzip tar with /bin/sh in it.
pub fn busybox_layer() -> PathBuf {
    let image = test_image();
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        image.dir.join("blobs/sha256").join(hex)
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&image.manifest_digest)).expect("manifest"))
            .expect("manifest is JSON");
    blob(manifest["layers"][0]["digest"].as_str().expect("a layer"))
}

/// The one snapshot a run left in the CLI's app root.
pub fn snapshot(cli: &Cli) -> PathBuf {
    let snapshots: Vec<PathBuf> = std::fs::read_dir(cli.app_root.path().join("snapshots"))
        .expect("snapshots dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ext4"))
        .collect();
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    snapshots.into_iter().next().unwrap()
}

/// What `debugfs -R REQUEST` prints about an image.
pub fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(image)
        .output()
        .expect("run debugfs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a host tool (mount, umount, sync) that must succeed.
pub fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mounts an ext4 image through a loop device at a `mnt` directory next to
/// it (root only), with mount options such as `ro` or `data=ordered`.
pub fn loop_mount(image: &Path, options: &str) -> PathBuf {
    let mnt = image.with_file_name("mnt");
    std::fs::create_dir(&mnt).expect("mount point");
    let options = format!("loop,{options}");
    let image = image.to_str().expect("UTF-8 path");
    run(
        "mount",
        &[
            "-t",
            "ext4",
            "-o",
            &options,
            image,
            mnt.to_str().expect("UTF-8 path"),
        ],
    );
    mnt
}
