//! `container system`: settings and disk usage. (`system kernel` lives on
//! the macos branch; the two enums merge into one.)

use std::path::Path;

use clap::Subcommand;

use super::image::{human_size, print_table};
use crate::image::{ImageStore, Properties};

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Read and change settings (`registry.domain`: the registry of names without one).
    #[command(subcommand)]
    Property(PropertyCommand),
    /// Show the disk space images use and what pruning would free.
    Df,
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
        SystemCommand::Df => {
            let usage = ImageStore::open(app_root)?.disk_usage()?;
            let header = ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"].map(String::from);
            let images = [
                "Images".to_string(),
                usage.images.to_string(),
                usage.active.to_string(),
                human_size(usage.content_bytes + usage.snapshot_bytes),
                human_size(usage.reclaimable_bytes),
            ];
            print_table([header, images].into_iter());
        }
    }
    Ok(0)
}
