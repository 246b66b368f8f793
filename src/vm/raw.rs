//! Per-container raw disk images, as the macOS backend makes them: a
//! clonefile(2) of the image snapshot where the volume can clone, a copy
//! where it cannot, grown to the size the user asked for. The decisions
//! live here, apart from the framework calls in `vz.rs`, so that they are
//! compiled and tested on Linux too.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// A raw disk image is a whole number of 512-byte sectors: the guest's
/// block device cannot end mid-sector, and Virtualization.framework
/// refuses such an image. `--storage-opt size=` takes any byte count, so
/// the size is rounded up (never down: the user asked for at least that).
pub const SECTOR: u64 = 512;

pub fn disk_size(bytes: u64) -> u64 {
    bytes.div_ceil(SECTOR).saturating_mul(SECTOR)
}

/// Whether a failed clonefile(2) means "copy instead": the volume does not
/// clone (ENOTSUP: HFS+, exFAT, a network share; EOPNOTSUPP where it is a
/// different number) or the two paths are on different volumes (EXDEV).
/// Anything else (no space, no permission, a missing source) would fail a
/// copy too, and is reported as it is.
pub fn clone_falls_back(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(code) if code == libc::ENOTSUP || code == libc::EOPNOTSUPP || code == libc::EXDEV
    )
}

/// Runs of zeros at least this long become holes in the copy.
const BLOCK: usize = 64 << 10;

/// Copies `from` to a new file `to`, leaving holes where `from` reads as
/// zeros: an image snapshot is mostly unused space, so the copy takes the
/// space of the data, as the clone it replaces would. Returns the length.
pub fn copy_sparse(from: &Path, to: &Path) -> std::io::Result<u64> {
    let mut source = File::open(from)?;
    let mut copy = OpenOptions::new().write(true).create_new(true).open(to)?;
    copy.set_permissions(source.metadata()?.permissions())?;
    let mut buffer = vec![0u8; BLOCK];
    let mut length = 0u64;
    loop {
        let got = read_full(&mut source, &mut buffer)?;
        if got == 0 {
            break;
        }
        let block = &buffer[..got];
        if block.iter().all(|&b| b == 0) {
            copy.seek(SeekFrom::Current(got as i64))?;
        } else {
            copy.write_all(block)?;
        }
        length += got as u64;
    }
    // A hole at the end is not written: the length makes it.
    copy.set_len(length)?;
    copy.sync_all()?;
    Ok(length)
}

fn read_full(file: &mut File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buffer.len() {
        match file.read(&mut buffer[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_whole_sectors() {
        assert_eq!(disk_size(0), 0);
        assert_eq!(disk_size(1), 512);
        assert_eq!(disk_size(512), 512);
        assert_eq!(disk_size(513), 1024);
        assert_eq!(disk_size(10_000_000_001), 10_000_000_512);
        assert_eq!(disk_size(8 << 30), 8 << 30);
    }

    #[test]
    fn only_a_volume_that_cannot_clone_falls_back_to_a_copy() {
        let os = std::io::Error::from_raw_os_error;
        assert!(clone_falls_back(&os(libc::ENOTSUP)));
        assert!(clone_falls_back(&os(libc::EOPNOTSUPP)));
        assert!(clone_falls_back(&os(libc::EXDEV)));
        for code in [
            libc::ENOSPC,
            libc::EACCES,
            libc::ENOENT,
            libc::EEXIST,
            libc::EIO,
        ] {
            assert!(!clone_falls_back(&os(code)), "errno {code}");
        }
        assert!(!clone_falls_back(&std::io::Error::other("not an OS error")));
    }

    #[test]
    fn a_copy_has_the_same_bytes_and_keeps_its_holes() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("snapshot.ext4");
        // Data, 1 MiB of zeros, data across a block boundary, a zero tail,
        // and a length that is no multiple of the block.
        let mut image = vec![0u8; 3 * BLOCK + 4 * (1 << 20) + 777];
        image[..5].copy_from_slice(b"super");
        image[(1 << 20) + BLOCK - 2..(1 << 20) + BLOCK + 2].copy_from_slice(b"edge");
        image[2 << 20] = 1;
        std::fs::write(&from, &image).unwrap();
        let to = dir.path().join("rootfs.ext4");
        assert_eq!(copy_sparse(&from, &to).unwrap(), image.len() as u64);
        assert_eq!(std::fs::read(&to).unwrap(), image);
        // It never overwrites.
        assert_eq!(
            copy_sparse(&from, &to).unwrap_err().kind(),
            std::io::ErrorKind::AlreadyExists
        );
    }
}
