//! `container build`: the flags Docker's and Apple's users type, and the
//! build's progress on stderr as BuildKit shows it: plain lines, or on a
//! terminal its view of the steps redrawn in place.

use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
            let (entries, mounts) = build::clear_cache(app_root)?;
            let roots = super::image::gc_roots(app_root)?;
            let images = crate::image::ImageStore::open(app_root)?;
            let removed = tokio::task::block_in_place(|| images.prune(false, &roots))?;
            println!("Deleted {entries} build cache entries");
            println!("Deleted {mounts} cache mounts");
            println!("Reclaimed {}", super::output::human_size(removed.bytes));
        }
    }
    Ok(0)
}

#[derive(Clone, Copy, ValueEnum)]
enum ProgressMode {
    /// `tty` on a terminal, `plain` otherwise.
    Auto,
    /// A line per event, each step's output in full (BuildKit's `plain`).
    Plain,
    /// The steps redrawn in place, with the last lines of each running
    /// step's output (BuildKit's `tty`).
    Tty,
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
    let view = match args.progress {
        _ if args.quiet => View::Quiet,
        ProgressMode::Quiet => View::Quiet,
        ProgressMode::Plain => View::Plain(Plain::default()),
        ProgressMode::Tty => View::Tty(Tty::new()),
        ProgressMode::Auto if std::io::stderr().is_terminal() => View::Tty(Tty::new()),
        ProgressMode::Auto => View::Plain(Plain::default()),
    };
    let view = Arc::new(Mutex::new(view));
    let shown = view.clone();
    let mut show = |event: Event<'_>| shown.lock().unwrap().show(event);
    let running = build::build(app_root, &options, &mut show);
    tokio::pin!(running);
    // The terminal view counts the running steps' seconds between events.
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    // Ctrl-C drops the build: its VM is killed and its temporary files go
    // with it, as on any other error. Listened for once, before the loop,
    // so that none is missed between two turns.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let built = loop {
        tokio::select! {
            built = &mut running => break built,
            _ = tick.tick() => view.lock().unwrap().tick(),
            _ = &mut interrupted => {
                view.lock().unwrap().end(Ending::Interrupted);
                drop(unpacked);
                eprintln!("Error: the build was interrupted");
                return Ok(130);
            }
        }
    };
    drop(unpacked);
    let mut view = view.lock().unwrap();
    view.end(match &built {
        Ok(built) => Ending::Built(built),
        Err(_) => Ending::Failed,
    });
    let built = built?;
    if matches!(*view, View::Quiet) {
        println!("{}", built.digest);
    }
    Ok(0)
}

/// How a build ended, for its last lines.
enum Ending<'a> {
    Built(&'a build::Built),
    Failed,
    Interrupted,
}

/// How the build's progress shows.
enum View {
    Plain(Plain),
    Tty(Tty),
    Quiet,
}

impl View {
    fn show(&mut self, event: Event<'_>) {
        match self {
            View::Plain(plain) => plain.show(event),
            View::Tty(tty) => tty.show(event),
            View::Quiet => {}
        }
    }

    fn tick(&mut self) {
        if let View::Tty(tty) = self {
            tty.draw(None);
        }
    }

    fn end(&mut self, ending: Ending<'_>) {
        match (self, ending) {
            (View::Plain(plain), Ending::Built(built)) => plain.exported(built),
            (View::Tty(tty), ending) => tty.end(ending),
            _ => {}
        }
    }
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

    /// BuildKit's last step: the image stored and named.
    fn exported(&self, built: &build::Built) {
        let mut err = std::io::stderr().lock();
        let id = self.last_id + 1;
        let _ = writeln!(err, "#{id} exporting to image");
        let _ = writeln!(err, "#{id} writing image {} done", built.digest);
        for reference in &built.references {
            let _ = writeln!(err, "#{id} naming to {reference} done");
        }
        let _ = writeln!(err, "#{id} DONE 0.0s");
    }
}

/// Lines of a running step's output the terminal view keeps (BuildKit's 6).
const TAIL_LINES: usize = 6;

/// BuildKit's terminal view: a header with the time and the steps done,
/// a line per step with its time, and under each running step the last
/// lines of its output; redrawn in place, so it takes no more rows than
/// it shows. Written here: indicatif draws bars, not this.
struct Tty {
    started: Instant,
    steps: Vec<TtyStep>,
    /// Rows drawn last time, to go back up over.
    drawn: usize,
    /// The frame as last drawn: a tick that changes nothing draws nothing.
    last: Vec<String>,
}

