//! Volumes: named directories under the app root that outlive containers,
//! and the mounts containers are created with ([`spec`]).
//!
//! A volume is `volumes/<name>/`: its record `volume.json`, its data in
//! `_data/` (shared into each VM that mounts it with virtio-fs, so two
//! running containers can use one volume at once and see each other's
//! writes), and `users/<container id>`, one empty file per container
//! created with it. A volume created with a size is instead a disk of its
//! own, `volume.ext4` (the kernel enforces the size), which one running
//! container at a time can use, as Apple's volumes. Like network leases, the users let `volume rm` refuse a
//! volume in use without reading the runtime's records. A volume is made in
//! a hidden temp directory and renamed into place, and removed by renaming
//! it away first, so a crash never leaves half a volume listed.

pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic;
use crate::io_error::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such volume: {0}")]
    NoSuchVolume(String),
    #[error(
        "invalid volume name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error(
        "volume {volume} is in use by containers: {containers} (remove them first, or use --force)"
    )]
    InUse { volume: String, containers: String },
    #[error("unknown volume option {0:?}: the one option is size=SIZE")]
    UnknownOption(String),
    #[error("invalid volume size {0:?}: give at least 16M, with a K, M, G or T suffix")]
    InvalidSize(String),
    #[error(
        "volume {0} has a size, so it is a disk that one running container at a time can use, and another one uses it now"
    )]
    DiskInUse(String),
    #[error("format the disk of volume {name}: {source}")]
    Format {
        name: String,
        source: crate::ext4::Error,
    },
    #[error("invalid {flag} {spec:?}: {reason}")]
    InvalidMount {
        flag: &'static str,
        spec: String,
        reason: String,
    },
    #[error("two mounts on {0}: a target takes one")]
    DuplicateTarget(String),
    #[error("bind source {path}: {source}")]
    BindSource {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt volume record {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    Atomic(#[from] atomic::Error),
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
}

/// A volume's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Made for one container (`-v /path`, an image's `VOLUME`), which
    /// takes it along when removed with `-v` or `--rm`.
    #[serde(default)]
    pub anonymous: bool,
    /// Bytes, for a volume that is a disk of this size (`--opt size=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Where a volume's files are on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// A directory, shared with the VMs that mount it.
    Directory(PathBuf),
    /// An ext4 disk image, attached to the one VM that mounts it.
    Disk(PathBuf),
}

impl Storage {
    pub fn path(&self) -> &Path {
        match self {
            Storage::Directory(path) | Storage::Disk(path) => path,
        }
    }
}

/// The volumes of one app root.
#[derive(Debug, Clone)]
pub struct Volumes {
    root: PathBuf,
}

const RECORD: &str = "volume.json";
const DATA: &str = "_data";
const DISK: &str = "volume.ext4";
/// The smallest sized volume: room for ext4's metadata and a journal.
const MIN_SIZE: u64 = 16 << 20;
const USERS: &str = "users";

impl Volumes {
    /// Opens `volumes/` under the app root, removing what crashed
    /// creations and removals left.
    pub fn open(app_root: &Path) -> Result<Volumes, Error> {
        let root = app_root.join("volumes");
        std::fs::create_dir_all(&root).map_err(io(format!("create {}", root.display())))?;
        atomic::remove_orphans(&root);
        Ok(Volumes { root })
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The directory containers see at the mount's target (for a volume
    /// without a size).
    pub fn data(&self, name: &str) -> PathBuf {
        self.dir(name).join(DATA)
    }

    /// Where the volume's files are.
    pub fn storage(&self, volume: &Volume) -> Storage {
        match volume.size {
            Some(_) => Storage::Disk(self.dir(&volume.name).join(DISK)),
            None => Storage::Directory(self.data(&volume.name)),
        }
    }

    /// Holds a sized volume's disk for one running VM until dropped.
    pub fn claim_disk(&self, volume: &Volume) -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
        let disk = self.dir(&volume.name).join(DISK);
        atomic::try_lock(&disk)?.ok_or_else(|| Error::DiskInUse(volume.name.clone()))
    }

    fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
        Ok(atomic::lock(&self.root.join(".lock"))?)
    }

    /// Creates a volume; one that exists is returned as it is (Docker's
    /// `volume create` does the same). Without a name it gets a random one.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
        options: &BTreeMap<String, String>,
    ) -> Result<Volume, Error> {
        let mut size = None;
        for (key, value) in options {
            match key.as_str() {
                "size" => {
                    let bytes = crate::bytes::parse(value, 1, "size")
                        .ok()
                        .filter(|bytes| *bytes >= MIN_SIZE)
                        .ok_or_else(|| Error::InvalidSize(value.clone()))?;
                    size = Some(bytes);
                }
                _ => return Err(Error::UnknownOption(key.clone())),
            }
        }
        let name = match name {
            Some(name) if !crate::name::valid(name) => {
                return Err(Error::InvalidName(name.to_string()));
            }
            Some(name) => name.to_string(),
            None => random_name()?,
        };
        self.make(Volume {
            name,
            created: now(),
            labels,
            anonymous: false,
            size,
        })
    }

    /// A new anonymous volume for one container.
    pub fn create_anonymous(&self) -> Result<Volume, Error> {
        self.make(Volume {
            name: random_name()?,
            created: now(),
            labels: BTreeMap::new(),
            anonymous: true,
            size: None,
        })
    }

    /// Writes the volume in a temp directory and renames it into place; if
    /// another process made it first, theirs is returned.
    fn make(&self, volume: Volume) -> Result<Volume, Error> {
        if let Some(existing) = self.load(&volume.name)? {
            return Ok(existing);
        }
        let temp = atomic::temp_path(&self.root, &volume.name);
        let result = (|| {
            std::fs::create_dir_all(temp.join(USERS))
                .map_err(io(format!("create {}", temp.display())))?;
            match volume.size {
                Some(bytes) => {
                    format_disk(&temp.join(DISK), bytes).map_err(|source| Error::Format {
                        name: volume.name.clone(),
                        source,
                    })?
                }
                None => std::fs::create_dir(temp.join(DATA))
                    .map_err(io(format!("create {}", temp.display())))?,
            }
            let json = serde_json::to_vec_pretty(&volume).expect("a volume serializes");
            atomic::write_file(&temp.join(RECORD), &json, 0o644)?;
            match std::fs::rename(&temp, self.dir(&volume.name)) {
                Ok(()) => Ok(volume.clone()),
                // Made meanwhile by someone else.
                Err(e) if self.dir(&volume.name).join(RECORD).exists() => {
                    tracing::debug!("volume {} appeared meanwhile: {e}", volume.name);
                    self.get(&volume.name)
                }
                Err(e) => Err(io(format!("create volume {}", volume.name))(e).into()),
            }
        })();
        let _ = std::fs::remove_dir_all(&temp);
        result
    }

    /// A volume's record; None if there is no such volume.
    fn load(&self, name: &str) -> Result<Option<Volume>, Error> {
        if !crate::name::valid(name) {
            return Ok(None);
        }
        let path = self.dir(name).join(RECORD);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(format!("read {}", path.display()))(e).into()),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                path,
                reason: e.to_string(),
            })
    }

    pub fn get(&self, name: &str) -> Result<Volume, Error> {
        self.load(name)?
            .ok_or_else(|| Error::NoSuchVolume(name.to_string()))
    }

    /// Every volume, and apart the records that cannot be read (so one
    /// broken volume does not hide the others).
    pub fn list(&self) -> Result<(Vec<Volume>, Vec<Error>), Error> {
        let entries =
            std::fs::read_dir(&self.root).map_err(io(format!("read {}", self.root.display())))?;
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect();
        names.sort();
        let mut volumes = Vec::new();
        let mut broken = Vec::new();
        for name in names {
            match self.load(&name) {
                Ok(Some(volume)) => volumes.push(volume),
                Ok(None) => {}
                Err(e) => broken.push(e),
            }
        }
        Ok((volumes, broken))
    }

    /// Records that `container` uses the volume, which must exist.
    pub fn attach(&self, name: &str, container: &str) -> Result<(), Error> {
        let _lock = self.lock()?;
        self.get(name)?;
        let path = self.dir(name).join(USERS).join(container);
        Ok(std::fs::write(&path, b"").map_err(io(format!("write {}", path.display())))?)
    }

    /// Forgets that `container` uses the volume (gone already is fine).
    pub fn detach(&self, name: &str, container: &str) -> Result<(), Error> {
        let path = self.dir(name).join(USERS).join(container);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(format!("remove {}", path.display()))(e).into())
            }
            _ => Ok(()),
        }
    }

    /// Forgets `container` on every volume: for a container whose record,
    /// which names its volumes, is lost.
    pub fn detach_all(&self, container: &str) -> Result<(), Error> {
        let (volumes, _) = self.list()?;
        for volume in volumes {
            self.detach(&volume.name, container)?;
        }
        Ok(())
    }

    /// The IDs of the containers created with the volume, sorted.
    pub fn users(&self, name: &str) -> Result<Vec<String>, Error> {
        let dir = self.dir(name).join(USERS);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io(format!("read {}", dir.display()))(e).into()),
        };
        let mut users: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        users.sort();
        Ok(users)
    }

    /// Removes a volume and its data; one in use only with `force`.
    pub fn remove(&self, name: &str, force: bool) -> Result<(), Error> {
        let _lock = self.lock()?;
        let dir = self.dir(name);
        // Not `get`: a volume whose record is broken is still removable.
        if !crate::name::valid(name) || !dir.is_dir() {
            return Err(Error::NoSuchVolume(name.to_string()));
        }
        let users = self.users(name)?;
        if !users.is_empty() && !force {
            let short: Vec<&str> = users.iter().map(|id| &id[..id.len().min(12)]).collect();
            return Err(Error::InUse {
                volume: name.to_string(),
                containers: short.join(", "),
            });
        }
        // Renamed away first: from here on it is not listed, and if we die
        // half-way through the delete, the next open finishes it.
        let away = atomic::temp_path(&self.root, name);
        std::fs::rename(&dir, &away).map_err(io(format!("remove volume {name}")))?;
        Ok(std::fs::remove_dir_all(&away).map_err(io(format!("remove {}", away.display())))?)
    }

    /// What the volumes take on disk, for `system df`. Unused volumes'
    /// bytes are reclaimable (`volume prune --all`).
    pub fn usage(&self) -> Result<Usage, Error> {
        let mut usage = Usage::default();
        for volume in self.list()?.0 {
            let bytes = crate::bytes::on_disk(self.storage(&volume).path());
            usage.volumes += 1;
            usage.bytes += bytes;
            if self.users(&volume.name)?.is_empty() {
                usage.reclaimable_bytes += bytes;
            } else {
                usage.active += 1;
            }
        }
        Ok(usage)
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Usage {
    pub volumes: usize,
    /// Volumes some container uses.
    pub active: usize,
    pub bytes: u64,
    pub reclaimable_bytes: u64,
}

/// An empty ext4 filesystem of `bytes` (sparse), with a journal: it is
/// written to while mounted.
fn format_disk(path: &Path, bytes: u64) -> Result<(), crate::ext4::Error> {
    let journal = (bytes / 32).clamp(4 << 20, 64 << 20);
    let options = crate::ext4::FormatOptions { size_bytes: bytes };
    crate::ext4::Formatter::create(path, options)?
        .with_journal(journal)?
        .finish()
}

/// Bytes allocated to everything under `path` (not following symlinks).
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// 64 hex digits, as Docker names anonymous volumes.
fn random_name() -> Result<String, Error> {
    Ok(crate::id::random().map_err(io("read /dev/urandom"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volumes() -> (tempfile::TempDir, Volumes) {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::open(dir.path()).unwrap();
        (dir, volumes)
    }

    #[test]
    fn create_is_idempotent_and_lists() {
        let (_dir, volumes) = volumes();
        let labels = BTreeMap::from([("team".to_string(), "db".to_string())]);
        let first = volumes
            .create(Some("data"), labels.clone(), &BTreeMap::new())
            .unwrap();
        assert_eq!(first.labels, labels);
        assert!(volumes.data("data").is_dir());
        let again = volumes
            .create(Some("data"), BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        assert_eq!(again, first, "the existing volume, unchanged");
        let anonymous = volumes.create_anonymous().unwrap();
        assert_eq!(anonymous.name.len(), 64);
        let (all, broken) = volumes.list().unwrap();
        assert!(broken.is_empty());
        let mut names: Vec<_> = all.iter().map(|v| v.name.clone()).collect();
        names.sort();
        let mut expected = vec!["data".to_string(), anonymous.name];
        expected.sort();
        assert_eq!(names, expected);
    }

    #[test]
    fn bad_names_and_options_are_refused() {
        let (_dir, volumes) = volumes();
        let none = BTreeMap::new();
        assert!(matches!(
            volumes.create(Some("../x"), BTreeMap::new(), &none),
            Err(Error::InvalidName(_))
        ));
        let colour = BTreeMap::from([("colour".to_string(), "red".to_string())]);
        assert!(matches!(
            volumes.create(Some("v"), BTreeMap::new(), &colour),
            Err(Error::UnknownOption(key)) if key == "colour"
        ));
        for bad in ["1M", "lots", ""] {
            let size = BTreeMap::from([("size".to_string(), bad.to_string())]);
            assert!(matches!(
                volumes.create(Some("v"), BTreeMap::new(), &size),
                Err(Error::InvalidSize(_))
            ));
        }
        assert!(volumes.list().unwrap().0.is_empty(), "nothing half made");
        assert!(matches!(volumes.get("nope"), Err(Error::NoSuchVolume(_))));
    }

    #[test]
    fn in_use_volumes_are_removed_only_by_force() {
        let (_dir, volumes) = volumes();
        volumes
            .create(Some("v"), BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        std::fs::write(volumes.data("v").join("f"), b"x").unwrap();
        volumes.attach("v", "abcdef0123456789").unwrap();
        assert!(matches!(
            volumes.remove("v", false),
            Err(Error::InUse { containers, .. }) if containers == "abcdef012345"
        ));
        volumes.detach("v", "abcdef0123456789").unwrap();
        volumes.remove("v", false).unwrap();
        assert!(matches!(volumes.get("v"), Err(Error::NoSuchVolume(_))));
        assert!(matches!(
            volumes.attach("v", "c"),
            Err(Error::NoSuchVolume(_))
        ));
        volumes
            .create(Some("w"), BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        volumes.attach("w", "c").unwrap();
        volumes.remove("w", true).unwrap();
    }

    #[test]
    fn a_broken_record_is_listed_apart_and_removable() {
        let (_dir, volumes) = volumes();
        volumes
            .create(Some("good"), BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        volumes
            .create(Some("bad"), BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        std::fs::write(volumes.dir("bad").join(RECORD), b"{trunc").unwrap();
        let (all, broken) = volumes.list().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(broken.len(), 1);
        assert!(broken[0].to_string().contains("bad"));
        volumes.remove("bad", false).unwrap();
        assert!(volumes.list().unwrap().1.is_empty());
    }

    #[test]
    fn a_sized_volume_is_a_disk_one_vm_holds_at_a_time() {
        let (_dir, volumes) = volumes();
        let size = BTreeMap::from([("size".to_string(), "32M".to_string())]);
        let volume = volumes.create(Some("db"), BTreeMap::new(), &size).unwrap();
        assert_eq!(volume.size, Some(32 << 20));
        let Storage::Disk(disk) = volumes.storage(&volume) else {
            panic!("a sized volume is a disk");
        };
        assert_eq!(std::fs::metadata(&disk).unwrap().len(), 32 << 20);
        let fsck = std::process::Command::new("e2fsck")
            .args(["-fn"])
            .arg(&disk)
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stdout)
        );
        let held = volumes.claim_disk(&volume).unwrap();
        assert!(matches!(
            volumes.claim_disk(&volume),
            Err(Error::DiskInUse(_))
        ));
        drop(held);
        volumes.claim_disk(&volume).unwrap();
    }

    #[test]
    fn usage_counts_bytes_and_what_is_unused() {
        let (_dir, volumes) = volumes();
        for name in ["used", "idle"] {
            volumes
                .create(Some(name), BTreeMap::new(), &BTreeMap::new())
                .unwrap();
            std::fs::write(volumes.data(name).join("f"), vec![1u8; 64 << 10]).unwrap();
        }
        volumes.attach("used", "c").unwrap();
        let usage = volumes.usage().unwrap();
        assert_eq!((usage.volumes, usage.active), (2, 1));
        assert!(usage.bytes >= 128 << 10, "{usage:?}");
        assert!(usage.reclaimable_bytes >= 64 << 10, "{usage:?}");
        assert!(usage.reclaimable_bytes < usage.bytes, "{usage:?}");
    }
}
