//! `container system`: host-wide setup every container shares: settings,
//! disk usage, the guest kernel.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::output::{Format, human_size, print_table};
use crate::image::ImageStore;
use crate::properties::Properties;
use crate::vm::kernel;

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Read and change settings (`registry.domain`: the registry of names without one).
    #[command(subcommand)]
    Property(PropertyCommand),
    /// Show the disk space images use and what pruning would free.
    Df {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Manage the guest kernel.
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// Show what runs containers here: backend, accelerator and why, kernel,
    /// app root, program versions, and how many images, containers, volumes
    /// and networks there are.
    Status {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show the version and the commit it was built from.
    Version {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Write a man page for every command into DIR (container.1, container-run.1, ...).
    ManPages {
        /// Where to write them, e.g. /usr/local/share/man/man1 (created when missing).
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum PropertyCommand {
    #[command(alias = "ls")]
    List,
    Get {
        key: String,
    },
    Set {
        key: String,
        value: String,
    },
    Clear {
        key: String,
    },
}

#[derive(Subcommand)]
pub enum KernelCommand {
    /// Set the kernel new containers boot.
    Set(SetArgs),
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct SetArgs {
    /// A kernel image file (an uncompressed `vmlinux` on Apple silicon).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Download and install the recommended kernel for this platform.
    #[arg(long)]
    recommended: bool,
}

pub async fn run(
    app_root: &Path,
    command: SystemCommand,
) -> Result<i32, Box<dyn std::error::Error>> {
    let properties = Properties::open(app_root);
    match command {
        SystemCommand::Property(PropertyCommand::List) => {
            let rows = properties.list()?.into_iter().map(|(k, v)| [k, v]);
            print_table(std::iter::once(["KEY", "VALUE"].map(String::from)).chain(rows));
        }
        SystemCommand::Property(PropertyCommand::Get { key }) => {
            println!("{}", properties.get(&key)?.unwrap_or_default());
        }
        SystemCommand::Property(PropertyCommand::Set { key, value }) => {
            properties.set(&key, Some(&value))?
        }
        SystemCommand::Property(PropertyCommand::Clear { key }) => properties.set(&key, None)?,
        SystemCommand::Df { format } => {
            let usage =
                ImageStore::open(app_root)?.disk_usage(&super::image::gc_roots(app_root)?)?;
            let containers = crate::runtime::Containers::open(app_root)?.usage()?;
            let volumes = crate::volume::Volumes::open(app_root)?.usage()?;
            let cache = crate::build::cache_usage(app_root);
            if let Format::Json = format {
                let mut json = serde_json::to_value(&usage)?;
                json["containers"] = serde_json::to_value(&containers)?;
                json["volumes"] = serde_json::to_value(&volumes)?;
                json["build_cache"] = serde_json::to_value(&cache)?;
                println!("{}", serde_json::to_string_pretty(&json)?);
                return Ok(0);
            }
            let row = |kind: &str, total: usize, active: usize, size: u64, reclaimable: u64| {
                [
                    kind.to_string(),
                    total.to_string(),
                    active.to_string(),
                    human_size(size),
                    human_size(reclaimable),
                ]
            };
            let header = ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"].map(String::from);
            print_table(
                [
                    header,
                    row(
                        "Images",
                        usage.images,
                        usage.active,
                        usage.content_bytes + usage.partial_bytes + usage.snapshot_bytes,
                        usage.reclaimable_bytes,
                    ),
                    row(
                        "Containers",
                        containers.containers,
                        containers.active,
                        containers.bytes,
                        containers.reclaimable_bytes,
                    ),
                    row(
                        "Volumes",
                        volumes.volumes,
                        volumes.active,
                        volumes.bytes,
                        volumes.reclaimable_bytes,
                    ),
                    // Layers the cache shares with images count in both rows.
                    row(
                        "Build Cache",
                        cache.entries + cache.mounts.mounts,
                        cache.mounts.active,
                        usage.root_blob_bytes + cache.mounts.bytes,
                        usage.root_blob_only_bytes + cache.mounts.reclaimable_bytes,
                    ),
                ]
                .into_iter(),
            );
        }
        SystemCommand::Version { format } => {
            let (version, commit) = (env!("CARGO_PKG_VERSION"), env!("CONTAINER_COMMIT"));
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({ "version": version, "commit": commit })
                ),
                Format::Table => println!("container {}", super::VERSION),
            }
        }
        SystemCommand::Status { format } => {
            let status = status(app_root);
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&status)?),
                Format::Table => print_status(&status),
            }
        }
        SystemCommand::ManPages { dir } => {
            write_man_pages(&dir)
                .map_err(|e| format!("write man pages to {}: {e}", dir.display()))?;
        }
        SystemCommand::Kernel(KernelCommand::Set(args)) => {
            let installed = match args.binary {
                Some(binary) => kernel::install(app_root, &binary)?,
                None => kernel::install_recommended(app_root).await?,
            };
            println!("kernel set to {}", installed.display());
        }
    }
    Ok(0)
}

