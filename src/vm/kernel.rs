//! Finding the guest kernel and the modules it needs, and installing the
//! kernel `container system kernel set` chooses.
//!
//! On x86_64 Linux the kernel is our own: scripts/build-kernel builds it from
//! `kernel/config-x86_64` with every driver built in and puts it beside the
//! binary as `vmlinux` (as vminitd is). It boots in half the time of
//! Debian's cloud kernel, which stays the fallback, and needs no modules.
//!
//! Each backend boots one kind of file, and a kernel of another kind is
//! refused here, with what it is and what was wanted, rather than failing
//! inside a VM that never answers: QEMU's microvm (x86_64 Linux) boots an
//! ELF `vmlinux` with a PVH entry note or a bzImage; Virtualization.framework
//! (arm64 macOS) boots a raw arm64 `Image` only, and with every driver built
//! in, since the modules of a modular kernel are looked up in the host's
//! /lib/modules, which a Mac does not have.
//!
//! An installed kernel lives in `<app root>/kernel/` under its own file name
//! (which carries its release, so a modular kernel still finds its modules),
//! with `kernel/default` a symlink to it. Replacing the link is one rename,
//! so a container that starts meanwhile sees the old kernel or the new one.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Error;
use super::elf::{EM_AARCH64, EM_X86_64, Elf};
use crate::io_error::io;

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
    Boot::HOST.check(binary)?;
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
                extract_and_install(Boot::HOST, &app_root, &archive, recommended)
            })
            .await
            .map_err(|e| io("unpack the kernel")(std::io::Error::other(e)))?
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&archive);
    result
}

async fn download(recommended: &Recommended, to: &Path) -> Result<(), Error> {
    let fail =
        |e: reqwest::Error| io(format!("download {}", recommended.url))(std::io::Error::other(e));
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
        return Err(
            io(format!("download {}", recommended.url))(std::io::Error::other(format!(
                "sha256 is {digest}, expected {}",
                recommended.sha256
            )))
            .into(),
        );
    }
    Ok(())
}

fn extract_and_install(
    boot: Boot,
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
        // Unpacking a link or a device would install whatever it points at.
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            let not_a_file = std::io::Error::other(format!(
                "the archive's member is a {kind:?} entry, not a regular file"
            ));
            return Err(io(context)(not_a_file).into());
        }
        let name = PathBuf::from(path.file_name().unwrap_or_default());
        let dir = kernel_dir(app_root);
        let staging = staging_path(&dir);
        entry.unpack(&staging).map_err(io(context.clone()))?;
        if let Err(e) = boot.check(&staging) {
            let _ = std::fs::remove_file(&staging);
            return Err(e);
        }
        return make_default(&dir, &staging, &name);
    }
    Err(Error::Missing {
        what: format!("{} in the archive", recommended.member),
        hint: "the release layout changed; use --binary".into(),
    })
}

/// What a kernel file is, from its first bytes (and, for an ELF file, its
/// notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// An x86_64 ELF `vmlinux` whose PVH entry note
    /// (XEN_ELFNOTE_PHYS32_ENTRY) lets QEMU start it directly.
    ElfPvh,
    /// Any other ELF file, by its e_machine.
    Elf(u16),
    /// An x86 bzImage: the `HdrS` boot header at 0x202.
    BzImage,
    /// A raw arm64 `Image`: `ARM\x64` at 0x38 (the arm64 boot header).
    Arm64Image,
    /// An EFI zboot kernel (arm64 `vmlinuz.efi`): `MZ`, then `zimg` at 4.
    EfiZboot,
    /// A compressed stream, by its compression (a `vmlinuz`).
    Compressed(&'static str),
    Unknown,
}

/// The Xen ELF note that carries a PVH entry point.
const PVH_NOTE: (&[u8], u32) = (b"Xen", 18);

