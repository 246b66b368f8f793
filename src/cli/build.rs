//! `container build`: the flags Docker's and Apple's users type, and the
//! build's progress as BuildKit's plain output on stderr.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand, ValueEnum};

use super::container::parse_memory_mib;
use super::pairs;
use super::parse_scheme;
use crate::build::{self, DockerfileSource, Event};
use crate::image::{PullOptions, Scheme};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Args)]
pub struct BuildArgs {
    /// Name the image NAME[:TAG] (repeatable).
    #[arg(short, long = "tag", value_name = "NAME[:TAG]")]
    tag: Vec<String>,
    /// The Dockerfile [default: CONTEXT/Dockerfile]; `-` reads it from stdin.
    #[arg(short, long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Set a build argument, KEY=VALUE (KEY alone passes the host's value).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_arg: Vec<String>,
    /// Build this stage and what it needs, not the last one.
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Run every step, using nothing cached.
    #[arg(long)]
    no_cache: bool,
    /// Add a label to the image, KEY=VALUE.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Print only the image ID, nothing else.
    #[arg(short, long)]
    quiet: bool,
    /// The network RUN steps join, as for `run`: a network's name (such as
    /// `default`) or `none` [default: the `network.default` setting's].
    #[arg(long, value_name = "NETWORK")]
    network: Option<String>,
    /// Number of CPUs each RUN step's VM gets (Apple's `build --cpus`).
    #[arg(short, long)]
    cpus: Option<u32>,
    /// Memory each RUN step's VM gets, with a K, M, G or T suffix (MiB without one).
    #[arg(short, long, value_parser = parse_memory_mib)]
    memory: Option<u64>,
    /// Registry scheme for base images: https, http, or auto (http for loopback and private addresses).
    #[arg(long, default_value = "auto", value_parser = parse_scheme)]
    scheme: Scheme,
    /// The build context: a directory, or `-` for a tar on stdin.
    context: String,
}

#[derive(Subcommand)]
pub enum BuilderCommand {
    /// Forget every cached build step and free the layers only it kept.
    Prune,
}

pub async fn builder(app_root: &Path, command: BuilderCommand) -> Result<i32> {
    match command {
        BuilderCommand::Prune => {
            let entries = build::clear_cache(app_root)?;
            let roots = super::image::gc_roots(app_root)?;
            let images = crate::image::ImageStore::open(app_root)?;
            let removed = tokio::task::block_in_place(|| images.prune(false, &roots))?;
            println!("Deleted {entries} build cache entries");
            println!("Reclaimed {}", super::output::human_size(removed.bytes));
        }
    }
    Ok(0)
}

#[derive(Clone, Copy, ValueEnum)]
enum ProgressMode {
    /// Plain lines (BuildKit's `plain`).
    Auto,
    Plain,
    /// Nothing but errors.
    Quiet,
}

pub async fn build(app_root: &Path, args: BuildArgs) -> Result<i32> {
    // A context from stdin is unpacked here and removed with this.
    let mut unpacked = None;
    let context = if args.context == "-" {
        if args.file.as_deref() == Some(Path::new("-")) {
            return Err("the context and the Dockerfile cannot both come from stdin".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("build-context-")
            .tempdir_in(app_root)
            .or_else(|_| tempfile::tempdir())?;
        tar::Archive::new(std::io::stdin().lock())
            .unpack(dir.path())
            .map_err(|e| format!("read the context tar from stdin: {e}"))?;
        let path = dir.path().to_path_buf();
        unpacked = Some(dir);
        path
    } else {
        PathBuf::from(&args.context)
    };
    let dockerfile = match &args.file {
        Some(path) if path == Path::new("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("read the Dockerfile from stdin: {e}"))?;
            DockerfileSource::Text {
                name: "Dockerfile".into(),
                text,
            }
        }
        Some(path) => DockerfileSource::Path(path.clone()),
        None => DockerfileSource::Path(context.join("Dockerfile")),
    };
    let build_args = pairs(&args.build_arg)
        .into_iter()
        .filter_map(|(key, value)| {
            if args.build_arg.iter().any(|a| a == &key) {
                // `--build-arg KEY`: the host's value, or nothing.
                std::env::var(&key).ok().map(|v| (key, v))
            } else {
                Some((key, value))
            }
        })
        .collect::<std::collections::BTreeMap<_, _>>();
    let source_date_epoch = build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| format!("SOURCE_DATE_EPOCH={v} is not a number of seconds"))
        })
        .transpose()?;
    let options = build::Options {
        context,
        dockerfile,
        tags: args.tag,
        build_args,
        target: args.target,
        no_cache: args.no_cache,
        labels: pairs(&args.label),
        network: args.network,
        cpus: args.cpus,
        memory_mib: args.memory,
        pull: PullOptions {
            scheme: args.scheme,
            ..PullOptions::default()
        },
        source_date_epoch,
    };
    let quiet = args.quiet || matches!(args.progress, ProgressMode::Quiet);
    let mut plain = Plain::default();
    let mut show = |event: Event<'_>| {
        if !quiet {
            plain.show(event);
        }
    };
    // Ctrl-C drops the build: its VM is killed and its temporary files go
    // with it, as on any other error.
    let built = tokio::select! {
        built = build::build(app_root, &options, &mut show) => built,
        _ = tokio::signal::ctrl_c() => {
            drop(unpacked);
            eprintln!("Error: the build was interrupted");
            return Ok(130);
        }
    };
    drop(unpacked);
    let built = built?;
    if quiet {
        println!("{}", built.digest);
    } else {
        let mut err = std::io::stderr().lock();
        let id = plain.next_id();
        let _ = writeln!(err, "#{id} exporting to image");
        let _ = writeln!(err, "#{id} writing image {} done", built.digest);
        for reference in &built.references {
            let _ = writeln!(err, "#{id} naming to {reference} done");
        }
        let _ = writeln!(err, "#{id} DONE 0.0s");
    }
    Ok(0)
}

/// BuildKit's plain progress: `#N` before every line of step N, its output
/// with the seconds since it started.
#[derive(Default)]
struct Plain {
    started: HashMap<usize, Instant>,
    /// Output not yet ended by a newline, per step.
    partial: HashMap<usize, Vec<u8>>,
    cached: std::collections::HashSet<usize>,
    last_id: usize,
}

impl Plain {
    fn show(&mut self, event: Event<'_>) {
        let mut err = std::io::stderr().lock();
        let _ = match event {
            Event::Started { id, name } => {
                self.started.insert(id, Instant::now());
                self.last_id = self.last_id.max(id);
                writeln!(err, "\n#{id} {name}")
            }
            Event::Output { id, data } => {
                let seconds = self
                    .started
                    .get(&id)
                    .map_or(0.0, |s| s.elapsed().as_secs_f64());
                let buffer = self.partial.entry(id).or_default();
                buffer.extend_from_slice(data);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]);
                    let _ = writeln!(err, "#{id} {seconds:.3} {}", text.trim_end_matches('\r'));
                }
                Ok(())
            }
            Event::Cached { id } => {
                self.cached.insert(id);
                writeln!(err, "#{id} CACHED")
            }
            Event::Done { id, .. } if self.cached.contains(&id) => Ok(()),
            Event::Done { id, elapsed } => {
                if let Some(rest) = self.partial.remove(&id).filter(|r| !r.is_empty()) {
                    let _ = writeln!(err, "#{id} {}", String::from_utf8_lossy(&rest));
                }
                writeln!(err, "#{id} DONE {:.1}s", elapsed.as_secs_f64())
            }
        };
    }

    fn next_id(&self) -> usize {
        self.last_id + 1
    }
}
