//! `container image` and `container registry` end to end: the built binary
//! against a real registry on 127.0.0.1.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    Cli, Registry, blobs_of, sha256, stored_blobs, test_image, text, write_multi_platform_layout,
};

/// Runs the CLI, asserts success, returns stdout.
fn ok(cli: &Cli, args: &[&str]) -> String {
    let output = cli.run(args);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{args:?} failed: {stderr}");
    stdout
}

/// Runs the CLI, asserts it failed with exactly one `Error:` line; returns it.
fn fails(cli: &Cli, args: &[&str]) -> String {
    let output = cli.run(args);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{args:?}: {stdout} {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("Error: "), "{stderr}");
    stderr.trim_end().to_string()
}

fn test_image_blobs() -> BTreeSet<String> {
    let digest = &test_image().manifest_digest;
    let (config, layers) = blobs_of(&test_image().dir, digest);
    [digest.clone(), config].into_iter().chain(layers).collect()
}

fn inspect(cli: &Cli, name: &str) -> serde_json::Value {
    let json: serde_json::Value =
        serde_json::from_str(&ok(cli, &["image", "inspect", name])).unwrap();
    json[0].clone()
}

#[test]
fn pull_list_inspect_tag_by_tag_and_digest() {
    let registry = Registry::start();
    let digest = registry.push_test_image("busybox", "latest");
    let cli = Cli::new();
    let image = format!("{}/busybox", registry.addr());

    let out = ok(&cli, &["image", "pull", "--progress", "plain", &image]);
    assert_eq!(out, format!("{image}:latest\n"));
    assert_eq!(stored_blobs(cli.app_root.path()), test_image_blobs());

    let by_digest = format!("{image}@{digest}");
    assert_eq!(
        ok(&cli, &["image", "pull", &by_digest]),
        format!("{by_digest}\n")
    );

    let table = ok(&cli, &["image", "ls"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[1].contains("latest") && lines[1].contains(&digest[7..19]),
        "{table}"
    );
    assert!(lines[2].contains("<none>"), "{table}");

    ok(&cli, &["image", "tag", &image, "127.0.0.1:1/copy:v2"]);
    let quiet = ok(&cli, &["image", "ls", "-q"]);
    assert_eq!(
        quiet.lines().collect::<Vec<_>>(),
        [
            "127.0.0.1:1/copy:v2",
            &format!("{image}:latest"),
            by_digest.as_str(),
        ]
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&cli, &["image", "ls", "--format", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);

    let info = inspect(&cli, "127.0.0.1:1/copy:v2");
    assert_eq!(info["digest"], digest);
    assert_eq!(info["references"].as_array().unwrap().len(), 3);
    assert_eq!(info["config"]["config"]["Cmd"][0], "sh");
    assert_eq!(info["layers"].as_array().unwrap().len(), 1);
    assert!(info["size"].as_u64().unwrap() > 1000);
    // The short digest `image ls` shows finds the image too.
    assert_eq!(inspect(&cli, &digest[7..19])["digest"], digest);

    let err = fails(&cli, &["image", "inspect", "127.0.0.1:1/none"]);
    assert_eq!(err, "Error: image 127.0.0.1:1/none not found");
    let err = fails(&cli, &["image", "tag", &image, "bad//name"]);
    assert!(
        err.starts_with("Error: invalid image reference \"bad//name\""),
        "{err}"
    );
}

#[test]
fn registry_domain_and_df() {
    let registry = Registry::start();
    registry.push_test_image("busybox", "latest");
    let cli = Cli::new();
    ok(
        &cli,
        &[
            "system",
            "property",
            "set",
            "registry.domain",
            &registry.addr(),
        ],
    );
    assert_eq!(
        ok(&cli, &["system", "property", "get", "registry.domain"]),
        format!("{}\n", registry.addr())
    );
    assert_eq!(
        ok(&cli, &["image", "pull", "busybox"]),
        format!("{}/busybox:latest\n", registry.addr())
    );
    let df = ok(&cli, &["system", "df"]);
    let images: Vec<&str> = df.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(images[..3], ["Images", "1", "0"], "{df}");
    let df: serde_json::Value =
        serde_json::from_str(&ok(&cli, &["system", "df", "--format", "json"])).unwrap();
    assert_eq!(
        (df["images"].as_u64(), df["active"].as_u64()),
        (Some(1), Some(0)),
        "{df}"
    );
    assert!(df["content_bytes"].as_u64().unwrap() > 0, "{df}");
    assert_eq!(df["reclaimable_bytes"], df["content_bytes"]);
    let err = fails(
        &cli,
        &["system", "property", "set", "registry.domain", "not a host"],
    );
    assert_eq!(
        err,
        "Error: invalid value \"not a host\" for registry.domain: use a host name with a '.' or a port, localhost, or an IP address"
    );
    ok(&cli, &["system", "property", "clear", "registry.domain"]);
    assert_eq!(
        ok(&cli, &["system", "property", "get", "registry.domain"]),
        "\n"
    );
}

#[test]
fn missing_image_is_one_line_and_non_zero() {
    let registry = Registry::start();
    let cli = Cli::new();
    let err = fails(
        &cli,
        &["image", "pull", &format!("{}/nope:1", registry.addr())],
    );
    assert_eq!(
        err,
        format!(
            "Error: image {}/nope:1 not found in the registry",
            registry.addr()
        )
    );
}

#[test]
fn index_platform_selection() {
    let registry = Registry::start();
    let layout = tempfile::tempdir().unwrap();
    let (host_digest, other_digest) = write_multi_platform_layout(layout.path());
    registry.push_layout(layout.path(), "multi", "multi", "latest");
    let image = format!("{}/multi:latest", registry.addr());

    let cli = Cli::new();
    ok(&cli, &["image", "pull", &image]);
    assert_eq!(inspect(&cli, &image)["digest"], host_digest);

    let other_arch = if cfg!(target_arch = "x86_64") {
        "arm64"
    } else {
        "amd64"
    };
    let platform = if other_arch == "arm64" {
        "linux/arm64/v8"
    } else {
        "linux/amd64"
    };
    for flags in [vec!["--platform", platform], vec!["--arch", other_arch]] {
        let cli = Cli::new();
        let mut args = vec!["image", "pull"];
        args.extend(&flags);
        args.push(&image);
        ok(&cli, &args);
        let info = inspect(&cli, &image);
        assert_eq!(info["digest"], other_digest, "{flags:?}");
        assert_eq!(info["platform"]["architecture"], other_arch);
    }
    let err = fails(
        &cli,
        &["image", "pull", "--platform", "linux/riscv64", &image],
    );
    assert!(err.contains("has no manifest for linux/riscv64"), "{err}");
    // --platform takes precedence over --os and --arch, as in Apple's CLI.
    let cli = Cli::new();
    ok(
        &cli,
        &[
            "image",
            "pull",
            "--platform",
            platform,
            "--arch",
            "riscv64",
            &image,
        ],
    );
    assert_eq!(inspect(&cli, &image)["digest"], other_digest);

    // image save --platform: the stored platform's manifest, or a refusal
    // before anything is written.
    let archive = cli.app_root.path().join("saved.tar");
    let archive_arg = archive.to_str().unwrap();
    ok(
        &cli,
        &[
            "image",
            "save",
            "--platform",
            platform,
            "-o",
            archive_arg,
            &image,
        ],
    );
    let index = tar_entry(&archive, "index.json");
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
    assert_eq!(index["manifests"][0]["digest"], other_digest);
    std::fs::remove_file(&archive).unwrap();
    let host_arch = if other_arch == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let err = fails(
        &cli,
        &[
            "image",
            "save",
            "--arch",
            host_arch,
            "-o",
            archive_arg,
            &image,
        ],
    );
    assert!(
        err.contains(&format!("has no manifest for linux/{host_arch}")),
        "{err}"
    );
    assert!(!archive.exists());

    // run and create take the same flags: the platform asked for is used,
    // and pulled when the stored image is another platform's. The pull is
    // silent: the ID is all they print.
    let create = |flags: &[&str]| {
        let mut args = vec!["create"];
        args.extend(flags);
        args.extend([image.as_str(), "true"]);
        let output = cli.run(&args);
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
        let id = stdout.trim().to_string();
        let all: serde_json::Value = serde_json::from_str(&ok(&cli, &["inspect", &id])).unwrap();
        all[0]["image_digest"].as_str().unwrap().to_string()
    };
    assert_eq!(create(&["--arch", other_arch]), other_digest);
    assert_eq!(create(&[]), other_digest);
    assert_eq!(
        create(&[
            "--platform",
            &format!("linux/{host_arch}"),
            "--os",
            "windows"
        ]),
        host_digest
    );
    assert_eq!(inspect(&cli, &image)["digest"], host_digest);
    assert_eq!(create(&["--arch", other_arch]), other_digest);
}

/// A JSON file of a tar archive.
fn tar_entry(archive: &Path, name: &str) -> serde_json::Value {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in tar.entries().unwrap() {
        let entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some(name) {
            return serde_json::from_reader(entry).unwrap();
        }
    }
    panic!("{name} is not in {}", archive.display());
}

#[test]
fn digest_mismatch_stores_nothing() {
    let registry = Registry::start();
    let digest = registry.push_test_image("busybox", "latest");
    let (_, layers) = blobs_of(&test_image().dir, &digest);
    let data = registry.blob_data(&layers[0]);
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let cli = Cli::new();
    let image = format!("{}/busybox", registry.addr());
    let err = fails(&cli, &["image", "pull", "--progress", "none", &image]);
    assert_eq!(
        err,
        format!(
            "Error: digest mismatch for blob {}: got {}",
            layers[0],
            sha256(&bytes)
        )
    );
    let blobs = stored_blobs(cli.app_root.path());
    assert!(!blobs.contains(&layers[0]) && !blobs.contains(&digest));
    assert_eq!(ok(&cli, &["image", "ls", "-q"]), "");
}

#[test]
fn save_then_load_by_file_and_pipe() {
    let registry = Registry::start();
    registry.push_test_image("busybox", "latest");
    let image = format!("{}/busybox:latest", registry.addr());
    let source = Cli::new();
    ok(&source, &["image", "pull", &image]);

    // File in, file out.
    let archive = source.app_root.path().join("saved.tar");
    ok(
        &source,
        &["image", "save", "-o", archive.to_str().unwrap(), &image],
    );
    let target = Cli::new();
    let out = ok(&target, &["image", "load", "-i", archive.to_str().unwrap()]);
    assert_eq!(out, format!("Loaded image: {image}\n"));
    assert_eq!(stored_blobs(target.app_root.path()), test_image_blobs());

    // stdout to stdin.
    let saved = source
        .command()
        .args(["image", "save", &image])
        .output()
        .unwrap();
    assert!(saved.status.success());
    let piped = Cli::new();
    let mut load = piped
        .command()
        .args(["image", "load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    load.stdin.take().unwrap().write_all(&saved.stdout).unwrap();
    let loaded = load.wait_with_output().unwrap();
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    assert_eq!(
        inspect(&piped, &image)["digest"],
        test_image().manifest_digest
    );

    // A `docker save` archive of the old kind: <id>/layer.tar, uncompressed.
    let docker = Cli::new();
    let tar_path = docker.app_root.path().join("docker.tar");
    write_docker_save_archive(&tar_path, "busybox:docker");
    let out = ok(
        &docker,
        &["image", "load", "-i", tar_path.to_str().unwrap()],
    );
    assert_eq!(out, "Loaded image: docker.io/library/busybox:docker\n");
    let info = inspect(&docker, "busybox:docker");
    assert_eq!(info["config"]["config"]["Cmd"][0], "sh");
    assert_eq!(
        info["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar"
    );

    let err = fails(&docker, &["image", "load", "-i", "/dev/null"]);
    assert!(err.starts_with("Error: the archive is invalid"), "{err}");
}

#[test]
fn push_then_pull_back() {
    let registry = Registry::start();
    registry.push_test_image("busybox", "latest");
    let cli = Cli::new();
    let source = format!("{}/busybox:latest", registry.addr());
    ok(&cli, &["image", "pull", &source]);

    // Same registry, another repository: blobs are mounted, not sent.
    let target = format!("{}/mirror/busybox:v1", registry.addr());
    ok(&cli, &["image", "tag", &source, &target]);
    let output = cli.run(&["image", "push", "--progress", "plain", &target]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        stdout,
        format!("{target}@{}\n", test_image().manifest_digest)
    );
    assert_eq!(stderr.matches(": Mounted").count(), 2, "{stderr}");
    // Again: everything is there already.
    let (_, stderr) = text(&cli.run(&["image", "push", "--progress", "plain", &target]));
    assert_eq!(stderr.matches(": Already exists").count(), 2, "{stderr}");
    // --progress none: nothing but errors, for push and pull alike.
    let silent = |cli: &Cli, command: &str| {
        let output = cli.run(&["image", command, "--progress", "none", &target]);
        assert!(output.status.success(), "{command}: {}", text(&output).1);
        assert_eq!(text(&output), (String::new(), String::new()), "{command}");
    };
    silent(&cli, "push");

    let fresh = Cli::new();
    silent(&fresh, "pull");
    assert_eq!(
        inspect(&fresh, &target)["digest"],
        test_image().manifest_digest
    );
    assert_eq!(stored_blobs(fresh.app_root.path()), test_image_blobs());
}

#[test]
fn rm_and_prune_keep_what_is_used() {
    let registry = Registry::start();
    registry.push_test_image("busybox", "latest");
    let layout = tempfile::tempdir().unwrap();
    let (_, other_digest) = write_multi_platform_layout(layout.path());
    registry.push_layout(layout.path(), "multi", "multi", "latest");
    let cli = Cli::new();
    let root = cli.app_root.path();
    let busybox = format!("{}/busybox:latest", registry.addr());
    let multi = format!("{}/multi:latest", registry.addr());
    ok(&cli, &["image", "pull", &busybox]);
    ok(
        &cli,
        &[
            "image",
            "pull",
            "--arch",
            if cfg!(target_arch = "x86_64") {
                "arm64"
            } else {
                "amd64"
            },
            &multi,
        ],
    );
    ok(&cli, &["image", "tag", &busybox, "127.0.0.1:1/alias:1"]);

    // A container uses busybox (the runtime writes this file).
    let container = root.join("containers/c1");
    std::fs::create_dir_all(&container).unwrap();
    let busybox_digest = test_image().manifest_digest.clone();
    std::fs::write(
        container.join("config.json"),
        format!(r#"{{"image_digest":"{busybox_digest}"}}"#),
    )
    .unwrap();
    // Both references at once would leave the used image without a name.
    let err = fails(&cli, &["image", "rm", "127.0.0.1:1/alias:1", &busybox]);
    assert_eq!(
        err,
        format!(
            "Error: image 127.0.0.1:1/alias:1 is used by container c1; remove the container or use --force"
        )
    );
    // One of two tags goes although a container uses the image (as in
    // Docker); the content stays. Then the last reference is protected.
    assert_eq!(
        ok(&cli, &["image", "rm", "127.0.0.1:1/alias:1"]),
        "127.0.0.1:1/alias:1\n"
    );
    let err = fails(&cli, &["image", "rm", &busybox]);
    assert_eq!(
        err,
        format!(
            "Error: image {busybox} is used by container c1; remove the container or use --force"
        )
    );
    assert!(test_image_blobs().is_subset(&stored_blobs(root)));

    // prune -a spares the used image.
    let out = ok(&cli, &["image", "prune", "-a"]);
    assert!(out.starts_with(&format!("Deleted: {multi}\n")), "{out}");
    assert_eq!(ok(&cli, &["image", "ls", "-q"]), format!("{busybox}\n"));
    assert!(!stored_blobs(root).contains(&other_digest));
    assert_eq!(stored_blobs(root), test_image_blobs());

    // Once the container is gone, rm takes the image and its content.
    std::fs::remove_dir_all(&container).unwrap();
    assert_eq!(ok(&cli, &["image", "rm", "-a"]), format!("{busybox}\n"));
    assert!(stored_blobs(root).is_empty());
    assert_eq!(ok(&cli, &["image", "prune"]), "Reclaimed 0B\n");
}

#[test]
fn pull_killed_half_way_then_repeated() {
    let registry = Registry::start();
    let image = push_big_image(&registry, 96 << 20);
    let cli = Cli::new();
    let ingest = cli.app_root.path().join("content/ingest");

    let (mut child, killed_at) = pull_under_way(&cli, &image, Stdio::null());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(killed_at < 96 << 20);
    // Nothing half-done is visible: no record, only verified blobs.
    assert_eq!(ok(&cli, &["image", "ls", "-q"]), "");
    stored_blobs(cli.app_root.path());

    ok(&cli, &["image", "pull", &image]);
    let info = inspect(&cli, &image);
    // The file, its tar header and the archive's two end blocks.
    assert_eq!(info["layers"][0]["size"], (96u64 << 20) + 3 * 512);
    assert_eq!(stored_blobs(cli.app_root.path()).len(), 3);
    assert_eq!(
        std::fs::read_dir(&ingest).unwrap().count(),
        0,
        "the dead pull's ingest file was cleaned up"
    );
}

/// The registry killed in the middle of a blob, then back: the pull fails
/// in one line and keeps what it received as a partial; the next pull asks
/// only for the rest (seen through a counting proxy) and completes.
#[test]
fn a_registry_dying_mid_blob_then_back() {
    let mut registry = Registry::start();
    let image = push_big_image(&registry, 96 << 20);
    let layer_size = (96u64 << 20) + 3 * 512;
    let cli = Cli::new();
    let ingest = cli.app_root.path().join("content/ingest");
    let partials = cli.app_root.path().join("content/partial");

    let (child, _) = pull_under_way(&cli, &image, Stdio::piped());
    registry.kill();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // The cause, not only reqwest's "error decoding response body".
    assert!(
        stderr.starts_with("Error: downloading blob sha256:")
            && stderr
                .trim_end()
                .ends_with("end of file before message length reached"),
        "{stderr}"
    );
    assert_eq!(ok(&cli, &["image", "ls", "-q"]), "");
    assert_eq!(std::fs::read_dir(&ingest).unwrap().count(), 0);
    let kept: Vec<u64> = std::fs::read_dir(&partials)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    let kept = match kept[..] {
        [kept] if kept > 8 << 20 && kept < layer_size => kept,
        _ => panic!("not one partial of the layer's first 8+ MiB: {kept:?}"),
    };
    stored_blobs(cli.app_root.path());

    registry.revive();
    let proxy = CountingProxy::start(&registry.addr());
    let image = image.replace(&registry.addr(), &proxy.addr());
    ok(&cli, &["image", "pull", "--progress", "none", &image]);
    let ranges = proxy.ranges();
    assert_eq!(ranges, [format!("bytes={kept}-")], "one blob GET resumed");
    // The rest of the layer, plus the manifest, the config and headers.
    let served = proxy.served();
    assert!(
        served < layer_size - kept + (64 << 10),
        "{served} bytes served after keeping {kept} of {layer_size}"
    );
    let info = inspect(&cli, &image);
    assert_eq!(info["layers"][0]["size"], layer_size);
    assert_eq!(stored_blobs(cli.app_root.path()).len(), 3);
    assert_eq!(std::fs::read_dir(&partials).unwrap().count(), 0);
}

/// Partials of interrupted downloads count in `system df` as reclaimable,
/// and `image prune` deletes them, whatever their age.
#[test]
fn prune_deletes_partials_and_df_counts_them() {
    let cli = Cli::new();
    ok(&cli, &["image", "ls"]);
    let partial = cli
        .app_root
        .path()
        .join("content/partial")
        .join("ab".repeat(32));
    std::fs::write(&partial, vec![7u8; 900]).unwrap();
    let df = || -> serde_json::Value {
        serde_json::from_str(&ok(&cli, &["system", "df", "--format", "json"])).unwrap()
    };
    let usage = df();
    assert_eq!(usage["partial_bytes"], 900, "{usage}");
    assert_eq!(usage["reclaimable_bytes"], 900, "{usage}");

    assert_eq!(ok(&cli, &["image", "prune"]), "Reclaimed 900B\n");
    assert!(!partial.exists());
    assert_eq!(df()["partial_bytes"], 0);
}

/// A TCP proxy on 127.0.0.1 in front of a registry: it counts the bytes
/// the registry sends back and keeps what clients send (request heads:
/// pulls send no bodies), to see what a pull asks for and gets.
struct CountingProxy {
    port: u16,
    seen: Arc<Mutex<Seen>>,
}

#[derive(Default)]
struct Seen {
    requests: Vec<u8>,
    served: u64,
}

impl CountingProxy {
    fn start(upstream: &str) -> CountingProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (upstream, shared) = (upstream.to_string(), seen.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (client_in, server_in) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                forward(client_in, server, shared.clone(), |seen, bytes| {
                    seen.requests.extend_from_slice(bytes)
                });
                forward(server_in, client, shared.clone(), |seen, bytes| {
                    seen.served += bytes.len() as u64
                });
            }
        });
        CountingProxy { port, seen }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The `Range` values of the requests so far.
    fn ranges(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        String::from_utf8_lossy(&seen.requests)
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("range")
                    .then(|| value.trim().to_string())
            })
            .collect()
    }

    /// The bytes the registry sent back so far, headers and all.
    fn served(&self) -> u64 {
        self.seen.lock().unwrap().served
    }
}

/// Copies `from` to `to` on a thread, showing each chunk to `note` first;
/// at the end, closes `to`'s sending side, as the other end did.
fn forward(
    mut from: TcpStream,
    mut to: TcpStream,
    seen: Arc<Mutex<Seen>>,
    note: fn(&mut Seen, &[u8]),
) {
    std::thread::spawn(move || {
        let mut buffer = vec![0; 64 << 10];
        while let Ok(n @ 1..) = from.read(&mut buffer) {
            note(&mut seen.lock().unwrap(), &buffer[..n]);
            if to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Starts pulling `image` and returns once more than 8 MiB of it is in the
/// store's ingest directory (and how much), to be cut short there.
fn pull_under_way(cli: &Cli, image: &str, stderr: Stdio) -> (std::process::Child, u64) {
    let ingest = cli.app_root.path().join("content/ingest");
    let mut child = cli
        .command()
        .args(["image", "pull", "--progress", "none", image])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let partial: u64 = std::fs::read_dir(&ingest)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        if partial > 8 << 20 {
            return (child, partial);
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull finished before it could be cut short"
        );
        assert!(Instant::now() < deadline, "the pull never got going");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A tmpfs the test mounts (and unmounts when dropped), to fill up.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs (needs root)");
        Tmpfs(dir)
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.0.path())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Every file below the mount, relative to it, sorted.
    fn files(&self) -> Vec<String> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else {
                    out.push(path.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(self.0.path(), self.0.path(), &mut out);
        out.sort();
        out
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// A disk that fills up during a pull, then during the snapshot a
/// `create` builds: each fails in one line naming the cause, leaves no
/// partial file and no record, and the same command succeeds once there is
/// room (the app root is on a tmpfs the test resizes).
#[test]
fn a_full_disk_fails_pull_and_snapshot_in_one_line_and_leaves_nothing_partial() {
    let registry = Registry::start();
    let image = push_big_image(&registry, 24 << 20);
    let disk = Tmpfs::mount("8M");
    let cli = Cli {
        app_root: tempfile::tempdir_in(disk.0.path()).unwrap(),
    };
    ok(
        &cli,
        &["system", "property", "set", "network.default", "none"],
    );
    // Besides locks, only whole blobs may stay: each checked against its
    // digest, and kept for the next pull.
    let settings = disk.files();
    let partial = || -> Vec<String> {
        disk.files()
            .into_iter()
            .filter(|f| {
                !settings.contains(f)
                    && !f.ends_with(".lock")
                    && !f.contains("/content/blobs/sha256/")
            })
            .collect()
    };

    let err = fails(&cli, &["image", "pull", "--progress", "none", &image]);
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(
        partial(),
        Vec::<String>::new(),
        "the failed pull left files behind"
    );
    stored_blobs(cli.app_root.path());
    assert_eq!(ok(&cli, &["image", "ls", "-q"]), "");
    disk.resize("64M");
    ok(&cli, &["image", "pull", "--progress", "none", &image]);
    assert_eq!(stored_blobs(cli.app_root.path()).len(), 3);

    // Room for the blobs, not for a snapshot of the 24 MiB layer.
    let used = disk.files();
    disk.resize("34M");
    let output = cli.run(&["create", "--name", "c", &image]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("Error: building the root filesystem failed: ")
            && stderr.contains("No space left on device"),
        "{stderr}"
    );
    let after: Vec<String> = disk
        .files()
        .into_iter()
        .filter(|f| !f.ends_with(".lock"))
        .collect();
    let used: Vec<String> = used.into_iter().filter(|f| !f.ends_with(".lock")).collect();
    assert_eq!(after, used, "the failed create left files behind");
    assert_eq!(ok(&cli, &["ls", "-a", "-q"]), "");
    disk.resize("128M");
    ok(&cli, &["create", "--name", "c", &image]);
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&cli, &["ls", "-a", "--format", "json"])).unwrap();
    assert_eq!(listed[0]["name"], "c", "{listed}");
}

/// htpasswd for user `tester`, password `s3cret` (bcrypt, made once with
/// Python's `crypt`).
const HTPASSWD: &str = "tester:$2b$12$AkgScJIciVI.U6.0GOaVEui5tw5/apTROUhAOMsWS5ml0n9/jkRwu";

#[test]
fn basic_auth_login_pull_logout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("htpasswd"), format!("{HTPASSWD}\n")).unwrap();
    let config = format!(
        "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        dir.path().join("htpasswd").display()
    );
    let registry = Registry::start_with_config(&config);
    registry.push_test_image_with_creds("busybox", "latest", "tester:s3cret");
    login_pull_logout(&registry);
}

#[test]
fn token_auth_login_pull_logout() {
    let dir = tempfile::tempdir().unwrap();
    let (_tokens, registry) = token_registry(dir.path());
    login_pull_logout(&registry);
}

/// A registry that wants tokens from a token service on 127.0.0.1, which
/// gives them for tester/s3cret only; busybox pushed to it.
fn token_registry(dir: &Path) -> (TokenServer, Registry) {
    let token_server = TokenServer::start(dir);
    let config = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
        token_server.port,
        dir.join("cert.pem").display()
    );
    let registry = Registry::start_with_config(&config);
    registry.push_test_image_with_creds("busybox", "latest", "tester:s3cret");
    (token_server, registry)
}

fn login_pull_logout(registry: &Registry) {
    let cli = Cli::new();
    let image = format!("{}/busybox:latest", registry.addr());
    let err = fails(&cli, &["image", "pull", &image]);
    assert_eq!(
        err,
        format!(
            "Error: the registry denied access to image {image}; it may not exist or may need a login"
        )
    );

    let login = |password: &str| {
        let mut child = cli
            .command()
            .args([
                "registry",
                "login",
                "-u",
                "tester",
                "--password-stdin",
                &registry.addr(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let wrong = login("wrong");
    let (_, stderr) = text(&wrong);
    assert_eq!(
        stderr,
        format!(
            "Error: logging in to {} failed: wrong username or password\n",
            registry.addr()
        )
    );
    let right = login("s3cret");
    let (stdout, stderr) = text(&right);
    assert!(right.status.success(), "{stderr}");
    assert_eq!(stdout, "Login succeeded\n");
    assert!(!stderr.contains("s3cret"));

    let auth = cli.app_root.path().join("auth.json");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&auth).unwrap().mode() & 0o777, 0o600);
    let listed = ok(&cli, &["registry", "list"]);
    assert!(
        listed.contains(&registry.addr())
            && listed.contains("tester")
            && !listed.contains("s3cret")
    );
    assert_eq!(
        ok(&cli, &["registry", "list", "-q"]),
        format!("{}\n", registry.addr())
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&cli, &["registry", "list", "--format", "json"])).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([{ "registry": registry.addr(), "username": "tester" }])
    );

    ok(&cli, &["image", "pull", &image]);
    assert_eq!(stored_blobs(cli.app_root.path()), test_image_blobs());
    // Pushing needs the push scope of a token; the stored login grants it.
    ok(
        &cli,
        &[
            "image",
            "tag",
            &image,
            &format!("{}/pushed:1", registry.addr()),
        ],
    );
    ok(
        &cli,
        &["image", "push", &format!("{}/pushed:1", registry.addr())],
    );

    ok(&cli, &["registry", "logout", &registry.addr()]);
    let err = fails(&cli, &["registry", "logout", &registry.addr()]);
    assert_eq!(err, format!("Error: not logged in to {}", registry.addr()));
    let fresh = Cli::new();
    fails(&fresh, &["image", "pull", &image]);
}

/// A Docker token service on 127.0.0.1: it checks Basic credentials
/// (tester / s3cret) and answers with a JWT granting the requested scopes,
/// signed by a key whose self-signed certificate the registry trusts.
struct TokenServer {
    port: u16,
}

impl TokenServer {
    fn start(dir: &Path) -> TokenServer {
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=test-token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let der = Command::new("openssl")
            .args(["x509", "-outform", "der", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve_token(stream, &key, &der);
            }
        });
        TokenServer { port }
    }
}

fn serve_token(
    mut stream: std::net::TcpStream,
    key: &Path,
    cert_der: &[u8],
) -> std::io::Result<()> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorized = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorized = value.trim() == format!("Basic {}", STANDARD.encode("tester:s3cret"));
        }
    }
    if !authorized {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
        return write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    let query = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split_once('?')
        .map_or("", |(_, q)| q);
    let access: Vec<serde_json::Value> = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("scope="))
        .map(|scope| scope.replace("%3A", ":").replace("%2C", ",").replace("%2F", "/"))
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({ "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>() }))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header =
        serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5c": [STANDARD.encode(cert_der)] });
    let claims = serde_json::json!({
        "iss": "test-issuer", "sub": "tester", "aud": "test-registry",
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sign = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    sign.stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())?;
    let signature = sign.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    let body = serde_json::json!({ "token": token, "expires_in": 300 }).to_string();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// An OCI layout tagged `latest` with one uncompressed layer holding one file
/// of `size` incompressible bytes (a fixed pseudo-random sequence).
/// Pushes an image of one uncompressed layer holding `size` bytes of noise
/// as `big:latest`; returns its reference.
fn push_big_image(registry: &Registry, size: usize) -> String {
    let layout = tempfile::tempdir().unwrap();
    write_big_layout(layout.path(), size);
    registry.push_layout(layout.path(), "latest", "big", "latest");
    format!("{}/big:latest", registry.addr())
}

fn write_big_layout(dir: &Path, size: usize) {
    let mut data = vec![0u8; size];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_mtime(1_704_067_200);
    layer
        .append_data(&mut header, "data.bin", &data[..])
        .unwrap();
    let layer = layer.into_inner().unwrap();
    write_layout(dir, &[layer]);
}

/// Writes an image of uncompressed `layers` as an OCI layout tagged `latest`.
fn write_layout(dir: &Path, layers: &[Vec<u8>]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let digest = sha256(bytes);
        std::fs::write(blobs.join(&digest[7..]), bytes).unwrap();
        serde_json::json!({ "digest": digest, "size": bytes.len() })
    };
    let media_type = "application/vnd.oci.image.layer.v1.tar";
    let layer_descriptors: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            let mut d = put(l);
            d["mediaType"] = media_type.into();
            d
        })
        .collect();
    let arch = if cfg!(target_arch = "x86_64") {
        "amd64"
    } else {
        "arm64"
    };
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": { "Cmd": ["sh"] },
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| sha256(l)).collect::<Vec<_>>() },
    });
    let mut config = put(config.to_string().as_bytes());
    config["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": layer_descriptors,
    });
    let mut entry = put(manifest.to_string().as_bytes());
    entry["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    entry["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": "latest" });
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [entry] });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// An entry of a hand-made archive.
enum Entry<'a> {
    File(&'a [u8]),
    Symlink(&'a str),
    HardLink(&'a str),
}

/// An archive of `entries`, with their names written as given (`tar`'s
/// builder would refuse `..`).
fn archive(entries: &[(&str, Entry)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, entry) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_mode(0o644);
        let data: &[u8] = match entry {
            Entry::File(data) => data,
            Entry::Symlink(target) | Entry::HardLink(target) => {
                header.set_entry_type(match entry {
                    Entry::Symlink(_) => tar::EntryType::Symlink,
                    _ => tar::EntryType::Link,
                });
                header.set_link_name(target).unwrap();
                &[]
            }
        };
        header.set_size(data.len() as u64);
        header.set_cksum();
        tar.append(&header, data).unwrap();
    }
    tar.into_inner().unwrap()
}

/// An OCI image archive named `example.com/big:1`, whose manifest lists
/// `layers` layers (absent) and whose config is `config` (present).
fn oci_archive(layers: usize, config: &[u8]) -> Vec<u8> {
    let layer = serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": sha256(b"absent"), "size": 6,
    });
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(config), "size": config.len(),
        },
        "layers": vec![layer; layers],
    })
    .to_string();
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha256(manifest.as_bytes()), "size": manifest.len(),
        "annotations": { "io.containerd.image.name": "example.com/big:1" },
    }]})
    .to_string();
    let blob = |bytes: &[u8]| format!("blobs/sha256/{}", &sha256(bytes)[7..]);
    archive(&[
        ("index.json", Entry::File(index.as_bytes())),
        (&blob(manifest.as_bytes()), Entry::File(manifest.as_bytes())),
        (&blob(config), Entry::File(config)),
    ])
}

