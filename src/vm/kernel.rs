//! Finding the guest kernel and the modules it needs, and installing the
//! kernel `container system kernel set` chooses.
//!
//! On x86_64 Linux the kernel is our own: scripts/build-kernel builds it from
//! `kernel/config-x86_64` with every driver built in and puts it beside the
//! binary as `vmlinux` (as vminitd is). It boots in half the time of
//! Debian's cloud kernel, which stays the fallback, and needs no modules.
//!
//! An installed kernel lives in `<app root>/kernel/` under its own file name
//! (which carries its release, so a modular kernel still finds its modules),
//! with `kernel/default` a symlink to it. Replacing the link is one rename,
//! so a container that starts meanwhile sees the old kernel or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Error;

/// The kernel `--recommended` installs: the one Apple's `container` uses on
/// Apple silicon, a Kata Containers release `vmlinux` with every virtio
/// driver built in. The digest is of the archive, as published in Apple's
/// `container` source (ContainerSystemConfig.swift); we have not downloaded
/// it ourselves.
pub struct Recommended {
    pub url: &'static str,
    pub sha256: &'static str,
    /// The kernel's path inside the archive.
    pub member: &'static str,
}

pub const RECOMMENDED_ARM64: Recommended = Recommended {
    url: "https://github.com/kata-containers/kata-containers/releases/download/3.28.0/kata-static-3.28.0-arm64.tar.zst",
    sha256: "f63d54507d1f18635d94475077e4c2330de4d8e05cedf25f7c38f063b0e66a91",
    member: "opt/kata/share/kata-containers/vmlinux-6.18.15-186",
};

/// The recommended kernel to download for this host, if there is one.
pub fn recommended() -> Option<&'static Recommended> {
    cfg!(target_arch = "aarch64").then_some(&RECOMMENDED_ARM64)
}

/// Our own kernel, if scripts/build-kernel put it beside the running binary:
/// `vmlinux`, a link to `vmlinux-RELEASE`, whose name gives the release
/// without reading the file.
pub fn bundled() -> Option<PathBuf> {
    let beside = std::env::current_exe().ok()?.with_file_name("vmlinux");
    std::fs::canonicalize(beside).ok().filter(|p| p.is_file())
}

fn kernel_dir(app_root: &Path) -> PathBuf {
    app_root.join("kernel")
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    Error::io(context)
}

/// Makes `binary` the kernel every new container boots; returns where it
/// was installed. A file whose release can be told neither from its
/// contents nor from its name is refused: its modules could not be found.
pub fn install(app_root: &Path, binary: &Path) -> Result<PathBuf, Error> {
    let name = binary
        .file_name()
        .ok_or_else(|| Error::Missing {
            what: format!("kernel {}", binary.display()),
            hint: "give the path of a kernel image file".into(),
        })?
        .to_owned();
    if release_of(binary).is_none() {
        return Err(Error::Missing {
            what: format!("the release of kernel {}", binary.display()),
            hint: "it has no Linux version banner or boot header, and its name is not vmlinuz-RELEASE or vmlinux-RELEASE".into(),
        });
    }
    let dir = kernel_dir(app_root);
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    let staging = staging_path(&dir);
    std::fs::copy(binary, &staging).map_err(io(format!("copy {}", binary.display())))?;
    make_default(&dir, &staging, Path::new(&name))
}

/// A file in `dir` no other process writes, and that no lookup matches.
fn staging_path(dir: &Path) -> PathBuf {
    dir.join(format!(".{}.partial", std::process::id()))
}

/// Moves a fully written kernel to `dir/name` and points `dir/default` at it.
fn make_default(dir: &Path, staging: &Path, name: &Path) -> Result<PathBuf, Error> {
    let installed = dir.join(name);
    std::fs::rename(staging, &installed).map_err(io(format!("install {}", installed.display())))?;
    point_default_at(dir, name)?;
    Ok(installed)
}