struct TtyStep {
    id: usize,
    name: String,
    started: Instant,
    elapsed: Option<Duration>,
    cached: bool,
    tail: VecDeque<String>,
    /// Output not yet ended by a newline.
    partial: Vec<u8>,
}

impl Tty {
    fn new() -> Tty {
        Tty {
            started: Instant::now(),
            steps: Vec::new(),
            drawn: 0,
            last: Vec::new(),
        }
    }

    fn show(&mut self, event: Event<'_>) {
        match event {
            Event::Started { id, name } => self.steps.push(TtyStep {
                id,
                name: name.to_string(),
                started: Instant::now(),
                elapsed: None,
                cached: false,
                tail: VecDeque::new(),
                partial: Vec::new(),
            }),
            Event::Output { id, data } => {
                if let Some(step) = self.steps.iter_mut().find(|s| s.id == id) {
                    step.partial.extend_from_slice(data);
                    while let Some(end) = step.partial.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = step.partial.drain(..=end).collect();
                        let text = String::from_utf8_lossy(&line[..line.len() - 1]);
                        step.tail.push_back(text.trim_end_matches('\r').to_string());
                        if step.tail.len() > TAIL_LINES {
                            step.tail.pop_front();
                        }
                    }
                }
            }
            Event::Cached { id } => {
                if let Some(step) = self.steps.iter_mut().find(|s| s.id == id) {
                    step.cached = true;
                }
            }
            Event::Done { id, elapsed } => {
                if let Some(step) = self.steps.iter_mut().find(|s| s.id == id) {
                    step.elapsed = Some(if step.cached { Duration::ZERO } else { elapsed });
                }
            }
        }
        self.draw(None);
    }

    /// The frame now; once the build `ended`, its last view: the steps
    /// still running when it failed marked (`ERROR`, or `CANCELED` by
    /// Ctrl-C) and `FINISHED` when every step finished.
    fn frame(&self, ended: Option<&Ending>) -> Vec<String> {
        let width = console::Term::stderr()
            .size_checked()
            .map_or(80, |(_, cols)| usize::from(cols).max(40));
        let done = self.steps.iter().filter(|s| s.elapsed.is_some()).count();
        let all = done == self.steps.len();
        let mut lines = vec![format!(
            "[+] Building {:.1}s ({done}/{}){}",
            self.started.elapsed().as_secs_f64(),
            self.steps.len(),
            if ended.is_some() && all {
                " FINISHED"
            } else {
                ""
            }
        )];
        for step in &self.steps {
            let seconds = step
                .elapsed
                .unwrap_or_else(|| step.started.elapsed())
                .as_secs_f64();
            let state = match (step.cached, step.elapsed, ended) {
                (true, _, _) => "CACHED ",
                (_, None, Some(Ending::Interrupted)) => "CANCELED ",
                (_, None, Some(_)) => "ERROR ",
                _ => "",
            };
            lines.push(fit(
                &format!(" => {state}{}", step.name),
                &format!("{seconds:.1}s"),
                width,
            ));
            let running = step.elapsed.is_none();
            if running {
                for line in &step.tail {
                    lines.push(fit(&format!(" => => # {line}"), "", width));
                }
            }
        }
        lines
    }

    fn draw(&mut self, ended: Option<&Ending>) {
        let lines = self.frame(ended);
        if lines == self.last {
            return;
        }
        let term = console::Term::stderr();
        let _ = term.clear_last_lines(self.drawn);
        let _ = term.write_str(&(lines.join("\n") + "\n"));
        self.drawn = lines.len();
        self.last = lines;
    }

    fn end(&mut self, ending: Ending<'_>) {
        self.draw(Some(&ending));
        let Ending::Built(built) = ending else {
            return;
        };
        let mut lines = vec![
            " => exporting to image".to_string(),
            format!(" => => writing image {}", built.digest),
        ];
        for reference in &built.references {
            lines.push(format!(" => => naming to {reference}"));
        }
        let _ = console::Term::stderr().write_str(&(lines.join("\n") + "\n"));
    }
}

/// `left`, cut to leave room, and `right` at the end of a line that fits
/// `width` columns.
fn fit(left: &str, right: &str, width: usize) -> String {
    let room = width.saturating_sub(console::measure_text_width(right) + 2);
    let left: String = left.chars().filter(|c| !c.is_control()).collect();
    let left = console::truncate_str(&left, room, "...");
    let pad = room.saturating_sub(console::measure_text_width(&left));
    format!("{left}{}{right}", " ".repeat(pad + 1))
}
