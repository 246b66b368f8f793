//! Containers on disk: `containers/<id>/config.json` (what was asked for,
//! written once) and `state.json` (what is happening, replaced atomically
//! by the container's supervisor at each transition).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Error, RunSpec};
use crate::atomic;
use crate::io_error::io;

/// The layout of `config.json`, written beside the config as `schema`.
/// Fields added within a layout have defaults, so older records read; a
/// record of a newer layout (a later `container` wrote it) is not guessed
/// at: it is named unreadable, and `rm -f` still removes it.
pub const SCHEMA: u32 = 1;

/// `config.json` as written: the config and its layout's number.
#[derive(Serialize)]
struct Record<'a> {
    schema: u32,
    #[serde(flatten)]
    config: &'a Config,
}

/// A container directory whose config or state cannot be read. `id` is
/// the directory's name, by which the user can still remove it.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "container {} has an unreadable record ({detail}); remove it with `container rm -f {}`",
    short(id),
    short(id)
)]
pub struct Unreadable {
    pub id: String,
    pub detail: String,
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// What a container was created with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub id: String,
    pub name: String,
    /// The reference as given, and the manifest digest it resolved to.
    pub image: String,
    pub image_digest: String,
    pub created: u64,
    pub spec: RunSpec,
    /// The full command line the container runs.
    pub command: Vec<String>,
    /// What the image says about running it.
    pub image_env: Vec<String>,
    pub image_workdir: String,
    pub image_user: String,
    /// The container's own copy-on-write root disk.
    pub disk: crate::vm::Disk,
    /// Its network and address; None with `--network none`.
    #[serde(default)]
    pub endpoint: Option<crate::network::Endpoint>,
}

impl Config {
    /// What every process of the container starts from: its command, and
    /// the image's environment, working directory and user under `run`'s
    /// flags. The main process adds the container-wide settings
    /// (supervisor.rs); an `exec` its own flags (`runtime::exec_process`).
    pub fn base_process(&self) -> agent_proto::ProcessSpec {
        let mut env = self.image_env.clone();
        env.extend(self.spec.env.iter().cloned());
        agent_proto::ProcessSpec {
            args: self.command.clone(),
            env,
            cwd: (self.spec.workdir.clone()).unwrap_or_else(|| self.image_workdir.clone()),
            user: match self.spec.user.is_empty() {
                true => self.image_user.clone(),
                false => self.spec.user.clone(),
            },
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        })
    }
}

/// Where a container's life stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    /// The supervisor owning the VM while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it stopped, when not by the workload exiting on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The address a DHCP server gave the guest (the host's NAT, QEMU's
    /// user-mode stack), while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
}

impl State {
    pub fn created() -> State {
        State {
            status: Status::Created,
            supervisor_pid: None,
            started: None,
            finished: None,
            address: None,
            exit_code: None,
            reason: None,
        }
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One container's directory.
#[derive(Debug, Clone)]
pub struct Container {
    pub dir: PathBuf,
    pub config: Config,
}

impl Container {
    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn stdio_log(&self) -> PathBuf {
        self.dir.join("stdio.log")
    }

    pub fn boot_log(&self) -> PathBuf {
        self.dir.join("boot.log")
    }

    /// The app root this container lives under.
    pub fn app_root(&self) -> &Path {
        self.dir
            .parent()
            .and_then(Path::parent)
            .expect("containers live in <app root>/containers/<id>")
    }

    /// Where the VM's sockets live while it runs.
    pub fn run_dir(&self) -> PathBuf {
        super::run_dir(self.app_root(), self.id())
    }

    /// The supervisor's socket: connections are proxied to the guest agent.
    pub fn agent_socket(&self) -> PathBuf {
        self.run_dir().join("agent.sock")
    }

    /// The host space the container's own disk takes: its blocks, not its
    /// length, as the disk is sparse.
    pub fn disk_bytes(&self) -> u64 {
        crate::bytes::on_disk(&self.config.disk.path)
    }

    /// The state as recorded, corrected for a supervisor that died without
    /// recording the end (SIGKILL, a crash): such a container is stopped.
    pub fn state(&self) -> Result<State, Error> {
        let path = self.dir.join("state.json");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            // Removed while we looked (`--rm`, another CLI): it is gone.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoSuchContainer(self.config.name.clone()));
            }
            Err(e) => return Err(io(format!("read {}", path.display()))(e).into()),
        };
        let mut state: State = serde_json::from_slice(&bytes).map_err(|e| Unreadable {
            id: self.config.id.clone(),
            detail: format!("{}: {e}", path.display()),
        })?;
        if state.status == Status::Running
            && !state
                .supervisor_pid
                .is_some_and(|pid| supervisor_alive(pid, self.id()))
        {
            state.status = Status::Stopped;
            state
                .reason
                .get_or_insert_with(|| "its supervisor died".into());
        }
        Ok(state)
    }

