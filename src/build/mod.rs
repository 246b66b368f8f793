//! `container build`: images from Dockerfiles, built with what runs
//! containers: each `RUN` over its parent's root filesystem in a VM the
//! build keeps for its steps (`runtime::BuildVm`), `COPY` and `ADD` written
//! on the host from the context (`copy`), every layer into the content
//! store, and a cache of what each step made (`cache`), so an unchanged
//! step is never run twice.
//!
//! Stages build in file order, only those the target needs. A stage's state
//! is an image config and its layers. The builder VM boots on a snapshot of
//! an image with just the first RUN's parent layers (keyed by the layers
//! alone, so `ENV` and the like never make a new one); the layers after
//! those are stacked onto it in the VM.

mod cache;
mod cache_mount;
mod copy;
pub mod dockerfile;
pub mod ignore;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::image::{
    self, ContainerConfig, Descriptor, Healthcheck, History, ImageConfig, ImageStore, Platform,
    PullOptions,
};
use crate::runtime;
use dockerfile::{Command, Dockerfile, Instruction, Kind, Source};
use ignore::Ignore;

use crate::io_error::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: {source}")]
    Parse {
        file: String,
        source: dockerfile::Error,
    },
    #[error("{file}: line {line}: {source}")]
    At {
        file: String,
        line: usize,
        source: Box<StepError>,
    },
    #[error(transparent)]
    Ignore(#[from] ignore::Error),
    #[error("the build context {0} is not a directory")]
    NoContext(PathBuf),
    #[error("no build stage named {0:?} (--target)")]
    NoSuchTarget(String),
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Network(Box<runtime::Error>),
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
}

/// What went wrong in one instruction; `Error::At` says where.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Copy(#[from] copy::Error),
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Runtime(#[from] runtime::Error),
    #[error(transparent)]
    Expand(#[from] dockerfile::Error),
    #[error("{command} failed with exit code {code}{output}")]
    RunFailed {
        command: String,
        code: i32,
        /// The last lines it printed, as `: a | b | c`.
        output: String,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("the base image's ONBUILD trigger is invalid: {0}")]
    Trigger(String),
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
}

/// Where the Dockerfile comes from.
#[derive(Debug, Clone)]
pub enum DockerfileSource {
    Path(PathBuf),
    /// Read already (`-f -`); `name` is what errors call it.
    Text {
        name: String,
        text: String,
    },
}

#[derive(Debug, Clone)]
pub struct Options {
    pub context: PathBuf,
    pub dockerfile: DockerfileSource,
    /// References to name the result, as the user typed them.
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub labels: BTreeMap<String, String>,
    /// The network RUN steps join, as `run --network` names it (`none`:
    /// only loopback); the `network.default` setting's when None.
    pub network: Option<String>,
    /// The size of the VM RUN steps run in; the defaults `run` uses when None.
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    /// For base images not in the store.
    pub pull: PullOptions,
    /// SOURCE_DATE_EPOCH: the image's times, and no file newer.
    pub source_date_epoch: Option<u64>,
}

/// What a build reports, for the CLI to show (BuildKit's plain output).
pub enum Event<'a> {
    /// Step `id` (numbered through the build) began: `name` as `[2/5] RUN make`.
    Started {
        id: usize,
        name: &'a str,
    },
    /// Its output, as the process wrote it.
    Output {
        id: usize,
        data: &'a [u8],
    },
    /// It was in the cache: nothing ran.
    Cached {
        id: usize,
    },
    Done {
        id: usize,
        elapsed: Duration,
    },
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image's manifest digest.
    pub digest: String,
    pub references: Vec<String>,
}

/// The layers the build cache keeps: roots for image garbage collection.
pub fn cached_layers(app_root: &Path) -> BTreeSet<String> {
    cache::Cache::open(app_root).map_or_else(|_| BTreeSet::new(), |c| c.layers())
}

/// What `system df` says of the build cache (the layers it keeps are the
/// image store's to count: `ImageStore::disk_usage` with these roots).
#[derive(Debug, Default, serde::Serialize)]
pub struct CacheUsage {
    /// Cached steps.
    pub entries: usize,
    /// The `RUN --mount=type=cache` disks.
    pub mounts: cache_mount::Usage,
}

pub fn cache_usage(app_root: &Path) -> CacheUsage {
    CacheUsage {
        entries: cache::Cache::open(app_root).map_or(0, |c| c.entries()),
        mounts: cache_mount::usage(app_root),
    }
}

/// Forgets every cached step and removes the cache mounts no build is
/// using (`builder prune`); returns how many of each there were. The steps'
/// layers go with the next garbage collection.
pub fn clear_cache(app_root: &Path) -> Result<(usize, usize), Error> {
    let cache = cache::Cache::open(app_root).map_err(io("open the build cache"))?;
    Ok((cache.clear(), cache_mount::clear(app_root)))
}

