//! `container build` end to end: base images from a real registry on
//! loopback, each RUN in a real VM, the result run, pushed and pulled back.
//! VMs are few: every RUN costs one, so the Dockerfiles keep RUNs scarce.

mod common;

use std::path::Path;

use common::{Cli, Registry, Tmux, text};

fn write(dir: &Path, path: &str, contents: &str) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// A gzip tar holding `inside/file.txt` (owned by 7:8, which ADD keeps),
/// for ADD to extract.
fn archive() -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_ustar();
    header.set_size(9);
    header.set_mode(0o644);
    header.set_uid(7);
    header.set_gid(8);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "inside/file.txt", &b"from tar\n"[..])
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

fn dockerfile(base: &str) -> String {
    format!(
        r#"# syntax=docker/dockerfile:1
ARG BASE={base}
FROM ${{BASE}} AS builder
ARG GREETING=hello
RUN <<EOF
#!/bin/sh -e
mkdir -p /out
echo "$GREETING from builder" > /out/g
case $- in *e*) echo "run by sh -e" >> /out/g;; esac
nproc >> /out/g
EOF

FROM builder AS unused
RUN exit 3

FROM $BASE
LABEL org.example.name="demo app" version=1
ENV APP=/app \
    MODE=test
WORKDIR $APP
COPY app/ ./
COPY --from=builder /out/ /from-builder/
COPY --chown=app:staff --chmod=640 app/hello.txt /owned.txt
ADD files.tar.gz /extracted/
COPY <<EOF /inline.txt
mode is ${{MODE}}
EOF
COPY ignored/ /ignored/
RUN rm /bin/true && echo "$MODE in $(pwd)" > ran.txt && echo step output
EXPOSE 8080 9090/udp
VOLUME /data
STOPSIGNAL SIGTERM
SHELL ["/bin/sh", "-c"]
HEALTHCHECK --interval=30s --retries=3 CMD true
ONBUILD COPY app/hello.txt /onbuild.txt
MAINTAINER someone@example.com
USER app
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /app/hello.txt /from-builder/g /inline.txt /app/ran.txt /extracted/inside/file.txt; ls /ignored; test -e /bin/true || echo true-gone; id -u; stat -c '%u:%g %a' /owned.txt /extracted/inside/file.txt"]
"#
    )
}

fn context(base: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "Dockerfile", &dockerfile(base));
    write(root, "app/hello.txt", "hello v1\n");
    write(root, "app/sub/x.txt", "x\n");
    write(root, "secret.key", "do not copy\n");
    write(root, "ignored/drop.txt", "dropped\n");
    write(root, "ignored/keep.txt", "kept\n");
    write(root, ".dockerignore", "*.key\nignored\n!ignored/keep.txt\n");
    std::fs::write(root.join("files.tar.gz"), archive()).unwrap();
    dir
}

fn build(cli: &Cli, args: &[&str]) -> (i32, String, String) {
    let output = cli.run(&[&["build"], args].concat());
    let (stdout, stderr) = text(&output);
    (output.status.code().unwrap_or(-1), stdout, stderr)
}

/// Finished snapshots under the app root.
fn snapshots(cli: &Cli) -> usize {
    std::fs::read_dir(cli.app_root.path().join("snapshots"))
        .unwrap()
        .filter(|e| {
            let path = e.as_ref().unwrap().path();
            path.extension().is_some_and(|x| x == "ext4")
        })
        .count()
}

fn inspect(cli: &Cli, name: &str) -> serde_json::Value {
    let output = cli.run(&["image", "inspect", name]);
    assert!(output.status.success(), "{}", text(&output).1);
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    value[0].clone()
}

