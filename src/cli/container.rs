//! Container commands: run, create, start, stop, kill, rm, ls, inspect,
//! logs, exec, wait, stats. Thin: parsing and printing; the runtime acts.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::filter::Filters;
use super::image::PlatformArgs;
use super::output::{self, ListFormat, human_size, print_json, print_table, print_template};
use super::parse_scheme;
use super::template::Template;
use crate::image::{PullOptions, SNAPSHOT_SIZE_BYTES, Scheme};
use crate::network;
use crate::runtime::container::Unreadable;
use crate::runtime::{self, Attach, Container, Containers, RunSpec, Status, Ulimit};
use crate::volume;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The flags `run` and `create` share.
#[derive(Args)]
pub struct CreateArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the host's value).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read environment variables from a file, one KEY=VALUE per line.
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    #[command(flatten)]
    user: UserArgs,
    /// Working directory inside the container (created when missing).
    #[arg(short, long = "workdir", visible_alias = "cwd", value_name = "DIR")]
    workdir: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// A name for the container; also its hostname.
    #[arg(long)]
    name: Option<String>,
    /// Write the container's ID to this file.
    #[arg(long, value_name = "FILE")]
    cidfile: Option<PathBuf>,
    /// A label, KEY=VALUE.
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
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
    /// Size of the container's root filesystem: size=SIZE with a K, M, G or
    /// T suffix (default and minimum: the image's 8G; written blocks only
    /// take disk space).
    #[arg(long, value_name = "size=SIZE", value_parser = parse_storage_opt)]
    storage_opt: Option<u64>,
    /// Size of /dev/shm, with a K, M, G or T suffix (bytes without one) [default: 64M].
    #[arg(long, value_name = "SIZE", value_parser = parse_shm_size)]
    shm_size: Option<u64>,
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
    ulimit: Vec<Ulimit>,
    /// Registry scheme: https, http, or auto (http for loopback and private addresses).
    #[arg(long, default_value = "auto", value_parser = parse_scheme)]
    scheme: Scheme,
    /// The network to attach to, or `none` for loopback only [default: default].
    #[arg(long, value_name = "NAME")]
    network: Option<String>,
    /// Publish a container port on the host: [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp],
    /// ports or ranges (8000-8010:8000-8010); HOST_IP defaults to 0.0.0.0.
    #[arg(short, long, value_name = "PORTS", value_parser = parse_publish)]
    publish: Vec<Vec<network::ports::Port>>,
    #[command(flatten)]
    dns: DnsArgs,
    /// Bind a host path (HOST_PATH:PATH[:ro], HOST_PATH absolute or ./relative),
    /// mount a named volume (NAME:PATH[:ro], created on first use), or give
    /// PATH a new anonymous volume.
    #[arg(short = 'v', long = "volume", value_name = "SOURCE:PATH[:OPTIONS]")]
    volume: Vec<String>,
    /// Mount a filesystem: type=bind|volume|tmpfs,source=...,target=...[,readonly].
    #[arg(long = "mount", value_name = "type=TYPE,source=SRC,target=PATH")]
    mount: Vec<String>,
    /// Mount a new tmpfs: PATH[:size=SIZE,mode=MODE,exec,...] (noexec, nosuid and nodev by default).
    #[arg(long, value_name = "PATH[:OPTIONS]")]
    tmpfs: Vec<String>,
    /// Which platform's image to use, and to pull when the stored one is another's.
    #[command(flatten)]
    platform: PlatformArgs,
    /// The image, then the command and its arguments (default: the image's).
    /// Everything after the image belongs to the command, flags included.
    #[arg(
        required = true,
        trailing_var_arg = true,
        value_name = "IMAGE [COMMAND [ARG...]]"
    )]
    image_and_command: Vec<String>,
}

/// What the container is told about names (Apple's and Docker's flags).
#[derive(Args)]
pub struct DnsArgs {
    /// A name server for the container's resolv.conf, instead of the network's.
    #[arg(long, value_name = "IP")]
    dns: Vec<std::net::IpAddr>,
    /// A search domain for the container's resolv.conf.
    #[arg(long, value_name = "DOMAIN")]
    dns_search: Vec<String>,
    /// An option for the container's resolv.conf (e.g. ndots:2).
    #[arg(long, value_name = "OPTION")]
    dns_option: Vec<String>,
    /// The default domain of the container's resolv.conf.
    #[arg(long, value_name = "DOMAIN")]
    dns_domain: Option<String>,
    /// Leave the image's resolv.conf as it is.
    #[arg(long, conflicts_with_all = ["dns", "dns_search", "dns_option", "dns_domain"])]
    no_dns: bool,
    /// Add a line to /etc/hosts: NAME:IP, or NAME:host-gateway for the host.
    #[arg(long, value_name = "NAME:IP", value_parser = parse_add_host)]
    add_host: Vec<network::dns::ExtraHost>,
}

fn parse_publish(s: &str) -> std::result::Result<Vec<network::ports::Port>, String> {
    network::ports::parse(s).map_err(|e| e.to_string())
}

fn parse_add_host(s: &str) -> std::result::Result<network::dns::ExtraHost, String> {
    network::dns::parse_extra_host(s).map_err(|e| e.to_string())
}