    pub fn save_state(&self, state: &State) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(state).expect("state serializes");
        atomic::write_file(&self.dir.join("state.json"), &bytes, 0o644)?;
        Ok(())
    }
}

/// Whether `pid` is still the supervisor of container `id`. A process we
/// may not signal (another user's) exists. A zombie does not: a supervisor
/// killed by SIGKILL stays one until its parent, init by then, reaps it,
/// which some inits do only every few seconds. On Linux, a process whose
/// command line does not name the container is another that reused the
/// number.
pub(crate) fn supervisor_alive(pid: i32, id: &str) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
        == Err(nix::errno::Errno::ESRCH)
    {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        // "PID (COMM) STATE ...": the state follows the last parenthesis.
        if let Ok(stat) = std::fs::read(proc.join("stat")) {
            let at = stat.iter().rposition(|&b| b == b')').map(|i| i + 2);
            if at.and_then(|i| stat.get(i)) == Some(&b'Z') {
                return false;
            }
        }
        if let Ok(cmdline) = std::fs::read(proc.join("cmdline")) {
            return cmdline.split(|&b| b == 0).any(|arg| arg == id.as_bytes());
        }
    }
    true
}

/// The containers under the app root.
pub struct Containers {
    root: PathBuf,
}

/// What `system df` says of containers.
#[derive(Debug, Default, Serialize)]
pub struct Usage {
    pub containers: usize,
    /// The running ones.
    pub active: usize,
    /// What their own disks take on the host: what they wrote over their
    /// images.
    pub bytes: u64,
    /// The stopped ones' share: what `container prune` frees.
    pub reclaimable_bytes: u64,
}

impl Containers {
    pub fn open(app_root: &Path) -> Result<Containers, Error> {
        let root = app_root.join("containers");
        std::fs::create_dir_all(&root).map_err(io(format!("create {}", root.display())))?;
        Ok(Containers { root })
    }

    /// Every container, oldest first (in the order they were created), and apart the records that cannot be
    /// read, so one broken record hides nothing else. Directories without
    /// a config (being created, or half-deleted) are not containers.
    pub fn list(&self) -> Result<(Vec<Container>, Vec<Unreadable>), Error> {
        let mut all = Vec::new();
        let mut broken = Vec::new();
        let entries =
            std::fs::read_dir(&self.root).map_err(io(format!("read {}", self.root.display())))?;
        for entry in entries.flatten() {
            match self.load(&entry.path()) {
                Ok(Some(container)) => all.push(container),
                Ok(None) => {}
                Err(e) => broken.push(e),
            }
        }
        // `created` counts seconds; within one, the config file's time
        // (nanoseconds; written once, at create) keeps the order of creation.
        let written = |c: &Container| {
            std::fs::metadata(c.dir.join("config.json"))
                .and_then(|m| m.modified())
                .ok()
        };
        all.sort_by_cached_key(|c| (c.config.created, written(c), c.config.id.clone()));
        broken.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((all, broken))
    }

