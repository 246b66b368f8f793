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
    /// Show the version and the commit it was built from.
    Version {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
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
            let volumes = crate::volume::Volumes::open(app_root)?.usage()?;
            if let Format::Json = format {
                let mut json = serde_json::to_value(&usage)?;
                json["volumes"] = serde_json::to_value(&volumes)?;
                println!("{}", serde_json::to_string_pretty(&json)?);
                return Ok(0);
            }
            let header = ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"].map(String::from);
            let images = [
                "Images".to_string(),
                usage.images.to_string(),
                usage.active.to_string(),
                human_size(usage.content_bytes + usage.partial_bytes + usage.snapshot_bytes),
                human_size(usage.reclaimable_bytes),
            ];
            let volumes = [
                "Volumes".to_string(),
                volumes.volumes.to_string(),
                volumes.active.to_string(),
                human_size(volumes.bytes),
                human_size(volumes.reclaimable_bytes),
            ];
            print_table([header, images, volumes].into_iter());
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