/// Who a process runs as: Docker's `-u` and Apple's `--uid`/`--gid`
/// (`run`, `create` and `exec`).
#[derive(Args)]
pub struct UserArgs {
    /// User to run as: name, uid, name:group or uid:gid (wins over --uid and --gid).
    #[arg(short, long)]
    user: Option<String>,
    /// User ID to run as (its group from the image's /etc/passwd, unless --gid).
    #[arg(long)]
    uid: Option<u32>,
    /// Group ID to run as.
    #[arg(long)]
    gid: Option<u32>,
}

#[derive(Args)]
pub struct RunArgs {
    /// Run in the background and print the container's ID.
    #[arg(short, long)]
    detach: bool,
    #[command(flatten)]
    create: CreateArgs,
}

/// The smallest VM memory the guest kernel and a workload fit in.
const MIN_MEMORY_MIB: u64 = 200;

async fn create_container(app_root: &Path, args: CreateArgs) -> Result<Container> {
    let mut env = Vec::new();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("read env file {}: {e}", file.display()))?;
        env.extend(parse_env_file(&text));
    }
    env.extend(args.env);
    let cwd = std::env::current_dir().map_err(|e| format!("find the current directory: {e}"))?;
    let mut mounts = Vec::new();
    for spec in &args.volume {
        mounts.push(volume::spec::parse_volume(spec, &cwd)?);
    }
    for spec in &args.mount {
        mounts.push(volume::spec::parse_mount(spec, &cwd)?);
    }
    for spec in &args.tmpfs {
        mounts.push(volume::spec::parse_tmpfs(spec)?);
    }
    let mut image_and_command = args.image_and_command.into_iter();
    let spec = RunSpec {
        image: image_and_command.next().unwrap_or_default(),
        args: image_and_command.collect(),
        entrypoint: args.entrypoint,
        env: env.into_iter().filter_map(resolve_env).collect(),
        user: args.user.user.unwrap_or_default(),
        uid: args.user.uid,
        gid: args.user.gid,
        workdir: args.workdir,
        name: args.name,
        cpus: args.cpus,
        memory_mib: args.memory,
        rootfs_bytes: args.storage_opt,
        shm_size_bytes: args.shm_size,
        init: args.init,
        read_only: args.read_only,
        cap_add: args.cap_add,
        cap_drop: args.cap_drop,
        ulimits: args.ulimit,
        labels: args.label,
        interactive: args.interactive,
        tty: args.tty,
        remove: args.rm,
        network: args.network,
        publish: args.publish.into_iter().flatten().collect(),
        dns: network::dns::DnsConfig {
            servers: args.dns.dns,
            search: args.dns.dns_search,
            options: args.dns.dns_option,
            domain: args.dns.dns_domain,
            disabled: args.dns.no_dns,
            hosts: args.dns.add_host,
        },
        mounts,
    };
    let pull = PullOptions {
        scheme: args.scheme,
        platform: args.platform.platform()?,
        ..PullOptions::default()
    };
    let container = runtime::create(app_root, &spec, &pull).await?;
    if let Some(cidfile) = &args.cidfile {
        std::fs::write(cidfile, container.id())
            .map_err(|e| format!("write {}: {e}", cidfile.display()))?;
    }
    Ok(container)
}

pub async fn run(app_root: &Path, args: RunArgs) -> Result<i32> {
    let container = create_container(app_root, args.create).await?;
    if args.detach {
        runtime::start(app_root, &container, Attach::No).await?;
        println!("{}", container.id());
        return Ok(0);
    }
    let stdin = container.config.spec.interactive;
    let output = Attach::Yes {
        stdin,
        output: &StdStreams,
    };
    Ok(ended(runtime::start(app_root, &container, output).await?))
}

/// Our stdout and stderr, where a container's output goes; flushed at each
/// piece, so it shows as the container writes it.
struct StdStreams;

impl runtime::Output for StdStreams {
    fn write(&self, stream: runtime::logs::Stream, data: &[u8]) -> std::io::Result<()> {
        fn write(mut out: impl std::io::Write, data: &[u8]) -> std::io::Result<()> {
            out.write_all(data)?;
            out.flush()
        }
        match stream {
            runtime::logs::Stream::Stderr => write(std::io::stderr().lock(), data),
            runtime::logs::Stream::Stdout => write(std::io::stdout().lock(), data),
        }
    }
}

/// Tells how an attached process ended, where it is more than a code, and
/// returns the code.
fn ended(end: runtime::Ended) -> i32 {
    match &end {
        runtime::Ended::Exited(_) => {}
        runtime::Ended::NotStarted { message, .. } => eprintln!("Error: {message}"),
        runtime::Ended::Abandoned(_) => {
            eprintln!("got 3 SIGINT/SIGTERM, exiting; the container keeps running")
        }
    }
    end.code()
}

pub async fn create(app_root: &Path, args: CreateArgs) -> Result<i32> {
    let container = create_container(app_root, args).await?;
    println!("{}", container.id());
    Ok(0)
}

#[derive(Args)]
pub struct StartArgs {
    /// Attach to the container's output (and stdin with -i).
    #[arg(short, long)]
    attach: bool,
    /// With -a, forward stdin too (the container must have been created with -i).
    #[arg(short, long, requires = "attach")]
    interactive: bool,
    container: String,
}