/// `image load` reads archives as data, never as paths to follow: entries
/// and links that point outside the archive, oversized metadata, and
/// images it would not pull (too many layers, a huge config) are refused in
/// one line with nothing recorded; links inside it are followed, as old
/// `docker save` archives need for a layer two images share.
#[test]
fn hostile_archives_are_refused_by_load_in_one_line() {
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    let load = |bytes: &[u8]| {
        let path = dir.path().join("archive.tar");
        std::fs::write(&path, bytes).unwrap();
        cli.run(&["image", "load", "-i", path.to_str().unwrap()])
    };
    let refused = |bytes: &[u8], expected: &str| {
        let output = load(bytes);
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{stdout} {stderr}");
        assert_eq!(stderr.trim_end(), expected);
        assert_eq!(ok(&cli, &["image", "ls", "-q"]), "");
    };
    refused(
        &archive(&[("../evil", Entry::File(b"x"))]),
        "Error: the archive is invalid: entry ../evil points outside the archive",
    );
    refused(
        &archive(&[("/etc/evil", Entry::File(b"x"))]),
        "Error: the archive is invalid: entry /etc/evil points outside the archive",
    );
    refused(
        &archive(&[("abc/layer.tar", Entry::Symlink("/etc/shadow"))]),
        "Error: the archive is invalid: entry abc/layer.tar links outside the archive (to /etc/shadow)",
    );
    refused(
        &archive(&[("abc/layer.tar", Entry::Symlink("../../etc/shadow"))]),
        "Error: the archive is invalid: entry abc/layer.tar links outside the archive (to ../../etc/shadow)",
    );
    refused(
        &archive(&[("abc/layer.tar", Entry::HardLink("../etc/shadow"))]),
        "Error: the archive is invalid: entry abc/layer.tar links outside the archive (to ../etc/shadow)",
    );
    let big = vec![b' '; 17 << 20];
    refused(
        &archive(&[("repositories", Entry::File(&big))]),
        "Error: entry repositories of the archive (17825792 bytes), which is neither a blob nor a \
         layer, is larger than the 16777216 bytes accepted",
    );
    refused(
        &oci_archive(1001, b"{}"),
        "Error: image example.com/big:1 has 1001 layers, more than the 1000 accepted",
    );
    let env = format!(r#"{{"config":{{"Env":["A={}"]}}}}"#, "a".repeat(5 << 20));
    refused(
        &oci_archive(1, env.as_bytes()),
        &format!(
            "Error: the config of example.com/big:1 ({} bytes) is larger than the 4194304 \
             bytes accepted",
            env.len()
        ),
    );

    // Links within the archive are followed: a layer two images share,
    // stored once and linked from the second image's directory.
    let path = dir.path().join("linked.tar");
    write_docker_save_archive(&path, "busybox:linked");
    let mut linked = std::fs::read(&path).unwrap();
    linked.truncate(linked.len() - 1024); // the end-of-archive blocks
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", &blobs_of(&test_image().dir, &test_image().manifest_digest).0[7..]),
        "RepoTags": ["busybox:second"],
        "Layers": ["def456/layer.tar"],
    }]);
    let more = archive(&[
        ("def456/layer.tar", Entry::Symlink("../abc123/layer.tar")),
        (
            "manifest.json",
            Entry::File(manifest.to_string().as_bytes()),
        ),
    ]);
    linked.extend_from_slice(&more);
    let output = load(&linked);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout, "Loaded image: docker.io/library/busybox:second\n");
    let info = inspect(&cli, "busybox:second");
    assert_eq!(info["config"]["config"]["Cmd"][0], "sh");
}

