//! `COPY` and `ADD`: their layers are written on the host, straight from the
//! build context (or another stage's files) into a tar, with no VM.
//!
//! Docker's rules: a directory source copies its contents; several sources,
//! or a destination ending in `/`, make the destination a directory; a
//! relative destination is under `WORKDIR`; missing parents are created;
//! files belong to 0:0 unless `--chown` says otherwise (files of another
//! stage keep their owners); `ADD` extracts local tar archives. Entries are
//! written in name order, so the same files give the same layer.

use std::collections::BTreeSet;
use std::fs::Metadata;
use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use agent_proto::layer::{Meta, Writer};

use super::ignore::{self, Ignore};
use crate::io_error::at;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is outside the build context")]
    Escapes(String),
    #[error("{0}: no such file or directory in the build context")]
    NotFound(String),
    #[error("{0}: no such file or directory in the source stage")]
    NotFoundInStage(String),
    #[error("when copying several sources, the destination {0} must end with '/'")]
    DestinationNotDirectory(String),
    #[error("downloading {url} failed: {reason}")]
    Download { url: String, reason: String },
    #[error("invalid source pattern {0:?}: {1}")]
    InvalidPattern(String, String),
    #[error("invalid --chmod {0:?}: use an octal mode such as 755")]
    InvalidChmod(String),
    #[error("invalid --chown {spec:?}: {reason}")]
    InvalidChown { spec: String, reason: String },
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
}

/// A tree sources are read from: the build context, whose `.dockerignore`
/// hides files as if they were not there, or a stage's files (unpacked from
/// its layers), whose owners are kept.
pub struct Tree<'a> {
    pub root: &'a Path,
    pub ignore: &'a Ignore,
    pub keep_owner: bool,
    /// Names the tree in errors.
    pub is_context: bool,
}

/// What one COPY or ADD writes.
pub struct Request<'a> {
    /// Source paths and globs, relative to the tree, as written.
    pub sources: &'a [String],
    /// Heredoc files: (name, content).
    pub inline: &'a [(String, String)],
    /// Absolute destination; a trailing `/` means a directory.
    pub dest: &'a str,
    pub owner: Option<(u32, u32)>,
    pub chmod: Option<u32>,
    /// `ADD`: tar archives are extracted into the destination.
    pub extract: bool,
}

/// Parses `--chmod`'s octal mode.
pub fn parse_chmod(text: &str) -> Result<u32, Error> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| Error::InvalidChmod(text.to_string()))
}

/// Writes the layer for one request.
pub fn write_layer<W: Write>(
    tree: &Tree,
    request: &Request,
    clamp: Option<u64>,
    out: W,
) -> Result<W, Error> {
    let mut matches = Vec::new();
    for source in request.sources {
        let found = tree.resolve(source)?;
        if found.is_empty() {
            return Err(if tree.is_context {
                Error::NotFound(source.clone())
            } else {
                Error::NotFoundInStage(source.clone())
            });
        }
        matches.extend(found);
    }
    let count = matches.len() + request.inline.len();
    let dest_is_dir = request.dest.ends_with('/')
        || count > 1
        || matches
            .first()
            .is_some_and(|m| std::fs::metadata(tree.root.join(m)).is_ok_and(|md| md.is_dir()));
    if count > 1 && !request.dest.ends_with('/') {
        return Err(Error::DestinationNotDirectory(request.dest.to_string()));
    }
    let dest = clean(request.dest);
    let mut layer = Layer {
        tar: Writer::new(out, clamp),
        written: BTreeSet::new(),
        owner: request.owner,
        chmod: request.chmod,
        keep_owner: tree.keep_owner,
    };
    let parent_of_targets = if dest_is_dir {
        dest.clone()
    } else {
        parent(&dest).to_string()
    };
    layer.directories(&parent_of_targets)?;
    for (name, content) in request.inline {
        let target = if dest_is_dir {
            join(&dest, name)
        } else {
            dest.clone()
        };
        let meta = Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: clamp.unwrap_or(0),
        };
        let meta = layer.adjust(meta, false);
        layer
            .tar
            .file(&target, meta, content.len() as u64, &[], content.as_bytes())
            .map_err(at(&target))?;
    }
    for relative in matches {
        let path = tree.root.join(&relative);
        // The source itself is followed if it is a symlink (inside the tree).
        let metadata = std::fs::metadata(&path).map_err(at(&relative))?;
        if metadata.is_dir() {
            let target = dest.clone();
            layer.copy_children(tree, &relative, &target)?;
        } else {
            let name = relative.rsplit('/').next().unwrap_or(&relative);
            let target = if dest_is_dir {
                join(&dest, name)
            } else {
                dest.clone()
            };
            if request.extract && layer.extract_archive(&path, &target_dir(&dest, dest_is_dir))? {
                continue;
            }
            layer.entry(&path, &metadata, &target)?;
        }
    }
    Ok(layer.tar.finish().map_err(at("the layer"))?)
}