    /// The containers and their disks' space, for `system df`. Records that
    /// cannot be read are left out, as `ls` leaves them out of its table.
    pub fn usage(&self) -> Result<Usage, Error> {
        let mut usage = Usage::default();
        for container in self.list()?.0 {
            let bytes = container.disk_bytes();
            usage.containers += 1;
            usage.bytes += bytes;
            if container.state().is_ok_and(|s| s.status == Status::Running) {
                usage.active += 1;
            } else {
                usage.reclaimable_bytes += bytes;
            }
        }
        Ok(usage)
    }

    /// Image manifest digest -> the ID of one container using it: the roots
    /// image garbage collection must keep. Only the digest is read, so a
    /// record that is otherwise damaged still keeps its image; one without
    /// a readable digest hides only itself.
    pub fn images_in_use(&self) -> std::collections::BTreeMap<String, String> {
        #[derive(serde::Deserialize)]
        struct Pins {
            image_digest: String,
        }
        let mut used = std::collections::BTreeMap::new();
        let entries = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten();
        for entry in entries {
            let Ok(bytes) = std::fs::read(entry.path().join("config.json")) else {
                continue;
            };
            if let Ok(pins) = serde_json::from_slice::<Pins>(&bytes) {
                let id = entry.file_name().to_string_lossy().into_owned();
                used.entry(pins.image_digest).or_insert(id);
            }
        }
        used
    }

    /// The container in `dir`: none while it is being created or removed.
    fn load(&self, dir: &Path) -> Result<Option<Container>, Unreadable> {
        let path = dir.join("config.json");
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(None);
        };
        let unreadable = |detail: String| Unreadable {
            id: dir.file_name().unwrap_or_default().to_string_lossy().into(),
            detail,
        };
        // Records from before the number was written have none: 0.
        #[derive(Deserialize)]
        struct Layout {
            #[serde(default)]
            schema: u32,
        }
        let layout: Layout = serde_json::from_slice(&bytes)
            .map_err(|e| unreadable(format!("{}: {e}", path.display())))?;
        if layout.schema > SCHEMA {
            return Err(unreadable(format!(
                "a newer container wrote it, in record layout {} (this one reads up to {SCHEMA})",
                layout.schema
            )));
        }
        let config = serde_json::from_slice(&bytes)
            .map_err(|e| unreadable(format!("{}: {e}", path.display())))?;
        let container = Container {
            dir: dir.to_path_buf(),
            config,
        };
        // A damaged state hides the container as surely as a damaged config.
        match container.state() {
            Err(Error::NoSuchContainer(_)) => Ok(None),
            Err(Error::Unreadable(e)) => Err(e),
            _ => Ok(Some(container)),
        }
    }

    /// A container by name, full ID, or unique ID prefix (as Docker takes
    /// them). A key that names an unreadable record gets its
    /// [`Unreadable`] error, which says how to remove it.
    pub fn find(&self, key: &str) -> Result<Container, Error> {
        let (all, broken) = self.list()?;
        if let Some(c) = all
            .iter()
            .find(|c| c.config.name == key || c.config.id == key)
        {
            return Ok(c.clone());
        }
        let healthy: Vec<&Container> = all
            .iter()
            .filter(|c| c.config.id.starts_with(key))
            .collect();
        let damaged: Vec<&Unreadable> = broken.iter().filter(|b| b.id.starts_with(key)).collect();
        match (healthy.as_slice(), damaged.as_slice()) {
            _ if key.is_empty() => Err(Error::NoSuchContainer(key.to_string())),
            ([one], []) => Ok((*one).clone()),
            ([], [one]) => Err((*one).clone().into()),
            ([], []) => Err(Error::NoSuchContainer(key.to_string())),
            _ => Err(Error::Ambiguous(key.to_string())),
        }
    }

    /// The lock under which containers come and go: held while one is
    /// created, while a supervisor marks one running, and while one is
    /// removed, so none of these sees another half done.
    pub fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
        Ok(atomic::lock(&self.root.join(".lock"))?)
    }

    /// Starts recording a new container: its name must be free, and stays
    /// taken (under a lock, so two CLIs cannot both take it) until the
    /// pending container is committed or dropped.
    pub fn reserve(&self, id: &str, name: &str) -> Result<Pending, Error> {
        let lock = self.lock()?;
        if self.list()?.0.iter().any(|c| c.config.name == name) {
            return Err(Error::NameInUse(name.to_string()));
        }
        let dir = self.root.join(id);
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        Ok(Pending {
            dir,
            _lock: lock,
            committed: false,
        })
    }

    /// Removes what creations that never finished left behind (a CLI
    /// killed midway): directories without a config. Under the creation
    /// lock, so a creation still going on is not one of them. `release`
    /// first gives back what each held, by its ID.
    pub fn remove_incomplete(&self, release: impl Fn(&str)) -> Result<(), Error> {
        let _lock = self.lock()?;
        let entries =
            std::fs::read_dir(&self.root).map_err(io(format!("read {}", self.root.display())))?;
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            if id.starts_with('.') || !dir.is_dir() || dir.join("config.json").exists() {
                continue;
            }
            release(&id);
            remove_dir(&dir)?;
        }
        Ok(())
    }

    /// The live supervisor of a record, if its state (read loosely, as its
    /// config may be what is damaged) names one.
    pub fn supervisor_of(&self, id: &str) -> Option<i32> {
        #[derive(Deserialize)]
        struct Pid {
            supervisor_pid: Option<i32>,
        }
        let bytes = std::fs::read(self.root.join(id).join("state.json")).ok()?;
        let pid = serde_json::from_slice::<Pid>(&bytes).ok()?.supervisor_pid?;
        supervisor_alive(pid, id).then_some(pid)
    }

    /// Deletes the directory of a record that cannot be read.
    pub fn remove_unreadable(&self, record: &Unreadable) -> Result<(), Error> {
        remove_dir(&self.root.join(&record.id))
    }

    /// Deletes a container's directory. The config goes first, so a crash
    /// halfway leaves a directory `list` ignores rather than a broken
    /// container. One that someone else removed first is removed.
    pub fn remove(&self, container: &Container) -> Result<(), Error> {
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        let config = container.dir.join("config.json");
        match std::fs::remove_file(&config) {
            Err(e) if !gone(&e) => return Err(io(format!("remove {}", config.display()))(e).into()),
            _ => {}
        }
        remove_dir(&container.dir)
    }
}

