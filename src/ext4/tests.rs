//! End-to-end tests: tar streams built in memory go through the Formatter,
//! and e2fsprogs (e2fsck, debugfs) is the oracle for the result.

use std::path::PathBuf;
use std::process::Command;

use tar::EntryType;

use super::{Error, FormatOptions, Formatter};

#[path = "../../tests/ext4_support/fsck.rs"]
mod fsck;
#[path = "../../tests/ext4_support/layer.rs"]
mod layer;
mod model;
use fsck::fsck;
use layer::Layer;

struct Image {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn build(size: u64, layers: Vec<Layer>) -> Result<Image, Error> {
    build_from(
        size,
        layers.into_iter().map(|l| std::io::Cursor::new(l.bytes())),
    )
}

/// An image from layer tar streams of any origin.
fn build_from<R: std::io::Read + Send>(
    size: u64,
    layers: impl IntoIterator<Item = R>,
) -> Result<Image, Error> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rootfs.ext4");
    let mut f = Formatter::create(&path, FormatOptions { size_bytes: size })?;
    for layer in layers {
        f.unpack_layer(layer)?;
    }
    f.finish()?;
    Ok(Image { _dir: dir, path })
}

impl Image {
    fn fsck(&self) {
        fsck(&self.path);
    }

    fn debugfs(&self, request: &str) -> String {
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(request)
            .arg(&self.path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn cat(&self, path: &str) -> Vec<u8> {
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat \"{path}\""))
            .arg(&self.path)
            .output()
            .unwrap();
        out.stdout
    }

    fn stat(&self, path: &str) -> String {
        self.debugfs(&format!("stat \"{path}\""))
    }

    fn exists(&self, path: &str) -> bool {
        !self.stat(path).is_empty()
    }

    /// Names in a directory, without `.` and `..`, sorted.
    fn ls(&self, path: &str) -> Vec<String> {
        let out = self.debugfs(&format!("ls -p \"{path}\""));
        let mut names: Vec<String> = out
            .lines()
            .filter_map(|l| l.split('/').nth(5).map(str::to_string))
            .filter(|n| !n.is_empty() && n != "." && n != "..")
            .collect();
        names.sort();
        names
    }
}

/// `field: value` out of debugfs stat output, e.g. "Mode" or "User".
fn field<'a>(stat: &'a str, name: &str) -> &'a str {
    let at = stat
        .find(&format!("{name}:"))
        .unwrap_or_else(|| panic!("no {name} in {stat}"));
    stat[at + name.len() + 1..]
        .split_whitespace()
        .next()
        .unwrap()
}

const MIB: u64 = 1 << 20;

#[test]
fn basic_tree_passes_fsck_and_reads_back() {
    let mut layer = Layer::new()
        .dir("etc/", 0o755)
        .file("etc/hostname", b"box\n")
        .dir("tmp/", 0o1777)
        .symlink("bin", "usr/bin")
        .symlink("long", &"x/".repeat(50))
        .file("empty", b"");
    layer.file_owned("usr/bin/sudo", b"#!/bin/sh\n", 0o4755, 100_000, 70_000);
    let img = build(64 * MIB, vec![layer]).unwrap();
    img.fsck();
    assert_eq!(img.cat("/etc/hostname"), b"box\n");
    assert_eq!(
        img.ls("/"),
        ["bin", "empty", "etc", "long", "lost+found", "tmp", "usr"]
    );
    let sudo = img.stat("/usr/bin/sudo");
    assert_eq!(field(&sudo, "Mode"), "04755");
    assert_eq!(field(&sudo, "User"), "100000");
    assert_eq!(field(&sudo, "Group"), "70000");
    assert!(sudo.contains("mtime: 0x6553f100"), "{sudo}");
    assert_eq!(field(&img.stat("/tmp"), "Mode"), "01777");
    assert!(img.stat("/bin").contains("Fast link dest: \"usr/bin\""));
    assert_eq!(img.cat("/long"), "x/".repeat(50).as_bytes());
    assert_eq!(field(&img.stat("/empty"), "Size"), "0");
    // Implicit parent directories exist with sane modes.
    assert_eq!(field(&img.stat("/usr"), "Mode"), "0755");
}

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    // Spread the seed over the word first: `seed | 1` alone makes 2 and 3 alike.
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn large_file_across_groups_with_holes() {
    let mut data = noise(6 * MIB as usize + 123, 7);
    // A 1 MiB run of zeros becomes a hole, not written blocks.
    data[2 * MIB as usize..3 * MIB as usize].fill(0);
    // Fill most of the first group so the file crosses into later groups.
    let filler = vec![1u8; 120 * MIB as usize];
    let layer = Layer::new().file("filler", &filler).file("big", &data);
    let img = build(2048 * MIB, vec![layer]).unwrap();
    img.fsck();
    assert_eq!(img.cat("/big"), data);
    let stat = img.stat("/big");
    assert_eq!(field(&stat, "Size"), data.len().to_string());
    // 5 MiB + one partial block of data, in 512-byte sectors.
    assert_eq!(
        field(&stat, "Blockcount"),
        ((5 * MIB / 4096 + 1) * 8).to_string()
    );
    use std::os::unix::fs::MetadataExt;
    let on_disk = std::fs::metadata(&img.path).unwrap().blocks() * 512;
    assert!(on_disk < 140 * MIB, "image is not sparse: {on_disk} bytes");
}

