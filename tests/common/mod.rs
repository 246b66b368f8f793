//! Shared fixtures for integration tests: a real registry on loopback and the
//! busybox test image (see scripts/registry and scripts/make-test-image).
#![allow(dead_code)] // each test binary uses a different part of this module

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The repository's root, where scripts/ lives.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn script(name: &str) -> PathBuf {
    repo_root().join("scripts").join(name)
}

/// A `docker-registry` on a free 127.0.0.1 port with its own storage; killed on drop.
pub struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    /// What ends its config.yml, kept for [`Registry::revive`].
    extra: String,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with_config("")
    }

    /// A registry whose config.yml ends with `extra` (an `auth:` section).
    pub fn start_with_config(extra: &str) -> Registry {
        // A free port can be taken between our probe and the registry's bind;
        // then the registry exits and we try another.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = tempfile::tempdir().expect("temp dir");
            let child = serve(port, dir.path(), extra);
            let mut registry = Registry {
                child,
                port,
                dir,
                extra: extra.to_string(),
            };
            if registry.wait_ready() {
                return registry;
            }
            last_log = std::fs::read_to_string(registry.dir.path().join("registry.log"))
                .unwrap_or_default();
        }
        panic!("docker-registry did not start; its last log:\n{last_log}");
    }

    /// Kills the registry at once (SIGKILL), mid-transfer if there is one.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port, with the same storage.
    pub fn revive(&mut self) {
        self.child = serve(self.port, self.dir.path(), &self.extra);
        assert!(self.wait_ready(), "docker-registry did not start again");
    }

    /// `127.0.0.1:PORT`, the registry part of references to it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the registry keeps its data (`docker/registry/v2/...`).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The file holding a blob's bytes in the registry's storage.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes the busybox test image as `busybox:latest`; returns its reference.
    pub fn busybox(&self) -> String {
        self.push_test_image("busybox", "latest");
        format!("{}/busybox:latest", self.addr())
    }

    /// Pushes the busybox test image as `NAME:TAG`; returns its manifest digest.
    pub fn push_test_image(&self, name: &str, tag: &str) -> String {
        let layout = test_image();
        self.push_layout(&layout.dir, "latest", name, tag);
        layout.manifest_digest.clone()
    }

    /// Pushes the busybox test image as `NAME:TAG` converted to Docker's v2
    /// schema 2 format (so its digests differ from the OCI original's).
    pub fn push_test_image_as_docker(&self, name: &str, tag: &str) {
        self.push(&["--docker"], &test_image().dir, "latest", name, tag);
    }

    /// Pushes the image tagged `layout_tag` in an OCI layout, every platform of it.
    pub fn push_layout(&self, layout: &Path, layout_tag: &str, name: &str, tag: &str) {
        self.push(&[], layout, layout_tag, name, tag);
    }

    /// Pushes with `skopeo --dest-creds USER:PASSWORD`, for registries that
    /// demand a login.
    pub fn push_test_image_with_creds(&self, name: &str, tag: &str, creds: &str) -> String {
        self.push(&["--creds", creds], &test_image().dir, "latest", name, tag);
        test_image().manifest_digest.clone()
    }

    fn push(&self, flags: &[&str], layout: &Path, layout_tag: &str, name: &str, tag: &str) {
        let status = Command::new(script("registry"))
            .arg("push")
            .args(flags)
            .arg(format!("{}:{layout_tag}", layout.display()))
            .arg(format!("{}/{name}:{tag}", self.addr()))
            .status()
            .expect("run scripts/registry push");
        assert!(status.success(), "pushing {name}:{tag} failed");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            // 401: up, and demanding a login.
            if matches!(http_status(self.port, "/v2/"), Some(200 | 401)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `scripts/registry serve` (which execs docker-registry) in the background.
fn serve(port: u16, dir: &Path, extra: &str) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("registry.log"))
        .expect("log file");
    Command::new(script("registry"))
        .arg("serve")
        .arg(port.to_string())
        .arg(dir)
        .env("REGISTRY_EXTRA_CONFIG", extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .spawn()
        .expect("run scripts/registry (is docker-registry installed?)")
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// The status of a plain GET, or None if nothing answered.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The test image's OCI layout and the digest of its (single) manifest.
pub struct TestImage {
    pub dir: PathBuf,
    pub manifest_digest: String,
}

/// The busybox test image, built once per test process. It lives in cargo's
/// target tmp dir under a name derived from the script and the busybox binary,
/// so test binaries share it and it is rebuilt exactly when either changes.
pub fn test_image() -> &'static TestImage {
    static IMAGE: OnceLock<TestImage> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let mut hasher = Sha256::new();
        for input in [script("make-test-image"), PathBuf::from("/bin/busybox")] {
            hasher.update(
                std::fs::read(&input).unwrap_or_else(|e| panic!("{}: {e}", input.display())),
            );
        }
        let key = hex::encode(&hasher.finalize()[..8]);
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = tmp.join(format!("test-image-{key}"));
        if !dir.join("index.json").exists() {
            let building = tempfile::tempdir_in(tmp).expect("temp dir");
            let status = Command::new(script("make-test-image"))
                .arg(building.path())
                .stdout(Stdio::null())
                .status()
                .expect("run scripts/make-test-image");
            assert!(status.success(), "scripts/make-test-image failed");
            // Another test process may have won the race; its copy is identical.
            let built = building.keep();
            if std::fs::rename(&built, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&built);
            }
        }
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json"))
                .expect("index.json is JSON");
        let manifest_digest = index["manifests"][0]["digest"]
            .as_str()
            .expect("index.json names a manifest")
            .to_string();
        TestImage {
            dir,
            manifest_digest,
        }
    })
}

