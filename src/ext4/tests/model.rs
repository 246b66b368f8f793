//! The property test: random layers against a model of what OCI layer
//! semantics should leave, read back from the image with debugfs.
//!
//! Each seed builds four layers of random entries of every kind (files big,
//! sparse and empty, directories, fast and slow symlinks, hard links,
//! devices, FIFOs), with odd names, one deep chain, random modes (setuid,
//! setgid, sticky), 32-bit owners, nanosecond mtimes and xattrs (some big
//! enough to need an xattr block), plus whiteouts and opaque directories.
//! The image must pass e2fsck, and every path the model holds must read
//! back byte for byte with the same type, mode, owner, mtime, link count,
//! device numbers, symlink target and xattrs; every directory must list
//! exactly the model's names. The generator is a seeded byte stream rather
//! than a shrinking framework: a failure names its seed and path, and each
//! case costs a debugfs run, so a handful of rich cases beats many small.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use tar::EntryType;

use super::layer::{Layer, MTIME};
use super::{MIB, build, field, noise};
use crate::ext4::{BS, FAST_SYMLINK_MAX};

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    /// `id` names the inode, shared by hard links.
    File {
        id: usize,
        data: Vec<u8>,
    },
    Dir,
    Symlink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Clone, Debug, PartialEq)]
struct Meta {
    perm: u32,
    uid: u32,
    gid: u32,
    mtime: (u64, u32),
    xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    /// None for directories only implied by a deeper path: the writer
    /// makes them up, so there is nothing to predict.
    meta: Option<Meta>,
}

/// Odd but legal names: spaces, UTF-8, leading dashes and dots, shell
/// characters, and one of the maximum 255 bytes.
fn names() -> Vec<String> {
    let mut names: Vec<String> = [
        "a",
        "b c",
        "ünï",
        "日本語",
        "-dash",
        ".dot",
        "h#",
        "$HOME",
        "*",
        "a=b",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.push("n".repeat(255));
    names
}

const PERMS: [u32; 8] = [0o644, 0o755, 0o600, 0o444, 0o4755, 0o2750, 0o1777, 0o6711];
const OWNERS: [u32; 5] = [0, 1000, 65534, 100_000, 4_000_000_000];

/// A seeded stream of choices.
struct Rng(std::iter::Cycle<std::vec::IntoIter<u8>>);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(noise(1 << 16, seed).into_iter().cycle())
    }

    fn pick(&mut self, n: usize) -> usize {
        let bytes = [(); 4].map(|()| self.0.next().unwrap());
        u32::from_le_bytes(bytes) as usize % n
    }

    fn meta(&mut self, kind: &Kind) -> Meta {
        let perm = match kind {
            Kind::Symlink(_) => 0o777,
            Kind::Dir => [0o755, 0o750, 0o1777, 0o2775][self.pick(4)],
            _ => PERMS[self.pick(PERMS.len())],
        };
        let mut xattrs = BTreeMap::new();
        for i in 0..self.pick(4) {
            // At most one big value: all of them must fit one 4 KiB block.
            let len = if i == 0 && self.pick(4) == 0 {
                1500 + self.pick(1500)
            } else {
                self.pick(40)
            };
            let value: Vec<u8> = (0..len).map(|_| self.pick(256) as u8).collect();
            xattrs.insert(format!("user.k{i}"), value);
        }
        Meta {
            perm,
            uid: OWNERS[self.pick(OWNERS.len())],
            gid: OWNERS[self.pick(OWNERS.len())],
            mtime: (
                MTIME + self.pick(1 << 16) as u64,
                self.pick(1_000_000_000) as u32,
            ),
            xattrs,
        }
    }
}