#[test]
fn big_directory_is_an_htree() {
    let mut layer = Layer::new();
    for i in 0..5000 {
        layer.file_owned(
            &format!("many/file-{i:05}-{}", "n".repeat(i % 40)),
            i.to_string().as_bytes(),
            0o644,
            0,
            0,
        );
    }
    let img = build(256 * MIB, vec![layer]).unwrap();
    img.fsck();
    assert!(
        img.stat("/many").contains("Flags: 0x81000"),
        "{}",
        img.stat("/many")
    );
    assert_eq!(img.ls("/many").len(), 5000);
    assert_eq!(img.cat("/many/file-04321-n"), b"4321");
    let htree = img.debugfs("htree_dump /many");
    assert!(htree.contains("Number of entries (count):"), "{htree}");
}

#[test]
fn deep_nesting_and_odd_names() {
    let deep: String = (0..100).map(|i| format!("d{i}/")).collect();
    let long = "L".repeat(255);
    let layer = Layer::new()
        .file(&format!("{deep}leaf"), b"deep")
        .file("with space/ü ñ 日本", b"utf8")
        .file(&format!("names/{long}"), b"long");
    let img = build(64 * MIB, vec![layer]).unwrap();
    img.fsck();
    assert_eq!(img.cat(&format!("/{deep}leaf")), b"deep");
    assert_eq!(img.cat("/with space/ü ñ 日本"), b"utf8");
    assert_eq!(img.ls("/names"), std::slice::from_ref(&long));
    assert_eq!(img.cat(&format!("/names/{long}")), b"long");
}

