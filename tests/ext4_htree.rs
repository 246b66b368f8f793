//! A directory of 200,000 entries: the writer indexes it with a two-level
//! htree, e2fsck accepts it, and the host kernel, which looks names up
//! through that index, finds every name asked for and no other. Needs root
//! (a loop mount).

mod common;
mod ext4_support;

use std::io::Read;

use container::ext4::{FormatOptions, Formatter};
use ext4_support::{debugfs, fsck::fsck, loop_mount, run};

const ENTRIES: usize = 200_000;

fn name(i: usize) -> String {
    format!("big/entry-{i:07}")
}

/// The layer, made on the fly so 100 MB of headers never sit in memory:
/// one empty file per entry, then the end-of-archive blocks.
struct Layer {
    next: usize,
    block: Vec<u8>,
    at: usize,
}

impl Read for Layer {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.block.len() {
            self.block = match self.next {
                i if i < ENTRIES => {
                    let mut h = tar::Header::new_ustar();
                    h.set_path(name(i))?;
                    h.set_size(0);
                    h.set_mode(0o644);
                    h.set_mtime(1_700_000_000);
                    h.set_cksum();
                    h.as_bytes().to_vec()
                }
                i if i == ENTRIES => vec![0; 1024],
                _ => return Ok(0),
            };
            self.next += 1;
            self.at = 0;
        }
        let n = out.len().min(self.block.len() - self.at);
        out[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn two_hundred_thousand_names_in_one_directory() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("big.ext4");
    let options = FormatOptions {
        size_bytes: 4 << 30,
    };
    let mut fs = Formatter::create(&image, options).unwrap();
    let layer = Layer {
        next: 0,
        block: Vec::new(),
        at: 0,
    };
    fs.unpack_layer(layer).unwrap();
    fs.finish().unwrap();
    fsck(&image);
    let root = debugfs(&image, "htree_dump /big");
    assert!(
        root.contains("Indirect levels: 1"),
        "{}",
        &root[..root.len().min(400)]
    );

    let mnt = loop_mount(&image, "ro");
    let mnt_str = mnt.to_str().unwrap();
    let listed = std::fs::read_dir(mnt.join("big")).map(|d| d.count());
    let missing: Vec<String> = (0..ENTRIES)
        .step_by(997)
        .chain([ENTRIES - 1])
        .map(name)
        .filter(|n| !mnt.join(n).exists())
        .collect();
    let phantom = mnt.join(name(ENTRIES)).exists() || mnt.join("big/entry-x").exists();
    // Unmount before asserting, so a failure leaves no mount behind.
    run("umount", &[mnt_str]);
    assert_eq!(listed.unwrap(), ENTRIES);
    assert!(missing.is_empty(), "the kernel cannot find {missing:?}");
    assert!(!phantom, "the kernel found a name that was never written");
}