/// Installs the recommended kernel: our own where setup built it, else the
/// download for this platform, whose archive's digest is checked.
pub async fn install_recommended(app_root: &Path) -> Result<PathBuf, Error> {
    if let Some(own) = bundled() {
        // Its name, vmlinux-RELEASE, says what it is. Replaced by a rename:
        // a VM booting the old one has it open already.
        return install(app_root, &own);
    }
    let recommended = recommended().ok_or_else(|| Error::Missing {
        what: "a recommended kernel for this platform".into(),
        hint: "run scripts/setup (it builds ours), or install one with `container system kernel set --binary PATH`".into(),
    })?;
    let dir = kernel_dir(app_root);
    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
    let archive = dir.join(format!(".{}.download", std::process::id()));
    let result = download(recommended, &archive).await;
    let result = match result {
        Ok(()) => {
            let (app_root, archive) = (app_root.to_path_buf(), archive.clone());
            tokio::task::spawn_blocking(move || {
                extract_and_install(&app_root, &archive, recommended)
            })
            .await
            .map_err(|e| Error::io("unpack the kernel")(std::io::Error::other(e)))?
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&archive);
    result
}

async fn download(recommended: &Recommended, to: &Path) -> Result<(), Error> {
    let fail = |e: reqwest::Error| {
        Error::io(format!("download {}", recommended.url))(std::io::Error::other(e))
    };
    let mut response = reqwest::get(recommended.url)
        .await
        .and_then(|r| r.error_for_status())
        .map_err(fail)?;
    let mut file = std::fs::File::create(to).map_err(io(format!("create {}", to.display())))?;
    let mut hash = Sha256::new();
    while let Some(chunk) = response.chunk().await.map_err(fail)? {
        hash.update(&chunk);
        file.write_all(&chunk)
            .map_err(io(format!("write {}", to.display())))?;
    }
    let digest = hex::encode(hash.finalize());
    if digest != recommended.sha256 {
        return Err(Error::io(format!("download {}", recommended.url))(
            std::io::Error::other(format!(
                "sha256 is {digest}, expected {}",
                recommended.sha256
            )),
        ));
    }
    Ok(())
}

fn extract_and_install(
    app_root: &Path,
    archive: &Path,
    recommended: &Recommended,
) -> Result<PathBuf, Error> {
    let context = format!("unpack {}", recommended.member);
    let file = std::fs::File::open(archive).map_err(io(context.clone()))?;
    let decoder = zstd::Decoder::new(file).map_err(io(context.clone()))?;
    let mut tar = tar::Archive::new(decoder);
    for entry in tar.entries().map_err(io(context.clone()))? {
        let mut entry = entry.map_err(io(context.clone()))?;
        let path = entry.path().map_err(io(context.clone()))?;
        if path.strip_prefix("./").unwrap_or(&path) != Path::new(recommended.member) {
            continue;
        }
        let name = PathBuf::from(path.file_name().unwrap_or_default());
        let dir = kernel_dir(app_root);
        let staging = staging_path(&dir);
        entry.unpack(&staging).map_err(io(context.clone()))?;
        return make_default(&dir, &staging, &name);
    }
    Err(Error::Missing {
        what: format!("{} in the archive", recommended.member),
        hint: "the release layout changed; use --binary".into(),
    })
}

/// Replaces `dir/default` with a symlink to `name`, atomically.
fn point_default_at(dir: &Path, name: &Path) -> Result<(), Error> {
    let link = dir.join("default");
    let staging = dir.join(format!(".default.{}", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    std::os::unix::fs::symlink(name, &staging).map_err(io(format!("link {}", link.display())))?;
    std::fs::rename(&staging, &link).map_err(io(format!("replace {}", link.display())))
}

/// The kernel `kernel set` installed, if any.
fn installed(app_root: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(kernel_dir(app_root).join("default")).ok()
}

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
    /// The kernel to boot: `CONTAINER_KERNEL` if set, else the one
    /// `container system kernel set` installed, else our own beside the
    /// binary, else the newest `/boot/vmlinuz-*` (Debian's `-cloud-` flavour
    /// first: it boots fastest of Debian's under emulation and has every
    /// virtio driver we need, as modules).
    pub fn find(app_root: &Path) -> Result<Kernel, Error> {
        if let Some(image) = std::env::var_os("CONTAINER_KERNEL").filter(|v| !v.is_empty()) {
            return Kernel::from_image(PathBuf::from(image));
        }
        if let Some(image) = installed(app_root).or_else(bundled) {
            return Kernel::from_image(image);
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
            hint: "run `container system kernel set --recommended` (or --binary PATH), or set CONTAINER_KERNEL".into(),
        })?;
        Kernel::from_image(best)
    }

    fn from_image(image: PathBuf) -> Result<Kernel, Error> {
        if !image.is_file() {
            return Err(Error::Missing {
                what: format!("kernel {}", image.display()),
                hint: "check CONTAINER_KERNEL, or run `container system kernel set` again".into(),
            });
        }
        let release = release_of(&image).unwrap_or_default();
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

/// The kernel's release (`uname -r`), which names its modules directory:
/// from the kernel itself where that is cheap (an x86 bzImage's boot
/// header), else from a `vmlinuz-RELEASE` file name, else from the
/// `Linux version RELEASE` banner an uncompressed kernel carries.
fn release_of(image: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(image)
        .and_then(|f| f.take(64 << 10).read_to_end(&mut head))
        .ok()?;
    if let Some(release) = bzimage_release(&head) {
        return Some(release);
    }
    let name = image.file_name()?.to_str()?;
    if let Some(release) = name
        .strip_prefix("vmlinuz-")
        .or_else(|| name.strip_prefix("vmlinux-"))
        .filter(|r| !r.is_empty())
    {
        return Some(release.to_string());
    }
    banner_release(&std::fs::read(image).ok()?)
}

/// The release in an x86 bzImage's boot header: `HdrS` at 0x202 and, at
/// 0x20e, the offset (from 0x200) of the version string, e.g.
/// `6.1.0-57-cloud-amd64 (debian-kernel@...) #1 SMP ...`.
fn bzimage_release(head: &[u8]) -> Option<String> {
    if head.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let offset = u16::from_le_bytes(head.get(0x20e..0x210)?.try_into().ok()?) as usize;
    let version = head.get(0x200 + offset..)?;
    first_word(version)
}

/// The release in the `Linux version RELEASE (...)` banner of an
/// uncompressed kernel (an arm64 `Image`, an ELF `vmlinux`).
fn banner_release(kernel: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    let at = kernel.windows(BANNER.len()).position(|w| w == BANNER)?;
    first_word(&kernel[at + BANNER.len()..])
}

/// Printable text up to the first space or NUL, if there is any.
fn first_word(bytes: &[u8]) -> Option<String> {
    let word: Vec<u8> = bytes
        .iter()
        .take_while(|b| b.is_ascii_graphic())
        .copied()
        .collect();
    (!word.is_empty() && word.len() < 128).then(|| String::from_utf8(word).ok())?
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
    fn set_binary_installs_and_replaces_the_default() {
        let root = tempfile::tempdir().unwrap();
        let source = tempfile::tempdir().unwrap();
        let first = source.path().join("vmlinux-6.1.0-1-test");
        std::fs::write(&first, b"first kernel").unwrap();
        assert_eq!(installed(root.path()), None);

        let at = install(root.path(), &first).unwrap();
        assert_eq!(at, root.path().join("kernel/vmlinux-6.1.0-1-test"));
        let kernel = Kernel::from_image(installed(root.path()).unwrap()).unwrap();
        assert_eq!(std::fs::read(&kernel.image).unwrap(), b"first kernel");
        assert_eq!(kernel.release, "6.1.0-1-test");

        let second = source.path().join("vmlinux-6.2");
        std::fs::write(&second, b"second kernel").unwrap();
        install(root.path(), &second).unwrap();
        let image = installed(root.path()).unwrap();
        assert_eq!(std::fs::read(image).unwrap(), b"second kernel");
        // The first stays for containers that still run on it.
        assert!(root.path().join("kernel/vmlinux-6.1.0-1-test").is_file());
    }

    #[test]
    fn the_release_comes_from_the_kernel_itself_before_its_name() {
        let dir = tempfile::tempdir().unwrap();
        // A bzImage header, named without a version.
        let mut bz = vec![0u8; 0x1000];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        bz[0x500..0x51b].copy_from_slice(b"6.1.0-57-cloud-amd64 (debia");
        let captured = dir.path().join("captured-kernel");
        std::fs::write(&captured, &bz).unwrap();
        assert_eq!(
            release_of(&captured).as_deref(),
            Some("6.1.0-57-cloud-amd64")
        );
        // A banner deep in an uncompressed kernel.
        let mut image = vec![0u8; 200_000];
        image[150_000..150_030].copy_from_slice(b"Linux version 6.18.15-186 (kat");
        let kata = dir.path().join("Image");
        std::fs::write(&kata, &image).unwrap();
        assert_eq!(release_of(&kata).as_deref(), Some("6.18.15-186"));
        // Neither: only a name can tell, and without one nothing does.
        let named = dir.path().join("vmlinux-6.2.0-test");
        std::fs::write(&named, b"not really a kernel").unwrap();
        assert_eq!(release_of(&named).as_deref(), Some("6.2.0-test"));
        let anonymous = dir.path().join("kernel");
        std::fs::write(&anonymous, b"not really a kernel").unwrap();
        assert_eq!(release_of(&anonymous), None);
        assert!(matches!(
            install(dir.path(), &anonymous),
            Err(Error::Missing { .. })
        ));
    }

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