/// Writes one entry (with its PAX records) into the layer.
fn append(layer: Layer, path: &str, node: &Node) -> Layer {
    let meta = node.meta.as_ref().expect("entries written have metadata");
    let mtime = format!("{}.{:09}", meta.mtime.0, meta.mtime.1);
    let keys: Vec<String> = meta
        .xattrs
        .keys()
        .map(|k| format!("SCHILY.xattr.{k}"))
        .collect();
    let mut records: Vec<(&str, &[u8])> = vec![("mtime", mtime.as_bytes())];
    records.extend(
        keys.iter()
            .map(String::as_str)
            .zip(meta.xattrs.values().map(Vec::as_slice)),
    );
    let layer = layer
        .pax(&records)
        .with(meta.perm, meta.uid.into(), meta.gid.into());
    match &node.kind {
        Kind::File { data, .. } => layer.file(path, data),
        Kind::Dir => layer.dir(&format!("{path}/"), meta.perm),
        Kind::Symlink(target) => layer.symlink(path, target),
        Kind::Char(major, minor) => layer.device(EntryType::Char, path, *major, *minor),
        Kind::Block(major, minor) => layer.device(EntryType::Block, path, *major, *minor),
        Kind::Fifo => layer.device(EntryType::Fifo, path, 0, 0),
    }
}

/// The image as OCI layer semantics describe it: path -> node.
#[derive(Default)]
struct Model(BTreeMap<String, Node>);

impl Model {
    fn ancestors(path: &str) -> impl Iterator<Item = &str> {
        path.match_indices('/').map(|(i, _)| &path[..i])
    }

    /// True when nothing but directories (or nothing) is on the way.
    fn reachable(&self, path: &str) -> bool {
        Self::ancestors(path).all(|a| self.0.get(a).is_none_or(|n| n.kind == Kind::Dir))
    }

    fn remove(&mut self, path: &str) {
        let below = format!("{path}/");
        self.0.retain(|k, _| k != path && !k.starts_with(&below));
    }

    fn put(&mut self, path: &str, node: Node) {
        let dir_over_dir =
            node.kind == Kind::Dir && self.0.get(path).is_some_and(|n| n.kind == Kind::Dir);
        if !dir_over_dir {
            self.remove(path);
        }
        for a in Self::ancestors(path) {
            self.0.entry(a.to_string()).or_insert(Node {
                kind: Kind::Dir,
                meta: None,
            });
        }
        self.0.insert(path.to_string(), node);
    }

    fn files(&self) -> Vec<&String> {
        self.0
            .iter()
            .filter(|(_, n)| matches!(n.kind, Kind::File { .. }))
            .map(|(p, _)| p)
            .collect()
    }
}

/// One random layer, applied to the model as it is written.
fn random_layer(rng: &mut Rng, model: &mut Model, names: &[String], next_id: &mut usize) -> Layer {
    let mut layer = Layer::new();
    let path = |rng: &mut Rng| {
        let mut p = format!("t{}", rng.pick(3));
        for _ in 0..1 + rng.pick(2) {
            p = format!("{p}/{}", names[rng.pick(names.len())]);
        }
        p
    };
    // Whiteouts come first, so they hide only what lower layers made.
    for _ in 0..rng.pick(4) {
        let p = path(rng);
        let dir = p.rsplit_once('/').map_or("", |(d, _)| d);
        let is_dir = |m: &Model, d: &str| m.0.get(d).is_some_and(|n| n.kind == Kind::Dir);
        if rng.pick(3) == 0 && is_dir(model, &p) {
            layer = layer.file(&format!("{p}/.wh..wh..opq"), b"");
            let below = format!("{p}/");
            model.0.retain(|k, _| !k.starts_with(&below));
        } else if model.reachable(&p) && (dir.is_empty() || is_dir(model, dir)) {
            let (parent, name) = p.rsplit_once('/').map_or(("", p.as_str()), |(d, n)| (d, n));
            let wh = if parent.is_empty() {
                format!(".wh.{name}")
            } else {
                format!("{parent}/.wh.{name}")
            };
            layer = layer.file(&wh, b"");
            model.remove(&p);
        }
    }
    for _ in 0..25 {
        let p = path(rng);
        if !model.reachable(&p) {
            continue;
        }
        let kind = match rng.pick(20) {
            0..=6 => {
                let len = match rng.pick(10) {
                    0 => 0,
                    1 => 1 << 20 | rng.pick(1 << 16),
                    _ => rng.pick(9000),
                };
                let mut data = noise(len, rng.pick(1 << 30) as u64);
                if len > 3 * BS && rng.pick(2) == 0 {
                    // A hole: whole zero blocks are never stored.
                    data[BS..3 * BS].fill(0);
                }
                *next_id += 1;
                Kind::File { id: *next_id, data }
            }
            7..=10 => Kind::Dir,
            11 | 12 => Kind::Symlink(if rng.pick(2) == 0 {
                names[rng.pick(names.len())].clone()
            } else {
                format!("../{}", "long/".repeat(20 + rng.pick(100)))
            }),
            13..=15 => {
                let files = model.files();
                if files.is_empty() {
                    continue;
                }
                let target = files[rng.pick(files.len())].clone();
                if target == p || target.starts_with(&format!("{p}/")) {
                    continue;
                }
                // Real tar writers give a hard link its inode's metadata.
                let node = model.0[&target].clone();
                let meta = node.meta.as_ref().unwrap();
                layer = layer
                    .with(meta.perm, meta.uid.into(), meta.gid.into())
                    .hardlink(&p, &target);
                model.put(&p, node);
                continue;
            }
            16 => Kind::Char(rng.pick(300) as u32, rng.pick(70000) as u32),
            17 => Kind::Block(rng.pick(300) as u32, rng.pick(300) as u32),
            _ => Kind::Fifo,
        };
        let meta = rng.meta(&kind);
        let node = Node {
            kind,
            meta: Some(meta),
        };
        layer = append(layer, &p, &node);
        model.put(&p, node);
    }
    layer
}