/// The digests stored under content/blobs/sha256, after checking each file
/// really hashes to its name.
pub fn stored_blobs(app_root: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(app_root.join("content/blobs/sha256"))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = format!("sha256:{}", entry.file_name().to_string_lossy());
            assert_eq!(sha256(&std::fs::read(entry.path()).unwrap()), name);
            name
        })
        .collect()
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The built `container` binary, with an app root of its own.
pub struct Cli {
    pub app_root: tempfile::TempDir,
}

impl Cli {
    /// Containers get no network unless a test names one: tests send
    /// traffic only inside network namespaces they make (see network.rs).
    pub fn new() -> Cli {
        let cli = Cli {
            app_root: tempfile::tempdir().expect("temp app root"),
        };
        let set = cli.run(&["system", "property", "set", "network.default", "none"]);
        assert!(set.status.success(), "{}", text(&set).1);
        cli
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_container"));
        command
            .env("CONTAINER_APP_ROOT", self.app_root.path())
            .env_remove("CONTAINER_DEBUG")
            .stdin(Stdio::null());
        command
    }

    /// Runs `container ARGS...` to completion.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        self.command().args(args).output().expect("run container")
    }

    /// Processes whose command line mentions this app root: the VMs and
    /// helpers of its containers.
    /// The processes under this app root that are still there after up to
    /// 5 s: a supervisor exits just after it records the container stopped,
    /// and a VM killed with its supervisor goes a moment later.
    pub fn lingering(&self) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let found = self.processes();
            if found.is_empty() || std::time::Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn processes(&self) -> Vec<String> {
        let root = self.app_root.path().to_string_lossy().into_owned();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.contains(&root) {
                    found.push(cmdline);
                }
            }
        }
        found
    }
}

