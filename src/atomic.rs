//! Crash-safe file updates: write a uniquely named temp file in the target's
//! directory, fsync it, rename it over the target, fsync the directory. A
//! crash leaves the old file or the new one, never a torn one; leftover temp
//! files are garbage, never state. Also the flocks that make concurrent
//! `container` processes take turns. Shared by the image store and the
//! container records, so it belongs to neither.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// A file operation that failed, and on which path.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct Error {
    pub path: PathBuf,
    pub source: std::io::Error,
}

trait At<T> {
    fn at(self, path: &Path) -> Result<T, Error>;
}

impl<T> At<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T, Error> {
        self.map_err(|source| Error {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A temp file name in `dir` that no other process, or thread of this one,
/// will pick. Hidden, so listings of `dir` skip it.
pub fn temp_path(dir: &Path, stem: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{stem}.{}.{n}.tmp", std::process::id()))
}

/// Deletes temp files (and temp directories) in `dir` whose writer process
/// is gone (it crashed or was killed mid-write), so ingests, half-built
/// snapshots and half-made volumes do not pile up. Best effort: one that
/// cannot be removed now is tried again next time.
pub fn remove_orphans(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let owner = temp_owner(&entry.file_name().to_string_lossy());
        if owner.is_some_and(|pid| kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH)) {
            let path = entry.path();
            let _ = match entry.file_type() {
                Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(path),
                _ => std::fs::remove_file(path),
            };
        }
    }
}

/// The pid in a name made by `temp_path`: `.{stem}.{pid}.{n}.tmp`.
fn temp_owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut parts = rest.rsplitn(3, '.');
    parts.next()?.parse::<u64>().ok()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next().filter(|stem| !stem.is_empty())?;
    Some(pid)
}

/// Replaces `target` with `bytes` atomically. The file gets `mode` from the
/// moment it exists, so a secret is never briefly readable by others.
pub fn write_file(target: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let dir = target.parent().expect("target has a parent directory");
    let stem = target
        .file_name()
        .expect("target has a file name")
        .to_string_lossy();
    let temp = temp_path(dir, &stem);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
            .at(&temp)?;
        file.write_all(bytes).at(&temp)?;
        file.sync_all().at(&temp)?;
        commit(&temp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Renames a finished, fsynced temp file into place and makes the rename durable.
pub fn commit(temp: &Path, target: &Path) -> Result<(), Error> {
    std::fs::rename(temp, target).at(target)?;
    let dir = target.parent().expect("target has a parent directory");
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Holds an exclusive flock on `path` (created if missing) until dropped, so
/// concurrent `container` processes on one app root take turns.
pub fn lock(path: &Path) -> Result<Flock<File>, Error> {
    flock(path, FlockArg::LockExclusive)
}

/// Holds a shared flock on `path`: many holders at once, but none while
/// someone holds it exclusively.
pub fn lock_shared(path: &Path) -> Result<Flock<File>, Error> {
    flock(path, FlockArg::LockShared)
}

/// An exclusive flock on `path` if no one holds one; None if someone does.
pub fn try_lock(path: &Path) -> Result<Option<Flock<File>>, Error> {
    match flock(path, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err(e) if e.source.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
        Err(e) => Err(e),
    }
}

fn flock(path: &Path, mode: FlockArg) -> Result<Flock<File>, Error> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .at(path)?;
    Flock::lock(file, mode)
        .map_err(|(_, errno)| std::io::Error::from(errno))
        .at(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn removes_only_temp_files_of_dead_processes() {
        let dir = tempfile::tempdir().unwrap();
        let ours = temp_path(dir.path(), "abc.ext4");
        // Above any pid_max, so no such process exists.
        let dead = dir.path().join(format!(".abc.ext4.{}.0.tmp", i32::MAX));
        let other = dir.path().join("abc.ext4");
        for path in [&ours, &dead, &other] {
            std::fs::write(path, b"x").unwrap();
        }
        remove_orphans(dir.path());
        assert!(ours.exists() && other.exists());
        assert!(!dead.exists());
    }

    #[test]
    fn write_file_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("records.json");
        write_file(&target, b"one", 0o644).unwrap();
        write_file(&target, b"two", 0o600).unwrap();
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp files left"
        );
    }
}
