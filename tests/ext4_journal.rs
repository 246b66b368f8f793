//! The optional journal: an image written with one passes e2fsck, the host
//! kernel mounts it with `data=ordered` and commits transactions to it,
//! and it is still clean afterwards. Needs root (a loop mount).

mod common;
mod ext4_support;

use std::path::Path;

use container::ext4::{Error, FormatOptions, Formatter};
use ext4_support::{debugfs, fsck::fsck, layer::Layer, loop_mount, run};

/// The transaction the journal will start with, from an empty journal's
/// `logdump`: "Journal starts at block 0, transaction N".
fn next_transaction(image: &Path) -> u32 {
    let log = debugfs(image, "logdump");
    let n = log
        .trim()
        .strip_prefix("Journal starts at block 0, transaction ")
        .unwrap_or_else(|| panic!("not an empty journal: {log}"));
    n.parse().unwrap()
}

fn formatter(path: &Path) -> Formatter {
    let options = FormatOptions {
        size_bytes: 256 << 20,
    };
    Formatter::create(path, options).unwrap()
}

#[test]
fn a_journaled_image_mounts_ordered_and_stays_clean() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("root.ext4");
    let mut fs = formatter(&image).with_journal(16 << 20).unwrap();
    // More inodes than one inode-table block holds (16): the journal's
    // inode 8 shares the first block with the root's and must not wipe it.
    let mut layer = Layer::new()
        .dir("etc/", 0o755)
        .file("etc/hostname", b"box\n");
    for i in 0..40 {
        layer = layer.file(&format!("etc/f{i}"), b"x");
    }
    fs.unpack_layer(&layer.bytes()[..]).unwrap();
    fs.finish().unwrap();
    fsck(&image);
    let stats = debugfs(&image, "stats");
    assert!(stats.contains("has_journal"), "{stats}");
    let inode = debugfs(&image, "stat <8>");
    assert!(inode.contains("Size: 16777216"), "{inode}");
    // Empty, as mke2fs leaves it: nothing to replay, first transaction 1.
    assert_eq!(next_transaction(&image), 1);

    let mnt = loop_mount(&image, "data=ordered");
    let mnt_str = mnt.to_str().unwrap();
    let written = std::fs::write(mnt.join("etc/written"), b"through the journal\n")
        .and_then(|()| std::fs::read(mnt.join("etc/hostname")));
    // Unmount before asserting, so a failure leaves no mount behind.
    run("sync", &["-f", mnt_str]);
    run("umount", &[mnt_str]);
    assert_eq!(written.unwrap(), b"box\n");
    fsck(&image);
    // Clean again after unmounting, and the kernel committed through it.
    assert!(next_transaction(&image) > 1);
    assert_eq!(debugfs(&image, "cat /etc/written"), "through the journal\n");
}

#[test]
fn a_journal_under_four_mib_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let result = formatter(&dir.path().join("x.ext4")).with_journal(1 << 20);
    assert!(matches!(result, Err(Error::JournalTooSmall(_))));
}
