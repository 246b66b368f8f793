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
