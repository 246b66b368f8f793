//! A multi-layer image through the whole pipeline: layers built here (gzip,
//! zstd and uncompressed) are pushed to a real registry, pulled, written into a snapshot by our ext4
//! writer, and a container (one VM) lists what it sees. The listing must be
//! exactly the tree the layers describe.

mod common;
mod ext4_support;

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};
use tar::EntryType;

use common::{Cli, Registry, text};
use ext4_support::layer::{Layer, MTIME};
use ext4_support::{busybox_layer, debugfs, fsck::fsck, push_layers, snapshot};

const S_IFIFO: u32 = 0o010000;
const S_IFCHR: u32 = 0o020000;
const S_IFDIR: u32 = 0o040000;
const S_IFBLK: u32 = 0o060000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// The busybox layer's /home; nothing above it relists the directory.
const BUSYBOX_MTIME: u64 = 1_704_067_200;

/// What the guest prints, in sections separated by `--` lines: a stat line
/// per path under /data and /home, a checksum per regular file, a target
/// per symlink, leftovers that should not exist, and how many names /bin has.
const LISTING: &str = "\
find /data /home -exec stat -c '%n %f %u %g %h %t %T %s %Y' {} \\;
echo --
find /data -type f -exec sha256sum {} \\;
echo --
find /data -type l | while read -r l; do echo \"$l $(readlink \"$l\")\"; done
echo --
for p in /etc/app /etc/app/conf; do if [ -e $p ]; then echo $p; fi; done
echo --
ls /bin | wc -l";

/// A `stat -c '%n %f %u %g %h %t %T %s %Y'` line as busybox prints it.
struct Stat {
    mode: u32,
    uid: u32,
    gid: u32,
    links: u32,
    dev: (u32, u32),
    size: u64,
}

impl Stat {
    fn new(mode: u32, owner: (u32, u32), links: u32, size: u64) -> Stat {
        Stat {
            mode,
            uid: owner.0,
            gid: owner.1,
            links,
            dev: (0, 0),
            size,
        }
    }

    fn device(mode: u32, owner: (u32, u32), dev: (u32, u32)) -> Stat {
        Stat {
            dev,
            ..Stat::new(mode, owner, 1, 0)
        }
    }