/// A `docker save` archive of the old kind holding the test image: its
/// config as `<id>.json`, its layer uncompressed as `<id>/layer.tar`.
fn write_docker_save_archive(path: &Path, tag: &str) {
    let image = test_image();
    let (config, layers) = blobs_of(&image.dir, &image.manifest_digest);
    let blob = |d: &str| std::fs::read(image.dir.join("blobs/sha256").join(&d[7..])).unwrap();
    let mut layer = Vec::new();
    flate2::read::GzDecoder::new(&blob(&layers[0])[..])
        .read_to_end(&mut layer)
        .unwrap();
    let manifest = serde_json::json!([{
        "Config": format!("{}.json", &config[7..]),
        "RepoTags": [tag],
        "Layers": ["abc123/layer.tar"],
    }]);
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, name, bytes).unwrap();
    };
    add("abc123/layer.tar", &layer);
    add(&format!("{}.json", &config[7..]), &blob(&config));
    add("manifest.json", manifest.to_string().as_bytes());
    add("repositories", b"{}");
    tar.into_inner().unwrap();
}

/// A registry that answers `/v2/` and, for each repository, one canned
/// manifest response: `(repository, headers, body, times the body is
/// sent)`; a body with no Content-Length runs until the connection closes.
/// A route starting with `/` is a whole path instead (its query ignored),
/// and headers starting with `HTTP/` bring their own status line.
fn hostile_registry(routes: Vec<(String, String, Vec<u8>, usize)>) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).map_or(true, |n| n == 0) || line.trim().is_empty() {
                    break;
                }
            }
            let target = request.split_whitespace().nth(1).unwrap_or("");
            let path = target.split('?').next().unwrap_or("").to_string();
            let found = routes
                .iter()
                .find(|(route, _, _, _)| match route.starts_with('/') {
                    true => path == *route,
                    false => path == format!("/v2/{route}/manifests/latest"),
                });
            let _ = match found {
                Some((_, headers, body, times)) => stream
                    .write_all(
                        match headers.starts_with("HTTP/") {
                            true => format!("{headers}Connection: close\r\n\r\n"),
                            false => {
                                format!("HTTP/1.1 200 OK\r\n{headers}Connection: close\r\n\r\n")
                            }
                        }
                        .as_bytes(),
                    )
                    .and_then(|()| (0..*times).try_for_each(|_| stream.write_all(body))),
                None => stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                ),
            };
        }
    });
    port
}

