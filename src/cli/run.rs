//! `container run`.

use std::path::Path;

use clap::Args;

use crate::image::{PullOptions, Scheme};
use crate::runtime::{self, RunSpec};

#[derive(Args)]
pub struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the host's value).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Number of CPUs.
    #[arg(short, long, default_value_t = 2)]
    cpus: u32,
    /// Memory, with a K, M, G or T suffix (MiB without one).
    #[arg(short, long, default_value = "1G", value_parser = parse_memory_mib)]
    memory: u64,
    /// Registry scheme: https, http, or auto (http for loopback and private addresses).
    #[arg(long, default_value = "auto", value_parser = parse_scheme)]
    scheme: Scheme,
    /// The image to run.
    image: String,
    /// The command and its arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// The smallest VM memory the guest kernel and a workload fit in.
const MIN_MEMORY_MIB: u64 = 200;

pub async fn run(app_root: &Path, args: RunArgs) -> Result<i32, Box<dyn std::error::Error>> {
    let spec = RunSpec {
        image: args.image,
        args: args.args,
        env: args.env.into_iter().filter_map(resolve_env).collect(),
        cpus: args.cpus,
        memory_mib: args.memory,
        remove: args.rm,
        pull: PullOptions {
            scheme: args.scheme,
            ..PullOptions::default()
        },
    };
    Ok(runtime::run(app_root, &spec).await?)
}

/// `KEY` alone takes the host's value, and is dropped if the host has none (as Docker does).
fn resolve_env(entry: String) -> Option<String> {
    if entry.contains('=') {
        return Some(entry);
    }
    std::env::var(&entry)
        .ok()
        .map(|value| format!("{entry}={value}"))
}

pub(super) fn parse_scheme(s: &str) -> Result<Scheme, String> {
    match s {
        "auto" => Ok(Scheme::Auto),
        "http" => Ok(Scheme::Http),
        "https" => Ok(Scheme::Https),
        _ => Err(format!("unknown scheme {s:?}: use http, https or auto")),
    }
}

/// Parses `512M`, `1G`, `1536` (MiB) into MiB, in whole MiB.
fn parse_memory_mib(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("invalid memory size {s:?}"))?;
    let kib = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "K" => number,
        "" | "M" => number * 1024,
        "G" => number * 1024 * 1024,
        "T" => number * 1024 * 1024 * 1024,
        _ => {
            return Err(format!(
                "invalid memory size {s:?}: use a K, M, G or T suffix"
            ));
        }
    };
    let mib = kib.div_ceil(1024);
    if mib < MIN_MEMORY_MIB {
        return Err(format!(
            "memory {s} is below the minimum of {MIN_MEMORY_MIB}M"
        ));
    }
    Ok(mib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_mib("1G"), Ok(1024));
        assert_eq!(parse_memory_mib("512m"), Ok(512));
        assert_eq!(parse_memory_mib("300"), Ok(300));
        assert_eq!(parse_memory_mib("2GiB"), Ok(2048));
        assert_eq!(parse_memory_mib("204801K"), Ok(201));
        assert!(parse_memory_mib("100M").unwrap_err().contains("minimum"));
        assert!(parse_memory_mib("lots").is_err());
        assert!(parse_memory_mib("1X").is_err());
    }
}
