//! A container's disk: an empty qcow2 overlay whose reads fall through to a
//! raw base image (the image's snapshot), written directly.
//!
//! Written by hand because an overlay is four clusters of fixed structure
//! (qcow2 version 3, as `docs/interop/qcow2.txt` in QEMU specifies: header,
//! refcount table, one refcount block, an empty L1 table), while the
//! alternative, running `qemu-img create` for every container, cost a
//! process start, 10-40 ms of each `run`. The crates that speak qcow2 read
//! images or drive whole block layers; none just writes an overlay.

use std::io::Write;
use std::path::Path;

/// 64 KiB clusters, QEMU's default.
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// Bytes of guest disk one L1 entry covers: an L2 table of 8-byte entries,
/// each mapping one cluster.
const L1_ENTRY_SPAN: u64 = CLUSTER * (CLUSTER / 8);
/// Version 3's header, without extensions.
const HEADER_LENGTH: u32 = 104;
const MAGIC: u32 = 0x5146_49fb;
/// The header extension naming the backing file's format.
const BACKING_FORMAT_EXTENSION: u32 = 0xe279_2aca;
/// The longest backing file name QEMU accepts.
const MAX_BACKING_NAME: usize = 1023;

/// Where the structures go, in clusters: QEMU's own order.
const REFCOUNT_TABLE_CLUSTER: u64 = 1;
const REFCOUNT_BLOCK_CLUSTER: u64 = 2;
const L1_CLUSTER: u64 = 3;

/// Writes `path`, an overlay of `size` bytes (rounded up to a whole sector)
/// over the raw image `base`, and syncs it.
pub fn create_overlay(path: &Path, base: &Path, size: u64) -> std::io::Result<()> {
    let bytes = overlay(base, size)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(&bytes)?;
    file.sync_all()
}

/// The size of the disk a qcow2 image holds, from its header.
pub fn virtual_size(path: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut header = [0u8; 32];
    std::fs::File::open(path)?.read_exact(&mut header)?;
    if header[..4] != MAGIC.to_be_bytes() {
        return Err(std::io::Error::other(format!(
            "{} is not a qcow2 image",
            path.display()
        )));
    }
    Ok(u64::from_be_bytes(header[24..32].try_into().unwrap()))
}