pub async fn start(app_root: &Path, args: StartArgs) -> Result<i32> {
    let container = Containers::open(app_root)?.find(&args.container)?;
    if args.attach {
        let attach = Attach::Yes {
            stdin: args.interactive,
            output: &StdStreams,
        };
        return Ok(ended(runtime::start(app_root, &container, attach).await?));
    }
    runtime::start(app_root, &container, Attach::No).await?;
    println!("{}", args.container);
    Ok(0)
}

/// Failures of single containers in a command that acts on several: each
/// is reported on its own line and the rest still go, as in Docker; the
/// command then exits 1.
#[derive(Default)]
struct Failures(bool);

impl Failures {
    fn report(&mut self, e: impl std::fmt::Display) {
        eprintln!("Error: {e}");
        self.0 = true;
    }

    fn exit_code(&self) -> i32 {
        i32::from(self.0)
    }
}

/// Containers named on the command line, each once, or all of them with
/// `--all`; an unreadable record among them is a failure of its own, as is
/// a name that matches none.
fn targets(
    app_root: &Path,
    names: &[String],
    all: bool,
    failures: &mut Failures,
) -> Result<Vec<Container>> {
    let (found, unreadable) = select(app_root, names, all, failures)?;
    unreadable.into_iter().for_each(|u| failures.report(u));
    Ok(found)
}

/// What [`targets`] selects, with the unreadable records apart.
fn select(
    app_root: &Path,
    names: &[String],
    all: bool,
    failures: &mut Failures,
) -> Result<(Vec<Container>, Vec<Unreadable>)> {
    let containers = Containers::open(app_root)?;
    if all {
        return Ok(containers.list()?);
    }
    if names.is_empty() {
        return Err("name at least one container, or use --all".into());
    }
    let mut found: Vec<Container> = Vec::new();
    let mut unreadable: Vec<Unreadable> = Vec::new();
    for name in names {
        match containers.find(name) {
            Ok(c) if found.iter().any(|f| f.id() == c.id()) => {}
            Ok(c) => found.push(c),
            Err(runtime::Error::Unreadable(u)) if unreadable.iter().any(|f| f.id == u.id) => {}
            Err(runtime::Error::Unreadable(u)) => unreadable.push(u),
            Err(e) => failures.report(e),
        }
    }
    Ok((found, unreadable))
}

#[derive(Args)]
pub struct StopArgs {
    /// Stop every running container.
    #[arg(short, long, conflicts_with = "containers")]
    all: bool,
    /// The signal to send first.
    #[arg(short, long, default_value = "SIGTERM", value_parser = parse_signal)]
    signal: i32,
    /// Seconds to wait before killing.
    #[arg(short, long, default_value_t = 5)]
    time: u64,
    containers: Vec<String>,
}

pub async fn stop(app_root: &Path, args: StopArgs) -> Result<i32> {
    let mut failures = Failures::default();
    for container in targets(app_root, &args.containers, args.all, &mut failures)? {
        match runtime::stop(&container, args.signal, Duration::from_secs(args.time)).await {
            Ok(()) => println!("{}", container.config.name),
            Err(e) => failures.report(e),
        }
    }
    Ok(failures.exit_code())
}

#[derive(Args)]
pub struct KillArgs {
    /// Signal every running container.
    #[arg(short, long, conflicts_with = "containers")]
    all: bool,
    #[arg(short, long, default_value = "SIGKILL", value_parser = parse_signal)]
    signal: i32,
    containers: Vec<String>,
}

pub async fn kill(app_root: &Path, args: KillArgs) -> Result<i32> {
    let mut failures = Failures::default();
    let mut containers = targets(app_root, &args.containers, args.all, &mut failures)?;
    if args.all {
        containers.retain(|c| c.state().is_ok_and(|s| s.status == Status::Running));
    }
    for container in containers {
        match runtime::kill(&container, args.signal).await {
            Ok(()) => println!("{}", container.config.name),
            Err(e) => failures.report(e),
        }
    }
    Ok(failures.exit_code())
}

#[derive(Args)]
pub struct RemoveArgs {
    /// Remove running containers too (killing them).
    #[arg(short, long)]
    force: bool,
    /// Remove every container (running ones only with --force).
    #[arg(short, long, conflicts_with = "containers")]
    all: bool,
    /// Remove the containers' anonymous volumes too.
    #[arg(short, long)]
    volumes: bool,
    containers: Vec<String>,
}

pub async fn remove(app_root: &Path, args: RemoveArgs) -> Result<i32> {
    let mut failures = Failures::default();
    let (mut containers, unreadable) = select(app_root, &args.containers, args.all, &mut failures)?;
    if args.all && !args.force {
        containers.retain(|c| c.state().is_ok_and(|s| s.status != Status::Running));
    }
    for container in containers {
        match runtime::remove(app_root, &container, args.force, args.volumes).await {
            Ok(()) => println!("{}", container.config.name),
            Err(e) => failures.report(e),
        }
    }
    // Whether an unreadable one runs cannot be known: it goes with --force.
    for record in unreadable {
        if !args.force {
            failures.report(record);
            continue;
        }
        match runtime::remove_unreadable(app_root, &record).await {
            Ok(()) => println!("{}", &record.id[..record.id.len().min(12)]),
            Err(e) => failures.report(e),
        }
    }
    Ok(failures.exit_code())
}