impl Format {
    fn of(file: &mut (impl Read + Seek)) -> std::io::Result<Format> {
        if let Some(elf) = Elf::read(file)? {
            let pvh = elf.machine == EM_X86_64 && elf.has_note(file, PVH_NOTE.0, PVH_NOTE.1)?;
            return Ok(if pvh {
                Format::ElfPvh
            } else {
                Format::Elf(elf.machine)
            });
        }
        let mut head = Vec::new();
        file.seek(std::io::SeekFrom::Start(0))?;
        file.take(0x210).read_to_end(&mut head)?;
        Ok(Format::of_head(&head))
    }

    /// Everything but ELF, from the file's first bytes.
    fn of_head(head: &[u8]) -> Format {
        let at =
            |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
        if at(0x202, b"HdrS") {
            Format::BzImage
        } else if at(0x38, b"ARM\x64") {
            Format::Arm64Image
        } else if at(0, b"MZ") && at(4, b"zimg") {
            Format::EfiZboot
        } else if at(0, &[0x1f, 0x8b]) {
            Format::Compressed("gzip")
        } else if at(0, &[0x28, 0xb5, 0x2f, 0xfd]) {
            Format::Compressed("zstd")
        } else if at(0, &[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Format::Compressed("xz")
        } else if at(0, &[0x02, 0x21, 0x4c, 0x18]) {
            Format::Compressed("lz4")
        } else {
            Format::Unknown
        }
    }

    fn describe(self) -> String {
        match self {
            Format::ElfPvh => "an x86_64 ELF vmlinux with a PVH entry point".into(),
            Format::Elf(EM_X86_64) => {
                "an x86_64 ELF vmlinux without a PVH entry note (CONFIG_PVH)".into()
            }
            Format::Elf(EM_AARCH64) => "an arm64 ELF vmlinux, not the Image built beside it".into(),
            Format::Elf(machine) => format!("an ELF file for machine {machine}"),
            Format::BzImage => "an x86 bzImage".into(),
            Format::Arm64Image => "a raw arm64 Image".into(),
            Format::EfiZboot => "a compressed EFI zboot kernel (vmlinuz.efi)".into(),
            Format::Compressed(how) => format!("a {how}-compressed file, not a bootable image"),
            Format::Unknown => "not a kernel image we recognise".into(),
        }
    }
}

/// The kind of kernel each backend boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Boot {
    /// QEMU's microvm on x86_64: `-kernel` takes a PVH ELF or a bzImage.
    QemuX86,
    /// Virtualization.framework on arm64: VZLinuxBootLoader takes the raw
    /// arm64 Image only (no ELF, no decompressor).
    VzArm64,
}

impl Boot {
    /// This build's backend.
    pub(crate) const HOST: Boot = if cfg!(target_os = "macos") {
        Boot::VzArm64
    } else {
        Boot::QemuX86
    };

    fn accepts(self, format: Format) -> bool {
        match self {
            Boot::QemuX86 => matches!(format, Format::ElfPvh | Format::BzImage),
            Boot::VzArm64 => format == Format::Arm64Image,
        }
    }

    fn backend(self) -> &'static str {
        match self {
            Boot::QemuX86 => "QEMU (microvm, x86_64)",
            Boot::VzArm64 => "Virtualization.framework (arm64)",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Boot::QemuX86 => "an x86_64 ELF vmlinux with a PVH entry note or a bzImage",
            Boot::VzArm64 => {
                "a raw arm64 Image (arch/arm64/boot/Image, \"ARM\\x64\" at 0x38) with its virtio drivers built in"
            }
        }
    }

    /// Refuses a kernel file this backend cannot boot.
    fn check(self, image: &Path) -> Result<(), Error> {
        let format = std::fs::File::open(image)
            .and_then(|mut file| Format::of(&mut file))
            .map_err(io(format!("read kernel {}", image.display())))?;
        if self.accepts(format) {
            return Ok(());
        }
        Err(Error::KernelFormat {
            path: image.to_path_buf(),
            found: format.describe(),
            backend: self.backend(),
            expected: self.expected(),
        })
    }
}

