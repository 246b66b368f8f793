//! The command line as shells, `man` and scripts meet it: completions, man
//! pages, `system status`, and the formats and filters of the list commands.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{Cli, text};

/// The subcommands `container ARGS... --help` lists, by their full page
/// names (`container-image-pull`), walked down through every group.
fn commands_from_help(cli: &Cli, args: &mut Vec<String>, found: &mut BTreeSet<String>) {
    let mut with_help = args.clone();
    with_help.push("--help".into());
    let refs: Vec<&str> = with_help.iter().map(String::as_str).collect();
    let (help, _) = text(&cli.run(&refs));
    let listed: Vec<String> = help
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next().map(String::from))
        .filter(|name| name != "help")
        .collect();
    for name in listed {
        args.push(name);
        found.insert(format!("container-{}", args.join("-")));
        commands_from_help(cli, args, found);
        args.pop();
    }
}

/// Every command `--help` lists has a man page that `man` renders with its
/// options, and an alias's page shows its command's.
#[test]
fn a_man_page_per_command() {
    let cli = Cli::new();
    let mut expected = BTreeSet::from(["container".to_string()]);
    commands_from_help(&cli, &mut Vec::new(), &mut expected);
    assert!(expected.len() > 40, "{expected:?}");
    assert!(expected.contains("container-image-pull"), "{expected:?}");

    let dir = tempfile::tempdir().unwrap();
    let man1 = dir.path().join("man1");
    let out = cli.run(&["system", "man-pages", man1.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    let pages: BTreeSet<String> = std::fs::read_dir(&man1)
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".1").unwrap().to_string()
        })
        .collect();
    let missing: Vec<_> = expected.difference(&pages).collect();
    assert!(missing.is_empty(), "no page for {missing:?}");
    assert!(!pages.iter().any(|p| p.contains("supervise")), "{pages:?}");

    let man = |page: &str| {
        let out = Command::new("man")
            .args(["-P", "cat", page])
            .env("MANPATH", dir.path())
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        assert!(out.status.success(), "man {page}: {}", text(&out).1);
        text(&out).0
    };
    let run = man("container-run");
    assert!(run.contains("--detach"), "{run}");
    assert!(run.contains("--publish"), "{run}");
    // `rm` and `ls` are aliases: their pages are their commands'.
    let rm = man("container-rm");
    assert!(rm.contains("container-delete - Remove containers"), "{rm}");
    assert!(man("container-ls").contains("container-list"));
}

/// The completion scripts complete commands, subcommands and options in
/// the shells themselves, and never offer the hidden `__supervise`.
#[test]
fn completions_complete_in_each_shell() {
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    let script = |shell: &str| {
        let out = cli.run(&["completion", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out).1);
        let path = dir.path().join(shell);
        std::fs::write(&path, &out.stdout).unwrap();
        path
    };
    let shell = |program: &str, code: &str| {
        let out = Command::new(program).args(["-c", code]).output().unwrap();
        assert!(out.status.success(), "{program}: {}", text(&out).1);
        text(&out).0
    };

    // bash: what the completion function offers for a partial line.
    let bash = script("bash");
    let complete = |words: &str| {
        shell(
            "bash",
            &format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                 _container container \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
                 echo \"${{COMPREPLY[@]}}\"",
                bash.display()
            ),
        )
    };
    assert_eq!(complete("container image pu").trim(), "pull push");
    let top = complete("container ''");
    assert!(top.contains("run") && top.contains("volume"), "{top}");
    assert!(!top.contains("supervise"), "{top}");
    assert!(complete("container run --deta").contains("--detach"));

    // fish: its own completer, asked as the shell asks it.
    let fish = script("fish");
    let offered = shell(
        "fish",
        &format!(
            "source {}; complete -C 'container image pu'",
            fish.display()
        ),
    );
    let offered: Vec<&str> = offered
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(offered, ["pull", "push"]);

    // zsh: the script parses, and compinit finds it on the fpath and
    // registers `_container` as the completer of `container`.
    let zsh = script("zsh");
    let out = Command::new("zsh").arg("-n").arg(&zsh).output().unwrap();
    assert!(out.status.success(), "zsh -n: {}", text(&out).1);
    let functions = dir.path().join("functions");
    std::fs::create_dir(&functions).unwrap();
    std::fs::copy(&zsh, functions.join("_container")).unwrap();
    let registered = shell(
        "zsh",
        &format!(
            "fpath=({} $fpath); autoload -U compinit; compinit -u -d {}/zcompdump; \
             print $_comps[container]",
            functions.display(),
            dir.path().display()
        ),
    );
    assert_eq!(registered.trim(), "_container");
}

