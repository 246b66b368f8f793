//! The init filesystem: the initramfs every guest boots from. It holds
//! vminitd as `/init` and, for a modular kernel, the modules the guest needs
//! to see its virtio devices, with a list in the order to load them.
//!
//! It is built on first use and cached under the app root, keyed by the
//! vminitd binary and the kernel, so later boots only read it.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Kernel;
use super::elf::{EM_AARCH64, EM_X86_64, Elf};
use crate::io_error::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kernel module {0} is not in modules.dep")]
    UnknownModule(String),
    #[error("vminitd not found at {0}: run scripts/setup (or set CONTAINER_VMINITD)")]
    NoVminitd(PathBuf),
    #[error(
        "vminitd {} is {found}, but the guest needs a static 64-bit ELF for {}: run scripts/build-vminitd",
        path.display(),
        machine_name(*machine)
    )]
    NotGuestBinary {
        path: PathBuf,
        found: String,
        machine: u16,
    },
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
}

/// Where vminitd is: `CONTAINER_VMINITD`, else beside the running binary.
pub fn vminitd_path() -> Result<PathBuf, Error> {
    let path = match std::env::var_os("CONTAINER_VMINITD").filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .map_err(io("find the running binary"))?
            .with_file_name("vminitd"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::NoVminitd(path))
    }
}

/// Returns the cached initfs for this vminitd, kernel and set of `modules`
/// (the drivers the guest needs; their dependencies come from
/// modules.dep), building it first if needed.
pub fn ensure(
    cache_dir: &Path,
    vminitd: &Path,
    kernel: &Kernel,
    modules: &[&str],
) -> Result<PathBuf, Error> {
    let meta = std::fs::metadata(vminitd).map_err(io(format!("read {}", vminitd.display())))?;
    let mut key = Sha256::new();
    key.update(format!(
        "{}:{}:{}:{}",
        vminitd.display(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    ));
    key.update(format!(
        "{}:{}:{modules:?}",
        kernel.image.display(),
        kernel.release
    ));
    let path = cache_dir.join(format!(
        "initfs-{}.cpio",
        &hex::encode(key.finalize())[..16]
    ));
    if path.is_file() {
        return Ok(path);
    }
    // Checked before it is packed: a cached initfs was built from a binary
    // that passed, and its key changes with the binary.
    check_guest_binary(vminitd, GUEST_MACHINE)?;
    std::fs::create_dir_all(cache_dir).map_err(io(format!("create {}", cache_dir.display())))?;
    let modules = match &kernel.modules {
        Some(dir) => {
            let dep =
                std::fs::read_to_string(dir.join("modules.dep")).map_err(io("read modules.dep"))?;
            load_order(&parse_modules_dep(&dep), modules)?
                .into_iter()
                .map(|m| dir.join(m))
                .collect()
        }
        None => Vec::new(),
    };
    let tmp = cache_dir.join(format!(".initfs-{}.tmp", std::process::id()));
    let result = write_cpio(&tmp, vminitd, &modules)
        .and_then(|()| Ok(std::fs::rename(&tmp, &path).map_err(io("store initfs"))?));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| path)
}

/// The guest runs on the host's CPU (no backend emulates another).
const GUEST_MACHINE: u16 = if cfg!(target_arch = "aarch64") {
    EM_AARCH64
} else {
    EM_X86_64
};

fn machine_name(machine: u16) -> String {
    match machine {
        EM_X86_64 => "x86_64".into(),
        EM_AARCH64 => "aarch64".into(),
        other => format!("machine {other}"),
    }
}

/// Refuses a vminitd the guest could not run as `/init`: not ELF, not
/// 64-bit, for another CPU (a macOS build of vminitd, or an x86_64 one on
/// an arm64 Mac), or dynamically linked (the init filesystem has no
/// loader or libraries). Otherwise the kernel panics with "No working init
/// found", which the user sees only as a VM that never answers.
fn check_guest_binary(path: &Path, machine: u16) -> Result<(), Error> {
    let elf = File::open(path)
        .and_then(|mut file| Elf::read(&mut file))
        .map_err(io(format!("read {}", path.display())))?;
    let found = match elf {
        None => "not an ELF file (a build for another OS?)".to_string(),
        Some(elf) if !elf.class64 => "a 32-bit ELF file".into(),
        Some(elf) if elf.machine != machine => {
            format!("an ELF file for {}", machine_name(elf.machine))
        }
        Some(elf) if elf.is_dynamic() => {
            "dynamically linked (it names a program interpreter)".into()
        }
        Some(_) => return Ok(()),
    };
    Err(Error::NotGuestBinary {
        path: path.to_path_buf(),
        found,
        machine,
    })
}

/// modules.dep maps a module's path to the paths of the modules it needs.
fn parse_modules_dep(text: &str) -> HashMap<String, Vec<String>> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(module, deps)| {
            (
                module.trim().to_string(),
                deps.split_whitespace().map(String::from).collect(),
            )
        })
        .collect()
}

/// The module's name as `modprobe` knows it: `kernel/a/b/virtio-blk.ko` -> `virtio_blk`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The module paths to load, each after everything it depends on.
fn load_order(deps: &HashMap<String, Vec<String>>, wanted: &[&str]) -> Result<Vec<String>, Error> {
    let by_name: HashMap<String, &String> =
        deps.keys().map(|path| (module_name(path), path)).collect();
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    fn visit(
        path: &String,
        deps: &HashMap<String, Vec<String>>,
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(path.clone()) {
            return;
        }
        for dep in deps.get(path).into_iter().flatten() {
            visit(dep, deps, seen, order);
        }
        order.push(path.clone());
    }
    for name in wanted {
        let path = by_name
            .get(*name)
            .ok_or_else(|| Error::UnknownModule(name.to_string()))?;
        visit(path, deps, &mut seen, &mut order);
    }
    Ok(order)
}