/// Removes a directory tree; one already gone (someone else removed it
/// first) is removed.
fn remove_dir(dir: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(format!("remove {}", dir.display()))(e).into())
        }
        _ => Ok(()),
    }
}

/// A container being created: its directory exists, its config does not yet.
pub struct Pending {
    dir: PathBuf,
    _lock: nix::fcntl::Flock<std::fs::File>,
    committed: bool,
}

impl Pending {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn commit(mut self, config: Config) -> Result<Container, Error> {
        let container = Container {
            dir: self.dir.clone(),
            config,
        };
        container.save_state(&State::created())?;
        // The config goes last: until it exists, this is not a container.
        let record = Record {
            schema: SCHEMA,
            config: &container.config,
        };
        let bytes = serde_json::to_vec_pretty(&record).expect("config serializes");
        atomic::write_file(&container.dir.join("config.json"), &bytes, 0o644)?;
        self.committed = true;
        Ok(container)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: &str, name: &str) -> Config {
        Config {
            id: id.into(),
            name: name.into(),
            image: "busybox".into(),
            image_digest: "sha256:00".into(),
            created: 1,
            spec: RunSpec::default(),
            command: vec!["sh".into()],
            image_env: vec![],
            image_workdir: String::new(),
            image_user: String::new(),
            disk: crate::vm::Disk {
                path: "rootfs".into(),
                format: crate::vm::DiskFormat::Raw,
                read_only: false,
                scratch: false,
            },
            endpoint: None,
        }
    }

    fn create(containers: &Containers, id: &str, name: &str) -> Result<Container, Error> {
        containers.reserve(id, name)?.commit(config(id, name))
    }