#[test]
fn a_dockerfile_with_every_instruction_builds_caches_runs_and_travels() {
    let registry = Registry::start();
    let base = registry.busybox();
    let cli = Cli::new();
    let ctx = context(&base);
    let dir = ctx.path().to_str().unwrap();
    let tag = format!("{}/built:v1", registry.addr());

    // Cold: the two RUNs the target needs run, the unused stage's does not.
    // One CPU for the steps' VMs: the builder's RUN records what it saw.
    let (code, stdout, stderr) = build(
        &cli,
        &[
            "-t",
            &tag,
            "--progress",
            "plain",
            "-c",
            "1",
            "-m",
            "512M",
            dir,
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("#2 [builder 2/2] RUN <<EOF\n"), "{stderr}");
    assert!(stderr.contains("] RUN rm /bin/true"), "{stderr}");
    assert!(
        stderr.contains(" step output\n"),
        "RUN output streams: {stderr}"
    );
    assert!(
        !stderr.contains("exit 3"),
        "the unused stage was skipped: {stderr}"
    );
    assert!(
        stderr.contains(&format!("naming to {tag} done")),
        "{stderr}"
    );
    assert_eq!(stderr.matches("CACHED").count(), 0, "{stderr}");

    let image = inspect(&cli, &tag);
    let config = &image["config"];
    let c = &config["config"];
    assert_eq!(c["Labels"]["org.example.name"], "demo app");
    assert_eq!(c["Labels"]["version"], "1");
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["User"], "app");
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert!(c["Env"].as_array().unwrap().contains(&"MODE=test".into()));
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}, "9090/udp": {}})
    );
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000u64);
    assert_eq!(
        c["OnBuild"],
        serde_json::json!(["COPY app/hello.txt /onbuild.txt"])
    );
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(config["author"], "someone@example.com");
    // One layer from the base, seven from COPY, ADD and RUN; a history entry each.
    let layers = image["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 8, "{image:#}");
    assert!(
        layers[1..]
            .iter()
            .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip")
    );
    let history = config["history"].as_array().unwrap();
    let made: Vec<&str> = history
        .iter()
        .filter(|h| h["empty_layer"] != true)
        .map(|h| h["created_by"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(made[made.len() - 7], "COPY app/ ./", "{made:?}");
    assert!(
        made[made.len() - 1].starts_with("RUN rm /bin/true"),
        "{made:?}"
    );
    // No snapshot of the build's intermediate states is left.
    assert_eq!(snapshots(&cli), 0, "the steps' parents' snapshots are gone");

    // The image runs as built.
    let output = cli.run(&["run", "--rm", &tag]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stdout,
        "hello v1\nhello from builder\nrun by sh -e\n1\nmode is test\ntest in /app\nfrom tar\nkeep.txt\ntrue-gone\n1000\n1000:50 640\n7:8 644\n"
    );

    // Fully cached: nothing runs, the same image comes out.
    let digest = image["digest"].as_str().unwrap().to_string();
    let (code, _, stderr) = build(&cli, &["-t", &tag, dir]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.matches("CACHED").count(), 8, "{stderr}");
    let ran = |log: &str| {
        log.lines()
            .any(|l| l.ends_with(" step output") && !l.contains("RUN"))
    };
    assert!(!ran(&stderr), "{stderr}");
    assert_eq!(inspect(&cli, &tag)["digest"], digest.as_str());

    // A changed file: its COPY and the steps after it run again, the
    // builder stage stays cached.
    write(ctx.path(), "app/hello.txt", "hello v2\n");
    let (code, stdout, stderr) = build(&cli, &["-q", "-t", &tag, dir]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("sha256:"), "-q prints the ID: {stdout}");
    assert_ne!(stdout.trim(), digest);
    let (code, _, stderr) = build(&cli, &["-t", &tag, dir]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.matches("CACHED").count(), 8, "{stderr}");

    // --no-cache runs the builder's RUN again, and --target stops there.
    let (code, _, stderr) = build(
        &cli,
        &["--no-cache", "--target", "builder", "-t", "stage:only", dir],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.matches("CACHED").count(), 0, "{stderr}");
    assert!(!stderr.contains("COPY"), "{stderr}");

    // Pushed to the registry and pulled into a fresh app root: the same image.
    let push = cli.run(&["image", "push", &tag]);
    assert!(push.status.success(), "{}", text(&push).1);
    let other = Cli::new();
    let pull = other.run(&["image", "pull", &tag]);
    assert!(pull.status.success(), "{}", text(&pull).1);
    let built = inspect(&cli, &tag);
    let pulled = inspect(&other, &tag);
    assert_eq!(pulled["digest"], built["digest"]);
    assert_eq!(pulled["config"], built["config"]);

    // A child image runs the ONBUILD trigger against its own context
    // (a COPY: no VM) and does not pass it on.
    let child = tempfile::tempdir().unwrap();
    write(
        child.path(),
        "Dockerfile",
        &format!("FROM {tag}\nLABEL child=yes\n"),
    );
    write(child.path(), "app/hello.txt", "child's\n");
    let (code, _, stderr) = build(&cli, &["-t", "child:1", child.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("ONBUILD COPY app/hello.txt /onbuild.txt"),
        "{stderr}"
    );
    let image = inspect(&cli, "child:1");
    assert_eq!(image["layers"].as_array().unwrap().len(), 9);
    assert!(image["config"]["config"]["OnBuild"].is_null(), "{image:#}");
    assert_eq!(cli.lingering(), Vec::<String>::new());
}

#[test]
fn bad_input_names_its_line_and_leaves_nothing() {
    let registry = Registry::start();
    let base = registry.busybox();
    let cli = Cli::new();
    let ctx = tempfile::tempdir().unwrap();
    let dir = ctx.path().to_str().unwrap();
    write(ctx.path(), "present.txt", "x\n");
    let cases = [
        (
            format!("FROM {base}\nFORM x\n"),
            "Dockerfile: line 2: unknown instruction 'FORM'",
        ),
        (
            format!("FROM {base}\n\nCOPY missing.txt /\n"),
            "Dockerfile: line 3: missing.txt: no such file or directory in the build context",
        ),
        (
            format!("FROM {base}\nCOPY ../outside /\n"),
            "Dockerfile: line 2: ../outside is outside the build context",
        ),
        (
            format!("FROM {}/nosuch:latest\n", registry.addr()),
            "Dockerfile: line 1: image",
        ),
        (
            format!("FROM {base}\nADD https://example.com/x.tar /\n"),
            "Dockerfile: line 2: ADD https://example.com/x.tar: downloading needs a network, and this build has none",
        ),
        (
            format!("FROM {base}\nCOPY present.txt /\nRUN echo first >&2; echo boom >&2; exit 4\n"),
            "Dockerfile: line 3: RUN echo first >&2; echo boom >&2; exit 4 failed with exit code 4: first | boom",
        ),
    ];
    for (text_of_file, expected) in cases {
        write(ctx.path(), "Dockerfile", &text_of_file);
        let (code, _, stderr) = build(&cli, &["-t", "never:tagged", dir]);
        assert_eq!(code, 1, "{text_of_file}: {stderr}");
        let last = stderr.lines().last().unwrap_or("");
        assert!(
            last.starts_with(&format!("Error: {expected}")),
            "{text_of_file}\nwanted: {expected}\ngot: {last}"
        );
    }
    let (code, _, stderr) = build(&cli, &["--target", "nope", "-t", "never:tagged", dir]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no build stage named \"nope\""), "{stderr}");
    // A bad tag or network is refused before any work.
    let (code, _, stderr) = build(&cli, &["-t", "Bad:Tag!", dir]);
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with("Error: invalid image reference \"Bad:Tag!\""),
        "{stderr}"
    );
    let (code, _, stderr) = build(&cli, &["--network", "nosuch", dir]);
    assert_eq!(code, 1);
    assert!(stderr.contains("nosuch"), "{stderr}");
    assert!(!stderr.contains("#1"), "nothing ran: {stderr}");

    // Nothing was named, and no VM, disk or temporary file is left.
    let ls = cli.run(&["image", "ls"]);
    assert!(!text(&ls).0.contains("never"), "{}", text(&ls).0);
    assert_eq!(cli.lingering(), Vec::<String>::new());
    let leftovers: Vec<String> = std::fs::read_dir(cli.app_root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("build-") && n != "build-cache" || n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let run = cli.app_root.path().join("run");
    let runs = std::fs::read_dir(&run).map_or(0, |d| d.count());
    assert_eq!(
        runs,
        0,
        "a step's work directory was left in {}",
        run.display()
    );
    assert_eq!(
        snapshots(&cli),
        0,
        "the failed step's parent snapshot is gone"
    );
}

/// Runs `container build ARGS` with `input` on its stdin.
fn build_with_stdin(cli: &Cli, args: &[&str], input: &[u8]) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = cli
        .command()
        .arg("build")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&output);
    (output.status.code().unwrap_or(-1), stdout, stderr)
}

#[test]
fn the_context_or_the_dockerfile_can_come_from_stdin() {
    let registry = Registry::start();
    let base = registry.busybox();
    let cli = Cli::new();
    // A context tar with its Dockerfile; COPY only, so no VM boots.
    let mut tar = tar::Builder::new(Vec::new());
    for (path, contents) in [
        (
            "Dockerfile",
            format!("FROM {base}\nCOPY note.txt /note.txt\n"),
        ),
        ("note.txt", "from a tar\n".to_string()),
    ] {
        let mut header = tar::Header::new_ustar();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, contents.as_bytes())
            .unwrap();
    }
    let context = tar.into_inner().unwrap();
    let (code, stdout, stderr) = build_with_stdin(&cli, &["-q", "-t", "from:tar", "-"], &context);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("sha256:"), "{stdout}");
    assert_eq!(
        inspect(&cli, "from:tar")["layers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "other.txt", "x\n");
    let dockerfile = format!("FROM {base}\nCOPY other.txt /\nLABEL from=stdin\n");
    let path = dir.path().to_str().unwrap();
    let (code, _, stderr) = build_with_stdin(
        &cli,
        &["-t", "from:stdin", "-f", "-", path],
        dockerfile.as_bytes(),
    );
    assert_eq!(code, 0, "{stderr}");
    let image = inspect(&cli, "from:stdin");
    assert_eq!(image["config"]["config"]["Labels"]["from"], "stdin");

    // The build cache keeps its layers through image rm and prune: the
    // same build is all cached afterwards. builder prune forgets it.
    let rm = cli.run(&["image", "rm", "from:tar", "from:stdin"]);
    assert!(rm.status.success(), "{}", text(&rm).1);
    let prune = cli.run(&["image", "prune"]);
    assert!(prune.status.success(), "{}", text(&prune).1);
    let (code, _, stderr) = build_with_stdin(&cli, &["-t", "from:tar", "-"], &context);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("#2 CACHED"), "{stderr}");
    let prune = cli.run(&["builder", "prune"]);
    assert_eq!(
        text(&prune).0.lines().next(),
        Some("Deleted 2 build cache entries"),
        "{}",
        text(&prune).1
    );
    let (code, _, stderr) = build_with_stdin(&cli, &["-t", "from:tar", "-"], &context);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("CACHED"), "{stderr}");

    let (code, _, stderr) = build_with_stdin(&cli, &["-f", "-", "-"], b"");
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot both come from stdin"), "{stderr}");
    // The unpacked context is gone.
    let left: Vec<String> = std::fs::read_dir(cli.app_root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("build-context"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Serves one HTTP response with `body` on 127.0.0.1; returns the port.
fn serve_once(body: &'static str) -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request);
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Tue, 15 Nov 1994 08:12:31 GMT\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    });
    port
}