fn target_dir(dest: &str, dest_is_dir: bool) -> String {
    if dest_is_dir {
        dest.to_string()
    } else {
        parent(dest).to_string()
    }
}

impl Tree<'_> {
    /// The paths (relative, `/`-separated) a source names: itself, or what
    /// its glob matches, leaving out what `.dockerignore` hides.
    fn resolve(&self, source: &str) -> Result<Vec<String>, Error> {
        let cleaned = normalize(source).ok_or_else(|| Error::Escapes(source.to_string()))?;
        if !cleaned.contains(['*', '?', '[']) {
            if cleaned.is_empty() {
                return Ok(vec![String::new()]);
            }
            let path = self.root.join(&cleaned);
            let Ok(metadata) = std::fs::symlink_metadata(&path) else {
                return Ok(vec![]);
            };
            if !self.visible(&cleaned, &metadata) {
                return Ok(vec![]);
            }
            // A symlinked source is followed, but never out of the tree.
            if let Ok(real) = path.canonicalize()
                && let Ok(root) = self.root.canonicalize()
                && !real.starts_with(&root)
            {
                return Err(Error::Escapes(source.to_string()));
            }
            return Ok(vec![cleaned]);
        }
        let pattern =
            Ignore::parse(&cleaned).map_err(|ignore::Error::Pattern { reason, .. }| {
                Error::InvalidPattern(source.to_string(), reason.to_string())
            })?;
        let mut found = Vec::new();
        self.walk("", &mut |path, _| {
            let parent_matches = path
                .rfind('/')
                .is_some_and(|i| pattern.excluded(&path[..i]));
            if pattern.excluded(path) && !parent_matches {
                found.push(path.to_string());
            }
        })?;
        Ok(found)
    }

    /// Whether a path is in the tree: not ignored, or an ignored directory
    /// an exception reaches into (Docker keeps it, as a parent).
    fn visible(&self, path: &str, metadata: &Metadata) -> bool {
        !self.ignore.excluded(path) || metadata.is_dir() && self.ignore.may_include_below(path)
    }

    /// Every visible path under `dir`, parents before children, in name order.
    fn walk(&self, dir: &str, visit: &mut dyn FnMut(&str, &Metadata)) -> Result<(), Error> {
        let full = self.root.join(dir);
        let mut names: Vec<String> = std::fs::read_dir(&full)
            .map_err(at(&full))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let path = join(dir, &name);
            let metadata = std::fs::symlink_metadata(self.root.join(&path)).map_err(at(&path))?;
            if self.visible(&path, &metadata) {
                visit(&path, &metadata);
                if metadata.is_dir() {
                    self.walk(&path, visit)?;
                }
            }
        }
        Ok(())
    }
}

/// The tar being written, and which directories it has.
struct Layer<W: Write> {
    tar: Writer<W>,
    written: BTreeSet<String>,
    owner: Option<(u32, u32)>,
    chmod: Option<u32>,
    keep_owner: bool,
}

