//! `container run`.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::image::{PullOptions, Scheme};
use crate::runtime::{self, Rlimit, RunSpec};

#[derive(Args)]
pub struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the host's value).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read environment variables from a file, one KEY=VALUE per line.
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// User to run as: name, uid, name:group or uid:gid.
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container (created when missing).
    #[arg(short, long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// A name for the container; also its hostname.
    #[arg(long)]
    name: Option<String>,
    /// Keep stdin open and forward it to the container.
    #[arg(short, long)]
    interactive: bool,
    /// Give the process a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Number of CPUs the container may use.
    #[arg(short, long)]
    cpus: Option<u32>,
    /// Memory the container may use, with a K, M, G or T suffix (MiB without one).
    #[arg(short, long, value_parser = parse_memory_mib)]
    memory: Option<u64>,
    /// Run a minimal init as PID 1 that forwards signals and reaps zombies.
    #[arg(long)]
    init: bool,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Add a Linux capability (NET_ADMIN, ALL, ...).
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a Linux capability.
    #[arg(long, value_name = "CAP")]
    cap_drop: Vec<String>,
    /// A resource limit: TYPE=SOFT[:HARD], e.g. nofile=1024:2048.
    #[arg(long, value_name = "TYPE=SOFT[:HARD]", value_parser = parse_ulimit)]
    ulimit: Vec<Rlimit>,
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
    let mut env = Vec::new();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("read env file {}: {e}", file.display()))?;
        env.extend(parse_env_file(&text));
    }
    env.extend(args.env);
    let spec = RunSpec {
        image: args.image,
        args: args.args,
        entrypoint: args.entrypoint,
        env: env.into_iter().filter_map(resolve_env).collect(),
        user: args.user.unwrap_or_default(),
        workdir: args.workdir,
        name: args.name,
        cpus: args.cpus,
        memory_mib: args.memory,
        init: args.init,
        read_only: args.read_only,
        cap_add: args.cap_add,
        cap_drop: args.cap_drop,
        ulimits: args.ulimit,
        interactive: args.interactive,
        tty: args.tty,
        remove: args.rm,
        pull: PullOptions {
            scheme: args.scheme,
            ..PullOptions::default()
        },
    };
    Ok(runtime::run(app_root, &spec).await?)
}

/// Docker's env-file format: KEY=VALUE or KEY per line; blank lines and
/// `#` comments skipped; no quoting.
fn parse_env_file(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_start())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// `nofile=1024`, `nofile=1024:2048`, `core=-1` (unlimited).
fn parse_ulimit(s: &str) -> Result<Rlimit, String> {
    let (kind, values) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid ulimit {s:?}: use TYPE=SOFT[:HARD]"))?;
    let value = |v: &str| -> Result<u64, String> {
        if v == "-1" || v == "unlimited" {
            return Ok(u64::MAX);
        }
        v.parse()
            .map_err(|_| format!("invalid ulimit value {v:?} in {s:?}"))
    };
    let (soft, hard) = match values.split_once(':') {
        Some((soft, hard)) => (value(soft)?, value(hard)?),
        None => (value(values)?, value(values)?),
    };
    if soft > hard {
        return Err(format!("invalid ulimit {s:?}: soft limit above hard limit"));
    }
    Ok(Rlimit {
        r#type: kind.to_string(),
        soft,
        hard,
    })
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
    fn ulimits() {
        let l = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!((l.r#type.as_str(), l.soft, l.hard), ("nofile", 1024, 2048));
        let l = parse_ulimit("core=-1").unwrap();
        assert_eq!((l.soft, l.hard), (u64::MAX, u64::MAX));
        assert!(parse_ulimit("nofile").is_err());
        assert!(parse_ulimit("nofile=2:1").is_err());
        assert!(parse_ulimit("nofile=lots").is_err());
    }

    #[test]
    fn env_files() {
        let env = parse_env_file("# comment\nA=1\n\n  B=two words\nC\n");
        assert_eq!(env, ["A=1", "B=two words", "C"]);
    }

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