#[test]
fn add_downloads_a_url_only_where_the_build_has_a_network() {
    let registry = Registry::start();
    let base = registry.busybox();
    let cli = Cli::new();
    let port = serve_once("downloaded\n");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "Dockerfile",
        &format!("FROM {base}\nADD http://127.0.0.1:{port}/files/data.txt?x=1 /data/\n"),
    );
    let path = dir.path().to_str().unwrap();
    // This app root's builds have no network (network.default is none).
    let (code, _, stderr) = build(&cli, &["-t", "added:1", path]);
    assert_eq!(code, 1);
    assert!(stderr.contains("this build has none"), "{stderr}");
    let (code, _, stderr) = build(&cli, &["--network", "default", "-t", "added:1", path]);
    assert_eq!(code, 0, "{stderr}");
    // The layer holds the file as Docker writes it: 0600, dated by Last-Modified.
    let image = inspect(&cli, "added:1");
    let layer = image["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let blob =
        std::fs::File::open(cli.app_root.path().join("content/blobs/sha256").join(layer)).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    let found: Vec<(String, u32, u64)> = tar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            (path, h.mode().unwrap(), h.mtime().unwrap())
        })
        .collect();
    assert_eq!(
        found.last().unwrap(),
        &("data/data.txt".to_string(), 0o600, 784_887_151)
    );
}