impl<W: Write> Layer<W> {
    /// `dir` and its parents, as Docker makes missing ones: 0755, root's.
    fn directories(&mut self, dir: &str) -> Result<(), Error> {
        let mut path = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            path = join(&path, part);
            self.directory_at(&path, None)?;
        }
        Ok(())
    }

    fn directory_at(&mut self, path: &str, meta: Option<Meta>) -> Result<(), Error> {
        if !self.written.insert(path.to_string()) {
            return Ok(());
        }
        let meta = meta.unwrap_or(Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        });
        Ok(self.tar.dir(path, meta, &[]).map_err(at(path))?)
    }

    /// The owner and mode an entry gets in the image.
    fn adjust(&self, mut meta: Meta, is_dir: bool) -> Meta {
        if let Some((uid, gid)) = self.owner {
            (meta.uid, meta.gid) = (uid, gid);
        } else if !self.keep_owner {
            (meta.uid, meta.gid) = (0, 0);
        }
        if let Some(mode) = self.chmod {
            meta.mode = mode;
        }
        let _ = is_dir;
        meta
    }

    fn copy_children(&mut self, tree: &Tree, dir: &str, target: &str) -> Result<(), Error> {
        let mut entries = Vec::new();
        let base = dir.len() + usize::from(!dir.is_empty());
        tree.walk(dir, &mut |path, metadata| {
            entries.push((path.to_string(), metadata.clone()));
        })?;
        for (path, metadata) in entries {
            let relative = &path[base..];
            let target = join(target, relative);
            self.entry(&tree.root.join(&path), &metadata, &target)?;
        }
        Ok(())
    }

    /// One file, directory, symlink or special file at `target`.
    fn entry(&mut self, path: &Path, metadata: &Metadata, target: &str) -> Result<(), Error> {
        let meta = self.adjust(Meta::of(metadata), metadata.is_dir());
        let kind = metadata.file_type();
        if kind.is_dir() {
            self.written.remove(target);
            return self.directory_at(target, Some(meta));
        }
        let result = if kind.is_symlink() {
            let link = std::fs::read_link(path).map_err(at(path))?;
            self.tar.symlink(target, meta, &link)
        } else if kind.is_file() {
            let file = std::fs::File::open(path).map_err(at(path))?;
            self.tar.file(target, meta, metadata.len(), &[], file)
        } else if kind.is_fifo() {
            self.tar.special(target, tar::EntryType::Fifo, meta, (0, 0))
        } else {
            // Sockets and devices are not something a context holds.
            return Ok(());
        };
        Ok(result.map_err(at(path))?)
    }

    /// Extracts `path` into `dir` if it is a tar archive (plain, gzip or
    /// zstd); false if it is not one, and it is then copied as a file.
    fn extract_archive(&mut self, path: &Path, dir: &str) -> Result<bool, Error> {
        let mut file = std::fs::File::open(path).map_err(at(path))?;
        let mut head = [0u8; 512];
        let n = read_up_to(&mut file, &mut head).map_err(at(path))?;
        let file = std::fs::File::open(path).map_err(at(path))?;
        let reader: Box<dyn Read> = if head[..n].starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        } else if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(zstd::Decoder::new(file).map_err(at(path))?)
        } else if n == 512 && &head[257..262] == b"ustar" {
            Box::new(file)
        } else {
            return Ok(false);
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(at(path))? {
            let mut entry = entry.map_err(at(path))?;
            let name = entry.path().map_err(at(path))?;
            let Some(name) = normalize(&name.to_string_lossy()) else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            let target = join(dir, &name);
            // Archives may leave out their directories.
            self.directories(parent(&target))?;
            let header = entry.header().clone();
            let meta = Meta {
                mode: header.mode().unwrap_or(0o644) & 0o7777,
                uid: header.uid().unwrap_or(0) as u32,
                gid: header.gid().unwrap_or(0) as u32,
                mtime: header.mtime().unwrap_or(0),
            };
            let result = match header.entry_type() {
                tar::EntryType::Directory => {
                    self.written.remove(&target);
                    self.directory_at(&target, Some(meta))?;
                    Ok(())
                }
                tar::EntryType::Symlink => match entry.link_name().map_err(at(path))? {
                    Some(link) => self.tar.symlink(&target, meta, &link),
                    None => Ok(()),
                },
                tar::EntryType::Link => match entry.link_name().map_err(at(path))? {
                    Some(link) => match normalize(&link.to_string_lossy()) {
                        Some(link) => self.tar.hard_link(&target, meta, &join(dir, &link)),
                        None => Ok(()),
                    },
                    None => Ok(()),
                },
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.size();
                    self.tar.file(&target, meta, size, &[], &mut entry)
                }
                _ => Ok(()),
            };
            result.map_err(at(path))?;
        }
        Ok(true)
    }
}