#[test]
fn hostile_registry_responses_are_bounded_and_refused_in_one_line() {
    const OCI: &str = "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n";
    let manifest = |config_size: u64, layers: usize| {
        let layer = serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{}", "a".repeat(64)), "size": 10,
        });
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": format!("sha256:{}", "b".repeat(64)), "size": config_size },
            "layers": vec![layer; layers],
        }))
        .unwrap()
    };
    let endless = || vec![b' '; 1 << 16];
    // Both blobs fail alike: the config and the layer are fetched at once,
    // and either failure may be the one reported.
    let blob = |hex: &str| format!("/v2/blob-error/blobs/sha256:{}", hex.repeat(64));
    let port = hostile_registry(vec![
        // 64 MiB of a manifest with no length given: read to 4 MiB, no more.
        ("endless".into(), OCI.to_string(), endless(), 1 << 10),
        // A length said up front is refused before the body.
        (
            "announced".into(),
            format!("{OCI}Content-Length: 67108864\r\n"),
            vec![],
            1,
        ),
        ("layers".into(), OCI.to_string(), manifest(10, 10_000), 1),
        (
            "config".into(),
            OCI.to_string(),
            manifest(100_000_000, 1),
            1,
        ),
        // A blob request failing with 64 MiB of explanation: 4 KiB are read.
        ("blob-error".into(), OCI.to_string(), manifest(10, 1), 1),
        (
            blob("b"),
            "HTTP/1.1 500 Internal Server Error\r\n".into(),
            endless(),
            1 << 10,
        ),
        (
            blob("a"),
            "HTTP/1.1 500 Internal Server Error\r\n".into(),
            endless(),
            1 << 10,
        ),
    ]);
    // A registry whose token service answers with 64 MiB.
    let tokens = hostile_registry(vec![("/token".into(), String::new(), endless(), 1 << 10)]);
    let challenge =
        format!("WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{tokens}/token\"\r\n");
    let token_port = hostile_registry(vec![("/v2/".into(), challenge, b"{}".to_vec(), 1)]);
    let cli = Cli::new();
    let cases = [
        (
            "endless",
            "endless:latest is larger than the 4194304 bytes accepted",
        ),
        (
            "announced",
            "announced:latest (67108864 bytes) is larger than the 4194304 bytes accepted",
        ),
        ("layers", "has 10000 layers, more than the 1000 accepted"),
        (
            "config",
            "config:latest (100000000 bytes) is larger than the 4194304 bytes accepted",
        ),
        (
            "blob-error",
            "registry 127.0.0.1:PORT answered 500 Internal Server Error: ",
        ),
        (
            "token",
            "the token service of registry 127.0.0.1:PORT failed: the token service's answer is \
             larger than 1048576 bytes",
        ),
    ];
    for (repo, said) in cases {
        let port = if repo == "token" { token_port } else { port };
        let said = said.replace("PORT", &port.to_string());
        let image = format!("127.0.0.1:{port}/{repo}:latest");
        // Its own peak memory, as GNU time reports it from wait4. Not from
        // our own wait4: a child spawned by this (multi-threaded, large)
        // test process inherits its peak into ru_maxrss across exec; one
        // that time forks starts from time's.
        let mut command = Command::new("/usr/bin/time");
        command
            .args([
                "-q",
                "-f",
                "%M",
                env!("CARGO_BIN_EXE_container"),
                "image",
                "pull",
                "--progress",
                "none",
                &image,
            ])
            .env("CONTAINER_APP_ROOT", cli.app_root.path())
            .stdin(Stdio::null());
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let (said_by_us, peak_kib) = stderr.trim_end().rsplit_once('\n').unwrap();
        let peak_mib = peak_kib.parse::<u64>().unwrap() / 1024;
        assert_eq!(said_by_us.lines().count(), 1, "{stderr}");
        assert!(
            said_by_us.starts_with("Error: ") && said_by_us.contains(&said),
            "{repo}: {stderr}"
        );
        assert_eq!(output.status.code(), Some(1), "{repo}");
        assert!(peak_mib < 48, "{repo}: peak {peak_mib} MiB");
    }
    assert_eq!(ok(&cli, &["image", "ls", "-q"]), "");
}