#[test]
fn whiteouts_and_opaque_directories_across_layers() {
    let lower = Layer::new()
        .file("a/x", &noise(50_000, 1))
        .file("a/y", b"y")
        .file("b/z", &noise(90_000, 2))
        .file("c/old", b"old")
        .file("c/sub/older", b"older")
        .file("keep", b"keep");
    let upper = Layer::new()
        .file("a/.wh.x", b"")
        .file(".wh.b", b"")
        .dir("c/", 0o750)
        .file("c/new", b"new")
        .file("c/.wh..wh..opq", b"")
        .file(".wh.missing", b"")
        .file("nothere/.wh.x", b"");
    let img = build(64 * MIB, vec![lower, upper]).unwrap();
    img.fsck();
    assert_eq!(img.ls("/"), ["a", "c", "keep", "lost+found"]);
    assert_eq!(img.ls("/a"), ["y"]);
    assert_eq!(img.ls("/c"), ["new"]);
    assert_eq!(field(&img.stat("/c"), "Mode"), "0750");
    assert_eq!(img.cat("/keep"), b"keep");
    // The deleted files' blocks are free again (e2fsck checked the counts).
    let free = |img: &Image| -> u64 {
        let out = Command::new("dumpe2fs")
            .arg("-h")
            .arg(&img.path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        field(&text, "Free blocks").parse().unwrap()
    };
    let without = build(
        64 * MIB,
        vec![
            Layer::new()
                .file("a/y", b"y")
                .file("c/new", b"new")
                .file("keep", b"keep"),
        ],
    )
    .unwrap();
    assert_eq!(free(&img), free(&without));
}

#[test]
fn replacing_kinds_and_overriding_metadata() {
    let lower = Layer::new()
        .file("p", b"was a file")
        .file("q/inner", b"inner")
        .dir("m/", 0o755)
        .file("m/kept", b"kept")
        .file("s", b"file then symlink");
    let upper = Layer::new()
        .dir("p/", 0o755)
        .file("p/child", b"child")
        .file("q", b"now a file")
        .symlink("s", "/m/kept")
        .with(0o700, 5, 6)
        .dir("m/", 0o755);
    let img = build(64 * MIB, vec![lower, upper]).unwrap();
    img.fsck();
    assert_eq!(img.cat("/p/child"), b"child");
    assert_eq!(img.cat("/q"), b"now a file");
    assert_eq!(img.ls("/m"), ["kept"]);
    let m = img.stat("/m");
    assert_eq!(
        (field(&m, "Mode"), field(&m, "User"), field(&m, "Group")),
        ("0700", "5", "6")
    );
    assert!(img.stat("/s").contains("Fast link dest: \"/m/kept\""));
}

#[test]
fn hard_links_within_and_across_layers() {
    let data = noise(100_000, 3);
    let lower = Layer::new()
        .file("bin/busybox", &data)
        .hardlink("bin/ls", "bin/busybox");
    let upper = Layer::new()
        .hardlink("usr/bin/sh", "/bin/busybox")
        .hardlink("bin/ls", "bin/busybox");
    let top = Layer::new().file("bin/.wh.busybox", b"");
    let img = build(64 * MIB, vec![lower, upper, top]).unwrap();
    img.fsck();
    assert!(!img.exists("/bin/busybox"));
    assert_eq!(img.cat("/usr/bin/sh"), data);
    let ls = img.stat("/bin/ls");
    assert_eq!(field(&ls, "Links"), "2");
    assert_eq!(
        img.stat("/usr/bin/sh").lines().next(),
        ls.lines().next(),
        "same inode"
    );
    let err = build(64 * MIB, vec![Layer::new().hardlink("x", "nope")])
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "tar entry \"x\" is a hard link to \"nope\", which is not in the image"
    );
}

#[test]
fn paths_cannot_escape_the_image() {
    let layer = Layer::new()
        .raw(b"../../../escaped", b"1")
        .raw(b"/abs/olute", b"2")
        .raw(b"./a/../../b/./c", b"3")
        .symlink("up", "../../../../")
        .raw(b"up/through-link", b"4")
        .symlink("etc", "/real-etc")
        .raw(b"etc/passwd", b"5")
        .hardlink("linked", "../../../etc/passwd");
    let img = build(64 * MIB, vec![layer]).unwrap();
    img.fsck();
    assert_eq!(img.cat("/escaped"), b"1");
    assert_eq!(img.cat("/abs/olute"), b"2");
    assert_eq!(img.cat("/b/c"), b"3");
    assert_eq!(img.cat("/through-link"), b"4");
    assert_eq!(img.cat("/real-etc/passwd"), b"5");
    assert_eq!(img.cat("/linked"), b"5");
    let bad = Layer::new().file("f", b"").raw(b"f/under", b"x");
    let err = build(64 * MIB, vec![bad]).err().unwrap();
    assert_eq!(
        err.to_string(),
        "tar entry \"f/under\" passes through \"f\", which is not a directory"
    );
    let looped = Layer::new().symlink("l", "l").raw(b"l/x", b"x");
    let err = build(64 * MIB, vec![looped]).err().unwrap();
    assert_eq!(
        err.to_string(),
        "tar entry \"l/x\" passes through more than 40 symbolic links"
    );
}