/// Writes the initramfs as an uncompressed newc cpio archive: the kernel
/// unpacks it fastest, and the host page cache keeps it warm between boots.
fn write_cpio(path: &Path, vminitd: &Path, modules: &[PathBuf]) -> Result<(), Error> {
    use cpio::newc::{Builder, ModeFileType, trailer};
    let file = File::create(path).map_err(io(format!("create {}", path.display())))?;
    let mut out = BufWriter::new(file);
    let mut ino = 0;
    let mut entry = |name: &str, mode: u32| {
        ino += 1;
        Builder::new(name).ino(ino).mode(mode).nlink(1)
    };
    for dir in ["dev", "proc", "sys", "run", "tmp", "modules"] {
        entry(dir, 0o040755)
            .write(&mut out, 0)
            .finish()
            .map_err(io("write initfs"))?;
    }
    // The kernel opens /dev/console for init's stdio before anything is mounted.
    entry("dev/console", 0o600)
        .set_mode_file_type(ModeFileType::Char)
        .rdev_major(5)
        .rdev_minor(1)
        .write(&mut out, 0)
        .finish()
        .map_err(io("write initfs"))?;
    let mut add_file =
        |out: &mut BufWriter<File>, name: &str, source: &Path, mode: u32| -> Result<(), Error> {
            let data = std::fs::read(source).map_err(io(format!("read {}", source.display())))?;
            let mut writer = entry(name, mode).write(out, data.len() as u32);
            writer.write_all(&data).map_err(io("write initfs"))?;
            writer.finish().map_err(io("write initfs"))?;
            Ok(())
        };
    add_file(&mut out, "init", vminitd, 0o100755)?;
    let mut order = String::new();
    for module in modules {
        let name = module.file_name().unwrap().to_string_lossy().into_owned();
        add_file(&mut out, &format!("modules/{name}"), module, 0o100644)?;
        order.push_str(&name);
        order.push('\n');
    }
    let mut writer = entry("modules/order", 0o100644).write(&mut out, order.len() as u32);
    writer
        .write_all(order.as_bytes())
        .map_err(io("write initfs"))?;
    writer.finish().map_err(io("write initfs"))?;
    let file = trailer(out)
        .map_err(io("write initfs"))?
        .into_inner()
        .map_err(|e| io("write initfs")(e.into_error()))?;
    Ok(file.sync_all().map_err(io("write initfs"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/virtio/virtio.ko:\n\
        kernel/drivers/virtio/virtio_ring.ko:\n\
        kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
        kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
        kernel/net/vmw_vsock/vsock.ko:\n\
        kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko\n\
        kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
        kernel/fs/fuse/virtio-fs.ko: kernel/fs/fuse/fuse.ko\n";

    #[test]
    fn dependencies_load_first_and_once() {
        let wanted = ["virtio_mmio", "virtio_blk", "vmw_vsock_virtio_transport"];
        let order = load_order(&parse_modules_dep(DEP), &wanted).unwrap();
        let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
        assert_eq!(
            names,
            [
                "virtio",
                "virtio_ring",
                "virtio_mmio",
                "virtio_blk",
                "vsock",
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport"
            ]
        );
    }

    #[test]
    fn names_normalise_dashes_and_compression() {
        assert_eq!(module_name("kernel/fs/fuse/virtio-fs.ko.xz"), "virtio_fs");
    }

    #[test]
    fn vminitd_must_be_a_static_elf_for_the_guest() {
        use crate::vm::elf::PT_INTERP;
        use crate::vm::elf::synthetic::elf64;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, contents: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            path
        };
        let arm = write("arm", &elf64(EM_AARCH64, &[(1, b"code")]));
        let x86 = write("x86", &elf64(EM_X86_64, &[(1, b"code")]));
        check_guest_binary(&arm, EM_AARCH64).unwrap();
        check_guest_binary(&x86, EM_X86_64).unwrap();

        let error = check_guest_binary(&x86, EM_AARCH64)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            format!(
                "vminitd {} is an ELF file for x86_64, but the guest needs a static 64-bit ELF \
                 for aarch64: run scripts/build-vminitd",
                x86.display()
            )
        );
        let dynamic = write(
            "dynamic",
            &elf64(EM_AARCH64, &[(PT_INTERP, b"/lib/ld-linux-aarch64.so.1\0")]),
        );
        let error = check_guest_binary(&dynamic, EM_AARCH64)
            .unwrap_err()
            .to_string();
        assert!(error.contains("is dynamically linked"), "{error}");
        // A Mach-O build of vminitd (64-bit magic 0xfeedfacf).
        let macho = write("macho", &[0xcf, 0xfa, 0xed, 0xfe, 0x0c, 0, 0, 1]);
        let error = check_guest_binary(&macho, EM_AARCH64)
            .unwrap_err()
            .to_string();
        assert!(error.contains("is not an ELF file"), "{error}");
        let mut elf32 = elf64(EM_X86_64, &[]);
        elf32[4] = 1;
        let elf32 = write("elf32", &elf32);
        let error = check_guest_binary(&elf32, EM_X86_64)
            .unwrap_err()
            .to_string();
        assert!(error.contains("is a 32-bit ELF file"), "{error}");
    }

    #[test]
    fn unknown_module_is_an_error() {
        let err = load_order(&parse_modules_dep(DEP), &["nope"]).unwrap_err();
        assert_eq!(err.to_string(), "kernel module nope is not in modules.dep");
    }
}