    /// One source of a process's defaults for run and exec: the image's,
    /// under `run`'s flags, under `exec`'s.
    #[test]
    fn processes_start_from_the_image_under_run_flags_under_exec_flags() {
        let root = tempfile::tempdir().unwrap();
        let containers = Containers::open(root.path()).unwrap();
        let mut c = config("abc", "web");
        c.image_env = vec!["PATH=/bin".into(), "A=image".into()];
        c.image_workdir = "/app".into();
        c.image_user = "app".into();
        let container = containers
            .reserve("abc", "web")
            .unwrap()
            .commit(c.clone())
            .unwrap();
        let main = c.base_process();
        assert_eq!(
            (main.args, main.cwd.as_str(), main.user.as_str()),
            (vec!["sh".to_string()], "/app", "app")
        );
        assert_eq!(main.env, ["PATH=/bin", "A=image"]);

        c.spec.env = vec!["A=run".into()];
        c.spec.workdir = Some("/srv".into());
        c.spec.user = "1000:1000".into();
        let main = c.base_process();
        assert_eq!(
            (main.cwd.as_str(), main.user.as_str()),
            ("/srv", "1000:1000")
        );
        assert_eq!(main.env, ["PATH=/bin", "A=image", "A=run"]);

        // An exec with no flags runs as the container's first process would.
        let exec = crate::runtime::exec_process(&container, vec!["id".into()], Default::default());
        assert_eq!(
            (exec.args, exec.cwd.as_str(), exec.user.as_str()),
            (vec!["id".to_string()], "/app", "app")
        );
        let options = crate::runtime::ExecOptions {
            env: vec!["B=exec".into()],
            uid: Some(0),
            workdir: Some("/tmp".into()),
            tty: true,
            ..Default::default()
        };
        let exec = crate::runtime::exec_process(&container, vec!["id".into()], options);
        assert_eq!(
            (exec.cwd.as_str(), exec.user.as_str(), exec.terminal),
            ("/tmp", "0", true)
        );
        assert_eq!(exec.env, ["PATH=/bin", "A=image", "B=exec"]);
    }

    #[test]
    fn create_find_and_remove() {
        let root = tempfile::tempdir().unwrap();
        let containers = Containers::open(root.path()).unwrap();
        let a = create(&containers, "abc123", "web").unwrap();
        create(&containers, "abd456", "db").unwrap();
        assert!(
            matches!(create(&containers, "fff", "web"), Err(Error::NameInUse(n)) if n == "web")
        );
        // A failed creation leaves nothing behind.
        assert!(!root.path().join("containers/fff").exists());
        assert_eq!(containers.find("web").unwrap().id(), "abc123");
        assert_eq!(containers.find("abc").unwrap().id(), "abc123");
        assert!(matches!(containers.find("ab"), Err(Error::Ambiguous(_))));
        assert!(matches!(
            containers.find("zzz"),
            Err(Error::NoSuchContainer(_))
        ));
        assert_eq!(a.state().unwrap().status, Status::Created);
        containers.remove(&a).unwrap();
        assert_eq!(containers.list().unwrap().0.len(), 1);
    }

    #[test]
    fn images_in_use_reads_only_the_digest_and_skips_broken_records() {
        let root = tempfile::tempdir().unwrap();
        let containers = Containers::open(root.path()).unwrap();
        assert!(containers.images_in_use().is_empty());
        create(&containers, "abc", "web").unwrap();
        create(&containers, "abd", "db").unwrap();
        let broken = root.path().join("containers/bad");
        std::fs::create_dir_all(&broken).unwrap();
        std::fs::write(broken.join("config.json"), "not json").unwrap();
        let partial = root.path().join("containers/partial");
        std::fs::create_dir_all(&partial).unwrap();
        std::fs::write(
            partial.join("config.json"),
            r#"{"image_digest":"sha256:11"}"#,
        )
        .unwrap();
        std::fs::create_dir_all(root.path().join("containers/half-made")).unwrap();
        let used = containers.images_in_use();
        assert_eq!(used.len(), 2);
        assert!(["abc", "abd"].contains(&used["sha256:00"].as_str()));
        assert_eq!(used["sha256:11"], "partial");
    }