#[test]
fn devices_fifos_xattrs_and_pax_times() {
    let cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let big = vec![b'v'; 1500];
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 7u16, u32::MAX),
        (2, 6, 1000),
        (4, 5, u32::MAX),
        (0x10, 7, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    let layer = Layer::new()
        .device(EntryType::Char, "dev/null", 1, 3)
        .device(EntryType::Block, "dev/sda", 8, 0)
        .device(EntryType::Char, "dev/big", 300, 70000)
        .device(EntryType::Fifo, "run/fifo", 0, 0)
        .pax(&[
            ("SCHILY.xattr.security.capability", cap),
            ("SCHILY.xattr.user.small", b"hi"),
            ("SCHILY.xattr.user.big", &big),
            ("SCHILY.xattr.com.apple.quarantine", b"dropped"),
            ("mtime", b"1700000000.123456789"),
            ("atime", b"1600000000.5"),
        ])
        .file("bin/ping", b"ping")
        .pax(&[
            ("SCHILY.xattr.system.posix_acl_access", &acl),
            ("SCHILY.xattr.security.capability", cap),
        ])
        .symlink("sym", "bin/ping");
    let img = build(64 * MIB, vec![layer]).unwrap();
    img.fsck();
    let null = img.stat("/dev/null");
    assert!(null.contains("Type: character special"), "{null}");
    assert!(null.contains("Device major/minor number: 01:03"), "{null}");
    assert!(img.stat("/dev/sda").contains("Type: block special"));
    assert!(
        img.stat("/dev/sda")
            .contains("Device major/minor number: 08:00")
    );
    assert!(
        img.stat("/dev/big")
            .contains("Device major/minor number: 300:70000"),
        "{}",
        img.stat("/dev/big")
    );
    assert!(img.stat("/run/fifo").contains("Type: FIFO"));
    let ping = img.stat("/bin/ping");
    assert!(ping.contains(" mtime: 0x6553f100:1d6f3454"), "{ping}");
    assert!(ping.contains(" atime: 0x5f5e1000:77359400"), "{ping}");
    assert_ne!(
        field(&ping, "File ACL"),
        "0",
        "the big xattr spilled into a block"
    );
    let attrs = img.debugfs("ea_list /bin/ping");
    assert!(attrs.contains("user.small (2) = \"hi\""), "{attrs}");
    assert!(attrs.contains("security.capability (20)"), "{attrs}");
    assert!(attrs.contains("user.big (1500)"), "{attrs}");
    assert!(!attrs.contains("quarantine"), "{attrs}");
    let acl_list = img.debugfs("ea_list /sym");
    assert!(acl_list.contains("system.posix_acl_access"), "{acl_list}");
    let got = img.debugfs("ea_get /sym security.capability");
    assert!(got.contains("01 00 00 02 00 20"), "{got}");
    let huge: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("SCHILY.xattr.user.k{i}"), vec![1u8; 300]))
        .collect();
    let records: Vec<(&str, &[u8])> = huge.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
    let err = build(64 * MIB, vec![Layer::new().pax(&records).file("f", b"")])
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "tar entry \"f\" has more xattrs than fit in its inode and one 4 KiB block"
    );
}

#[test]
fn fragmented_file_gets_a_deep_extent_tree() {
    // Fill a small image, free every other block-sized file, then write a
    // file bigger than any free run: it has to take the holes.
    let mut lower = Layer::new().file("filler", &vec![9u8; 12 * MIB as usize]);
    for i in 0..1400 {
        lower.file_owned(&format!("small/{i}"), &[1u8; 4096], 0o644, 0, 0);
    }
    let mut upper = Layer::new();
    for i in (0..1400).step_by(2) {
        upper.file_owned(&format!("small/.wh.{i}"), b"", 0o644, 0, 0);
    }
    let data = noise(8 * MIB as usize, 11);
    let top = Layer::new().file("big", &data);
    let img = build(24 * MIB, vec![lower, upper, top]).unwrap();
    img.fsck();
    assert_eq!(img.cat("/big"), data);
    let extents = img.debugfs("ex /big");
    assert!(extents.contains("Level Entries"), "{extents}");
    assert!(
        extents.lines().any(|l| l.trim_start().starts_with("0/ 1")),
        "depth 1 expected:\n{extents}"
    );
    let full = build(
        24 * MIB,
        vec![Layer::new().file("huge", &vec![1u8; 30 * MIB as usize])],
    );
    assert_eq!(
        full.err().unwrap().to_string(),
        "the image is full: there is no room for the data of \"huge\""
    );
}