/// `system status` names the backend, the accelerator and why, the kernel,
/// the programs' versions, and counts what the app root holds; a damaged
/// container record is counted and does not stop the rest from showing.
#[test]
fn system_status_names_what_runs_containers() {
    let registry = common::Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let status = |cli: &Cli| {
        let out = cli
            .command()
            .args(["system", "status", "--format", "json"])
            .env("CONTAINER_ACCEL", "tcg")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out).1);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let empty = status(&cli);
    assert_eq!(empty["images"], 0, "{empty}");
    assert_eq!(empty["containers"]["total"], 0, "{empty}");
    assert_eq!(empty["volumes"], 0, "{empty}");

    for args in [
        &["image", "pull", &image][..],
        &["create", "--name", "one", &image, "true"],
        &["create", "--name", "two", &image, "true"],
        &["volume", "create", "data"],
        &["network", "create", "backend"],
    ] {
        let out = cli.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out).1);
    }
    std::fs::write(
        cli.app_root
            .path()
            .join("containers")
            .join(container_id(&cli, "two"))
            .join("config.json"),
        "{ damaged",
    )
    .unwrap();
    let status = status(&cli);
    assert_eq!(status["backend"], "QEMU", "{status}");
    assert_eq!(status["accelerator"]["name"], "TCG", "{status}");
    assert_eq!(
        status["accelerator"]["reason"], "CONTAINER_ACCEL=tcg",
        "{status}"
    );
    let kernel = status["kernel"]["path"].as_str().unwrap();
    assert!(std::path::Path::new(kernel).is_file(), "{status}");
    assert!(!status["kernel"]["release"].as_str().unwrap().is_empty());
    assert_eq!(status["app_root"], cli.app_root.path().to_str().unwrap());
    let qemu = status["programs"]["qemu-system-x86_64"].as_str().unwrap();
    assert!(qemu.starts_with("QEMU emulator version"), "{status}");
    assert!(
        status["programs"]["virtiofsd"]
            .as_str()
            .unwrap()
            .starts_with("virtiofsd ")
    );
    assert_eq!(status["images"], 1, "{status}");
    assert_eq!(status["containers"]["total"], 2, "{status}");
    assert_eq!(status["containers"]["running"], 0, "{status}");
    assert_eq!(status["volumes"], 1, "{status}");
    let (networks, _) = text(&cli.run(&["network", "ls", "--format", "json"]));
    let networks: serde_json::Value = serde_json::from_str(&networks).unwrap();
    assert_eq!(
        status["networks"],
        networks.as_array().unwrap().len(),
        "{status}"
    );
    assert!(status["networks"].as_u64().unwrap() >= 1);
    assert!(status["commit"].as_str().unwrap().len() >= 12);

    // Every other list's JSON parses, with the fields README documents;
    // their templates see those fields.
    let json = |args: &[&str]| -> serde_json::Value {
        let out = cli.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out).1);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let has = |value: &serde_json::Value, fields: &str| {
        for field in fields.split(' ') {
            assert!(value.get(field).is_some(), "no {field} in {value}");
        }
    };
    let volumes = json(&["volume", "ls", "--format", "json"]);
    has(
        &volumes[0],
        "name created labels mountpoint anonymous size containers",
    );
    let networks = json(&["network", "ls", "--format", "json"]);
    has(
        &networks[0],
        "name subnet gateway internal created containers",
    );
    assert_eq!(
        json(&["registry", "list", "--format", "json"]),
        serde_json::json!([])
    );
    let df = json(&["system", "df", "--format", "json"]);
    has(
        &df,
        "images active content_bytes snapshot_bytes reclaimable_bytes volumes",
    );
    has(&df["volumes"], "volumes active bytes reclaimable_bytes");
    has(
        &df["containers"],
        "containers active bytes reclaimable_bytes",
    );
    has(&df["build_cache"], "entries mounts");
    has(
        &df["build_cache"]["mounts"],
        "mounts active bytes reclaimable_bytes",
    );
    // "two"'s record is damaged: it is left out, and nothing fails. "one"
    // is stopped: its disk is what `prune` frees.
    assert_eq!(df["containers"]["containers"], 1, "{df}");
    assert_eq!(df["containers"]["active"], 0, "{df}");
    assert!(df["containers"]["bytes"].as_u64().unwrap() > 0, "{df}");
    assert_eq!(
        df["containers"]["reclaimable_bytes"],
        df["containers"]["bytes"]
    );
    has(
        &status,
        "version commit backend accelerator kernel vminitd app_root programs images containers volumes networks",
    );
    let (names, _) = text(&cli.run(&["volume", "ls", "--format", "{{.name}}:{{len .containers}}"]));
    assert_eq!(names, "data:0\n");

    // The table says the same, a line per field.
    let (table, _) = text(&cli.run(&["system", "status"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("BACKEND") && l.ends_with("QEMU")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("CONTAINERS") && l.ends_with("2 (0 running)")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("KERNEL") && l.contains(kernel)),
        "{table}"
    );
}