/// A page per command, and for each alias (`container-rm`, `container-ls`)
/// a one-line `.so` page that shows its command's, as man-db links them, so
/// `man container-rm` works as `man docker-rm` does.
fn write_man_pages(dir: &Path) -> std::io::Result<()> {
    fn aliases(command: &clap::Command, prefix: &str, dir: &Path) -> std::io::Result<()> {
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            let page = format!("{prefix}-{}", sub.get_name());
            for alias in sub.get_all_aliases() {
                let link = dir.join(format!("{prefix}-{alias}.1"));
                std::fs::write(link, format!(".so man1/{page}.1\n"))?;
            }
            aliases(sub, &page, dir)?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(super::command(), dir)?;
    aliases(&super::command(), "container", dir)
}

/// `system status`: each part read on its own, so one that cannot be read
/// (a damaged store, a missing kernel) shows its error and the rest still
/// show.
fn status(app_root: &Path) -> serde_json::Value {
    fn or_error<T: serde::Serialize, E: std::fmt::Display>(
        result: Result<T, E>,
    ) -> serde_json::Value {
        match result {
            Ok(value) => serde_json::json!(value),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        }
    }
    let host = crate::vm::host();
    let kernel = crate::vm::Kernel::find(app_root).map(
        |k| serde_json::json!({ "path": k.image, "release": k.release, "modules": k.modules }),
    );
    let containers = crate::runtime::Containers::open(app_root)
        .and_then(|c| c.list())
        .map(|(containers, unreadable)| {
            let running = containers
                .iter()
                .filter(|c| {
                    c.state()
                        .is_ok_and(|s| s.status == crate::runtime::Status::Running)
                })
                .count();
            serde_json::json!({
                "total": containers.len() + unreadable.len(),
                "running": running,
            })
        });
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("CONTAINER_COMMIT"),
        "backend": host.backend,
        "accelerator": { "name": host.accelerator, "reason": host.accelerator_reason },
        "kernel": or_error(kernel),
        "vminitd": or_error(crate::vm::initfs::vminitd_path()),
        "app_root": app_root,
        "programs": host.programs,
        "images": or_error(ImageStore::open(app_root).and_then(|s| s.list()).map(|l| l.len())),
        "containers": or_error(containers),
        "volumes": or_error(crate::volume::Volumes::open(app_root).and_then(|v| v.list()).map(|(v, bad)| v.len() + bad.len())),
        "networks": or_error(crate::network::Networks::open(app_root).and_then(|n| n.list()).map(|(n, bad)| n.len() + bad.len())),
    })
}

/// `system status` as `KEY  VALUE` lines; a part that could not be read
/// shows its error.
fn print_status(status: &serde_json::Value) {
    let kernel = match status["kernel"].get("path") {
        Some(path) => format!("{} ({})", text(path), text(&status["kernel"]["release"])),
        None => text(&status["kernel"]),
    };
    let containers = match status["containers"].get("total") {
        Some(total) => format!("{total} ({} running)", status["containers"]["running"]),
        None => text(&status["containers"]),
    };
    let mut rows = vec![
        ["VERSION".to_string(), super::VERSION.to_string()],
        ["BACKEND".into(), text(&status["backend"])],
        [
            "ACCELERATOR".into(),
            format!(
                "{}: {}",
                text(&status["accelerator"]["name"]),
                text(&status["accelerator"]["reason"])
            ),
        ],
        ["KERNEL".into(), kernel],
        ["VMINITD".into(), text(&status["vminitd"])],
        ["APP ROOT".into(), text(&status["app_root"])],
    ];
    if let Some(programs) = status["programs"].as_object() {
        for (program, version) in programs {
            rows.push([program.clone(), text(version)]);
        }
    }
    rows.push(["IMAGES".into(), text(&status["images"])]);
    rows.push(["CONTAINERS".into(), containers]);
    rows.push(["VOLUMES".into(), text(&status["volumes"])]);
    rows.push(["NETWORKS".into(), text(&status["networks"])]);
    print_table(rows.into_iter());
}

/// A status field as one line: strings bare, errors as `unknown: ERROR`.
fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) if o.contains_key("error") => {
            format!("unknown: {}", text(&o["error"]))
        }
        other => other.to_string(),
    }
}