/// Reads as `len` bytes of zeros except `marks` (offset, byte) placed in
/// them, without ever holding them in memory.
struct Sparse {
    pos: u64,
    len: u64,
    marks: Vec<(u64, u8)>,
}

impl std::io::Read for Sparse {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.len - self.pos).min(buf.len() as u64) as usize;
        buf[..n].fill(0);
        for &(at, byte) in &self.marks {
            if (self.pos..self.pos + n as u64).contains(&at) {
                buf[(at - self.pos) as usize] = byte;
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[test]
fn multi_gib_mostly_zero_file_fits_a_small_image() {
    let len = (5 << 30) + 3;
    let marks = vec![(0, b'a'), (3 << 30, b'b'), (len - 1, b'z')];
    let mut header = Layer::header(EntryType::Regular, 0o644, len);
    header.set_path("var/log/lastlog").unwrap();
    header.set_cksum();
    let padding = (512 - len % 512) % 512 + 1024;
    let tar = std::io::Read::chain(
        std::io::Read::chain(&header.as_bytes()[..], Sparse { pos: 0, len, marks }),
        std::io::Read::take(std::io::repeat(0), padding),
    );
    let img = build_from(32 * MIB, [tar]).unwrap();
    img.fsck();
    let stat = img.stat("/var/log/lastlog");
    assert_eq!(field(&stat, "Size"), len.to_string());
    assert_eq!(field(&stat, "Blockcount"), "24", "three data blocks");
    let dump = img.debugfs("dump_extents /var/log/lastlog");
    let logical: Vec<&str> = dump
        .lines()
        .filter(|l| l.contains(" - "))
        .map(|l| l.split_whitespace().nth(4).unwrap())
        .collect();
    assert_eq!(logical, ["0", "786432", "1310720"], "{dump}");
}

/// PAX records are read by their length: a binary xattr holding 0x0A (as
/// some file capabilities do) arrives whole, and a crafted value cannot
/// smuggle in a record of its own (the tar crate splits at newlines and
/// would see a `linkpath` here; tar-rs #428).
#[test]
fn pax_values_may_hold_newlines() {
    let cap = b"\x01\x00\x00\x02\x02\x00\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let crafted = b"x\n22 linkpath=/etc/evil\n";
    let layer = Layer::new()
        .pax(&[
            ("SCHILY.xattr.security.capability", cap),
            ("SCHILY.xattr.user.crafted", crafted),
        ])
        .file("usr/bin/telegraf", b"x");
    let img = build(64 * MIB, vec![layer]).unwrap();
    img.fsck();
    let got = img.debugfs("ea_get -x /usr/bin/telegraf security.capability");
    assert!(got.contains("01 00 00 02 02 00 0a 00"), "{got}");
    let stat = img.stat("/usr/bin/telegraf");
    assert!(stat.contains("Type: regular"), "{stat}");
    assert!(stat.contains("user.crafted (24)"), "{stat}");
}

/// Archives from GNU tar itself: sparse files in each of its four formats
/// (their holes read as zeros and stay holes), POSIX-format long names, and
/// the dumpdir entries of an incremental archive (directories, with their
/// owner and mode).
#[test]
fn gnu_tar_archives() {
    let dir = tempfile::tempdir().unwrap();
    let sparse = dir.path().join("s");
    let mut content = vec![0u8; 5 << 20];
    content[2 << 20..(2 << 20) + 4].copy_from_slice(b"data");
    content[(5 << 20) - 1] = b'!';
    // Holes on the host too, or GNU tar sees plain data.
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::create(&sparse).unwrap();
        file.set_len(content.len() as u64).unwrap();
        file.write_all_at(b"data", 2 << 20).unwrap();
        file.write_all_at(b"!", (5 << 20) - 1).unwrap();
    }
    let deep = dir
        .path()
        .join(format!("{}/{}", "d".repeat(120), "e".repeat(120)));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("f"), b"long").unwrap();
    let private = dir.path().join("inc/private");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::write(private.join("f"), b"inside").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o750)).unwrap();
    let tar = |options: &[&str], names: &[&str]| {
        let out = Command::new("tar")
            .arg("-C")
            .arg(dir.path())
            .args([
                "--numeric-owner",
                "--owner=1234",
                "--group=5678",
                "-cf",
                "-",
            ])
            .args(options)
            .args(names)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let old_sparse = tar(&["--sparse", "--format=gnu"], &["s"]);
    assert_eq!(old_sparse[156], b'S', "GNU tar wrote no sparse entry");
    let long = format!("{}/{}/f", "d".repeat(120), "e".repeat(120));
    let snapshot = dir.path().join("snar");
    let incremental = tar(
        &[&format!("--listed-incremental={}", snapshot.display())],
        &["inc"],
    );
    assert_eq!(incremental[156], b'D', "GNU tar wrote no dumpdir entry");
    let layers = [old_sparse, tar(&["--format=posix"], &[&long]), incremental];
    let img = build_from(64 * MIB, layers.iter().map(|l| &l[..])).unwrap();
    img.fsck();
    assert!(
        img.cat("/s") == content,
        "the sparse file reads back differently"
    );
    assert_eq!(
        field(&img.stat("/s"), "Blockcount"),
        "16",
        "holes were written"
    );
    assert_eq!(img.cat(&format!("/{long}")), b"long");
    let stat = img.stat("/inc/private");
    assert_eq!(field(&stat, "Mode"), "0750", "{stat}");
    assert_eq!(field(&stat, "User"), "1234", "{stat}");
    assert_eq!(field(&stat, "Group"), "5678", "{stat}");
    assert_eq!(img.cat("/inc/private/f"), b"inside");

    for version in ["0.0", "0.1", "1.0"] {
        let layer = tar(
            &[
                "--sparse",
                "--format=posix",
                &format!("--sparse-version={version}"),
            ],
            &["s"],
        );
        let img = build_from(64 * MIB, [&layer[..]]).unwrap();
        img.fsck();
        assert_eq!(img.ls("/"), ["lost+found", "s"], "version {version}");
        assert!(
            img.cat("/s") == content,
            "version {version} reads back differently"
        );
        let stat = img.stat("/s");
        assert_eq!(
            field(&stat, "Blockcount"),
            "16",
            "version {version}: {stat}"
        );
    }
}