    /// Records carry their layout's number; one from before it (no number,
    /// fields added since missing) reads with defaults, one from a newer
    /// layout is named unreadable rather than half-read.
    #[test]
    fn records_of_older_layouts_read_and_newer_ones_are_named() {
        let root = tempfile::tempdir().unwrap();
        let containers = Containers::open(root.path()).unwrap();
        let written = create(&containers, "abc", "web").unwrap();
        let path = written.dir.join("config.json");
        let mut record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(record["schema"], SCHEMA);

        // As an older container wrote it.
        let object = record.as_object_mut().unwrap();
        object.remove("schema");
        object.remove("endpoint");
        let spec = object["spec"].as_object_mut().unwrap();
        for added in ["network", "publish", "dns", "shm_size_bytes", "labels"] {
            spec.remove(added);
        }
        std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        let old = containers.find("web").unwrap();
        assert!(old.config.spec.labels.is_empty() && old.config.endpoint.is_none());

        // As a newer one would, with a field we do not know.
        record["schema"] = (SCHEMA + 1).into();
        record["future"] = "field".into();
        std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        let (all, broken) = containers.list().unwrap();
        assert!(all.is_empty());
        assert!(
            broken[0].detail.starts_with("a newer container wrote it"),
            "{}",
            broken[0].detail
        );
        record["schema"] = SCHEMA.into();
        std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        assert_eq!(containers.find("web").unwrap().id(), "abc");
    }

    #[test]
    fn unreadable_records_are_listed_apart_and_found_by_id() {
        let root = tempfile::tempdir().unwrap();
        let containers = Containers::open(root.path()).unwrap();
        create(&containers, "abc", "web").unwrap();
        create(&containers, "abd", "db").unwrap();
        let bad = root.path().join("containers/bcd");
        std::fs::create_dir_all(&bad).unwrap();
        std::fs::write(bad.join("config.json"), "{").unwrap();
        std::fs::write(root.path().join("containers/abd/state.json"), "").unwrap();
        let (all, broken) = containers.list().unwrap();
        assert_eq!(all.iter().map(|c| c.id()).collect::<Vec<_>>(), ["abc"]);
        assert_eq!(
            broken.iter().map(|b| &b.id).collect::<Vec<_>>(),
            ["abd", "bcd"]
        );
        assert!(matches!(containers.find("bc"), Err(Error::Unreadable(u)) if u.id == "bcd"));
        assert!(matches!(containers.find("abd"), Err(Error::Unreadable(u)) if u.id == "abd"));
        assert!(matches!(containers.find("ab"), Err(Error::Ambiguous(_))));
        assert_eq!(containers.find("web").unwrap().id(), "abc");
        containers.remove_unreadable(&broken[1]).unwrap();
        assert!(!bad.exists());
    }

    #[test]
    fn a_container_removed_meanwhile_is_gone_not_a_file_error() {
        let root = tempfile::tempdir().unwrap();
        let containers = Containers::open(root.path()).unwrap();
        let a = create(&containers, "abc", "web").unwrap();
        let seen_before = a.clone();
        containers.remove(&a).unwrap();
        assert!(matches!(seen_before.state(), Err(Error::NoSuchContainer(n)) if n == "web"));
        // A second removal (another CLI, `rm x x`) finds nothing to do.
        containers.remove(&seen_before).unwrap();
    }

    #[test]
    fn a_running_container_whose_supervisor_died_is_stopped() {
        let root = tempfile::tempdir().unwrap();
        let containers = Containers::open(root.path()).unwrap();
        let a = create(&containers, "abc", "web").unwrap();
        let mut state = State::created();
        state.status = Status::Running;
        state.supervisor_pid = Some(i32::MAX); // no such process
        a.save_state(&state).unwrap();
        let seen = a.state().unwrap();
        assert_eq!(seen.status, Status::Stopped);
        assert_eq!(seen.reason.as_deref(), Some("its supervisor died"));
        // A live process that reused the number is not its supervisor.
        state.supervisor_pid = Some(std::process::id() as i32);
        a.save_state(&state).unwrap();
        assert_eq!(a.state().unwrap().status, Status::Stopped);
    }
}