/// `docker-credential-test` on a PATH of its own, and a `DOCKER_CONFIG`
/// directory, for running the CLI as a Docker user with a credential helper.
/// The script answers `get` as the file `mode` says, records each call in
/// `calls` and what `store` was given in `stored`.
struct CredentialHelper {
    dir: tempfile::TempDir,
}

impl CredentialHelper {
    fn new() -> CredentialHelper {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        let script = dir.path().join("bin/docker-credential-test");
        std::fs::write(
            &script,
            format!(
                r#"#!/bin/sh
dir='{}'
input=$(cat)
printf '%s %s\n' "$1" "$input" >> "$dir/calls"
case "$1:$(cat "$dir/mode")" in
get:ok) printf '{{"ServerURL":"%s","Username":"tester","Secret":"s3cret"}}\n' "$input" ;;
get:token) printf '{{"ServerURL":"%s","Username":"<token>","Secret":"refresh"}}\n' "$input" ;;
get:garbage) printf 'gpg: decryption failed\n\n  No secret key\n'; exit 1 ;;
get:*) echo "credentials not found in native keychain"; exit 1 ;;
store:*) printf '%s' "$input" > "$dir/stored" ;;
esac
"#,
                dir.path().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let helper = CredentialHelper { dir };
        helper.answer("ok");
        helper.docker_config(serde_json::json!({}));
        helper
    }

    fn answer(&self, mode: &str) {
        std::fs::write(self.dir.path().join("mode"), mode).unwrap();
    }

    fn docker_config(&self, config: serde_json::Value) {
        std::fs::write(self.dir.path().join("config.json"), config.to_string()).unwrap();
    }

    /// The calls since the last look, as `ACTION STDIN` lines.
    fn calls(&self) -> String {
        let path = self.dir.path().join("calls");
        let calls = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        calls
    }

    /// `container ARGS...` with the helper first on PATH and its Docker config.
    fn command(&self, cli: &Cli, args: &[&str]) -> Command {
        let path = std::env::var("PATH").unwrap_or_default();
        let mut command = cli.command();
        command
            .args(args)
            .env(
                "PATH",
                format!("{}:{path}", self.dir.path().join("bin").display()),
            )
            .env("DOCKER_CONFIG", self.dir.path());
        command
    }

    fn ok(&self, cli: &Cli, args: &[&str]) -> String {
        let output = self.command(cli, args).output().unwrap();
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{args:?} failed: {stderr}");
        stdout
    }

    /// The one `Error:` line of a failed run.
    fn fails(&self, cli: &Cli, args: &[&str]) -> String {
        let output = self.command(cli, args).output().unwrap();
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stdout} {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("Error: "), "{stderr}");
        stderr.trim_end().to_string()
    }

    /// `registry login -u tester --password-stdin` with more arguments.
    fn login(&self, cli: &Cli, password: &str, args: &[&str]) -> std::process::Output {
        let mut child = self
            .command(
                cli,
                &["registry", "login", "-u", "tester", "--password-stdin"],
            )
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    }
}

