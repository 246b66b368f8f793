//! `container network`: create, list, inspect and remove networks. Thin:
//! the network module acts.

use std::path::Path;

use clap::{Args, Subcommand};

use super::output::{ListArgs, ListFormat, print_json, print_table, print_template};
use crate::network::{self, Network, Networks};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Show networks as JSON, with the containers on them.
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks no container uses.
    #[command(alias = "rm")]
    Delete {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove every network no container uses (but `default`).
    Prune,
}

#[derive(Args)]
pub struct CreateArgs {
    /// The network's IPv4 subnet, e.g. 192.168.70.0/24 [default: the next free /24 from 192.168.65.0].
    #[arg(long, value_parser = parse_subnet)]
    subnet: Option<ipnet::Ipv4Net>,
    /// No way out of the network: its containers reach each other and the host only.
    #[arg(long)]
    internal: bool,
    name: String,
}

fn parse_subnet(s: &str) -> std::result::Result<ipnet::Ipv4Net, String> {
    network::parse_subnet(s).map_err(|e| e.to_string())
}

fn json(network: &Network, containers: &[String]) -> serde_json::Value {
    serde_json::json!({
        "name": network.name,
        "subnet": network.subnet.to_string(),
        "gateway": network.gateway.to_string(),
        "internal": network.internal,
        "created": network.created,
        "containers": containers,
    })
}

pub async fn run(app_root: &Path, command: NetworkCommand) -> Result<i32> {
    let networks = Networks::open(app_root)?;
    let mut failed = false;
    let mut fail = |e: network::Error| {
        eprintln!("Error: {e}");
        failed = true;
    };
    match command {
        NetworkCommand::Create(args) => {
            let network = networks.create(&args.name, args.subnet, args.internal)?;
            println!("{}", network.name);
        }
        NetworkCommand::List(args) => {
            let (all, broken) = networks.list()?;
            broken.into_iter().for_each(&mut fail);
            let records = || -> Result<Vec<_>> {
                let mut rows = Vec::new();
                for n in &all {
                    rows.push(json(n, &networks.users(&n.name)?));
                }
                Ok(rows)
            };
            if args.quiet {
                all.iter().for_each(|n| println!("{}", n.name));
            } else if let ListFormat::Json = args.format {
                print_json(&records()?)?;
            } else if let ListFormat::Template(template) = &args.format {
                print_template(template, &records()?, None, &[])?;
            } else {
                let header = ["NETWORK", "SUBNET", "GATEWAY", "INTERNAL"].map(String::from);
                let rows = all.iter().map(|n| {
                    [
                        n.name.clone(),
                        n.subnet.to_string(),
                        n.gateway.to_string(),
                        if n.internal { "yes" } else { "no" }.to_string(),
                    ]
                });
                print_table(std::iter::once(header).chain(rows));
            }
        }
        NetworkCommand::Inspect { networks: names } => {
            let mut rows = Vec::new();
            for name in names {
                match networks
                    .get(&name)
                    .and_then(|n| Ok(json(&n, &networks.users(&name)?)))
                {
                    Ok(row) => rows.push(row),
                    Err(e) => fail(e),
                }
            }
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        NetworkCommand::Delete { networks: names } => {
            for name in names {
                match networks.remove(&name) {
                    Ok(()) => println!("{name}"),
                    Err(e) => fail(e),
                }
            }
        }
        NetworkCommand::Prune => {
            let (all, broken) = networks.list()?;
            broken.into_iter().for_each(&mut fail);
            for n in all.iter().filter(|n| n.name != network::DEFAULT) {
                if networks.users(&n.name)?.is_empty() {
                    match networks.remove(&n.name) {
                        Ok(()) => println!("{}", n.name),
                        Err(e) => fail(e),
                    }
                }
            }
        }
    }
    Ok(i32::from(failed))
}