type Progress<'p> = &'p mut (dyn FnMut(Event<'_>) + Send);

/// Builds the image the options describe and names it with their tags.
/// Nothing is named if any step fails; content the failed build added is
/// left to garbage collection, and its VMs and temporary files are gone.
pub async fn build(
    app_root: &Path,
    options: &Options,
    progress: Progress<'_>,
) -> Result<Built, Error> {
    if !options.context.is_dir() {
        return Err(Error::NoContext(options.context.clone()));
    }
    let (file, text) = match &options.dockerfile {
        DockerfileSource::Text { name, text } => (name.clone(), text.clone()),
        DockerfileSource::Path(path) => (
            path.file_name()
                .map_or("Dockerfile".into(), |n| n.to_string_lossy().into_owned()),
            std::fs::read_to_string(path).map_err(io(format!("read {}", path.display())))?,
        ),
    };
    let dockerfile = dockerfile::parse(&text).map_err(|source| Error::Parse {
        file: file.clone(),
        source,
    })?;
    let ignore = match std::fs::read_to_string(options.context.join(".dockerignore")) {
        Ok(text) => Ignore::parse(&text)?,
        Err(_) => Ignore::none(),
    };
    let images = ImageStore::open(app_root)?;
    // Tags are checked before any work.
    let tags = options
        .tags
        .iter()
        .map(|t| images.parse_reference(t))
        .collect::<Result<Vec<_>, _>>()?;
    let cache = cache::Cache::open(app_root).map_err(io("open the build cache"))?;
    // Checked before any work, as tags are.
    let network = runtime::network_name(app_root, options.network.as_deref())
        .map_err(|e| Error::Network(Box::new(e)))?;
    let network = (network != crate::network::NONE).then_some(network);
    if let Some(name) = &network {
        crate::network::Networks::open(app_root)
            .and_then(|n| n.get(name))
            .map_err(|e| Error::Network(Box::new(e.into())))?;
    }
    let _adding = images.adding_content()?;
    let mut builder = Builder {
        app_root,
        options,
        file,
        dockerfile: &dockerfile,
        ignore,
        images: &images,
        cache,
        progress,
        next_id: 0,
        network,
        snapshots: BTreeSet::new(),
        builder: None,
        cache_ids: cache_ids(&dockerfile),
    };
    let built = builder.run().await;
    builder.stop_builder().await;
    drop(builder);
    let digest = built?;
    let mut references = Vec::new();
    for tag in tags {
        images.record(&tag, &digest)?;
        references.push(tag.to_string());
    }
    Ok(Built { digest, references })
}

/// One `FROM` and the instructions after it.
struct Stage<'d> {
    name: Option<String>,
    from: &'d Instruction,
    instructions: &'d [Instruction],
}

/// A stage's result so far: what the image will say, and its layers.
#[derive(Clone)]
struct State {
    config: ImageConfig,
    layers: Vec<Descriptor>,
    /// Chains everything that made this state: the cache key's parent.
    key: String,
    /// `ARG`s in scope and their values, for expansion and `RUN`'s environment.
    args: BTreeMap<String, String>,
    /// Whether this stage set CMD (an ENTRYPOINT then keeps it).
    cmd_set: bool,
}

/// What an instruction may refer to beyond its own stage: the stages
/// built before it, and the global ARGs.
struct Scope<'s, 'd> {
    stages: &'s [Stage<'d>],
    /// This stage's index: only earlier stages can be named.
    index: usize,
    built: &'s [Option<State>],
    globals: &'s BTreeMap<String, String>,
}

struct Builder<'a> {
    app_root: &'a Path,
    options: &'a Options,
    file: String,
    dockerfile: &'a Dockerfile,
    ignore: Ignore,
    images: &'a ImageStore,
    cache: cache::Cache,
    progress: Progress<'a>,
    next_id: usize,
    /// The network RUN steps join by default; None: only loopback.
    network: Option<String>,
    /// Snapshots made for `RUN` parents, removed when the build ends.
    snapshots: BTreeSet<String>,
    /// The VM `RUN` steps run in, kept from one to the next.
    builder: Option<RunningBuilder>,
    /// The `RUN --mount=type=cache` ids the Dockerfile names, whose disks
    /// the builder VM gets.
    cache_ids: Vec<String>,
}

/// A builder VM and what its root filesystem is.
struct RunningBuilder {
    vm: runtime::BuildVm,
    /// The layers its next step runs on.
    layers: Vec<Descriptor>,
    /// What it joined: a step on another network needs another VM.
    network: Option<String>,
    /// The cache mounts' disks it has, held until it stops.
    _caches: Vec<cache_mount::CacheDisk>,
}