#[test]
fn docker_credential_helpers_log_in_pulls_and_store_logins() {
    let dir = tempfile::tempdir().unwrap();
    let (_tokens, registry) = token_registry(dir.path());
    let host = registry.addr();
    let image = format!("{host}/busybox:latest");
    let pull = ["image", "pull", "--progress", "none", image.as_str()];
    let denied = format!(
        "Error: the registry denied access to image {image}; it may not exist or may need a login"
    );
    let helper = CredentialHelper::new();

    // Docker's credHelpers entry for the registry: the helper is asked with
    // the bare host:port, and its password gets the token (the token
    // service gives none for anything else).
    helper.docker_config(serde_json::json!({ "credHelpers": { &host: "test" } }));
    let cli = Cli::new();
    helper.ok(&cli, &pull);
    assert_eq!(helper.calls(), format!("get {host}\n"));
    assert_eq!(stored_blobs(cli.app_root.path()), test_image_blobs());
    assert!(!cli.app_root.path().join("auth.json").exists());

    // Holding nothing means anonymous: the registry's refusal, not ours.
    helper.answer("notfound");
    assert_eq!(helper.fails(&Cli::new(), &pull), denied);
    assert_eq!(helper.calls(), format!("get {host}\n"));
    helper.answer("garbage");
    assert_eq!(
        helper.fails(&Cli::new(), &pull),
        format!(
            "Error: credential helper docker-credential-test for {host} failed: gpg: decryption failed No secret key"
        )
    );
    assert_eq!(helper.calls(), format!("get {host}\n"));
    helper.answer("token");
    assert_eq!(
        helper.fails(&Cli::new(), &pull),
        format!(
            "Error: credential helper docker-credential-test holds an identity token for {host}, which container cannot use; store a user name and password in it"
        )
    );
    assert_eq!(helper.calls(), format!("get {host}\n"));
    helper.docker_config(serde_json::json!({ "credHelpers": { &host: "absent" } }));
    assert_eq!(
        helper.fails(&Cli::new(), &pull),
        format!(
            "Error: credential helper docker-credential-absent for {host} failed: docker-credential-absent is not on PATH"
        )
    );

    // credsStore serves every registry, and with it Docker ignores the
    // inline login, good as it is here; a credHelpers entry for another
    // registry changes nothing.
    use base64::Engine as _;
    let inline = base64::engine::general_purpose::STANDARD.encode("tester:s3cret");
    helper.docker_config(serde_json::json!({
        "auths": { &host: { "auth": inline } },
        "credHelpers": { "other.example:5000": "absent" },
        "credsStore": "test",
    }));
    helper.answer("notfound");
    assert_eq!(helper.fails(&Cli::new(), &pull), denied);
    assert_eq!(helper.calls(), format!("get {host}\n"));
    helper.answer("ok");
    helper.ok(&Cli::new(), &pull);
    assert_eq!(helper.calls(), format!("get {host}\n"));

    // login --credential-helper: checked with the registry, then stored
    // through the helper; our auth.json names the helper, holds no secret,
    // and pulls use it with no Docker config at all.
    helper.docker_config(serde_json::json!({}));
    let cli = Cli::new();
    let login_args = ["--credential-helper", "test", host.as_str()];
    let wrong = helper.login(&cli, "wrong", &login_args);
    assert_eq!(
        text(&wrong).1,
        format!("Error: logging in to {host} failed: wrong username or password\n")
    );
    assert!(!helper.dir.path().join("stored").exists());
    let right = helper.login(&cli, "s3cret", &login_args);
    assert!(right.status.success(), "{}", text(&right).1);
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(helper.dir.path().join("stored")).unwrap()).unwrap();
    assert_eq!(
        stored,
        serde_json::json!({ "ServerURL": host, "Username": "tester", "Secret": "s3cret" })
    );
    let auth = std::fs::read_to_string(cli.app_root.path().join("auth.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&auth).unwrap(),
        serde_json::json!({ "auths": {}, "credHelpers": { &host: "test" } }),
        "{auth}"
    );
    helper.calls();
    helper.ok(&cli, &pull);
    assert_eq!(helper.calls(), format!("get {host}\n"));
    assert_eq!(
        helper.ok(&cli, &["registry", "list", "-q"]),
        format!("{host}\n")
    );
    assert!(helper.ok(&cli, &["registry", "list"]).contains("tester"));
    helper.calls();

    // Logout erases it from the helper and forgets the helper.
    helper.ok(&cli, &["registry", "logout", &host]);
    assert_eq!(helper.calls(), format!("erase {host}\n"));
    assert_eq!(
        helper.fails(&cli, &["registry", "logout", &host]),
        format!("Error: not logged in to {host}")
    );
    helper.answer("notfound");
    assert_eq!(helper.fails(&Cli::new(), &pull), denied);
}