    fn line(&self, path: &str, mtime: u64) -> String {
        let Stat {
            mode,
            uid,
            gid,
            links,
            dev: (major, minor),
            size,
        } = self;
        format!("{path} {mode:x} {uid} {gid} {links} {major:x} {minor:x} {size} {mtime}")
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

const ROOT: (u32, u32) = (0, 0);
const APP: (u32, u32) = (1000, 1000);
const APP_STAFF: (u32, u32) = (1000, 50);

/// Version 2 file capabilities granting cap_net_raw (bit 13), as setcap writes them.
fn cap_net_raw() -> Vec<u8> {
    let mut cap = Vec::new();
    for word in [0x0200_0002u32, 1 << 13, 0, 0, 0] {
        cap.extend_from_slice(&word.to_le_bytes());
    }
    cap
}

#[test]
fn a_container_sees_exactly_the_tree_its_layers_describe() {
    let sparse = [vec![b'A'; 1 << 20], vec![0; 1 << 20], vec![b'B'; 1 << 20]].concat();
    let long_target = format!("{}end", "a/".repeat(40));
    let big_value = vec![b'x'; 3000];
    let middle = Layer::new()
        .dir("data/", 0o755)
        .file("data/orig.txt", b"original\n")
        .hardlink("data/hard", "data/orig.txt")
        .hardlink("data/hard2", "data/orig.txt")
        .file("data/gone.txt", b"gone\n")
        .dir("data/again/", 0o755)
        .file("data/again/child", b"child\n")
        .with(0o750, 1000, 1000)
        .dir("data/opq/", 0o755)
        .file("data/opq/a.txt", b"a\n")
        .dir("data/opq/sub/", 0o755)
        .file("data/opq/sub/b.txt", b"b\n")
        .with(0o4755, 0, 0)
        .file("data/suid", b"#!/bin/sh\n")
        .with(0o6750, 1000, 50)
        .file("data/sgid-file", b"x\n")
        .with(0o2775, 0, 50)
        .dir("data/sgid/", 0o755)
        .with(0o1777, 0, 0)
        .dir("data/sticky/", 0o755)
        .with(0o666, 0, 0)
        .device(EntryType::Char, "data/null", 1, 3)
        .with(0o660, 0, 6)
        .device(EntryType::Block, "data/sda1", 8, 1)
        .with(0o600, 0, 0)
        .device(EntryType::Char, "data/big-dev", 300, 70000)
        .with(0o620, 1000, 50)
        .device(EntryType::Fifo, "data/fifo", 0, 0)
        .symlink("data/link", "orig.txt")
        .symlink("data/long-link", &long_target)
        .pax(&[
            ("SCHILY.xattr.user.note", b"hello"),
            ("SCHILY.xattr.security.capability", &cap_net_raw()),
            ("SCHILY.xattr.trusted.big", &big_value),
        ])
        .file("data/xattrs", b"xattrs\n")
        .file("data/sparse", &sparse)
        .file("data/replaced", &vec![b'R'; 2 << 20])
        .dir("etc/app/", 0o755)
        .file("etc/app/conf", b"conf\n")
        .file("etc/app/sub/deep", b"deep\n");
    // Entries come before the whiteouts that hide lower versions of them,
    // the order in which they are hardest to get right.
    let top = Layer::new()
        .file("data/.wh.gone.txt", b"")
        .file("data/.wh.orig.txt", b"")
        .with(0o600, 0, 0)
        .file("data/again", b"now a file\n")
        .file("data/.wh.again", b"")
        .file("data/opq/new.txt", b"new\n")
        .file("data/opq/.wh..wh..opq", b"")
        .pax(&[("SCHILY.xattr.user.dir", b"new")])
        .with(0o2770, 1000, 50)
        .dir("data/sgid/", 0o755)
        .file("data/replaced", b"small\n")
        .hardlink("data/xlink", "data/sgid-file")
        .file("etc/.wh.app", b"")
        .file("home/.wh.app", b"");

    // One layer per compression an image can use: gzip (busybox), zstd,
    // and none (`raw:` to scripts/make-layered-image).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let middle_zst = dir.path().join("middle.tar.zst");
    let top_tar = dir.path().join("top.tar");
    std::fs::write(
        &middle_zst,
        zstd::encode_all(&middle.bytes()[..], 3).unwrap(),
    )
    .unwrap();
    std::fs::write(&top_tar, top.bytes()).unwrap();
    let top_raw = std::path::PathBuf::from(format!("raw:{}", top_tar.display()));
    let base = busybox_layer();

    let registry = Registry::start();
    let image = push_layers(&registry, "layers", &[&base, &middle_zst, &top_raw]);
    let cli = Cli::new();
    let output = cli.run(&["run", "--rm", &image, "sh", "-c", LISTING]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    let sections: Vec<BTreeSet<&str>> = stdout.split("--\n").map(|s| s.lines().collect()).collect();
    assert_eq!(sections.len(), 5, "stdout: {stdout}");

    let dir_stat = |perm, owner, links| Stat::new(S_IFDIR | perm, owner, links, 4096);
    let file_stat = |perm, owner, links, data: &[u8]| {
        Stat::new(S_IFREG | perm, owner, links, data.len() as u64)
    };
    let tree = [
        ("/data", dir_stat(0o755, ROOT, 5)),
        ("/data/again", file_stat(0o600, ROOT, 1, b"now a file\n")),
        (
            "/data/big-dev",
            Stat::device(S_IFCHR | 0o600, ROOT, (300, 70000)),
        ),
        (
            "/data/fifo",
            Stat::device(S_IFIFO | 0o620, APP_STAFF, (0, 0)),
        ),
        ("/data/hard", file_stat(0o644, ROOT, 2, b"original\n")),
        ("/data/hard2", file_stat(0o644, ROOT, 2, b"original\n")),
        ("/data/link", Stat::new(S_IFLNK | 0o777, ROOT, 1, 8)),
        (
            "/data/long-link",
            Stat::new(S_IFLNK | 0o777, ROOT, 1, long_target.len() as u64),
        ),
        ("/data/null", Stat::device(S_IFCHR | 0o666, ROOT, (1, 3))),
        ("/data/opq", dir_stat(0o750, APP, 2)),
        ("/data/opq/new.txt", file_stat(0o644, ROOT, 1, b"new\n")),
        ("/data/replaced", file_stat(0o644, ROOT, 1, b"small\n")),
        ("/data/sda1", Stat::device(S_IFBLK | 0o660, (0, 6), (8, 1))),
        ("/data/sgid", dir_stat(0o2770, APP_STAFF, 2)),
        ("/data/sgid-file", file_stat(0o6750, APP_STAFF, 2, b"x\n")),
        ("/data/sparse", file_stat(0o644, ROOT, 1, &sparse)),
        ("/data/sticky", dir_stat(0o1777, ROOT, 2)),
        ("/data/suid", file_stat(0o4755, ROOT, 1, b"#!/bin/sh\n")),
        ("/data/xattrs", file_stat(0o644, ROOT, 1, b"xattrs\n")),
        ("/data/xlink", file_stat(0o6750, APP_STAFF, 2, b"x\n")),
    ];
    let mut expected: BTreeSet<String> = tree
        .iter()
        .map(|(path, stat)| stat.line(path, MTIME))
        .collect();
    expected.insert(dir_stat(0o755, ROOT, 2).line("/home", BUSYBOX_MTIME));
    assert_eq!(sections[0], expected.iter().map(String::as_str).collect());

    let contents: [(&str, &[u8]); 10] = [
        ("/data/again", b"now a file\n"),
        ("/data/hard", b"original\n"),
        ("/data/hard2", b"original\n"),
        ("/data/opq/new.txt", b"new\n"),
        ("/data/replaced", b"small\n"),
        ("/data/sgid-file", b"x\n"),
        ("/data/sparse", &sparse),
        ("/data/suid", b"#!/bin/sh\n"),
        ("/data/xattrs", b"xattrs\n"),
        ("/data/xlink", b"x\n"),
    ];
    let sums: BTreeSet<String> = contents
        .iter()
        .map(|(path, data)| format!("{}  {path}", sha256_hex(data)))
        .collect();
    assert_eq!(sections[1], sums.iter().map(String::as_str).collect());

    let links = format!("/data/link orig.txt\n/data/long-link {long_target}");
    assert_eq!(sections[2], links.lines().collect());
    assert_eq!(sections[3], BTreeSet::new(), "whited-out /etc/app survives");
    let bin_count = busybox_bin_names(&base);
    assert_eq!(
        sections[4],
        BTreeSet::from([bin_count.to_string().as_str()])
    );

    // busybox has no getfattr, so xattrs are read from the snapshot itself.
    let snapshot = snapshot(&cli);
    fsck(&snapshot);
    let xattrs = debugfs(&snapshot, "ea_list /data/xattrs");
    assert!(xattrs.contains("user.note (5) = \"hello\""), "{xattrs}");
    assert!(xattrs.contains("security.capability (20)"), "{xattrs}");
    assert!(xattrs.contains("trusted.big (3000)"), "{xattrs}");
    let dir_xattrs = debugfs(&snapshot, "ea_list /data/sgid");
    assert!(
        dir_xattrs.contains("user.dir (3) = \"new\""),
        "{dir_xattrs}"
    );
    let value = debugfs(&snapshot, "ea_get -V /data/xattrs trusted.big");
    assert_eq!(value.trim_end(), String::from_utf8(big_value).unwrap());
}

/// A layer that breaks halfway (its second header is damaged, after the
/// first entry's data is written) fails `create` with one line naming the
/// problem, and leaves no snapshot, no temp file and no container behind.
#[test]
fn a_broken_layer_leaves_nothing_behind() {
    let mut tar = Layer::new().file("ok", b"fine").file("bad", b"x").bytes();
    tar[1024 + 1] ^= 0x20; // the second header's name: its checksum no longer holds
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let layer = dir.path().join("broken.tar");
    std::fs::write(&layer, tar).unwrap();
    let registry = Registry::start();
    let image = push_layers(&registry, "broken", &[&layer]);
    let cli = Cli::new();
    let output = cli.run(&["create", &image]);
    let (_, stderr) = text(&output);
    assert_ne!(output.status.code(), Some(0));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("Error: ")
            && stderr.contains("the header at byte 1024 has a wrong checksum"),
        "{stderr}"
    );
    let left: Vec<String> = std::fs::read_dir(cli.app_root.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "left in snapshots/: {left:?}");
    assert_eq!(text(&cli.run(&["ls", "-a", "-q"])).0, "");
}

/// How many names the busybox layer puts directly under /bin.
fn busybox_bin_names(layer: &std::path::Path) -> usize {
    let gz = std::fs::File::open(layer).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut count = 0;
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        let mut parts = path.components().skip_while(|c| c.as_os_str() == ".");
        if parts.next().is_some_and(|c| c.as_os_str() == "bin") && parts.count() == 1 {
            count += 1;
        }
    }
    count
}
