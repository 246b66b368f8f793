//! Growing a mounted ext4 filesystem to fill its disk, for containers whose
//! root disk the host made bigger than the image's filesystem
//! (`--storage-opt size=`). The kernel does the work itself, online, with
//! one ioctl (what `resize2fs` calls for a mounted filesystem), so the guest
//! needs no tools and the image's snapshot stays shared and unchanged. Past
//! the group descriptor blocks the image has, the kernel switches the
//! filesystem to meta_bg on its own.

use std::fs::File;
use std::os::fd::AsRawFd;

// BLKGETSIZE64 and EXT4_IOC_RESIZE_FS, from linux/fs.h and fs/ext4/ext4.h.
nix::ioctl_read!(block_device_bytes, 0x12, 114, u64);
nix::ioctl_write_ptr!(ext4_resize_fs, b'f', 16, u64);

/// Grows the filesystem mounted at `target` to the size of `device`;
/// returns its new size in bytes. A filesystem that already fills its
/// device is left as it is.
pub fn grow(device: &str, target: &str) -> Result<u64, String> {
    let open = |path: &str| File::open(path).map_err(|e| format!("open {path}: {e}"));
    let mut bytes = 0u64;
    // SAFETY: the ioctl writes one u64 through a pointer to ours.
    unsafe { block_device_bytes(open(device)?.as_raw_fd(), &mut bytes) }
        .map_err(|e| format!("size of {device}: {e}"))?;
    let block_size = nix::sys::statvfs::statvfs(target)
        .map_err(|e| format!("statfs {target}: {e}"))?
        .fragment_size();
    let blocks = bytes / block_size;
    // SAFETY: the ioctl reads one u64 through a pointer to ours.
    unsafe { ext4_resize_fs(open(target)?.as_raw_fd(), &blocks) }
        .map_err(|e| format!("grow the filesystem on {target} to {bytes} bytes: {e}"))?;
    Ok(blocks * block_size)
}
