//! Volumes and mounts as users use them: host directories and files bound
//! into running containers (virtio-fs through a real virtiofsd), a named
//! volume two running containers share, tmpfs, anonymous volumes from `-v
//! PATH` and an image's `VOLUME`, and every bad spec refused before a VM
//! boots. Real registry, real VMs: two of them, run side by side.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use common::{Cli, Layout, Registry, test_image, text};

fn ok(output: Output) -> String {
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    stdout
}

fn run(cli: &Cli, args: &[&str]) -> String {
    ok(cli.run(args))
}

/// Runs `sh -c SCRIPT` in a running container.
fn exec(cli: &Cli, container: &str, script: &str) -> Output {
    cli.run(&["exec", container, "sh", "-c", script])
}

fn exec_ok(cli: &Cli, container: &str, script: &str) -> String {
    ok(exec(cli, container, script))
}

/// The test image with `VOLUME`s at `paths`, pushed as `volumes:latest`.
fn image_with_volumes(registry: &Registry, paths: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::with_test_blobs(dir.path());
    let mut manifest = layout.json(&test_image().manifest_digest);
    let mut config = layout.json(manifest["config"]["digest"].as_str().unwrap());
    config["config"]["Volumes"] = paths
        .iter()
        .map(|p| (p.to_string(), serde_json::json!({})))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let config = layout.put(&serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = config["digest"].clone();
    manifest["config"]["size"] = config["size"].clone();
    let manifest = layout.put(&serde_json::to_vec(&manifest).unwrap());
    layout.tag(
        "application/vnd.oci.image.manifest.v1+json",
        &manifest,
        "latest",
    );
    registry.push_layout(dir.path(), "latest", "volumes", "latest");
    format!("{}/volumes:latest", registry.addr())
}

fn owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.uid(), meta.gid())
}