fn read_up_to(file: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}

/// A path as a tar entry names it: relative, no `.` or empty parts; None
/// when `..` would leave the root.
pub fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(parts.join("/"))
}

/// An absolute destination as a tar path: relative, `..` kept inside `/`.
fn clean(dest: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in dest.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

/// Whether an ADD source is a URL to download.
pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// Downloads `url` into `dir` as Docker's ADD does: named by the URL's last
/// path segment, mode 0600, dated by the server's Last-Modified (else the
/// epoch, so an unchanged file gives an unchanged layer). Returns the name.
pub async fn download(url: &str, dir: &Path) -> Result<String, Error> {
    let fail = |reason: String| Error::Download {
        url: url.to_string(),
        reason,
    };
    let name = url
        .split(['?', '#'])
        .next()
        .and_then(|u| u.rsplit('/').next())
        .filter(|n| !n.is_empty() && n.contains(|c: char| c != '.') && !n.contains(':'))
        .unwrap_or("download")
        .to_string();
    let mut response = reqwest::get(url).await.map_err(|e| fail(e.to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("the server answered {}", response.status())));
    }
    let modified = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let path = dir.join(&name);
    let mut file = std::fs::File::create(&path).map_err(at(&path))?;
    while let Some(chunk) = response.chunk().await.map_err(|e| fail(e.to_string()))? {
        file.write_all(&chunk).map_err(at(&path))?;
    }
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(at(&path))?;
    file.set_modified(modified.unwrap_or(std::time::UNIX_EPOCH))
        .map_err(at(&path))?;
    Ok(name)
}

/// Unpacks the files under `prefixes` (relative paths; empty for all) of
/// image layers, bottom first, into `dir`, applying whiteouts: what
/// `COPY --from` reads, and `--chown` names are looked up in.
pub fn unpack_layers(
    layers: impl IntoIterator<Item = Box<dyn Read + Send>>,
    prefixes: &[String],
    dir: &Path,
) -> Result<(), Error> {
    let wanted = |path: &str| {
        prefixes.is_empty()
            || prefixes.iter().any(|p| {
                p.is_empty()
                    || path == p
                    || path.starts_with(&format!("{p}/"))
                    || p.starts_with(&format!("{path}/"))
            })
    };
    for layer in layers {
        let mut archive = tar::Archive::new(layer);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(nix::unistd::geteuid().is_root());
        archive.set_overwrite(true);
        archive.set_unpack_xattrs(false);
        for entry in archive.entries().map_err(at(dir))? {
            let mut entry = entry.map_err(at(dir))?;
            let name = entry
                .path()
                .map_err(at(dir))?
                .to_string_lossy()
                .into_owned();
            let Some(name) = normalize(&name) else {
                continue;
            };
            let (parent_dir, base) = match name.rfind('/') {
                Some(i) => (&name[..i], &name[i + 1..]),
                None => ("", name.as_str()),
            };
            if base == ".wh..wh..opq" {
                if wanted(parent_dir) {
                    let target = dir.join(parent_dir);
                    for child in std::fs::read_dir(&target).into_iter().flatten().flatten() {
                        remove(&child.path());
                    }
                }
                continue;
            }
            if let Some(hidden) = base.strip_prefix(".wh.") {
                let hidden = join(parent_dir, hidden);
                if wanted(&hidden) {
                    remove(&dir.join(hidden));
                }
                continue;
            }
            if !wanted(&name) {
                continue;
            }
            let target = dir.join(&name);
            // A file replaces whatever was there, a directory included.
            if entry.header().entry_type() != tar::EntryType::Directory
                && std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir())
            {
                remove(&target);
            }
            entry.unpack_in(dir).map_err(at(&target))?;
        }
    }
    Ok(())
}

fn remove(path: &PathBuf) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