/// A stage's RUNs share one VM: each runs on an overlay of the steps before
/// it, and a COPY between them is stacked in, deletions included. Their
/// cache mounts (shared by id, kept between builds until `builder prune`)
/// and tmpfs mounts stay out of the image.
#[test]
fn one_vm_runs_a_stages_steps_with_copies_and_mounts() {
    let registry = Registry::start();
    let base = registry.busybox();
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "Dockerfile",
        &format!(
            "FROM {base}
RUN mkdir /data && echo one > /data/one && rm /bin/true
COPY --chown=1234:5678 --chmod=600 two.txt /data/
RUN rm /data/one && stat -c '%u:%g %a' /data/two.txt > /data/seen && cat /data/two.txt >> /data/seen && (test -e /bin/true || echo true-gone >> /data/seen)
COPY three/ /data/three/
RUN rm /data/three/gone.txt && ls -a /data /data/three > /data/list
RUN --mount=type=cache,target=/var/cache/app,uid=1000,mode=0700 echo cached >> /var/cache/app/f && stat -c '%u %a' /var/cache/app >> /data/seen && echo \"cache lines: $(wc -l < /var/cache/app/f)\"
RUN --mount=type=cache,id=/var/cache/app,target=rel/cache --mount=type=tmpfs,target=/scratch cat rel/cache/f >> /data/seen && grep -c ' /scratch tmpfs ' /proc/mounts >> /data/seen && echo lost > /scratch/x
CMD [\"sh\", \"-c\", \"cat /data/seen /data/list; for d in /var/cache/app /rel/cache /scratch; do echo $d $(ls -A $d | wc -l); done\"]
"
        ),
    );
    write(root, "two.txt", "two\n");
    write(root, "three/kept.txt", "kept\n");
    write(root, "three/gone.txt", "gone\n");
    let output = cli.run(&[
        "--debug",
        "build",
        "--progress",
        "plain",
        "-t",
        "stacked",
        root.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr.matches("booting a builder VM").count(),
        1,
        "five RUNs, one VM: {stderr}"
    );
    assert!(stderr.contains(" cache lines: 1\n"), "{stderr}");
    assert!(cli.lingering().is_empty(), "the builder VM is gone");

    let output = cli.run(&["run", "--rm", "stacked"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stdout,
        "1234:5678 600\ntwo\ntrue-gone\n1000 700\ncached\n1\n/data:\n.\n..\nlist\nseen\nthree\ntwo.txt\n\n/data/three:\n.\n..\nkept.txt\n/var/cache/app 0\n/rel/cache 0\n/scratch 0\n"
    );

    // The cache outlives the build: a build that runs the step again finds
    // what the first one wrote there, until `builder prune` removes it.
    let rebuild = || {
        let output = cli.run(&[
            "build",
            "--progress",
            "plain",
            "--no-cache",
            "-t",
            "stacked",
            root.to_str().unwrap(),
        ]);
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        stderr
    };
    let stderr = rebuild();
    assert!(stderr.contains(" cache lines: 2\n"), "{stderr}");
    // system df counts the steps and the cache disk, all free to prune.
    let df = |cli: &Cli| -> serde_json::Value {
        let output = cli.run(&["system", "df", "--format", "json"]);
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let usage = df(&cli);
    assert!(usage["root_blob_bytes"].as_u64().unwrap() > 0, "{usage}");
    let cache = &usage["build_cache"];
    assert!(cache["entries"].as_u64().unwrap() >= 5, "{cache}");
    assert_eq!(cache["mounts"]["mounts"], 1, "{cache}");
    assert_eq!(cache["mounts"]["active"], 0, "{cache}");
    assert!(cache["mounts"]["bytes"].as_u64().unwrap() > 0, "{cache}");
    assert_eq!(
        cache["mounts"]["reclaimable_bytes"],
        cache["mounts"]["bytes"]
    );
    let output = cli.run(&["builder", "prune"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("Deleted 1 cache mounts\n"), "{stdout}");
    let usage = df(&cli);
    assert_eq!(usage["root_blob_bytes"], 0, "{usage}");
    let cache = &usage["build_cache"];
    assert_eq!(cache["entries"], 0, "{cache}");
    assert_eq!(cache["mounts"]["mounts"], 0, "{cache}");
    let stderr = rebuild();
    assert!(stderr.contains(" cache lines: 1\n"), "{stderr}");
}

/// On a terminal (`--progress auto`), BuildKit's view: the steps redrawn in
/// place, the last lines of a running step's output under it, a failed
/// step marked.
#[test]
fn on_a_terminal_the_steps_redraw_in_place() {
    let registry = Registry::start();
    let base = registry.busybox();
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "note.txt", "note\n");
    write(
        dir.path(),
        "Dockerfile",
        &format!("FROM {base}\nCOPY note.txt /\n"),
    );
    write(
        dir.path(),
        "Failing",
        &format!("FROM {base}\nRUN for i in 1 2 3 4 5 6 7 8; do echo line $i; done; exit 4\n"),
    );
    let bin = env!("CARGO_BIN_EXE_container");
    let command = format!(
        "export CONTAINER_APP_ROOT={root}; cd {dir}; {bin} build -t ok .; {bin} build -f Failing .; echo rc=$?; sleep 60",
        root = cli.app_root.path().display(),
        dir = dir.path().display(),
    );
    let tmux = Tmux::start("build", 100, 30, &command);
    let screen = tmux.wait_for("rc=", std::time::Duration::from_secs(60));
    let lines: Vec<&str> = screen.lines().map(str::trim_end).collect();
    let at = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?}:\n{screen}"))
    };
    // Each build's view once, however often it was redrawn.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("[+] Building"))
            .count(),
        2,
        "{screen}"
    );
    assert!(
        lines[at("[+] Building")].ends_with("(2/2) FINISHED"),
        "{screen}"
    );
    assert!(
        lines[at(" => [2/2] COPY note.txt /")].ends_with('s'),
        "{screen}"
    );
    at(" => exporting to image");
    at(" => => naming to docker.io/library/ok:latest");
    // The failed step keeps the last six lines of its output.
    at(" => ERROR [2/2] RUN for i in");
    let tail: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(" => => # "))
        .collect();
    assert_eq!(
        tail,
        ["line 3", "line 4", "line 5", "line 6", "line 7", "line 8"],
        "{screen}"
    );
    at("Error: Failing: line 2: RUN for i in");
    at("rc=1");
    assert!(
        !lines.iter().any(|l| l.starts_with("#1 ")),
        "no plain lines: {screen}"
    );
}