fn volume_names(cli: &Cli) -> Vec<String> {
    run(cli, &["volume", "ls", "-q"])
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn binds_volumes_and_tmpfs_reach_running_containers() {
    let registry = Registry::start();
    let image = registry.busybox();
    let with_volumes = image_with_volumes(&registry, &["/home/app"]);
    let cli = Cli::new();
    let host = tempfile::tempdir().unwrap();
    let (src, ro) = (host.path().join("src"), host.path().join("ro"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    // Writable by the container's uid 1000 too.
    std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::write(src.join("hello"), "from the host\n").unwrap();
    std::fs::write(ro.join("keep"), "read me\n").unwrap();
    std::fs::write(host.path().join("app.conf"), "version=1\n").unwrap();
    run(&cli, &["volume", "create", "--opt", "size=32M", "sized"]);
    // A disk without a journal, as made before disks had one, still mounts.
    run(&cli, &["volume", "create", "--opt", "size=16M", "plain"]);
    let plain: serde_json::Value =
        serde_json::from_str(&run(&cli, &["volume", "inspect", "plain"])).unwrap();
    let plain_disk = plain[0]["mountpoint"].as_str().unwrap();
    let mkfs = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-O", "^has_journal", plain_disk])
        .output()
        .unwrap();
    ok(mkfs);
    let src_spec = format!("{}:/src", src.display());
    let ro_spec = format!("{}:/ro:ro", ro.display());

    // One container with every kind of mount; a relative file path is
    // taken from the CLI's directory.
    let output = cli
        .command()
        .current_dir(host.path())
        .args([
            "run",
            "-d",
            "--name",
            "a",
            "-v",
            &src_spec,
            "-v",
            &ro_spec,
            "-v",
            "./app.conf:/opt/app.conf",
            "-v",
            "shared:/shared",
            "-v",
            "conf:/etc",
            "-v",
            "/anon",
            "--tmpfs",
            "/scratch:size=16m",
            "-v",
            "sized:/sized",
            "-v",
            "plain:/plain",
            &image,
            "sleep",
            "600",
        ])
        .output()
        .unwrap();
    ok(output);

    // A host directory, both ways, at once.
    assert_eq!(exec_ok(&cli, "a", "cat /src/hello"), "from the host\n");
    std::fs::write(src.join("later"), "written while it runs\n").unwrap();
    assert_eq!(
        exec_ok(&cli, "a", "cat /src/later"),
        "written while it runs\n"
    );
    exec_ok(&cli, "a", "echo from the container > /src/back");
    assert_eq!(
        std::fs::read_to_string(src.join("back")).unwrap(),
        "from the container\n"
    );
    // Owners are kept both ways.
    let output = cli.run(&[
        "exec",
        "-u",
        "1000:1000",
        "a",
        "sh",
        "-c",
        "echo mine > /src/by-app",
    ]);
    ok(output);
    assert_eq!(owner(&src.join("by-app")), (1000, 1000));
    std::fs::write(src.join("owned"), "x").unwrap();
    std::os::unix::fs::chown(src.join("owned"), Some(1234), Some(5678)).unwrap();
    assert_eq!(
        exec_ok(&cli, "a", "stat -c %u:%g /src/owned"),
        "1234:5678\n"
    );

    // :ro refuses writes and still reads.
    assert_eq!(exec_ok(&cli, "a", "cat /ro/keep"), "read me\n");
    let refused = exec(&cli, "a", "touch /ro/new");
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        text(&refused).1.contains("Read-only"),
        "{}",
        text(&refused).1
    );
    assert!(!ro.join("new").exists());

    // A single file, changed in place on the host.
    assert_eq!(exec_ok(&cli, "a", "cat /opt/app.conf"), "version=1\n");
    std::fs::write(host.path().join("app.conf"), "version=2\n").unwrap();
    assert_eq!(exec_ok(&cli, "a", "cat /opt/app.conf"), "version=2\n");
    assert_eq!(exec_ok(&cli, "a", "ls /opt"), "app.conf\n");

    // A new volume over a path of the image starts with the image's files.
    assert!(exec_ok(&cli, "a", "cat /etc/passwd").contains("app:x:1000"));
    let conf: serde_json::Value =
        serde_json::from_str(&run(&cli, &["volume", "inspect", "conf"])).unwrap();
    let conf_dir = Path::new(conf[0]["mountpoint"].as_str().unwrap());
    assert!(
        std::fs::read_to_string(conf_dir.join("passwd"))
            .unwrap()
            .contains("app:x:1000")
    );

    // --tmpfs: a tmpfs, sized, noexec by default.
    let mounts = exec_ok(&cli, "a", "grep ' /scratch ' /proc/mounts");
    assert!(mounts.starts_with("tmpfs /scratch tmpfs "), "{mounts}");
    assert!(
        mounts.contains("size=16384k") && mounts.contains("noexec"),
        "{mounts}"
    );

    // A sized volume is a disk of its own, full at its size, and one
    // running container's at a time.
    let sized = exec_ok(&cli, "a", "grep ' /sized ' /proc/mounts");
    assert!(sized.starts_with("/dev/vdb /sized ext4 "), "{sized}");
    let full = exec(&cli, "a", "dd if=/dev/zero of=/sized/big bs=1M count=64");
    assert!(text(&full).1.contains("No space left"), "{}", text(&full).1);
    let plain = exec_ok(&cli, "a", "grep ' /plain ' /proc/mounts");
    assert!(plain.starts_with("/dev/vdc /plain ext4 rw"), "{plain}");
    let taken = cli.run(&["run", "--rm", "-v", "sized:/s", &image, "true"]);
    let stderr = text(&taken).1;
    assert_eq!(taken.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("another one uses it now"), "{stderr}");

    // inspect shows the mounts.
    let inspect: serde_json::Value = serde_json::from_str(&run(&cli, &["inspect", "a"])).unwrap();
    let mounts = inspect[0]["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 9, "{mounts:?}");
    assert_eq!(mounts[0]["type"], "bind");
    assert_eq!(mounts[0]["source"], src.display().to_string());
    assert_eq!(mounts[1]["read_only"], true);
    assert_eq!(mounts[3]["name"], "shared");
    assert_eq!(mounts[6]["name"], "sized");
    assert_eq!(mounts[8]["type"], "tmpfs");
    let anonymous_a = mounts[5]["name"].as_str().unwrap().to_string();
    assert_eq!(anonymous_a.len(), 64);

    // A second container on the same named volume, at the same time, from
    // an image whose VOLUME gets an anonymous volume (owned as in the image).
    run(
        &cli,
        &[
            "run",
            "-d",
            "--rm",
            "--name",
            "b",
            "-v",
            "shared:/data",
            &with_volumes,
            "sleep",
            "600",
        ],
    );
    exec_ok(&cli, "a", "echo from a > /shared/note");
    assert_eq!(exec_ok(&cli, "b", "cat /data/note"), "from a\n");
    exec_ok(&cli, "b", "echo from b >> /data/note");
    assert_eq!(exec_ok(&cli, "a", "cat /shared/note"), "from a\nfrom b\n");
    assert_eq!(exec_ok(&cli, "b", "stat -c %u:%g /home/app"), "1000:1000\n");
    let inspect: serde_json::Value = serde_json::from_str(&run(&cli, &["inspect", "b"])).unwrap();
    let anonymous_b = inspect[0]["mounts"][1]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(inspect[0]["mounts"][1]["destination"], "/home/app");
    let names = volume_names(&cli);
    for name in ["shared", "conf", &anonymous_a, &anonymous_b] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }

    // A volume in use is not removed.
    let refused = cli.run(&["volume", "rm", "shared"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused).1;
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("volume shared is in use"), "{stderr}");

    // b goes (--rm) with its anonymous volume; a is removed with -v.
    run(&cli, &["stop", "-t", "1", "b"]);
    run(&cli, &["rm", "-f", "-v", "a"]);
    // b's supervisor removes it just after it reads as stopped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !run(&cli, &["ls", "-a", "-q"]).is_empty() {
        assert!(std::time::Instant::now() < deadline, "b was never removed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let names = volume_names(&cli);
    assert!(
        !names.contains(&anonymous_a) && !names.contains(&anonymous_b),
        "{names:?}"
    );
    // The named volumes and their data outlive both.
    assert!(names.contains(&"shared".to_string()), "{names:?}");
    let shared: serde_json::Value =
        serde_json::from_str(&run(&cli, &["volume", "inspect", "shared"])).unwrap();
    let shared_dir = Path::new(shared[0]["mountpoint"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(shared_dir.join("note")).unwrap(),
        "from a\nfrom b\n"
    );
    assert_eq!(shared[0]["containers"], serde_json::json!([]));
    assert_eq!(run(&cli, &["volume", "rm", "shared"]), "shared\n");
    // No virtiofsd (or any helper) outlives its VM.
    assert_eq!(cli.lingering(), Vec::<String>::new());
}

#[test]
fn cp_reaches_created_and_stopped_containers_and_their_volumes() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let host = tempfile::tempdir().unwrap();
    let conf = host.path().join("app.conf");
    std::fs::write(&conf, "copied in\n").unwrap();
    run(
        &cli,
        &[
            "create",
            "--name",
            "c",
            "-v",
            "data:/data",
            &image,
            "sh",
            "-c",
            "cat /data/app.conf && echo changed > /etc/motd",
        ],
    );
    // Into a container that never ran, through to its volume.
    run(&cli, &["cp", conf.to_str().unwrap(), "c:/data/"]);
    let data: serde_json::Value =
        serde_json::from_str(&run(&cli, &["volume", "inspect", "data"])).unwrap();
    let data_dir = Path::new(data[0]["mountpoint"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(data_dir.join("app.conf")).unwrap(),
        "copied in\n"
    );
    assert_eq!(run(&cli, &["start", "-a", "c"]), "copied in\n");
    // Out of it once stopped.
    let out = host.path().join("motd");
    run(&cli, &["cp", "c:/etc/motd", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "changed\n");
    let tar = host.path().join("c.tar");
    run(&cli, &["export", "-o", tar.to_str().unwrap(), "c"]);
    let mut archive = tar::Archive::new(std::fs::File::open(&tar).unwrap());
    let motd = archive
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path().unwrap().to_str() == Some("etc/motd"));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut motd.expect("etc/motd in the export"), &mut text).unwrap();
    assert_eq!(text, "changed\n");
    // Still stopped, and nothing of the brief VMs is left.
    let inspect: serde_json::Value = serde_json::from_str(&run(&cli, &["inspect", "c"])).unwrap();
    assert_eq!(inspect[0]["status"], "stopped");
    assert_eq!(cli.lingering(), Vec::<String>::new());
}

#[test]
fn bad_mount_specs_fail_before_anything_is_made() {
    let registry = Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let host = tempfile::tempdir().unwrap();
    let dir = host.path().display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["-v".into(), "rel/dir:/x".into()],
            "neither a volume name",
        ),
        (vec!["-v".into(), "/no/such/dir:/x".into()], "/no/such/dir"),
        (
            vec!["-v".into(), format!("{dir}:relative")],
            "must be an absolute path",
        ),
        (
            vec![
                "-v".into(),
                format!("{dir}:/x"),
                "--tmpfs".into(),
                "/x".into(),
            ],
            "two mounts on /x",
        ),
        (
            vec!["--mount".into(), "type=bind,target=/x".into()],
            "needs a source",
        ),
        (
            vec!["--mount".into(), "type=disk,target=/x".into()],
            "unknown type",
        ),
        (vec!["--tmpfs".into(), "/t:size=huge".into()], "tmpfs size"),
        (vec!["-v".into(), format!("{dir}:/x:rx")], "unknown option"),
    ];
    for (flags, expected) in cases {
        for command in ["create", "run"] {
            let mut args: Vec<&str> = vec![command, "--name", "never"];
            args.extend(flags.iter().map(String::as_str));
            args.extend([image.as_str(), "true"]);
            let output = cli.run(&args);
            let stderr = text(&output).1;
            assert_eq!(output.status.code(), Some(125), "{args:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
            assert!(stderr.contains(expected), "{args:?}: {stderr}");
        }
    }
    assert_eq!(run(&cli, &["ls", "-a", "-q"]), "");
    assert_eq!(volume_names(&cli), Vec::<String>::new());
}

#[test]
fn volume_commands_create_list_inspect_remove_and_prune() {
    let cli = Cli::new();
    assert_eq!(
        run(&cli, &["volume", "create", "--label", "team=db", "data"]),
        "data\n"
    );
    assert_eq!(run(&cli, &["volume", "create", "data"]), "data\n");
    let random = run(&cli, &["volume", "create"]);
    assert_eq!(random.trim().len(), 64);
    let inspect: serde_json::Value =
        serde_json::from_str(&run(&cli, &["volume", "inspect", "data"])).unwrap();
    assert_eq!(inspect[0]["labels"]["team"], "db");
    assert_eq!(inspect[0]["anonymous"], false);
    let listed = run(&cli, &["volume", "ls"]);
    assert!(listed.starts_with("NAME"), "{listed}");
    assert!(listed.contains("data"), "{listed}");

    let refused = cli.run(&["volume", "create", "--opt", "colour=red", "odd"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused)
            .1
            .contains("unknown volume option \"colour\"")
    );
    let refused = cli.run(&["volume", "create", "--opt", "size=1M", "tiny"]);
    assert!(text(&refused).1.contains("invalid volume size \"1M\""));
    let refused = cli.run(&["volume", "create", "no/slash"]);
    assert!(text(&refused).1.contains("invalid volume name"));
    let missing = cli.run(&["volume", "rm", "data", "nosuch"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        text(&missing),
        ("data\n".into(), "Error: no such volume: nosuch\n".into())
    );

    // A broken record is named, and does not hide or block the others.
    run(&cli, &["volume", "create", "good"]);
    run(&cli, &["volume", "create", "bad"]);
    let record = cli.app_root.path().join("volumes/bad/volume.json");
    std::fs::write(&record, "{\"name\": ").unwrap();
    let listed = cli.run(&["volume", "ls", "-q"]);
    let (stdout, stderr) = text(&listed);
    // Whole lines: the random volume's hex name may contain "bad".
    let names: Vec<&str> = stdout.lines().collect();
    assert!(
        names.contains(&"good") && !names.contains(&"bad"),
        "{stdout}"
    );
    assert!(stderr.contains("corrupt volume record"), "{stderr}");
    assert_eq!(run(&cli, &["volume", "rm", "bad"]), "bad\n");

    // system df counts them.
    let good = cli.app_root.path().join("volumes/good/_data/file");
    std::fs::write(&good, vec![7u8; 64 << 10]).unwrap();
    let df: serde_json::Value =
        serde_json::from_str(&run(&cli, &["system", "df", "--format", "json"])).unwrap();
    assert_eq!(df["volumes"]["volumes"], 2, "{df}");
    assert_eq!(df["volumes"]["active"], 0, "{df}");
    assert!(df["volumes"]["bytes"].as_u64().unwrap() >= 64 << 10, "{df}");
    assert_eq!(df["volumes"]["reclaimable_bytes"], df["volumes"]["bytes"]);
    let df = run(&cli, &["system", "df"]);
    let volumes: Vec<&str> = df.lines().nth(3).unwrap().split_whitespace().collect();
    assert_eq!(volumes[..3], ["Volumes", "2", "0"], "{df}");

    // prune: unused anonymous volumes; --all: named ones too.
    assert_eq!(run(&cli, &["volume", "prune"]), "");
    assert_eq!(
        run(&cli, &["volume", "prune", "--all"]),
        format!("{random}good\n")
    );
    assert_eq!(volume_names(&cli), Vec::<String>::new());
}
