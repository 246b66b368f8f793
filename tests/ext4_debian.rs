//! A real distribution through the whole pipeline: a Debian bookworm minbase
//! rootfs (debootstrap) becomes an image, its snapshot passes e2fsck, and a
//! container runs bash, dpkg and apt from it.
//!
//! debootstrap takes about a minute, so the layer is cached in cargo's
//! target tmp dir, one per day (packages change, slowly).

mod common;
mod ext4_support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Cli, Registry, repo_root, text};
use ext4_support::{fsck::fsck, push_layers, snapshot};

const PREFIX: &str = "debian-bookworm-minbase-day";

/// Today's cached layer, built (and older days' removed) when missing.
fn debian_layer() -> PathBuf {
    let day = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86400;
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let layer = tmp.join(format!("{PREFIX}{day}.tar.gz"));
    if layer.exists() {
        return layer;
    }
    for old in std::fs::read_dir(tmp).unwrap().flatten() {
        if old.file_name().to_string_lossy().starts_with(PREFIX) {
            let _ = std::fs::remove_file(old.path());
        }
    }
    let status = Command::new(repo_root().join("scripts/make-debian-layer"))
        .arg(&layer)
        .status()
        .expect("run scripts/make-debian-layer");
    assert!(
        status.success(),
        "scripts/make-debian-layer failed (root, debootstrap and the Debian mirror are needed)"
    );
    layer
}

/// What dpkg's database in the layer says: the number of packages, and
/// the `Version` and `Architecture` of the named ones.
struct Dpkg {
    packages: usize,
    status: String,
}

impl Dpkg {
    fn from_layer(layer: &Path) -> Dpkg {
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(layer).unwrap());
        let mut archive = tar::Archive::new(gz);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap() == Path::new("./var/lib/dpkg/status") {
                let mut status = String::new();
                entry.read_to_string(&mut status).unwrap();
                let stanzas: Vec<&str> = status.split("\n\n").filter(|s| !s.is_empty()).collect();
                assert!(
                    stanzas
                        .iter()
                        .all(|s| s.contains("\nStatus: install ok installed\n")),
                    "debootstrap left a package not fully installed"
                );
                return Dpkg {
                    packages: stanzas.len(),
                    status,
                };
            }
        }
        panic!("the layer has no ./var/lib/dpkg/status");
    }

    fn field(&self, package: &str, name: &str) -> &str {
        let stanza = self
            .status
            .split("\n\n")
            .find(|s| s.starts_with(&format!("Package: {package}\n")))
            .unwrap_or_else(|| panic!("{package} is not installed"));
        stanza
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{package} has no {name}"))
    }
}

#[test]
fn a_debian_rootfs_runs_bash_dpkg_and_apt() {
    let layer = debian_layer();
    let dpkg = Dpkg::from_layer(&layer);
    let registry = Registry::start();
    let image = push_layers(&registry, "debian", &[&layer]);
    let cli = Cli::new();
    let script = "echo $BASH_VERSION; dpkg -l | wc -l; apt-get --version | head -1";
    let output = cli.run(&["run", "--rm", &image, "bash", "-c", script]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "stdout: {stdout}");

    // Debian's "5.2.15-2+b7" is bash's "5.2.15(1)-release".
    let bash = dpkg.field("bash", "Version");
    let upstream = bash.split('-').next().unwrap();
    assert!(lines[0].starts_with(&format!("{upstream}(")), "{stdout}");
    // Five header lines, then one per package.
    assert_eq!(lines[1], (dpkg.packages + 5).to_string());
    assert!(dpkg.packages > 80, "only {} packages", dpkg.packages);
    let apt = format!(
        "apt {} ({})",
        dpkg.field("apt", "Version"),
        dpkg.field("apt", "Architecture")
    );
    assert_eq!(lines[2], apt);
    assert_eq!(stderr, "");

    fsck(&snapshot(&cli));
}