impl Builder<'_> {
    async fn run(&mut self) -> Result<String, Error> {
        let (globals, stages) = Self::stages_of(self.dockerfile);
        let global_args = self.global_args(&globals)?;
        let target = match &self.options.target {
            None => stages.len() - 1,
            Some(name) => stages
                .iter()
                .position(|s| s.name.as_deref() == Some(&name.to_lowercase()))
                .ok_or_else(|| Error::NoSuchTarget(name.clone()))?,
        };
        let needed = self.needed(&stages, target, &global_args);
        let mut built: Vec<Option<State>> = vec![None; stages.len()];
        for index in 0..=target {
            if !needed.contains(&index) {
                continue;
            }
            let label = if index == target {
                String::new()
            } else {
                format!(
                    "{} ",
                    stages[index]
                        .name
                        .clone()
                        .unwrap_or(format!("stage-{index}"))
                )
            };
            let scope = Scope {
                stages: &stages,
                index,
                built: &built,
                globals: &global_args,
            };
            let state = self.stage(&scope, &label).await?;
            built[index] = Some(state);
        }
        let state = built[target].take().expect("the target was built");
        self.finish(state)
    }

    /// Global `ARG`s (before the first `FROM`) and the stages.
    fn stages_of(dockerfile: &Dockerfile) -> (Vec<&Instruction>, Vec<Stage<'_>>) {
        let all = &dockerfile.instructions;
        let mut globals = Vec::new();
        let mut starts = Vec::new();
        // The parser allows only ARG before the first FROM, and needs a FROM.
        for (i, instruction) in all.iter().enumerate() {
            match &instruction.kind {
                Kind::From { name, .. } => starts.push((i, name.clone())),
                Kind::Arg(_) if starts.is_empty() => globals.push(instruction),
                _ => {}
            }
        }
        let stages = starts
            .iter()
            .enumerate()
            .map(|(n, (start, name))| {
                let end = starts.get(n + 1).map_or(all.len(), |s| s.0);
                Stage {
                    name: name.as_ref().map(|n| n.to_lowercase()),
                    from: &all[*start],
                    instructions: &all[start + 1..end],
                }
            })
            .collect();
        (globals, stages)
    }

    /// The values of the global `ARG`s: `--build-arg` or the default.
    fn global_args(&self, globals: &[&Instruction]) -> Result<BTreeMap<String, String>, Error> {
        let mut values = BTreeMap::new();
        for instruction in globals {
            let kind = self.expand(instruction, &values)?;
            if let Kind::Arg(args) = kind {
                for (name, default) in args {
                    if let Some(value) = self.options.build_args.get(&name).cloned().or(default) {
                        values.insert(name, value);
                    }
                }
            }
        }
        Ok(values)
    }

    /// The stages the target needs: itself, and the earlier stages its
    /// `FROM` and `COPY --from` name, transitively.
    fn needed(
        &self,
        stages: &[Stage],
        target: usize,
        globals: &BTreeMap<String, String>,
    ) -> BTreeSet<usize> {
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(index) = todo.pop() {
            if !needed.insert(index) {
                continue;
            }
            let stage = &stages[index];
            let mut names = Vec::new();
            if let Ok(Kind::From { image, .. }) = self.expand(stage.from, globals) {
                names.push(image);
            }
            for instruction in stage.instructions {
                if let Kind::Copy(c) | Kind::Add(c) = &instruction.kind
                    && let Some(from) = &c.from
                {
                    names.push(from.clone());
                }
            }
            for name in names {
                if let Some(dep) = stage_index(stages, &name, index) {
                    todo.push(dep);
                }
            }
        }
        needed
    }

    async fn stage(&mut self, scope: &Scope<'_, '_>, label: &str) -> Result<State, Error> {
        let (stages, index, built, globals) =
            (scope.stages, scope.index, scope.built, scope.globals);
        let stage = &stages[index];
        // Steps as BuildKit counts them: FROM and what makes a layer.
        let makes_layer =
            |i: &&Instruction| matches!(i.kind, Kind::Run { .. } | Kind::Copy(_) | Kind::Add(_));
        let total = 1 + stage.instructions.iter().filter(makes_layer).count();
        let mut number = 1;
        let from = stage.from;
        let Kind::From {
            image,
            platform,
            name,
        } = self.expand(from, globals)?
        else {
            unreachable!("a stage starts with FROM");
        };
        let alias = name.map(|n| format!(" AS {n}")).unwrap_or_default();
        let id = self.start(&format!("[{label}1/{total}] FROM {image}{alias}"));
        let started = std::time::Instant::now();
        if let Some(platform) = platform
            && !platform
                .parse::<Platform>()
                .is_ok_and(|p| Platform::host().runs(&p))
        {
            return Err(self.at(
                from,
                StepError::Unsupported(format!(
                    "FROM --platform={platform}: only the host's platform ({}) can be built",
                    Platform::host()
                )),
            ));
        }
        let mut state = match stage_index(stages, &image, index) {
            Some(base) => built[base].clone().expect("a needed stage is built first"),
            None if image == "scratch" => State {
                config: ImageConfig::empty(Platform::host()),
                layers: vec![],
                key: cache::key(&["FROM scratch"]),
                args: BTreeMap::new(),
                cmd_set: false,
            },
            None => self
                .base_image(&image)
                .await
                .map_err(|e| self.at(from, e))?,
        };
        // Only the globals a stage declares again are in its scope.
        state.args.clear();
        state.cmd_set = false;
        (self.progress)(Event::Done {
            id,
            elapsed: started.elapsed(),
        });
        // The base's ONBUILD triggers run first, as if written here; the
        // image this stage makes does not pass them on.
        let triggers = state.config.config.as_mut().and_then(|c| c.on_build.take());
        if let Some(triggers) = triggers.filter(|t| !t.is_empty()) {
            // The parser wants a FROM before anything else.
            let text = format!("FROM scratch\n{}\n", triggers.join("\n"));
            let parsed = dockerfile::parse(&text)
                .map_err(|e| self.at(from, StepError::Trigger(e.to_string())))?;
            for trigger in &parsed.instructions[1..] {
                let name = format!("[{label}1/{total}] ONBUILD {}", trigger.text);
                self.instruction(&mut state, trigger, &name, scope)
                    .await
                    .map_err(|e| self.at(from, e))?;
            }
        }
        for instruction in stage.instructions {
            if makes_layer(&instruction) {
                number += 1;
            }
            let name = format!("[{label}{number}/{total}] {}", instruction.text);
            self.instruction(&mut state, instruction, &name, scope)
                .await
                .map_err(|e| match e {
                    // It names its line already.
                    StepError::Expand(source) => Error::Parse {
                        file: self.file.clone(),
                        source,
                    },
                    other => self.at(instruction, other),
                })?;
        }
        Ok(state)
    }

    async fn base_image(&self, image: &str) -> Result<State, StepError> {
        let reference = self.images.parse_reference(image)?;
        let found = self
            .images
            .get_or_pull(&reference, &self.options.pull)
            .await?;
        let (config, layers) = self.images.image_parts(&found.digest)?;
        Ok(State {
            config,
            layers,
            key: cache::key(&["FROM", &found.digest]),
            args: BTreeMap::new(),
            cmd_set: false,
        })
    }

    /// Carries out one instruction: RUN, COPY and ADD are steps of their
    /// own (numbered, cached, timed); the rest only change the config.
    async fn instruction(
        &mut self,
        state: &mut State,
        instruction: &Instruction,
        name: &str,
        scope: &Scope<'_, '_>,
    ) -> Result<(), StepError> {
        let vars = self.vars(state);
        let kind = instruction.expanded(self.dockerfile.escape, &|name| vars.get(name).cloned())?;
        let text = &instruction.text;
        if !matches!(kind, Kind::Run { .. } | Kind::Copy(_) | Kind::Add(_)) {
            return self.configure(state, kind, scope.globals, text);
        }
        let id = self.start(name);
        let started = std::time::Instant::now();
        match &kind {
            Kind::Run { .. } => self.run_instruction(state, &kind, id, text).await?,
            Kind::Copy(copy) => {
                self.copy(state, copy, false, &kind, scope, id, text)
                    .await?
            }
            Kind::Add(copy) => self.copy(state, copy, true, &kind, scope, id, text).await?,
            _ => unreachable!("configure took the rest"),
        }
        (self.progress)(Event::Done {
            id,
            elapsed: started.elapsed(),
        });
        Ok(())
    }

    /// A RUN: from the cache, or in a VM.
    async fn run_instruction(
        &mut self,
        state: &mut State,
        kind: &Kind,
        id: usize,
        text: &str,
    ) -> Result<(), StepError> {
        let Kind::Run {
            command,
            network,
            mounts,
        } = kind
        else {
            unreachable!("a RUN");
        };
        let network = match network.as_deref() {
            Some("none") => None,
            None | Some("default") => self.network.clone(),
            Some(other) => {
                return Err(StepError::Unsupported(format!(
                    "RUN --network={other}: use default or none"
                )));
            }
        };
        // A heredoc script with a `#!` line runs under its interpreter,
        // which reads it on stdin.
        let (args, stdin) = match command {
            Command::Shell(script) if script.starts_with("#!") => {
                let shebang = script.lines().next().unwrap_or_default();
                let interpreter = shebang[2..].split_whitespace().map(String::from);
                (interpreter.collect(), Some(script.clone().into_bytes()))
            }
            other => (self.command_args(state, other), None),
        };
        let step = self.step(state, args, stdin, mounts);
        let key = cache::key(&[
            &state.key,
            &format!("{kind:?}"),
            &format!("{:?}", state.args),
        ]);
        let entry = match self.cached(&key) {
            Some(entry) => {
                (self.progress)(Event::Cached { id });
                entry
            }
            None => {
                let entry = self.run_step(state, step, network, id, text).await?;
                self.cache.put(&key, &entry).map_err(image::Error::from)?;
                entry
            }
        };
        self.add_layer(state, entry, text);
        state.key = key;
        Ok(())
    }

    /// Everything but RUN, COPY and ADD: a change to the config, no step
    /// of its own.
    fn configure(
        &self,
        state: &mut State,
        kind: Kind,
        globals: &BTreeMap<String, String>,
        text: &str,
    ) -> Result<(), StepError> {
        if let Kind::Maintainer(who) = &kind {
            state.config.author = Some(who.clone());
        }
        let config = state
            .config
            .config
            .get_or_insert_with(ContainerConfig::default);
        match kind.clone() {
            Kind::Env(pairs) => {
                let env = config.env.get_or_insert_with(Vec::new);
                for (key, value) in pairs {
                    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
                    env.push(format!("{key}={value}"));
                }
            }
            Kind::Arg(args) => {
                for (arg, default) in args {
                    let value = self
                        .options
                        .build_args
                        .get(&arg)
                        .cloned()
                        .or(default)
                        .or_else(|| globals.get(&arg).cloned());
                    if let Some(value) = value {
                        state.args.insert(arg, value);
                    } else {
                        state.args.remove(&arg);
                    }
                }
            }
            Kind::Label(pairs) => {
                config
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .extend(pairs);
            }
            Kind::Workdir(dir) => {
                let current = config.working_dir.clone().unwrap_or_else(|| "/".into());
                config.working_dir = Some(absolute(&current, &dir));
            }
            Kind::User(user) => config.user = Some(user),
            Kind::StopSignal(signal) => config.stop_signal = Some(signal),
            Kind::Expose(ports) => {
                let exposed = config.exposed_ports.get_or_insert_with(BTreeMap::new);
                for port in ports {
                    let port = if port.contains('/') {
                        port
                    } else {
                        format!("{port}/tcp")
                    };
                    exposed.insert(port, serde_json::json!({}));
                }
            }
            Kind::Volume(paths) => {
                let volumes = config.volumes.get_or_insert_with(BTreeMap::new);
                for path in paths {
                    volumes.insert(path, serde_json::json!({}));
                }
            }
            Kind::Cmd(command) => {
                let args = shell_form(config, &command);
                config.cmd = Some(args);
                state.cmd_set = true;
            }
            Kind::Entrypoint(command) => {
                let args = shell_form(config, &command);
                config.entrypoint = Some(args);
                // As Docker: an ENTRYPOINT drops a CMD the base image set.
                if !state.cmd_set {
                    config.cmd = None;
                }
            }
            Kind::Shell(shell) => config.shell = Some(shell),
            Kind::Healthcheck(None) => {
                config.healthcheck = Some(Healthcheck {
                    test: vec!["NONE".into()],
                    ..Default::default()
                })
            }
            Kind::Healthcheck(Some(check)) => {
                let test = match check.test {
                    Command::Exec(args) => [vec!["CMD".to_string()], args].concat(),
                    Command::Shell(text) => vec!["CMD-SHELL".to_string(), text],
                };
                config.healthcheck = Some(Healthcheck {
                    test,
                    interval: check.interval.as_deref().map(duration_ns).transpose()?,
                    timeout: check.timeout.as_deref().map(duration_ns).transpose()?,
                    start_period: check.start_period.as_deref().map(duration_ns).transpose()?,
                    start_interval: check
                        .start_interval
                        .as_deref()
                        .map(duration_ns)
                        .transpose()?,
                    retries: check.retries,
                });
            }
            Kind::Onbuild(trigger) => config.on_build.get_or_insert_with(Vec::new).push(trigger),
            Kind::Maintainer(_) => {}
            Kind::From { .. } | Kind::Run { .. } | Kind::Copy(_) | Kind::Add(_) => {
                unreachable!("handled above")
            }
        }
        state.key = cache::key(&[
            &state.key,
            &format!("{kind:?}"),
            &format!("{:?}", state.args),
        ]);
        if !matches!(kind, Kind::Arg(_)) {
            // Dated like the step before it, so an unchanged build gives
            // the same config.
            let created = match self.options.source_date_epoch {
                Some(_) => self.now(),
                None => state
                    .config
                    .history
                    .last()
                    .and_then(|h| h.created.clone())
                    .or_else(|| state.config.created.clone())
                    .unwrap_or_else(|| "1970-01-01T00:00:00Z".into()),
            };
            state.config.history.push(History {
                created: Some(created),
                created_by: Some(text.to_string()),
                comment: Some("buildkit.dockerfile.v0".into()),
                empty_layer: true,
            });
        }
        Ok(())
    }

    /// ENV and ARG values for expansion; ENV wins, as in Docker.
    fn vars(&self, state: &State) -> BTreeMap<String, String> {
        let mut vars = state.args.clone();
        for entry in state
            .config
            .config
            .as_ref()
            .and_then(|c| c.env.as_ref())
            .into_iter()
            .flatten()
        {
            if let Some((k, v)) = entry.split_once('=') {
                vars.insert(k.to_string(), v.to_string());
            }
        }
        vars
    }

    fn command_args(&self, state: &State, command: &Command) -> Vec<String> {
        let config = state.config.config.clone().unwrap_or_default();
        shell_form(&config, command)
    }

    /// What a RUN runs: `args` with the state's environment, directory and
    /// user; its mounts' relative targets under the directory.
    fn step(
        &self,
        state: &State,
        args: Vec<String>,
        stdin: Option<Vec<u8>>,
        mounts: &[runtime::StepMount],
    ) -> runtime::Step {
        let config = state.config.config.clone().unwrap_or_default();
        let mut env = config.env.clone().unwrap_or_default();
        for (key, value) in &state.args {
            if !env
                .iter()
                .any(|e| e.split_once('=').is_some_and(|(k, _)| k == key))
            {
                env.push(format!("{key}={value}"));
            }
        }
        let cwd = config.working_dir.clone().unwrap_or_default();
        let mounts = mounts
            .iter()
            .cloned()
            .map(|mut mount| {
                let target = mount.target_mut();
                *target = absolute(&cwd, target);
                mount
            })
            .collect();
        runtime::Step {
            args,
            env,
            cwd,
            user: config.user.clone().unwrap_or_default(),
            stdin,
            clamp_mtime: self.options.source_date_epoch,
            mounts,
        }
    }

    /// Runs a RUN step in the build's VM; its layer goes into the store.
    async fn run_step(
        &mut self,
        state: &State,
        step: runtime::Step,
        network: Option<String>,
        id: usize,
        text: &str,
    ) -> Result<cache::Entry, StepError> {
        let mut layer = self.images.new_layer()?;
        let mut tail = Tail::default();
        let mut builder = self.builder_for(state, network).await?;
        let progress = &mut *self.progress;
        let mut output = |data: &[u8]| {
            tail.push(data);
            progress(Event::Output { id, data });
        };
        let code = match builder.vm.run(&step, &mut output, &mut layer).await {
            Ok(code) => code,
            Err(e) => {
                // What the VM holds is unknown now: the next step boots anew.
                builder.vm.stop().await;
                return Err(e.into());
            }
        };
        if code != 0 {
            // The build ends here; its end stops the builder.
            self.builder = Some(builder);
            return Err(StepError::RunFailed {
                command: text.to_string(),
                code,
                output: tail.summary(),
            });
        }
        let layer = match layer.finish() {
            Ok(layer) => layer,
            Err(e) => {
                // The VM's root has the step, the build's layers do not.
                builder.vm.stop().await;
                return Err(e.into());
            }
        };
        builder.layers.push(layer.descriptor.clone());
        self.builder = Some(builder);
        Ok(cache::Entry {
            layer: layer.descriptor,
            diff_id: layer.diff_id,
            created: self.now(),
        })
    }

    /// The build's VM, taken out of `self` for a step, with `state`'s root
    /// filesystem: the one running when
    /// its root is some of the state's layers and it joined the same
    /// network, with the rest of the layers stacked on; otherwise a new one
    /// booted on a snapshot of the state.
    async fn builder_for(
        &mut self,
        state: &State,
        network: Option<String>,
    ) -> Result<RunningBuilder, StepError> {
        let reusable = self.builder.as_ref().is_some_and(|b| {
            b.network == network
                && b.layers.len() <= state.layers.len()
                && b.layers
                    .iter()
                    .zip(&state.layers)
                    .all(|(a, b)| a.digest == b.digest)
                && b.vm.can_stack(state.layers.len() - b.layers.len())
        });
        if !reusable {
            self.stop_builder().await;
            // A cache another build holds is left out: its steps get a
            // private one.
            let mut caches = Vec::new();
            for id in &self.cache_ids {
                caches.extend(cache_mount::open(self.app_root, id)?);
            }
            let machine = runtime::Machine {
                base: self.parent_snapshot(state).await?,
                network: network.clone(),
                cpus: self.options.cpus,
                memory_mib: self.options.memory_mib,
                caches: caches
                    .iter()
                    .map(|c| (c.id.clone(), c.path.clone()))
                    .collect(),
            };
            tracing::debug!("booting a builder VM");
            self.builder = Some(RunningBuilder {
                vm: runtime::BuildVm::boot(self.app_root, &machine).await?,
                layers: state.layers.clone(),
                network,
                _caches: caches,
            });
        }
        let mut builder = self.builder.take().expect("a builder runs");
        while builder.layers.len() < state.layers.len() {
            let layer = state.layers[builder.layers.len()].clone();
            let added = match self.images.open_layer(&layer) {
                Ok(reader) => builder.vm.add_layer(reader).await.map_err(StepError::from),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = added {
                builder.vm.stop().await;
                return Err(e);
            }
            builder.layers.push(layer);
        }
        Ok(builder)
    }

    async fn stop_builder(&mut self) {
        if let Some(builder) = self.builder.take() {
            builder.vm.stop().await;
        }
    }

    /// The root filesystem a RUN starts from: the snapshot of an image of
    /// just the state's layers.
    async fn parent_snapshot(&mut self, state: &State) -> Result<PathBuf, StepError> {
        let mut bare = ImageConfig::empty(state.config.platform.clone());
        bare.rootfs.diff_ids = state.config.rootfs.diff_ids.clone();
        let digest = self.images.write_image(&bare, &state.layers)?;
        self.snapshots.insert(digest.clone());
        let app_root = self.app_root.to_path_buf();
        tokio::task::spawn_blocking(move || ImageStore::open(&app_root)?.snapshot_of(&digest))
            .await
            .expect("the snapshot task does not panic")
            .map_err(StepError::from)
    }

    #[allow(clippy::too_many_arguments)]
    async fn copy(
        &mut self,
        state: &mut State,
        request: &dockerfile::Copy,
        is_add: bool,
        kind: &Kind,
        scope: &Scope<'_, '_>,
        id: usize,
        text: &str,
    ) -> Result<(), StepError> {
        let (stages, index, built) = (scope.stages, scope.index, scope.built);
        let mut paths = Vec::new();
        let mut inline = Vec::new();
        let mut urls = Vec::new();
        for source in &request.sources {
            match source {
                Source::Path(path) if is_add && copy::is_url(path) => urls.push(path.clone()),
                Source::Path(path) if is_add && path.starts_with("git@") => {
                    return Err(StepError::Unsupported(format!(
                        "ADD {path}: git sources are not supported"
                    )));
                }
                Source::Path(path) => paths.push(path.clone()),
                Source::Inline { name, content, .. } => {
                    inline.push((name.clone(), content.clone()))
                }
            }
        }
        let workdir = state
            .config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .unwrap_or_else(|| "/".into());
        let mut dest = absolute(&workdir, &request.dest);
        if request.dest.ends_with('/') && !dest.ends_with('/') {
            dest.push('/');
        }
        // Downloads, or another stage's or image's files unpacked (only what
        // is asked for), go to a temporary directory made for those alone.
        let unpacked = match (urls.is_empty(), &request.from) {
            (true, None) => None,
            _ => Some(
                tempfile::Builder::new()
                    .prefix("build-from-")
                    .tempdir_in(self.app_root)
                    .map_err(io("make a temporary directory"))?,
            ),
        };
        let scratch = || unpacked.as_ref().expect("made for URLs and --from").path();
        let none = Ignore::none();
        if !urls.is_empty() {
            if !paths.is_empty() || !inline.is_empty() {
                return Err(StepError::Unsupported(
                    "ADD of a URL cannot be mixed with other sources: use one ADD each".into(),
                ));
            }
            // Fetched on the host, but only where the build has a network.
            if self.network.is_none() {
                return Err(StepError::Unsupported(format!(
                    "ADD {}: downloading needs a network, and this build has none (--network)",
                    urls[0]
                )));
            }
            for url in &urls {
                paths.push(copy::download(url, scratch()).await?);
            }
        }
        let (root, ignore, keep_owner) = match &request.from {
            None if !urls.is_empty() => (scratch(), &none, false),
            None => (self.options.context.as_path(), &self.ignore, false),
            Some(from) => {
                let layers = match stage_index(stages, from, index) {
                    Some(i) => built[i]
                        .as_ref()
                        .expect("a needed stage is built first")
                        .layers
                        .clone(),
                    None => self.base_image(from).await?.layers,
                };
                let prefixes: Vec<String> = paths
                    .iter()
                    .map(|p| {
                        let literal = p.split(['*', '?', '[']).next().unwrap_or("");
                        let literal = if literal.len() < p.len() {
                            literal.rsplit_once('/').map_or("", |(dir, _)| dir)
                        } else {
                            literal
                        };
                        copy::normalize(literal).unwrap_or_default()
                    })
                    .collect();
                self.unpack(&layers, &prefixes, scratch())?;
                (scratch(), &none, true)
            }
        };
        let owner = match &request.chown {
            None => None,
            Some(spec) => {
                let etc = tempfile::Builder::new()
                    .prefix("build-etc-")
                    .tempdir_in(self.app_root)
                    .map_err(io("make a temporary directory"))?;
                let needs_names = spec.split(':').any(|p| p.parse::<u32>().is_err());
                if needs_names {
                    self.unpack(
                        &state.layers,
                        &["etc/passwd".into(), "etc/group".into()],
                        etc.path(),
                    )?;
                }
                Some(copy::resolve_owner(spec, &etc.path().join("etc"))?)
            }
        };
        let chmod = request
            .chmod
            .as_deref()
            .map(copy::parse_chmod)
            .transpose()?;
        let tree = copy::Tree {
            root,
            ignore,
            keep_owner,
            is_context: request.from.is_none(),
        };
        let copy_request = copy::Request {
            sources: &paths,
            inline: &inline,
            dest: &dest,
            owner,
            chmod,
            // Docker extracts local archives only.
            extract: is_add && urls.is_empty(),
        };
        // The tar is written once: its digest is the step's input, and on a
        // miss the same bytes become the layer.
        let spool = tempfile::tempfile_in(self.app_root).map_err(io("make a temporary file"))?;
        let hashed = copy::write_layer(
            &tree,
            &copy_request,
            self.options.source_date_epoch,
            Hashed::new(spool),
        )?;
        let (mut spool, tar_digest) = hashed.finish();
        let key = cache::key(&[&state.key, &format!("{kind:?}"), &tar_digest]);
        let entry = match self.cached(&key) {
            Some(entry) => {
                (self.progress)(Event::Cached { id });
                entry
            }
            None => {
                spool.rewind().map_err(io("read the layer back"))?;
                let mut layer = self.images.new_layer()?;
                std::io::copy(&mut spool, &mut layer).map_err(io("store the layer"))?;
                let layer = layer.finish()?;
                let entry = cache::Entry {
                    layer: layer.descriptor,
                    diff_id: layer.diff_id,
                    created: self.now(),
                };
                self.cache.put(&key, &entry).map_err(image::Error::from)?;
                entry
            }
        };
        self.add_layer(state, entry, text);
        state.key = key;
        Ok(())
    }

    fn unpack(
        &self,
        layers: &[Descriptor],
        prefixes: &[String],
        dir: &Path,
    ) -> Result<(), StepError> {
        let readers = layers
            .iter()
            .map(|l| self.images.open_layer(l))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(copy::unpack_layers(readers, prefixes, dir)?)
    }

    /// The cache's entry for `key`, unless `--no-cache` or its layer is gone.
    fn cached(&self, key: &str) -> Option<cache::Entry> {
        if self.options.no_cache {
            return None;
        }
        self.cache
            .get(key)
            .filter(|entry| self.images.has_blob(&entry.layer))
    }

    fn add_layer(&self, state: &mut State, entry: cache::Entry, text: &str) {
        state.layers.push(entry.layer);
        state.config.rootfs.diff_ids.push(entry.diff_id);
        state.config.history.push(History {
            created: Some(entry.created),
            created_by: Some(text.to_string()),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: false,
        });
    }

    /// The target's final config, with the build's labels; stored, not named.
    fn finish(&mut self, mut state: State) -> Result<String, Error> {
        if !self.options.labels.is_empty() {
            let config = state
                .config
                .config
                .get_or_insert_with(ContainerConfig::default);
            config
                .labels
                .get_or_insert_with(BTreeMap::new)
                .extend(self.options.labels.clone());
        }
        state.config.created = Some(match self.options.source_date_epoch {
            Some(_) => self.now(),
            // The newest step's time: an unchanged build gives the same image.
            None => state
                .config
                .history
                .iter()
                .filter_map(|h| h.created.clone())
                .max()
                .unwrap_or_else(|| self.now()),
        });
        Ok(self.images.write_image(&state.config, &state.layers)?)
    }

    fn start(&mut self, name: &str) -> usize {
        self.next_id += 1;
        (self.progress)(Event::Started {
            id: self.next_id,
            name,
        });
        self.next_id
    }

    fn expand(
        &self,
        instruction: &Instruction,
        vars: &BTreeMap<String, String>,
    ) -> Result<Kind, Error> {
        instruction
            .expanded(self.dockerfile.escape, &|name| vars.get(name).cloned())
            .map_err(|source| Error::Parse {
                file: self.file.clone(),
                source,
            })
    }

    fn at(&self, instruction: &Instruction, source: StepError) -> Error {
        Error::At {
            file: self.file.clone(),
            line: instruction.line,
            source: Box::new(source),
        }
    }

    /// Now, or SOURCE_DATE_EPOCH, as RFC 3339.
    fn now(&self) -> String {
        let time = match self.options.source_date_epoch {
            Some(epoch) => UNIX_EPOCH + Duration::from_secs(epoch),
            None => SystemTime::now(),
        };
        humantime::format_rfc3339_seconds(time).to_string()
    }
}