#[derive(Args)]
pub struct ListArgs {
    /// Show stopped containers too.
    #[arg(short, long)]
    all: bool,
    #[command(flatten)]
    list: output::ListArgs,
    /// Only containers that match: status=created|running|exited, label=KEY[=VALUE],
    /// name=TEXT, id=PREFIX, ancestor=IMAGE, exited=CODE, network=NAME, volume=NAME.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// The N most recently created containers, in any state.
    #[arg(short = 'n', long = "last", value_name = "N")]
    last: Option<usize>,
    /// The most recently created container, in any state.
    #[arg(short, long)]
    latest: bool,
    /// Full IDs and commands.
    #[arg(long)]
    no_trunc: bool,
    /// Each container's disk use: its own writes, and with its image's ("virtual").
    #[arg(short, long)]
    size: bool,
}

/// The fields `ls --format` templates see, as `docker ps` names them.
const LIST_FIELDS: [&str; 15] = [
    "ID",
    "Names",
    "Image",
    "Command",
    "CreatedAt",
    "RunningFor",
    "Status",
    "State",
    "Ports",
    "IP",
    "Labels",
    "Label",
    "Mounts",
    "Networks",
    "Size",
];
const LIST_HEADERS: [(&str, &str); 15] = [
    ("ID", "CONTAINER ID"),
    ("Names", "NAMES"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("State", "STATE"),
    ("Ports", "PORTS"),
    ("IP", "IP"),
    ("Labels", "LABELS"),
    ("Label", "LABEL"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("Size", "SIZE"),
];
const LIST_FILTERS: [&str; 8] = [
    "status", "label", "name", "id", "ancestor", "exited", "network", "volume",
];

pub async fn list(app_root: &Path, args: ListArgs) -> Result<i32> {
    let filters = Filters::parse(&args.filter, &LIST_FILTERS)?;
    for status in filters.values("status") {
        if ![
            "created",
            "running",
            "exited",
            "paused",
            "restarting",
            "removing",
            "dead",
        ]
        .contains(&status.as_str())
        {
            return Err(
                format!("bad status filter {status:?}: use created, running or exited").into(),
            );
        }
    }
    if let ListFormat::Template(template) = &args.list.format {
        template.check(&LIST_FIELDS)?;
    }
    let last = args.last.or(args.latest.then_some(1));
    // As Docker: a status filter or -n shows stopped containers too.
    let all = args.all || last.is_some() || filters.has("status");
    let mut ancestors = HashMap::new();
    if filters.has("ancestor") {
        let images = crate::image::ImageStore::open(app_root)?;
        for wanted in filters.values("ancestor") {
            // An image no longer stored is matched by name alone.
            let found = images.inspect(wanted).unwrap_or_default();
            let digests = found.into_iter().map(|image| image.digest).collect();
            ancestors.insert(wanted.clone(), digests);
        }
    }
    let mut failures = Failures::default();
    let mut rows = Vec::new();
    let (containers, unreadable) = Containers::open(app_root)?.list()?;
    // Named, not hidden: the rest are still listed.
    unreadable.into_iter().for_each(|u| failures.report(u));
    // Newest first, as `docker ps` lists them.
    for container in containers.into_iter().rev() {
        match container.state() {
            Ok(state) if all || state.status == Status::Running => {
                if matches(&container, &state, &filters, &ancestors) {
                    rows.push((container, state));
                }
            }
            Ok(_) | Err(runtime::Error::NoSuchContainer(_)) => {}
            Err(e) => failures.report(e),
        }
    }
    if let Some(last) = last {
        rows.truncate(last);
    }
    if args.list.quiet {
        for (container, _) in &rows {
            println!("{}", container.id());
        }
        return Ok(failures.exit_code());
    }
    let image_sizes = if args.size {
        crate::image::ImageStore::open(app_root)?
            .list()?
            .into_iter()
            .map(|image| (image.digest, image.size))
            .collect()
    } else {
        HashMap::new()
    };
    let size = |c: &Container| {
        args.size.then(|| {
            let own = c.disk_bytes();
            let image = image_sizes
                .get(&c.config.image_digest)
                .copied()
                .unwrap_or(0);
            format!("{} (virtual {})", human_size(own), human_size(own + image))
        })
    };
    match &args.list.format {
        ListFormat::Json => {
            let volumes = volume::Volumes::open(app_root)?;
            let all: Vec<_> = rows
                .iter()
                .map(|(c, s)| inspect_json(c, s, &volumes))
                .collect();
            print_json(&all)?;
        }
        ListFormat::Template(template) => {
            let records: Vec<_> = rows
                .iter()
                .map(|(c, s)| list_record(c, s, args.no_trunc, size(c)))
                .collect();
            print_template(template, &records, Some(&LIST_FIELDS), &LIST_HEADERS)?;
        }
        ListFormat::Table => {
            let mut header = [
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "IP",
                "PORTS",
                "NAME",
            ]
            .map(String::from)
            .to_vec();
            if args.size {
                header.push("SIZE".into());
            }
            let lines = rows.iter().map(|(c, s)| {
                let record = list_record(c, s, args.no_trunc, size(c));
                let mut line = [
                    "ID",
                    "Image",
                    "Command",
                    "RunningFor",
                    "Status",
                    "IP",
                    "Ports",
                    "Names",
                ]
                .map(|field| record[field].as_str().unwrap_or_default().to_string())
                .to_vec();
                if args.size {
                    line.push(text_field(&record["Size"]));
                }
                line
            });
            print_table(std::iter::once(header).chain(lines));
        }
    }
    Ok(failures.exit_code())
}

/// Whether a container passes `ls --filter`; `ancestors` holds the digests
/// of the images each `ancestor=` value names.
fn matches(
    container: &Container,
    state: &runtime::State,
    filters: &Filters,
    ancestors: &HashMap<String, Vec<String>>,
) -> bool {
    let c = &container.config;
    let state_name = match state.status {
        Status::Created => "created",
        Status::Running => "running",
        Status::Stopped => "exited",
    };
    filters.any("status", |v| v == state_name)
        && filters.labels_match(&super::pairs(&c.spec.labels))
        && filters.any("name", |v| c.name.contains(v))
        && filters.any("id", |v| c.id.starts_with(v))
        && filters.any("ancestor", |v| is_image(container, v, ancestors))
        && filters.any("exited", |v| {
            state.status == Status::Stopped
                && state.exit_code.map(|e| e.to_string()).as_deref() == Some(v)
        })
        && filters.any("network", |v| {
            c.endpoint.as_ref().is_some_and(|e| e.network == v)
        })
        && filters.any("volume", |v| {
            c.spec
                .mounts
                .iter()
                .any(|m| m.type_name() == "volume" && m.source() == v)
        })
}

/// Docker's `ancestor` filter: the image as the container names it, that
/// name without its tag (`busybox` for `busybox:latest`), or an image the
/// store finds by `wanted` (a reference, digest or ID) that the container
/// was created from.
fn is_image(container: &Container, wanted: &str, ancestors: &HashMap<String, Vec<String>>) -> bool {
    let image = &container.config.image;
    image == wanted
        || image
            .strip_prefix(wanted)
            .is_some_and(|tag| tag.starts_with(':') && !tag.contains('/'))
        || ancestors
            .get(wanted)
            .is_some_and(|digests| digests.contains(&container.config.image_digest))
}

/// A container as `ls` templates see it, with `docker ps`'s field names.
fn list_record(
    container: &Container,
    state: &runtime::State,
    no_trunc: bool,
    size: Option<String>,
) -> serde_json::Value {
    let c = &container.config;
    let mut command = c.command.join(" ");
    if !no_trunc && command.chars().count() > 22 {
        command = command.chars().take(21).collect::<String>() + "…";
    }
    let id = if no_trunc { &c.id[..] } else { &c.id[..12] };
    let labels = super::pairs(&c.spec.labels);
    let state_name = match state.status {
        Status::Created => "created",
        Status::Running => "running",
        Status::Stopped => "exited",
    };
    serde_json::json!({
        "ID": id,
        "Names": c.name,
        "Image": c.image,
        "Command": format!("\"{command}\""),
        "CreatedAt": created_at(c.created),
        "RunningFor": super::output::ago(c.created),
        "Status": status_text(state),
        "State": state_name,
        "Ports": network::ports::summary(&c.spec.publish),
        "IP": address(container, state).map_or(String::new(), |a| a.to_string()),
        "Labels": labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "Label": labels,
        "Mounts": c.spec.mounts.iter().filter(|m| m.type_name() != "tmpfs").map(|m| m.source()).collect::<Vec<_>>().join(","),
        "Networks": c.endpoint.as_ref().map_or(String::new(), |e| e.network.clone()),
        "Size": size.unwrap_or_default(),
    })
}

/// A time as Docker prints `CreatedAt`: `2026-12-07 10:04:17 +0000 UTC`.
fn created_at(seconds: u64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_secs(seconds);
    let rfc3339 = humantime::format_rfc3339_seconds(time).to_string();
    format!(
        "{} +0000 UTC",
        rfc3339.trim_end_matches('Z').replace('T', " ")
    )
}

/// The container's address: the one a DHCP server gave it while it runs,
/// else the one it was given at create (none yet behind the host's NAT).
fn address(container: &Container, state: &runtime::State) -> Option<std::net::Ipv4Addr> {
    let endpoint = container.config.endpoint.as_ref()?;
    state
        .address
        .or(Some(endpoint.address).filter(|a| !a.is_unspecified()))
}

fn status_text(state: &runtime::State) -> String {
    match (state.status, state.exit_code) {
        (Status::Running, _) => format!(
            "Up {}",
            super::output::ago(state.started.unwrap_or(0)).trim_end_matches(" ago")
        ),
        (Status::Stopped, Some(code)) => {
            format!(
                "Exited ({code}) {}",
                super::output::ago(state.finished.unwrap_or(0))
            )
        }
        (Status::Stopped, None) => "Exited".to_string(),
        (Status::Created, _) => "Created".to_string(),
    }
}

fn inspect_json(
    container: &Container,
    state: &runtime::State,
    volumes: &volume::Volumes,
) -> serde_json::Value {
    let c = &container.config;
    serde_json::json!({
        "id": c.id,
        "name": c.name,
        "image": c.image,
        "image_digest": c.image_digest,
        "command": c.command,
        "created": c.created,
        "status": state.status,
        "started": state.started,
        "finished": state.finished,
        "exit_code": state.exit_code,
        "reason": state.reason,
        "config": c.spec,
        "resources": { "cpus": c.spec.cpus, "memory_mib": c.spec.memory_mib },
        "network": c.endpoint.as_ref().map(|e| serde_json::json!({
            "name": e.network,
            "address": address(container, state).map(|a| a.to_string()),
            "mode": e.mode,
            "mac": crate::vm::MacAddress::derive(&c.id).to_string(),
            "ports": c.spec.publish.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })),
        "mounts": mounts_json(container, volumes),
        "disk": c.disk.path,
    })
}

/// A container's mounts as Docker's `inspect` shows them: where each comes
/// from on the host (a volume's directory, for a volume) and goes to.
fn mounts_json(container: &Container, volumes: &volume::Volumes) -> serde_json::Value {
    let mounts = container.config.spec.mounts.iter().map(|m| {
        let (name, source) = match &m.kind {
            volume::spec::Kind::Bind { source } => (None, Some(source.clone())),
            volume::spec::Kind::Volume { name, .. } => {
                let storage = volumes
                    .get(name)
                    .ok()
                    .map(|volume| volumes.storage(&volume).path().to_path_buf());
                (Some(name.clone()), storage)
            }
            volume::spec::Kind::Tmpfs { .. } => (None, None),
        };
        serde_json::json!({
            "type": m.type_name(),
            "name": name,
            "source": source,
            "destination": m.target,
            "read_only": m.read_only,
        })
    });
    mounts.collect()
}

#[derive(Args)]
pub struct InspectArgs {
    /// A Go template applied to each container's JSON: '{{.status}} {{.network.address}}'.
    #[arg(short, long)]
    format: Option<Template>,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn inspect(app_root: &Path, args: InspectArgs) -> Result<i32> {
    let mut failures = Failures::default();
    let mut all = Vec::new();
    let volumes = volume::Volumes::open(app_root)?;
    for container in targets(app_root, &args.containers, false, &mut failures)? {
        match container.state() {
            Ok(state) => all.push(inspect_json(&container, &state, &volumes)),
            Err(e) => failures.report(e),
        }
    }
    match &args.format {
        Some(template) => print_template(template, &all, None, &[])?,
        None => print_json(&all)?,
    }
    Ok(failures.exit_code())
}

#[derive(Args)]
pub struct LogsArgs {
    /// Keep printing output as it comes, until the container stops.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(short = 'n', long = "tail", value_name = "N")]
    tail: Option<usize>,
    /// The VM's console (kernel and vminitd) instead of the container's output.
    #[arg(long)]
    boot: bool,
    container: String,
}

pub async fn logs(app_root: &Path, args: LogsArgs) -> Result<i32> {
    let container = Containers::open(app_root)?.find(&args.container)?;
    if args.boot {
        let text = std::fs::read_to_string(container.boot_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let skip = args.tail.map_or(0, |n| lines.len().saturating_sub(n));
        for line in &lines[skip..] {
            println!("{line}");
        }
        return Ok(0);
    }
    runtime::logs(&container, args.tail, args.follow, &StdStreams).await?;
    Ok(0)
}

#[derive(Args)]
pub struct ExecArgs {
    /// Keep stdin open and forward it.
    #[arg(short, long)]
    interactive: bool,
    /// Give the process a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Run in the background.
    #[arg(short, long)]
    detach: bool,
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory (created when missing) [default: the container's].
    #[arg(short, long = "workdir", visible_alias = "cwd", value_name = "DIR")]
    workdir: Option<String>,
    #[command(flatten)]
    user: UserArgs,
    container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub async fn exec(app_root: &Path, args: ExecArgs) -> Result<i32> {
    let container = Containers::open(app_root)?.find(&args.container)?;
    let options = runtime::ExecOptions {
        env: args.env.into_iter().filter_map(resolve_env).collect(),
        user: args.user.user,
        uid: args.user.uid,
        gid: args.user.gid,
        workdir: args.workdir,
        interactive: args.interactive,
        tty: args.tty,
    };
    let process = runtime::exec_process(&container, args.command, options);
    Ok(ended(
        runtime::exec(&container, process, args.detach, &StdStreams).await?,
    ))
}

#[derive(Args)]
pub struct WaitArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn wait(app_root: &Path, args: WaitArgs) -> Result<i32> {
    let mut failures = Failures::default();
    for container in targets(app_root, &args.containers, false, &mut failures)? {
        match runtime::wait(&container).await {
            Ok(code) => println!("{code}"),
            Err(e) => failures.report(e),
        }
    }
    Ok(failures.exit_code())
}

#[derive(Args)]
pub struct StatsArgs {
    /// Print once (CPU % over half a second) and exit.
    #[arg(long)]
    no_stream: bool,
    /// table, json, or a Go template with docker stats' fields: '{{.Name}} {{.CPUPerc}}'
    /// (Container, ID, Name, CPUPerc, MemUsage, MemPerc, BlockIO, PIDs).
    #[arg(long, default_value = "table")]
    format: ListFormat,
    /// Containers (default: every running one).
    containers: Vec<String>,
}

/// The fields `stats --format` templates see, as `docker stats` names them.
const STATS_FIELDS: [&str; 8] = [
    "Container",
    "ID",
    "Name",
    "CPUPerc",
    "MemUsage",
    "MemPerc",
    "BlockIO",
    "PIDs",
];
const STATS_HEADERS: [(&str, &str); 8] = [
    ("Container", "CONTAINER"),
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

/// A container's figures as `stats` templates (and its table) show them.
fn stats_record(container: &Container, stats: &runtime::Statistics, cpu: f64) -> serde_json::Value {
    let s = &stats.cgroup;
    let (limit, percent) = match s.memory_max_bytes {
        0 => ("-".to_string(), "-".to_string()),
        max => (
            human_size(max),
            format!("{:.2}%", s.memory_current_bytes as f64 * 100.0 / max as f64),
        ),
    };
    serde_json::json!({
        "Container": container.config.name,
        "ID": container.id()[..12],
        "Name": container.config.name,
        "CPUPerc": format!("{cpu:.2}%"),
        "MemUsage": format!("{} / {limit}", human_size(s.memory_current_bytes)),
        "MemPerc": percent,
        "BlockIO": format!("{} / {}", human_size(s.io_read_bytes), human_size(s.io_write_bytes)),
        "PIDs": s.pids_current,
    })
}

/// A record's field as a table cell.
fn text_field(value: &serde_json::Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), String::from)
}

/// How far apart the two readings are when no earlier one exists (the first
/// screen, `--no-stream`): CPU % is a rate, so one reading cannot give it.
const CPU_SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

pub async fn stats(app_root: &Path, args: StatsArgs) -> Result<i32> {
    let all = args.containers.is_empty();
    let refresh = !args.no_stream && std::io::stdout().is_terminal();
    let mut earlier: HashMap<String, runtime::Statistics> = HashMap::new();
    loop {
        let mut containers = targets(app_root, &args.containers, all, &mut Failures::default())?;
        containers.retain(|c| c.state().is_ok_and(|s| s.status == Status::Running));
        if containers.iter().any(|c| !earlier.contains_key(c.id())) {
            for container in &containers {
                let reading = runtime::statistics(container).await?;
                earlier.insert(container.id().to_string(), reading);
            }
            tokio::time::sleep(CPU_SAMPLE_INTERVAL).await;
        }
        let mut rows = Vec::new();
        for container in &containers {
            let now = runtime::statistics(container).await?;
            let cpu_percent = now.cpu_percent(&earlier[container.id()]);
            rows.push((container, now, cpu_percent));
        }
        if refresh {
            // As `docker stats`: the screen cleared and the table drawn at
            // its top, so the figures update in place.
            print!("\x1b[H\x1b[2J");
        }
        match &args.format {
            ListFormat::Json => {
                let json: Vec<_> = rows
                    .iter()
                    .map(|(c, s, cpu_percent)| {
                        let s = &s.cgroup;
                        serde_json::json!({
                            "id": c.id(), "name": c.config.name, "cpu_percent": cpu_percent,
                            "cpu_usage_usec": s.cpu_usage_usec, "memory_bytes": s.memory_current_bytes,
                            "memory_limit_bytes": s.memory_max_bytes, "io_read_bytes": s.io_read_bytes,
                            "io_write_bytes": s.io_write_bytes, "pids": s.pids_current,
                        })
                    })
                    .collect();
                print_json(&json)?;
            }
            ListFormat::Template(template) => {
                let records: Vec<_> = rows
                    .iter()
                    .map(|(c, s, cpu)| stats_record(c, s, *cpu))
                    .collect();
                print_template(template, &records, Some(&STATS_FIELDS), &STATS_HEADERS)?;
            }
            ListFormat::Table => {
                let header = [
                    "CONTAINER ID",
                    "NAME",
                    "CPU %",
                    "MEM USAGE / LIMIT",
                    "BLOCK I/O",
                    "PIDS",
                ]
                .map(String::from);
                let lines = rows.iter().map(|(c, s, cpu)| {
                    let record = stats_record(c, s, *cpu);
                    ["ID", "Name", "CPUPerc", "MemUsage", "BlockIO", "PIDs"]
                        .map(|field| text_field(&record[field]))
                });
                print_table(std::iter::once(header).chain(lines));
            }
        }
        if args.no_stream {
            return Ok(0);
        }
        earlier = rows
            .into_iter()
            .map(|(c, s, _)| (c.id().to_string(), s))
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[derive(Args)]
pub struct CopyArgs {
    /// CONTAINER:PATH, a host path, or - for a tar stream on stdin.
    source: String,
    /// CONTAINER:PATH, a host path, or - for a tar stream on stdout.
    destination: String,
}

/// Copies between the host and a running container (`container cp`).
pub async fn copy(app_root: &Path, args: CopyArgs) -> Result<i32> {
    let containers = Containers::open(app_root)?;
    let host = |s: &str| (s != "-").then(|| PathBuf::from(s));
    match (
        args.source.split_once(':'),
        args.destination.split_once(':'),
    ) {
        (Some((name, path)), None) => {
            let to = host(&args.destination).map_or_else(stdout_stream, runtime::CopyEnd::Path);
            runtime::copy_out(&containers.find(name)?, path, to).await?
        }
        (None, Some((name, path))) => {
            runtime::copy_in(&containers.find(name)?, host(&args.source), path).await?
        }
        _ => return Err(
            "copy between a container and the host: one side must be CONTAINER:PATH, the other not"
                .into(),
        ),
    }
    Ok(0)
}

#[derive(Args)]
pub struct ExportArgs {
    /// Write the tar to this file (default: stdout).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    container: String,
}

/// Writes a container's filesystem as a tar.
pub async fn export(app_root: &Path, args: ExportArgs) -> Result<i32> {
    let container = Containers::open(app_root)?.find(&args.container)?;
    let to = args
        .output
        .map_or_else(stdout_stream, runtime::CopyEnd::File);
    runtime::export(&container, to).await?;
    Ok(0)
}

/// A tar stream to our stdout (`cp CONTAINER:PATH -`, `export`).
fn stdout_stream() -> runtime::CopyEnd {
    runtime::CopyEnd::Stream(Box::new(std::io::stdout()))
}

#[derive(Args)]
pub struct PruneArgs {}

/// Removes every stopped container, and what creations killed midway
/// left; an unreadable record is named, not removed (whether it runs
/// cannot be known), and the rest still go.
pub async fn prune(app_root: &Path, _: PruneArgs) -> Result<i32> {
    let mut failures = Failures::default();
    runtime::remove_incomplete(app_root)?;
    for container in targets(app_root, &[], true, &mut failures)? {
        let removed = match container.state() {
            Ok(state) if state.status == Status::Running => continue,
            Ok(_) => runtime::remove(app_root, &container, false, false).await,
            Err(e) => Err(e),
        };
        match removed {
            Ok(()) => println!("{}", container.id()),
            Err(runtime::Error::NoSuchContainer(_)) => {}
            Err(e) => failures.report(e),
        }
    }
    Ok(failures.exit_code())
}

/// `TERM`, `SIGTERM` or `15`.
fn parse_signal(s: &str) -> std::result::Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map(|_| n)
            .map_err(|_| format!("unknown signal {s:?}"));
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as i32)
        .map_err(|_| format!("unknown signal {s:?}"))
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
fn parse_ulimit(s: &str) -> std::result::Result<Ulimit, String> {
    let (kind, values) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid ulimit {s:?}: use TYPE=SOFT[:HARD]"))?;
    let value = |v: &str| -> std::result::Result<u64, String> {
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
    Ok(Ulimit {
        kind: kind.to_string(),
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

/// Parses `512M`, `1G`, `1536` (MiB) into MiB, in whole MiB.
pub(super) fn parse_memory_mib(s: &str) -> std::result::Result<u64, String> {
    let mib = crate::bytes::parse(s, MIB, "memory size")?.div_ceil(MIB);
    if mib < MIN_MEMORY_MIB {
        return Err(format!(
            "memory {s} is below the minimum of {MIN_MEMORY_MIB}M"
        ));
    }
    Ok(mib)
}

/// Docker's `--storage-opt size=SIZE`: how big the container's root
/// filesystem is. The image's filesystem can grow but not shrink, so its
/// size is the floor.
fn parse_storage_opt(s: &str) -> std::result::Result<u64, String> {
    let Some(size) = s.strip_prefix("size=") else {
        return Err(format!(
            "unknown storage option {s:?}: only size=SIZE is supported"
        ));
    };
    let bytes = crate::bytes::parse(size, 1, "storage size")?;
    let floor = SNAPSHOT_SIZE_BYTES;
    if bytes < floor {
        return Err(format!(
            "storage size {size} is below the image filesystem's {}G, which cannot shrink",
            floor >> 30
        ));
    }
    Ok(bytes)
}

/// Docker's `--shm-size`: bytes without a suffix, and more than none.
fn parse_shm_size(s: &str) -> std::result::Result<u64, String> {
    match crate::bytes::parse(s, 1, "shm size")? {
        0 => Err(format!("shm size {s:?} must be more than 0")),
        bytes => Ok(bytes),
    }
}

const MIB: u64 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM"), Ok(15));
        assert_eq!(parse_signal("sigkill"), Ok(9));
        assert_eq!(parse_signal("2"), Ok(2));
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }

    #[test]
    fn ulimits() {
        let l = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!((l.kind.as_str(), l.soft, l.hard), ("nofile", 1024, 2048));
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

    #[test]
    fn shm_sizes() {
        assert_eq!(parse_shm_size("128M"), Ok(128 << 20));
        assert_eq!(parse_shm_size("1g"), Ok(1 << 30));
        assert_eq!(parse_shm_size("65536"), Ok(65536));
        assert!(parse_shm_size("0").unwrap_err().contains("more than 0"));
        assert!(parse_shm_size("-1M").is_err());
    }

    #[test]
    fn storage_options() {
        assert_eq!(parse_storage_opt("size=20G"), Ok(20 << 30));
        assert_eq!(parse_storage_opt("size=8192M"), Ok(8 << 30));
        assert!(
            parse_storage_opt("size=1G")
                .unwrap_err()
                .contains("cannot shrink")
        );
        assert!(
            parse_storage_opt("size=99999999999T")
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse_storage_opt("size=big").is_err());
        assert!(
            parse_storage_opt("quota=1")
                .unwrap_err()
                .contains("only size=")
        );
    }
}