/// Replaces `dir/default` with a symlink to `name`, atomically.
fn point_default_at(dir: &Path, name: &Path) -> Result<(), Error> {
    let link = dir.join("default");
    let staging = dir.join(format!(".default.{}", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    std::os::unix::fs::symlink(name, &staging).map_err(io(format!("link {}", link.display())))?;
    Ok(std::fs::rename(&staging, &link).map_err(io(format!("replace {}", link.display())))?)
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
        Boot::HOST.check(&image)?;
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
    use crate::vm::elf::PT_NOTE;
    use crate::vm::elf::synthetic::{elf64, note};

    /// A file with an x86 bzImage's boot header and `text` after it.
    fn bzimage(text: &[u8]) -> Vec<u8> {
        let mut file = vec![0u8; 0x400];
        file[0x202..0x206].copy_from_slice(b"HdrS");
        file.extend_from_slice(text);
        file
    }

    /// A kernel this build's backend boots, with `text` after its header.
    fn host_kernel(text: &[u8]) -> Vec<u8> {
        match Boot::HOST {
            Boot::QemuX86 => bzimage(text),
            Boot::VzArm64 => arm64_image(text),
        }
    }

    /// A file with the arm64 boot header and `text` after it.
    fn arm64_image(text: &[u8]) -> Vec<u8> {
        let mut file = vec![0u8; 0x40];
        file[0x38..0x3c].copy_from_slice(b"ARM\x64");
        file.extend_from_slice(text);
        file
    }

    #[test]
    fn set_binary_installs_and_replaces_the_default() {
        let root = tempfile::tempdir().unwrap();
        let source = tempfile::tempdir().unwrap();
        let first = source.path().join("vmlinux-6.1.0-1-test");
        std::fs::write(&first, host_kernel(b"first kernel")).unwrap();
        assert_eq!(installed(root.path()), None);

        let at = install(root.path(), &first).unwrap();
        assert_eq!(at, root.path().join("kernel/vmlinux-6.1.0-1-test"));
        let kernel = Kernel::from_image(installed(root.path()).unwrap()).unwrap();
        assert_eq!(
            std::fs::read(&kernel.image).unwrap(),
            host_kernel(b"first kernel")
        );
        assert_eq!(kernel.release, "6.1.0-1-test");

        let second = source.path().join("vmlinux-6.2");
        std::fs::write(&second, host_kernel(b"second kernel")).unwrap();
        install(root.path(), &second).unwrap();
        let image = installed(root.path()).unwrap();
        assert_eq!(std::fs::read(image).unwrap(), host_kernel(b"second kernel"));
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
        std::fs::write(&anonymous, host_kernel(b"not really a kernel")).unwrap();
        assert_eq!(release_of(&anonymous), None);
        assert!(matches!(
            install(dir.path(), &anonymous),
            Err(Error::Missing { .. })
        ));
    }

    #[test]
    fn each_backend_takes_its_own_boot_format() {
        let pvh = elf64(
            EM_X86_64,
            &[(PT_NOTE, &note(b"Xen", 18, &0x100_0000u32.to_le_bytes()))],
        );
        let plain = elf64(EM_X86_64, &[(PT_NOTE, &note(b"GNU", 3, &[0; 4]))]);
        let arm_elf = elf64(EM_AARCH64, &[]);
        let mut efi = vec![0u8; 64];
        efi[..2].copy_from_slice(b"MZ");
        efi[4..8].copy_from_slice(b"zimg");
        let cases: [(&[u8], Format, bool, bool); 8] = [
            (&pvh, Format::ElfPvh, true, false),
            (&plain, Format::Elf(EM_X86_64), false, false),
            (&arm_elf, Format::Elf(EM_AARCH64), false, false),
            (&bzimage(b""), Format::BzImage, true, false),
            (&arm64_image(b""), Format::Arm64Image, false, true),
            (&efi, Format::EfiZboot, false, false),
            (
                &[0x1f, 0x8b, 8, 0],
                Format::Compressed("gzip"),
                false,
                false,
            ),
            (b"hello", Format::Unknown, false, false),
        ];
        for (file, format, qemu, vz) in cases {
            let found = Format::of(&mut std::io::Cursor::new(file)).unwrap();
            assert_eq!(found, format);
            assert_eq!(Boot::QemuX86.accepts(found), qemu, "{format:?}");
            assert_eq!(Boot::VzArm64.accepts(found), vz, "{format:?}");
        }
    }

    #[test]
    fn a_kernel_of_the_wrong_format_is_refused_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let vmlinux = dir.path().join("vmlinux-6.18");
        std::fs::write(&vmlinux, elf64(EM_AARCH64, &[])).unwrap();
        let error = Boot::VzArm64.check(&vmlinux).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "kernel {} is an arm64 ELF vmlinux, not the Image built beside it, but \
                 Virtualization.framework (arm64) boots a raw arm64 Image \
                 (arch/arm64/boot/Image, \"ARM\\x64\" at 0x38) with its virtio drivers built in",
                vmlinux.display()
            )
        );
        assert!(!error.contains('\n'));
        let image = dir.path().join("Image");
        std::fs::write(&image, arm64_image(b"")).unwrap();
        Boot::VzArm64.check(&image).unwrap();
        let error = Boot::QemuX86.check(&image).unwrap_err().to_string();
        assert!(error.ends_with("is a raw arm64 Image, but QEMU (microvm, x86_64) boots an x86_64 ELF vmlinux with a PVH entry note or a bzImage"), "{error}");
        // `kernel set --binary` refuses it before copying anything.
        let root = tempfile::tempdir().unwrap();
        let wrong = if Boot::HOST == Boot::VzArm64 {
            &vmlinux
        } else {
            &image
        };
        assert!(matches!(
            install(root.path(), wrong),
            Err(Error::KernelFormat { .. })
        ));
        assert_eq!(installed(root.path()), None);
    }

    /// A tar.zst holding `member` as a regular file with `contents`, or
    /// as a symlink to `contents` when `link` is set.
    fn archive(dir: &Path, member: &str, contents: &[u8], link: bool) -> PathBuf {
        let path = dir.join("kernel.tar.zst");
        let file = std::fs::File::create(&path).unwrap();
        let mut tar = tar::Builder::new(zstd::Encoder::new(file, 1).unwrap().auto_finish());
        let mut header = tar::Header::new_gnu();
        if link {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            let target = std::str::from_utf8(contents).unwrap();
            tar.append_link(&mut header, member, target).unwrap();
        } else {
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, member, contents).unwrap();
        }
        tar.into_inner().unwrap();
        path
    }

    #[test]
    fn the_recommended_kernel_must_be_a_regular_file_of_the_right_format() {
        let recommended = Recommended {
            url: "https://example.invalid/kernel.tar.zst",
            sha256: "",
            member: "opt/kata/share/kata-containers/vmlinux-6.18.15-186",
        };
        let work = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        // install_recommended makes it before downloading.
        std::fs::create_dir_all(kernel_dir(root.path())).unwrap();

        let link = archive(work.path(), recommended.member, b"/etc/passwd", true);
        let error = extract_and_install(Boot::VzArm64, root.path(), &link, &recommended)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a regular file"), "{error}");
        assert_eq!(installed(root.path()), None);

        let elf = archive(
            work.path(),
            recommended.member,
            &elf64(EM_AARCH64, &[]),
            false,
        );
        assert!(matches!(
            extract_and_install(Boot::VzArm64, root.path(), &elf, &recommended),
            Err(Error::KernelFormat { .. })
        ));
        assert_eq!(installed(root.path()), None);
        assert_eq!(
            std::fs::read_dir(root.path().join("kernel"))
                .unwrap()
                .count(),
            0
        );

        let good = archive(
            work.path(),
            recommended.member,
            &arm64_image(b"kernel"),
            false,
        );
        let at = extract_and_install(Boot::VzArm64, root.path(), &good, &recommended).unwrap();
        assert_eq!(at, root.path().join("kernel/vmlinux-6.18.15-186"));
        assert_eq!(
            installed(root.path()),
            Some(std::fs::canonicalize(&at).unwrap())
        );
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