/// However the build ends (an error, or dropped on Ctrl-C), the snapshots
/// it made for its steps go.
impl Drop for Builder<'_> {
    fn drop(&mut self) {
        for digest in &self.snapshots {
            self.images.remove_snapshot(digest);
        }
    }
}

/// The cache mount ids the Dockerfile's RUNs name, in order, as many as a
/// builder VM takes disks for (the rest get private caches).
fn cache_ids(dockerfile: &Dockerfile) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for instruction in &dockerfile.instructions {
        let Kind::Run { mounts, .. } = &instruction.kind else {
            continue;
        };
        for mount in mounts {
            if let runtime::StepMount::Cache { id, .. } = mount
                && !ids.contains(id)
            {
                ids.push(id.clone());
            }
        }
    }
    ids.truncate(runtime::MAX_CACHE_DISKS);
    ids
}

/// The stage a name refers to, if it is an earlier stage's name or index.
fn stage_index(stages: &[Stage], name: &str, before: usize) -> Option<usize> {
    let lower = name.to_lowercase();
    stages[..before]
        .iter()
        .position(|s| s.name.as_deref() == Some(lower.as_str()))
        .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
}

/// A command's argv: exec form as written, shell form through `SHELL`
/// (`/bin/sh -c` by default).
fn shell_form(config: &ContainerConfig, command: &Command) -> Vec<String> {
    match command {
        Command::Exec(args) => args.clone(),
        Command::Shell(text) => {
            let mut args = config
                .shell
                .clone()
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
            args.push(text.clone());
            args
        }
    }
}