/// The overlay's bytes: every structure, the L1 table all zeros (nothing
/// allocated, so every read goes to the base).
fn overlay(base: &Path, size: u64) -> std::io::Result<Vec<u8>> {
    let name = base.as_os_str().as_encoded_bytes();
    if name.is_empty() || name.len() > MAX_BACKING_NAME {
        return Err(std::io::Error::other(format!(
            "backing file name {} is not 1 to {MAX_BACKING_NAME} bytes",
            base.display()
        )));
    }
    let size = size.div_ceil(512) * 512;
    let l1_entries = size.div_ceil(L1_ENTRY_SPAN).max(1);
    let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER);
    let clusters = L1_CLUSTER + l1_clusters;
    // One refcount block of 16-bit counts covers CLUSTER / 2 clusters,
    // enough for an L1 table of a 128 TiB disk.
    if clusters > CLUSTER / 2 {
        return Err(std::io::Error::other(format!(
            "a disk of {size} bytes is too large"
        )));
    }

    let mut out = vec![0u8; (clusters * CLUSTER) as usize];
    // Extensions follow the header; the backing file's name follows them.
    let mut extensions = Vec::new();
    extensions.extend_from_slice(&BACKING_FORMAT_EXTENSION.to_be_bytes());
    extensions.extend_from_slice(&3u32.to_be_bytes());
    extensions.extend_from_slice(b"raw\0\0\0\0\0"); // padded to 8 bytes
    extensions.extend_from_slice(&[0u8; 8]); // end of extensions
    let name_offset = HEADER_LENGTH as u64 + extensions.len() as u64;

    let mut header = Vec::with_capacity(HEADER_LENGTH as usize);
    header.extend_from_slice(&MAGIC.to_be_bytes());
    header.extend_from_slice(&3u32.to_be_bytes()); // version
    header.extend_from_slice(&name_offset.to_be_bytes());
    header.extend_from_slice(&(name.len() as u32).to_be_bytes());
    header.extend_from_slice(&CLUSTER_BITS.to_be_bytes());
    header.extend_from_slice(&size.to_be_bytes());
    header.extend_from_slice(&0u32.to_be_bytes()); // no encryption
    header.extend_from_slice(&(l1_entries as u32).to_be_bytes());
    header.extend_from_slice(&(L1_CLUSTER * CLUSTER).to_be_bytes());
    header.extend_from_slice(&(REFCOUNT_TABLE_CLUSTER * CLUSTER).to_be_bytes());
    header.extend_from_slice(&1u32.to_be_bytes()); // refcount table clusters
    header.extend_from_slice(&0u32.to_be_bytes()); // snapshots
    header.extend_from_slice(&0u64.to_be_bytes()); // snapshots offset
    header.extend_from_slice(&[0u8; 24]); // incompatible, compatible, autoclear features
    header.extend_from_slice(&4u32.to_be_bytes()); // refcount order: 16-bit counts
    header.extend_from_slice(&HEADER_LENGTH.to_be_bytes());
    debug_assert_eq!(header.len(), HEADER_LENGTH as usize);

    let name_at = name_offset as usize;
    out[..header.len()].copy_from_slice(&header);
    out[header.len()..name_at].copy_from_slice(&extensions);
    out[name_at..name_at + name.len()].copy_from_slice(name);

    let table = (REFCOUNT_TABLE_CLUSTER * CLUSTER) as usize;
    out[table..table + 8].copy_from_slice(&(REFCOUNT_BLOCK_CLUSTER * CLUSTER).to_be_bytes());
    // Every cluster the file has is in use once.
    let block = (REFCOUNT_BLOCK_CLUSTER * CLUSTER) as usize;
    for cluster in 0..clusters as usize {
        out[block + 2 * cluster..block + 2 * cluster + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! Checked by QEMU's own tools (qemu-utils, which scripts/setup installs
    //! for the tests): the overlay is consistent, names its base, and reads
    //! as the base followed by zeros.

    use std::process::Command;

    use super::*;

    fn qemu_img(args: &[&str]) -> String {
        let output = Command::new("qemu-img").args(args).output().unwrap();
        assert!(output.status.success(), "qemu-img {args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    }

    #[test]
    fn qemu_reads_the_overlay_as_its_base_grown_to_size() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        let content: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        std::fs::write(&base, &content).unwrap();

        for (size, l1_entries) in [(3u64 << 20, 1), ((5 << 30) + 1, 11)] {
            let overlay = dir.path().join(format!("disk-{size}.qcow2"));
            create_overlay(&overlay, &base, size).unwrap();
            let overlay = overlay.to_str().unwrap();
            qemu_img(&["check", overlay]);
            let info: serde_json::Value =
                serde_json::from_str(&qemu_img(&["info", "--output=json", overlay])).unwrap();
            assert_eq!(info["format"], "qcow2");
            assert_eq!(info["virtual-size"], size.div_ceil(512) * 512);
            let path = Path::new(overlay);
            assert_eq!(virtual_size(path).unwrap(), size.div_ceil(512) * 512);
            assert_eq!(info["backing-filename"], base.to_str().unwrap());
            assert_eq!(info["backing-filename-format"], "raw");
            assert_eq!(info["format-specific"]["data"]["compat"], "1.1");
            let bytes = std::fs::read(overlay).unwrap();
            assert_eq!(
                u32::from_be_bytes(bytes[36..40].try_into().unwrap()),
                l1_entries
            );

            if size < 1 << 30 {
                let raw = dir.path().join("read.raw");
                qemu_img(&["convert", "-O", "raw", overlay, raw.to_str().unwrap()]);
                assert_eq!(std::fs::read(&raw).unwrap(), content);
            }
        }
    }

    #[test]
    fn an_existing_file_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.qcow2");
        std::fs::write(&path, b"keep").unwrap();
        let error = create_overlay(&path, Path::new("/base.raw"), 1 << 20).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
        assert!(virtual_size(&path).is_err(), "not a qcow2 image");
    }
}
