//! `container volume`: create, list, inspect, remove and prune volumes.
//! Thin: the volume module acts.

use std::path::Path;

use clap::{Args, Subcommand};

use super::output::{ListArgs, ListFormat, print_json, print_table, print_template};
use super::pairs;
use crate::volume::{self, Volume, Volumes};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (one that exists is left as it is).
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Show volumes as JSON, with the containers using them.
    Inspect {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove volumes no container uses.
    #[command(alias = "rm")]
    Delete {
        /// Remove volumes even if containers use them.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove anonymous volumes no container uses (with --all, named ones too).
    Prune {
        /// Named volumes too.
        #[arg(short, long)]
        all: bool,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// A label, KEY=VALUE.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// size=SIZE: the volume is a disk of that size (ext4, the size enforced),
    /// which one running container at a time can use; without it, a
    /// directory any number of running containers can share.
    #[arg(short, long = "opt", value_name = "KEY=VALUE")]
    opt: Vec<String>,
    /// The volume's name [default: a random one].
    name: Option<String>,
}

fn json(volumes: &Volumes, volume: &Volume) -> Result<serde_json::Value> {
    Ok(serde_json::json!({
        "name": volume.name,
        "created": volume.created,
        "labels": volume.labels,
        "anonymous": volume.anonymous,
        "size": volume.size,
        "mountpoint": volumes.storage(volume).path(),
        "containers": volumes.users(&volume.name)?,
    }))
}

pub async fn run(app_root: &Path, command: VolumeCommand) -> Result<i32> {
    let volumes = Volumes::open(app_root)?;
    let mut failed = false;
    let mut fail = |e: volume::Error| {
        eprintln!("Error: {e}");
        failed = true;
    };
    match command {
        VolumeCommand::Create(args) => {
            let volume =
                volumes.create(args.name.as_deref(), pairs(&args.label), &pairs(&args.opt))?;
            println!("{}", volume.name);
        }
        VolumeCommand::List(args) => {
            let (all, broken) = volumes.list()?;
            broken.into_iter().for_each(&mut fail);
            let records = || {
                all.iter()
                    .map(|v| json(&volumes, v))
                    .collect::<Result<Vec<_>>>()
            };
            if args.quiet {
                all.iter().for_each(|v| println!("{}", v.name));
            } else if let ListFormat::Json = args.format {
                print_json(&records()?)?;
            } else if let ListFormat::Template(template) = &args.format {
                print_template(template, &records()?, None, &[])?;
            } else {
                let header = ["NAME", "CONTAINERS"].map(String::from);
                let mut rows = Vec::new();
                for v in &all {
                    rows.push([v.name.clone(), volumes.users(&v.name)?.len().to_string()]);
                }
                print_table(std::iter::once(header).chain(rows));
            }
        }
        VolumeCommand::Inspect { volumes: names } => {
            let mut rows = Vec::new();
            for name in names {
                match volumes.get(&name) {
                    Ok(volume) => rows.push(json(&volumes, &volume)?),
                    Err(e) => fail(e),
                }
            }
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        VolumeCommand::Delete {
            force,
            volumes: names,
        } => {
            for name in names {
                match volumes.remove(&name, force) {
                    Ok(()) => println!("{name}"),
                    Err(e) => fail(e),
                }
            }
        }
        VolumeCommand::Prune { all } => {
            let (found, broken) = volumes.list()?;
            broken.into_iter().for_each(&mut fail);
            for v in found.iter().filter(|v| all || v.anonymous) {
                if volumes.users(&v.name)?.is_empty() {
                    match volumes.remove(&v.name, false) {
                        Ok(()) => println!("{}", v.name),
                        Err(e) => fail(e),
                    }
                }
            }
        }
    }
    Ok(i32::from(failed))
}