#[test]
fn random_layers_match_a_model() {
    let names = names();
    for seed in 1..=8u64 {
        let mut rng = Rng::new(seed);
        let mut model = Model::default();
        let mut next_id = 0;
        let mut layers = Vec::new();
        // A deep chain first, so later layers can build on and whiteout it.
        let deep: String = (0..80).map(|i| format!("/d{i}")).collect();
        let leaf = Node {
            kind: Kind::File {
                id: 0,
                data: b"deep".to_vec(),
            },
            meta: Some(rng.meta(&Kind::Fifo)),
        };
        let chain = format!("t0{deep}/leaf");
        layers.push(append(Layer::new(), &chain, &leaf));
        model.put(&chain, leaf);
        for _ in 0..4 {
            layers.push(random_layer(&mut rng, &mut model, &names, &mut next_id));
        }
        let kinds = |want: fn(&Kind) -> bool| model.0.values().filter(|n| want(&n.kind)).count();
        let files: Vec<usize> = model
            .0
            .values()
            .filter_map(|n| match n.kind {
                Kind::File { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        let linked = files
            .iter()
            .filter(|&&id| files.iter().filter(|&&o| o == id).count() > 1);
        let special = kinds(|k| !matches!(k, Kind::File { .. } | Kind::Dir));
        assert!(
            files.len() > 5 && linked.count() > 0 && special > 3,
            "seed {seed} exercised too little: {:?}",
            model.0.values().map(|n| &n.kind).collect::<Vec<_>>()
        );

        let img = build(256 * MIB, layers).unwrap();
        img.fsck();
        check(&img.path, &model, seed);
    }
}

/// Reads everything the model predicts back with one debugfs run.
fn check(image: &Path, model: &Model, seed: u64) {
    let out = tempfile::tempdir().unwrap();
    let mut script = String::new();
    let mut dumps = Vec::new();
    for (i, (path, node)) in model.0.iter().enumerate() {
        writeln!(script, "stat \"/{path}\"").unwrap();
        match &node.kind {
            Kind::Dir => writeln!(script, "ls -p \"/{path}\"").unwrap(),
            Kind::Symlink(target) if target.len() <= FAST_SYMLINK_MAX => {}
            Kind::File { .. } | Kind::Symlink(_) => {
                let file = out.path().join(i.to_string());
                writeln!(script, "dump \"/{path}\" {}", file.display()).unwrap();
                dumps.push((path, file));
            }
            _ => {}
        }
        for (j, name) in node.meta.iter().flat_map(|m| m.xattrs.keys()).enumerate() {
            let file = out.path().join(format!("{i}.x{j}"));
            writeln!(script, "ea_get -f {} \"/{path}\" {name}", file.display()).unwrap();
        }
    }
    writeln!(script, "ls -p /").unwrap();
    let commands = out.path().join("commands");
    std::fs::write(&commands, script).unwrap();
    let output = Command::new("debugfs")
        .arg("-f")
        .arg(&commands)
        .arg(image)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut replies = stdout.split("debugfs: ").skip(1);
    let mut next = || {
        replies
            .next()
            .map(|r| r.split_once('\n').map_or("", |(_, body)| body))
            .unwrap_or("")
    };

    let links = |id: usize| {
        model
            .0
            .values()
            .filter(|n| matches!(n.kind, Kind::File { id: other, .. } if other == id))
            .count()
    };
    for (i, (path, node)) in model.0.iter().enumerate() {
        let at = format!("seed {seed}: /{path}");
        let stat = next();
        let (kind, expected_links) = match &node.kind {
            Kind::File { id, .. } => ("regular", links(*id)),
            Kind::Dir => ("directory", 0),
            Kind::Symlink(_) => ("symlink", 1),
            Kind::Char(..) => ("character special", 1),
            Kind::Block(..) => ("block special", 1),
            Kind::Fifo => ("FIFO", 1),
        };
        assert!(stat.contains(&format!("Type: {kind} ")), "{at}: {stat}");
        if expected_links > 0 {
            assert_eq!(field(stat, "Links"), expected_links.to_string(), "{at}");
        }
        match &node.kind {
            Kind::Dir => {
                let mut want: Vec<&str> = model
                    .0
                    .keys()
                    .filter_map(|k| k.strip_prefix(path.as_str())?.strip_prefix('/'))
                    .filter(|k| !k.contains('/'))
                    .collect();
                want.sort();
                assert_eq!(listing(next()), want, "{at}: listing");
            }
            Kind::Symlink(target) if target.len() <= FAST_SYMLINK_MAX => {
                let dest = format!("Fast link dest: \"{target}\"");
                assert!(stat.contains(&dest), "{at}: want {dest} in {stat}");
            }
            Kind::File { .. } | Kind::Symlink(_) => {
                next();
            }
            Kind::Char(major, minor) | Kind::Block(major, minor) => {
                assert!(
                    stat.contains(&format!(
                        "Device major/minor number: {major:02}:{minor:02} "
                    )),
                    "{at}: {stat}"
                );
            }
            Kind::Fifo => {}
        }
        if let Some(meta) = &node.meta {
            let mode = u32::from_str_radix(field(stat, "Mode"), 8).unwrap();
            assert_eq!(mode, meta.perm, "{at}: mode");
            assert_eq!(id(field(stat, "User")), meta.uid, "{at}: uid");
            assert_eq!(id(field(stat, "Group")), meta.gid, "{at}: gid");
            let mtime = format!(" mtime: {:#010x}:{:08x}", meta.mtime.0, meta.mtime.1 << 2);
            assert!(stat.contains(&mtime), "{at}: want{mtime} in {stat}");
            // Values may be binary, so names are counted, not lines.
            let listed = stat.matches("\n  user.").count();
            assert_eq!(listed, meta.xattrs.len(), "{at}: xattrs in {stat}");
            for (j, (name, value)) in meta.xattrs.iter().enumerate() {
                assert!(
                    stat.contains(&format!("\n  {name} (")),
                    "{at}: {name} in {stat}"
                );
                next();
                let got = std::fs::read(out.path().join(format!("{i}.x{j}"))).unwrap_or_default();
                assert_eq!(&got, value, "{at}: xattr {name}");
            }
        }
    }
    let mut top: Vec<&str> = model
        .0
        .keys()
        .filter(|k| !k.contains('/'))
        .map(String::as_str)
        .collect();
    top.push("lost+found");
    top.sort();
    assert_eq!(listing(next()), top, "seed {seed}: /");

    for (path, file) in dumps {
        let got = std::fs::read(&file).unwrap_or_default();
        let want = match &model.0[path].kind {
            Kind::File { data, .. } => data.clone(),
            Kind::Symlink(target) => target.clone().into_bytes(),
            _ => unreachable!(),
        };
        assert!(
            got == want,
            "seed {seed}: /{path}: {} bytes read, {} expected",
            got.len(),
            want.len()
        );
    }
}

/// Names from `ls -p` output, without `.` and `..`, sorted.
fn listing(reply: &str) -> Vec<&str> {
    let mut names: Vec<&str> = reply
        .lines()
        .filter_map(|l| l.split('/').nth(5))
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .collect();
    names.sort();
    names
}

/// An owner as debugfs prints it: a C int, so IDs past 2^31 come out negative.
fn id(printed: &str) -> u32 {
    printed.parse::<i64>().unwrap() as u32
}
