//! The ext4 writer fed arbitrary layer tars: every image it finishes must
//! pass `e2fsck -fn` without a word, and nothing may panic.
//!
//! The first byte picks the image: bits 0-2 its size (1 MiB to 300 MiB, so
//! one to three block groups), bit 3 a 4 MiB journal, bit 4 leaves header
//! checksums as they are (else they are fixed, to get past them). The rest
//! is up to four layers, split at `container_fuzz::LAYER_SEPARATOR`.
#![no_main]

use container::ext4::{FormatOptions, Formatter};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/ext4_support/fsck.rs"]
mod fsck;

const MIB: u64 = 1 << 20;
const SIZES: [u64; 8] = [
    MIB,
    2 * MIB,
    4 * MIB,
    8 * MIB,
    16 * MIB,
    64 * MIB,
    129 * MIB,
    300 * MIB,
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut layers: Vec<Vec<u8>> = container_fuzz::layers(rest)
        .into_iter()
        .take(4)
        .map(<[u8]>::to_vec)
        .collect();
    if mode & 16 == 0 {
        layers
            .iter_mut()
            .for_each(|l| container_fuzz::fix_tar_checksums(l));
    }
    let dir = tempfile::Builder::new()
        .prefix("fuzz-ext4-")
        .tempdir_in(scratch())
        .expect("a scratch directory");
    let path = dir.path().join("image.ext4");
    let options = FormatOptions {
        size_bytes: SIZES[usize::from(mode & 7)],
    };
    let mut image = Formatter::create(&path, options).expect("every size here is valid");
    if mode & 8 != 0 {
        image = match image.with_journal(4 * MIB) {
            Ok(image) => image,
            Err(_) => return, // no room in a 1 MiB image
        };
    }
    for layer in &layers {
        if image.unpack_layer(&layer[..]).is_err() {
            return;
        }
    }
    if image.finish().is_ok() {
        fsck::fsck(&path);
    }
});

/// tmpfs when there is one, to spare the disk thousands of images a minute.
fn scratch() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.into()
    } else {
        std::env::temp_dir()
    }
}