/// `--chown USER[:GROUP]` as numbers, names looked up in the image's
/// `/etc/passwd` and `/etc/group` (unpacked into `etc`). A user alone
/// means its primary group, as Docker does.
pub fn resolve_owner(spec: &str, etc: &Path) -> Result<(u32, u32), Error> {
    let invalid = |reason: &str| Error::InvalidChown {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |name: &str| std::fs::read_to_string(etc.join(name)).unwrap_or_default();
    let passwd = read("passwd");
    let lookup = |file: &str, name: &str| -> Option<(u32, Option<u32>)> {
        file.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 3 && fields[0] == name).then(|| {
                let id = fields[2].parse().ok()?;
                Some((id, fields[3].parse().ok()))
            })?
        })
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => lookup(&passwd, user)
            .ok_or_else(|| invalid(&format!("no user {user} in the image's /etc/passwd")))?,
    };
    let gid = match group {
        None => primary.unwrap_or(uid),
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                lookup(&read("group"), group)
                    .ok_or_else(|| invalid(&format!("no group {group} in the image's /etc/group")))?
                    .0
            }
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar: &[u8]) -> Vec<(String, u32, u32, u32)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.uid().unwrap() as u32,
                    h.gid().unwrap() as u32,
                )
            })
            .collect()
    }

    fn names(tar: &[u8]) -> Vec<String> {
        entries(tar).into_iter().map(|e| e.0).collect()
    }

    fn context() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src/sub")).unwrap();
        std::fs::write(root.join("src/a.txt"), "a").unwrap();
        std::fs::write(root.join("src/b.md"), "b").unwrap();
        std::fs::write(root.join("src/sub/c.txt"), "c").unwrap();
        std::fs::write(root.join("top.txt"), "top").unwrap();
        std::fs::write(root.join("secret.key"), "k").unwrap();
        dir
    }

    fn copy(root: &Path, ignore: &Ignore, sources: &[&str], dest: &str) -> Result<Vec<u8>, Error> {
        let tree = Tree {
            root,
            ignore,
            keep_owner: false,
            is_context: true,
        };
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        let request = Request {
            sources: &sources,
            inline: &[],
            dest,
            owner: None,
            chmod: None,
            extract: false,
        };
        write_layer(&tree, &request, None, Vec::new())
    }

    #[test]
    fn docker_copy_rules() {
        let dir = context();
        let none = Ignore::none();
        // A directory's contents, not the directory itself.
        let tar = copy(dir.path(), &none, &["src"], "/app").unwrap();
        assert_eq!(
            names(&tar),
            ["app/", "app/a.txt", "app/b.md", "app/sub/", "app/sub/c.txt"]
        );
        // One file to a file path; parents are made.
        let tar = copy(dir.path(), &none, &["top.txt"], "/etc/x/renamed").unwrap();
        assert_eq!(names(&tar), ["etc/", "etc/x/", "etc/x/renamed"]);
        // Into a directory with a trailing slash; globs match at any depth they name.
        let tar = copy(dir.path(), &none, &["src/*.txt", "top.txt"], "/d/").unwrap();
        assert_eq!(names(&tar), ["d/", "d/a.txt", "d/top.txt"]);
        let err = copy(dir.path(), &none, &["src/*.txt", "top.txt"], "/d").unwrap_err();
        assert!(matches!(err, Error::DestinationNotDirectory(_)), "{err}");
        // Missing, escaping and ignored sources.
        let err = copy(dir.path(), &none, &["nope"], "/").unwrap_err();
        assert_eq!(
            err.to_string(),
            "nope: no such file or directory in the build context"
        );
        let err = copy(dir.path(), &none, &["../etc/passwd"], "/").unwrap_err();
        assert_eq!(
            err.to_string(),
            "../etc/passwd is outside the build context"
        );
        let ignore = Ignore::parse("*.key\nsrc/sub\n").unwrap();
        assert!(matches!(
            copy(dir.path(), &ignore, &["secret.key"], "/").unwrap_err(),
            Error::NotFound(_)
        ));
        let tar = copy(dir.path(), &ignore, &["."], "/all/").unwrap();
        assert_eq!(
            names(&tar),
            [
                "all/",
                "all/src/",
                "all/src/a.txt",
                "all/src/b.md",
                "all/top.txt"
            ]
        );
        // The same files give the same bytes.
        assert_eq!(tar, copy(dir.path(), &ignore, &["."], "/all/").unwrap());
        // An exception reaches into an ignored directory, which stays as its parent.
        let ignore = Ignore::parse("src\n!src/sub/c.txt\n").unwrap();
        let tar = copy(dir.path(), &ignore, &["src"], "/s").unwrap();
        assert_eq!(names(&tar), ["s/", "s/sub/", "s/sub/c.txt"]);
    }

    #[test]
    fn owner_mode_heredocs_and_archives() {
        let dir = context();
        let none = Ignore::none();
        let tree = Tree {
            root: dir.path(),
            ignore: &none,
            keep_owner: false,
            is_context: true,
        };
        // An archive ADD extracts.
        let archive = {
            let mut w = Writer::new(Vec::new(), None);
            let meta = Meta {
                mode: 0o600,
                uid: 7,
                gid: 8,
                mtime: 1,
            };
            w.file("inside/f", meta, 2, &[], &b"hi"[..]).unwrap();
            w.finish().unwrap()
        };
        std::fs::write(dir.path().join("a.tar"), archive).unwrap();
        let sources = vec!["a.tar".to_string()];
        let inline = vec![("script.sh".to_string(), "echo hi\n".to_string())];
        let request = Request {
            sources: &sources,
            inline: &inline,
            dest: "/opt/",
            owner: Some((1000, 1001)),
            chmod: Some(parse_chmod("750").unwrap()),
            extract: true,
        };
        let tar = write_layer(&tree, &request, Some(100), Vec::new()).unwrap();
        assert_eq!(
            entries(&tar),
            [
                ("opt/".to_string(), 0o755, 0, 0),
                ("opt/script.sh".to_string(), 0o750, 1000, 1001),
                ("opt/inside/".to_string(), 0o755, 0, 0),
                ("opt/inside/f".to_string(), 0o600, 7, 8),
            ]
        );
        assert!(parse_chmod("9").is_err());
    }

    #[test]
    fn unpacks_layers_with_whiteouts_and_resolves_owners() {
        let layer = |build: &dyn Fn(&mut Writer<Vec<u8>>)| -> Box<dyn Read + Send> {
            let mut w = Writer::new(Vec::new(), None);
            build(&mut w);
            Box::new(std::io::Cursor::new(w.finish().unwrap()))
        };
        let meta = Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let dmeta = Meta {
            mode: 0o755,
            ..meta
        };
        let passwd = "root:x:0:0::/root:/bin/sh\napp:x:1000:1002::/home/app:/bin/sh\n";
        let group = "root:x:0:\nstaff:x:50:\n";
        let lower = layer(&|w| {
            w.dir("etc", dmeta, &[]).unwrap();
            w.file(
                "etc/passwd",
                meta,
                passwd.len() as u64,
                &[],
                passwd.as_bytes(),
            )
            .unwrap();
            w.file("etc/group", meta, group.len() as u64, &[], group.as_bytes())
                .unwrap();
            w.dir("out", dmeta, &[]).unwrap();
            w.file("out/gone", meta, 1, &[], &b"x"[..]).unwrap();
            w.file("out/old", meta, 1, &[], &b"x"[..]).unwrap();
            w.file("other", meta, 1, &[], &b"x"[..]).unwrap();
        });
        let upper = layer(&|w| {
            w.dir("out", dmeta, &[]).unwrap();
            w.whiteout("out/gone", meta).unwrap();
            w.file("out/new", meta, 1, &[], &b"y"[..]).unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        unpack_layers(
            vec![lower, upper],
            &["out".into(), "etc".into()],
            dir.path(),
        )
        .unwrap();
        let mut found: Vec<String> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        found.sort();
        assert_eq!(found, ["new", "old"]);
        assert!(
            !dir.path().join("other").exists(),
            "only the prefixes asked for"
        );

        let etc = dir.path().join("etc");
        assert_eq!(resolve_owner("app", &etc).unwrap(), (1000, 1002));
        assert_eq!(resolve_owner("app:staff", &etc).unwrap(), (1000, 50));
        assert_eq!(resolve_owner("5:6", &etc).unwrap(), (5, 6));
        assert_eq!(resolve_owner("5", &etc).unwrap(), (5, 5));
        assert_eq!(
            resolve_owner("nobody", &etc).unwrap_err().to_string(),
            "invalid --chown \"nobody\": no user nobody in the image's /etc/passwd"
        );
    }
}