/// The full ID of the container named `name`.
fn container_id(cli: &Cli, name: &str) -> String {
    let out = cli.run(&["inspect", name]);
    assert!(out.status.success(), "{}", text(&out).1);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json[0]["id"].as_str().unwrap().to_string()
}

/// `ls` and `image ls` filter and format as `docker ps` and `docker images`
/// do, on real containers (created, running, exited) and images; `--format
/// json` parses with the fields README documents; a template naming an
/// unknown field or an unknown filter fails in one line.
#[test]
fn list_templates_and_filters() {
    let registry = common::Registry::start();
    let image = registry.busybox();
    let cli = Cli::new();
    let ok = |args: &[&str]| {
        let out = cli.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out).1);
        text(&out).0
    };
    ok(&["create", "--name", "idle", &image, "true"]);
    let quits = cli.run(&[
        "run",
        "--name",
        "quits",
        "-l",
        "tier=batch",
        &image,
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(quits.status.code(), Some(3), "{}", text(&quits).1);
    ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-l",
        "tier=front",
        "-l",
        "team=a",
        &image,
        "sleep",
        "600",
    ]);
    let names = |args: &[&str]| {
        let mut all = vec!["ls", "--format", "{{.Names}}"];
        all.extend_from_slice(args);
        ok(&all).lines().map(String::from).collect::<Vec<_>>()
    };

    // Newest first; without -a only the running one.
    assert_eq!(names(&["-a"]), ["web", "quits", "idle"]);
    assert_eq!(names(&[]), ["web"]);
    // A status filter shows stopped ones without -a; one key twice is "or".
    assert_eq!(names(&["--filter", "status=exited"]), ["quits"]);
    assert_eq!(
        names(&["-f", "status=created", "-f", "status=running"]),
        ["web", "idle"]
    );
    assert_eq!(names(&["-a", "--filter", "exited=3"]), ["quits"]);
    assert_eq!(names(&["-a", "--filter", "exited=0"]), Vec::<String>::new());
    assert_eq!(names(&["-a", "--filter", "label=tier"]), ["web", "quits"]);
    // Different keys are "and".
    assert_eq!(
        names(&[
            "-a",
            "--filter",
            "label=tier=front",
            "--filter",
            "status=running"
        ]),
        ["web"]
    );
    assert_eq!(
        names(&[
            "-a",
            "--filter",
            "label=tier=front",
            "--filter",
            "status=exited"
        ]),
        Vec::<String>::new()
    );
    assert_eq!(names(&["-a", "--filter", "name=ui"]), ["quits"]);
    let untagged = image.rsplit_once(':').unwrap().0;
    assert_eq!(
        names(&["-a", "--filter", &format!("ancestor={untagged}")]),
        ["web", "quits", "idle"]
    );
    assert_eq!(
        names(&["-a", "--filter", "ancestor=other"]),
        Vec::<String>::new()
    );
    let web_id = container_id(&cli, "web");
    assert_eq!(
        names(&["-a", "--filter", &format!("id={}", &web_id[..8])]),
        ["web"]
    );
    assert_eq!(names(&["-n", "2"]), ["web", "quits"]);
    assert_eq!(names(&["--latest"]), ["web"]);

    // Templates: fields, a label by key, functions, a table with titles.
    let line = ok(&[
        "ls",
        "--format",
        "{{.ID}} {{.Names}} {{.State}} {{.Label \"team\"}} {{.Names | upper}}",
    ]);
    assert_eq!(line, format!("{} web running a WEB\n", &web_id[..12]));
    assert_eq!(
        ok(&["ls", "--no-trunc", "--format", "{{.ID}}"]),
        format!("{web_id}\n")
    );
    assert!(ok(&["ls", "--format", "{{.Status}}"]).starts_with("Up "));
    assert_eq!(
        ok(&[
            "ls",
            "-a",
            "--filter",
            "name=quits",
            "--format",
            "{{.Status}}"
        ])
        .split(')')
        .next()
        .unwrap(),
        "Exited (3"
    );
    let table = ok(&["ls", "--format", "table {{.Names}}\\t{{.Labels}}"]);
    assert_eq!(table, "NAMES     LABELS\nweb       team=a,tier=front\n");
    let sized = ok(&["ls", "-s"]);
    let header = sized.lines().next().unwrap();
    assert!(header.ends_with("SIZE"), "{sized}");
    assert!(
        sized.lines().nth(1).unwrap().contains("(virtual "),
        "{sized}"
    );

    // `inspect -f` runs a template over the JSON.
    assert_eq!(
        ok(&["inspect", "-f", "{{.name}}={{.exit_code}}", "quits", "idle"]),
        "quits=3\nidle=\n"
    );

    // JSON with the documented fields.
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["ls", "-a", "--format", "json"])).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for field in [
        "id",
        "name",
        "image",
        "image_digest",
        "command",
        "created",
        "status",
        "exit_code",
    ] {
        assert!(rows[0].get(field).is_some(), "no {field} in {json}");
    }

    // Bad input: one line, exit 1, nothing on stdout.
    for (args, error) in [
        (
            &["ls", "--format", "{{.Nope}}"][..],
            "Error: --format names no field .Nope; fields: ID, Names,",
        ),
        (
            &["ls", "--filter", "colour=red"],
            "Error: unknown filter \"colour\": filter by status, label,",
        ),
        (
            &["ls", "--filter", "status=sleeping"],
            "Error: bad status filter \"sleeping\"",
        ),
        (
            &["ls", "--format", "{{range .Names}}{{end}}"],
            "error: invalid value",
        ),
        (
            &["image", "ls", "--format", "{{.Names}}"],
            "Error: --format names no field .Names; fields: ID, Repository,",
        ),
    ] {
        let out = cli.run(args);
        let (stdout, stderr) = text(&out);
        assert!(
            !out.status.success() && stdout.is_empty(),
            "{args:?}: {stdout}"
        );
        assert!(stderr.starts_with(error), "{args:?}: {stderr}");
    }

    // Images: a second reference by tag, and one by digest only (no tag).
    let digest = ok(&["image", "inspect", "-f", "{{.digest}}", &image])
        .trim()
        .to_string();
    ok(&["image", "tag", &image, "local/tool:v1"]);
    ok(&[
        "image",
        "pull",
        "--progress",
        "none",
        &format!("{untagged}@{digest}"),
    ]);
    let refs = |args: &[&str]| {
        let mut all = vec!["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"];
        all.extend_from_slice(args);
        let mut found: Vec<String> = ok(&all).lines().map(String::from).collect();
        found.sort();
        found
    };
    assert_eq!(
        refs(&["--filter", "reference=local/*"]),
        ["docker.io/local/tool:v1"]
    );
    assert_eq!(
        refs(&["--filter", "reference=*/tool:v1"]),
        ["docker.io/local/tool:v1"]
    );
    assert_eq!(
        refs(&["--filter", "dangling=true"]),
        [format!("{untagged}:<none>")]
    );
    assert_eq!(refs(&["--filter", "dangling=false"]).len(), 2);
    assert_eq!(
        refs(&["--filter", "reference=nothing*"]),
        Vec::<String>::new()
    );
    let hex = digest.trim_start_matches("sha256:");
    assert_eq!(
        ok(&[
            "image",
            "ls",
            "--filter",
            "reference=local/*",
            "--format",
            "{{.ID}} {{.Digest}} {{.Platform}}"
        ]),
        format!("{} {digest} linux/amd64\n", &hex[..12])
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["image", "ls", "--format", "json"])).unwrap();
    for field in [
        "reference",
        "references",
        "digest",
        "platform",
        "size",
        "layers",
        "config",
    ] {
        assert!(json[0].get(field).is_some(), "no {field} in {json}");
    }
}