impl Drop for Cli {
    /// A failed test must not leave its containers' VMs running.
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["rm", "-f", "-a"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// stdout and stderr of a finished command, as text.
pub fn text(output: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The config and layer digests of a manifest in the test image layout.
pub fn blobs_of(layout: &Path, manifest_digest: &str) -> (String, Vec<String>) {
    let hex = manifest_digest.strip_prefix("sha256:").unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap();
    let config = manifest["config"]["digest"].as_str().unwrap().to_string();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    (config, layers)
}

/// The env of the test image.
pub const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Writes an OCI layout tagged `multi` whose index lists, first, an image for
/// another architecture (arm64/v8 here, amd64 on an arm64 host), then the test
/// image for this host. Returns (host manifest digest, other manifest digest).
pub fn write_multi_platform_layout(dir: &Path) -> (String, String) {
    let source = &test_image().dir;
    let layout = Layout::with_test_blobs(dir);
    let blobs = &layout.blobs;
    let put = |bytes: &[u8]| layout.put(bytes);

    let host_digest = test_image().manifest_digest.clone();
    let host_manifest = std::fs::read(blobs.join(&host_digest["sha256:".len()..])).unwrap();
    let (config_digest, _) = blobs_of(source, &host_digest);
    let mut config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blobs.join(&config_digest["sha256:".len()..])).unwrap(),
    )
    .unwrap();
    let host_arch = config["architecture"].as_str().unwrap().to_string();
    let other = if host_arch == "amd64" {
        serde_json::json!({ "os": "linux", "architecture": "arm64", "variant": "v8" })
    } else {
        serde_json::json!({ "os": "linux", "architecture": "amd64" })
    };
    config["architecture"] = other["architecture"].clone();
    config["variant"] = other
        .get("variant")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    config["config"]["Env"] = serde_json::json!([PATH, "MARKER=other-platform"]);
    let other_config = put(&serde_json::to_vec(&config).unwrap());

    let mut manifest: serde_json::Value = serde_json::from_slice(&host_manifest).unwrap();
    manifest["config"]["digest"] = other_config["digest"].clone();
    manifest["config"]["size"] = other_config["size"].clone();
    let other_manifest = put(&serde_json::to_vec(&manifest).unwrap());
    let other_digest = other_manifest["digest"].as_str().unwrap().to_string();

    let manifest_type = "application/vnd.oci.image.manifest.v1+json";
    let index_type = "application/vnd.oci.image.index.v1+json";
    let host_platform = match host_arch.as_str() {
        "arm64" => serde_json::json!({ "os": "linux", "architecture": "arm64", "variant": "v8" }),
        arch => serde_json::json!({ "os": "linux", "architecture": arch }),
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": index_type,
        "manifests": [
            { "mediaType": manifest_type, "digest": other_digest, "size": other_manifest["size"], "platform": other },
            { "mediaType": manifest_type, "digest": host_digest, "size": host_manifest.len(), "platform": host_platform },
        ],
    });
    let index_blob = put(&serde_json::to_vec(&index).unwrap());
    layout.tag(index_type, &index_blob, "multi");
    (host_digest, other_digest)
}

/// An OCI layout being written in a directory, starting with the test
/// image's blobs: tests add variants of the image to it.
pub struct Layout {
    dir: PathBuf,
    pub blobs: PathBuf,
}

impl Layout {
    pub fn with_test_blobs(dir: &Path) -> Layout {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        for entry in std::fs::read_dir(test_image().dir.join("blobs/sha256")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), blobs.join(entry.file_name())).unwrap();
        }
        Layout {
            dir: dir.to_path_buf(),
            blobs,
        }
    }

    /// Adds a blob; returns its `digest` and `size`, as a descriptor has them.
    pub fn put(&self, bytes: &[u8]) -> serde_json::Value {
        let digest = sha256(bytes);
        std::fs::write(self.blobs.join(&digest["sha256:".len()..]), bytes).unwrap();
        serde_json::json!({ "digest": digest, "size": bytes.len() })
    }

    /// A JSON blob (a manifest, a config).
    pub fn json(&self, digest: &str) -> serde_json::Value {
        let path = self.blobs.join(&digest["sha256:".len()..]);
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// Writes index.json naming only `blob` (a manifest or an index of
    /// `media_type`) as `tag`, and the oci-layout marker.
    pub fn tag(&self, media_type: &str, blob: &serde_json::Value, tag: &str) {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": media_type,
                "digest": blob["digest"],
                "size": blob["size"],
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        });
        std::fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
        std::fs::write(
            self.dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
    }
}

/// A command on a terminal of its own (a detached tmux session), for what
/// only shows on one: the session ends with this.
pub struct Tmux {
    session: String,
}

impl Tmux {
    /// Runs `command` (a shell line) on a `cols` x `rows` terminal.
    pub fn start(name: &str, cols: u16, rows: u16, command: &str) -> Tmux {
        let session = format!("{name}-{}", std::process::id());
        let (cols, rows) = (cols.to_string(), rows.to_string());
        let tmux = Tmux { session };
        let started = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            &tmux.session,
            "-x",
            &cols,
            "-y",
            &rows,
            command,
        ]);
        assert!(started.status.success(), "{}", text(&started).1);
        tmux
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").args(args).output().expect("run tmux")
    }

    /// What the terminal shows now.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(
            &self
                .run(&["capture-pane", "-p", "-t", &self.session])
                .stdout,
        )
        .into_owned()
    }

    /// The screen once it shows `needle`; fails after `timeout`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {needle:?}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `keys` (tmux's names: `Enter`, ...).
    pub fn send(&self, keys: &[&str]) {
        self.run(&[&["send-keys", "-t", &self.session][..], keys].concat());
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        let (cols, rows) = (cols.to_string(), rows.to_string());
        self.run(&[
            "resize-window",
            "-t",
            &self.session,
            "-x",
            &cols,
            "-y",
            &rows,
        ]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-session", "-t", &self.session]);
    }
}
