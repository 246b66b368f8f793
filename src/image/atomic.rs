//! Crash-safe file updates: write a uniquely named temp file in the target's
//! directory, fsync it, rename it over the target, fsync the directory. A
//! crash leaves the old file or the new one, never a torn one; leftover temp
//! files are garbage, never state.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

use super::{Error, IoContext};

/// A temp file name in `dir` that no other process, or thread of this one,
/// will pick. Hidden, so listings of `dir` skip it.
pub fn temp_path(dir: &Path, stem: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{stem}.{}.{n}.tmp", std::process::id()))
}

/// Replaces `target` with `bytes` atomically.
pub fn write_file(target: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = target.parent().expect("target has a parent directory");
    let stem = target
        .file_name()
        .expect("target has a file name")
        .to_string_lossy();
    let temp = temp_path(dir, &stem);
    let result = (|| {
        let mut file = File::create(&temp).at(&temp)?;
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
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .at(path)?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| std::io::Error::from(errno))
        .at(path)
}
