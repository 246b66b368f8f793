//! Finding the guest kernel and the modules it needs.

use std::path::{Path, PathBuf};

use super::Error;

/// A guest kernel image and, for a modular kernel, its modules directory.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub image: PathBuf,
    /// The kernel release (`uname -r` in the guest).
    pub release: String,
    /// `/lib/modules/<release>` for kernels whose virtio drivers are modules.
    pub modules: Option<PathBuf>,
}

impl Kernel {
    /// The kernel to boot: `CONTAINER_KERNEL` if set, else the newest
    /// `/boot/vmlinuz-*` (Debian's `-cloud-` flavour first: it boots fastest
    /// under emulation and has every virtio driver we need).
    pub fn find() -> Result<Kernel, Error> {
        if let Some(image) = std::env::var_os("CONTAINER_KERNEL").filter(|v| !v.is_empty()) {
            return Kernel::from_image(PathBuf::from(image));
        }
        let images = std::fs::read_dir("/boot")
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let best = pick(&images).ok_or_else(|| Error::Missing {
            what: "a guest kernel".into(),
            hint: "install one (scripts/setup does) or set CONTAINER_KERNEL".into(),
        })?;
        Kernel::from_image(best)
    }

    fn from_image(image: PathBuf) -> Result<Kernel, Error> {
        if !image.is_file() {
            return Err(Error::Missing {
                what: format!("kernel {}", image.display()),
                hint: "check CONTAINER_KERNEL".into(),
            });
        }
        let name = image
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let release = name
            .strip_prefix("vmlinuz-")
            .or_else(|| name.strip_prefix("vmlinux-"))
            .unwrap_or_default()
            .to_string();
        let modules = Path::new("/lib/modules").join(&release);
        let modules =
            (!release.is_empty() && modules.join("modules.dep").is_file()).then_some(modules);
        Ok(Kernel {
            image,
            release,
            modules,
        })
    }
}

/// Picks the kernel to boot from a list of files in /boot.
fn pick(paths: &[PathBuf]) -> Option<PathBuf> {
    let mut kernels: Vec<&PathBuf> = paths
        .iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        (name.contains("-cloud-"), version_key(&name))
    });
    kernels.last().map(|p| (*p).clone())
}

/// Orders `vmlinuz-6.1.0-56-cloud-amd64` numerically, so -56 beats -9.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_cloud_then_newest() {
        let paths: Vec<PathBuf> = [
            "/boot/vmlinuz-6.1.0-9-cloud-amd64",
            "/boot/vmlinuz-6.1.0-56-cloud-amd64",
            "/boot/vmlinuz-6.5.0-1-amd64",
            "/boot/config-6.1.0-99-cloud-amd64",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(
            pick(&paths),
            Some(PathBuf::from("/boot/vmlinuz-6.1.0-56-cloud-amd64"))
        );
        assert_eq!(
            pick(&paths[2..]),
            Some(PathBuf::from("/boot/vmlinuz-6.5.0-1-amd64"))
        );
        assert_eq!(pick(&paths[3..]), None);
    }
}