/// `path` made absolute against `dir`, as WORKDIR and COPY destinations are.
fn absolute(dir: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", dir.trim_end_matches('/'))
    };
    format!("/{}", copy::normalize(&joined).unwrap_or_default())
}

/// A HEALTHCHECK duration (`30s`, `1m30s`, `500ms`) in nanoseconds.
fn duration_ns(text: &str) -> Result<u64, StepError> {
    humantime::parse_duration(text)
        .map(|d| d.as_nanos() as u64)
        .map_err(|e| StepError::Unsupported(format!("invalid duration {text:?}: {e}")))
}

/// A writer that hashes what passes through it.
struct Hashed<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Hashed<W> {
    fn new(inner: W) -> Self {
        Hashed {
            inner,
            hasher: Sha256::new(),
        }
    }

    fn finish(self) -> (W, String) {
        (
            self.inner,
            String::from(image::Digest::from_hasher(self.hasher)),
        )
    }
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The last lines a failing step printed, for its error.
#[derive(Default)]
struct Tail {
    text: Vec<u8>,
}

impl Tail {
    const KEEP: usize = 4096;
    const LINES: usize = 5;

    fn push(&mut self, data: &[u8]) {
        self.text.extend_from_slice(data);
        if self.text.len() > Self::KEEP {
            self.text.drain(..self.text.len() - Self::KEEP);
        }
    }

    fn summary(&self) -> String {
        let text = String::from_utf8_lossy(&self.text);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = &lines[lines.len().saturating_sub(Self::LINES)..];
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {}", tail.join(" | "))
        }
    }
}