/// An old-style GNU sparse file of 1 TiB with 8 KiB of data: the hole is
/// skipped, not read as a terabyte of zeros, and costs no blocks.
#[test]
fn a_terabyte_sparse_file_is_only_its_data() {
    // GNU tar writes numbers too big for octal in base 256.
    fn octal(field: &mut [u8], value: u64) {
        field.fill(0);
        field[0] = 0x80;
        let bytes = value.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&bytes);
    }
    let real: u64 = 1 << 40;
    let mut h = tar::Header::new_gnu();
    h.set_path("var/log/lastlog").unwrap();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_size(8192);
    let gnu = h.as_gnu_mut().unwrap();
    octal(&mut gnu.sparse[0].offset, 0);
    octal(&mut gnu.sparse[0].numbytes, 4096);
    octal(&mut gnu.sparse[1].offset, real - 4096);
    octal(&mut gnu.sparse[1].numbytes, 4096);
    octal(&mut gnu.realsize, real);
    h.set_cksum();
    let data = [vec![b'a'; 4096], vec![b'z'; 4096]].concat();
    let tar = [h.as_bytes().as_slice(), &data, &[0u8; 1024]].concat();
    let img = build_from(64 * MIB, [&tar[..]]).unwrap();
    img.fsck();
    let stat = img.stat("/var/log/lastlog");
    assert_eq!(field(&stat, "Size"), real.to_string(), "{stat}");
    assert_eq!(field(&stat, "Blockcount"), "16", "{stat}");
    let extents = img.debugfs("ex /var/log/lastlog");
    assert!(extents.contains("268435455 - 268435455"), "{extents}");
}
