//! The command line: parse, set up logging, hand over to the library, and
//! turn any error into one line on stderr and a non-zero exit.

mod build;
mod container;
mod filter;
mod image;
mod network;
mod output;
mod progress;
mod registry;
mod system;
mod template;
mod volume;

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

/// Our version and the commit built (build.rs), as `--version` and
/// `system version` say them.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CONTAINER_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "container",
    version = VERSION,
    about = "Run Linux containers, each in its own lightweight VM"
)]
struct Cli {
    /// Log what happens, including the guest console.
    #[arg(long, global = true, env = "CONTAINER_DEBUG", value_parser = clap::builder::FalseyValueParser::new())]
    debug: bool,
    /// Where images and containers are kept [default: $CONTAINER_APP_ROOT, else the platform's data directory].
    #[arg(long, global = true, value_name = "PATH")]
    app_root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<build::BuildArgs>),
    /// Manage the build cache.
    #[command(subcommand)]
    Builder(build::BuilderCommand),
    /// Run a command in a new container.
    Run(Box<container::RunArgs>),
    /// Create a container without starting it.
    Create(Box<container::CreateArgs>),
    /// Start a created or stopped container.
    Start(container::StartArgs),
    /// Stop running containers (a signal, then SIGKILL after a timeout).
    Stop(container::StopArgs),
    /// Send a signal to running containers.
    Kill(container::KillArgs),
    /// Remove containers.
    #[command(alias = "rm")]
    Delete(container::RemoveArgs),
    /// List containers.
    #[command(alias = "ls")]
    List(container::ListArgs),
    /// Show containers' configuration and state as JSON.
    Inspect(container::InspectArgs),
    /// Print a container's output.
    Logs(container::LogsArgs),
    /// Run a command in a running container.
    Exec(container::ExecArgs),
    /// Wait for containers to stop and print their exit codes.
    Wait(container::WaitArgs),
    /// Show containers' resource use.
    Stats(container::StatsArgs),
    /// Copy files between a container and the host (a stopped one is booted briefly).
    #[command(alias = "cp")]
    Copy(container::CopyArgs),
    /// Write a container's filesystem as a tar.
    Export(container::ExportArgs),
    /// Remove every stopped container.
    Prune(container::PruneArgs),
    /// A container's supervisor (started by `run` and `start`).
    #[command(name = "__supervise", hide = true)]
    Supervise {
        id: String,
        size: Option<String>,
        /// Where to report that the container runs, or why it could not.
        #[arg(long)]
        report_fd: Option<i32>,
    },
    /// Manage images.
    #[command(subcommand, alias = "i")]
    Image(image::ImageCommand),
    /// Create, list and remove networks.
    #[command(subcommand, alias = "n")]
    Network(network::NetworkCommand),
    /// Create, list, inspect and remove volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Log in to and out of registries.
    #[command(subcommand, alias = "r")]
    Registry(registry::RegistryCommand),
    /// Host-wide setup: settings, disk usage, the guest kernel.
    #[command(subcommand, alias = "s")]
    System(system::SystemCommand),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    ///
    /// For example: `container completion bash > ~/.local/share/bash-completion/completions/container`
    /// (scripts/setup installs them for bash, zsh and fish).
    Completion { shell: clap_complete::Shell },
}

/// The whole command tree, for man pages.
fn command() -> clap::Command {
    Cli::command()
}

/// Writes a shell's completion script to stdout. The tree is copied without
/// its hidden commands: clap_complete offers them otherwise, and nobody should
/// be offered `__supervise`.
fn completion(shell: clap_complete::Shell) -> std::io::Result<()> {
    let full = command();
    let mut shown = clap::Command::new("container")
        .version(VERSION)
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut shown, "container", &mut script);
    std::io::Write::write_all(&mut std::io::stdout().lock(), &script)
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    if let Command::Completion { shell } = cli.command {
        // Needs no app root: setup runs it before any exists.
        return match completion(shell) {
            Ok(()) => 0,
            // `| head` read what it wanted.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
            Err(e) => fail(&e, 1),
        };
    }
    init_tracing(cli.debug);
    if cli.debug {
        // Supervisors we start inherit it, so `--debug run` shows theirs too.
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("CONTAINER_DEBUG", "1") };
    }
    let app_root = cli
        .app_root
        .unwrap_or_else(crate::app_root::default_app_root);
    if let Err(e) = crate::app_root::make_private(&app_root) {
        eprintln!("Error: make the app root {}: {e}", app_root.display());
        return 1;
    }
    // Docker's code for a `run` or `create` the runtime could not carry
    // out, so scripts can tell it from the command's own failure.
    let failed = match cli.command {
        Command::Run(_) | Command::Create(_) => crate::runtime::EXIT_RUNTIME_ERROR,
        _ => 1,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&e, 1),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Build(args) => build::build(&app_root, *args).await,
            Command::Builder(command) => build::builder(&app_root, command).await,
            Command::Run(args) => container::run(&app_root, *args).await,
            Command::Create(args) => container::create(&app_root, *args).await,
            Command::Start(args) => container::start(&app_root, args).await,
            Command::Stop(args) => container::stop(&app_root, args).await,
            Command::Kill(args) => container::kill(&app_root, args).await,
            Command::Delete(args) => container::remove(&app_root, args).await,
            Command::List(args) => container::list(&app_root, args).await,
            Command::Inspect(args) => container::inspect(&app_root, args).await,
            Command::Logs(args) => container::logs(&app_root, args).await,
            Command::Exec(args) => container::exec(&app_root, args).await,
            Command::Wait(args) => container::wait(&app_root, args).await,
            Command::Stats(args) => container::stats(&app_root, args).await,
            Command::Copy(args) => container::copy(&app_root, args).await,
            Command::Export(args) => container::export(&app_root, args).await,
            Command::Prune(args) => container::prune(&app_root, args).await,
            Command::Supervise {
                id,
                size,
                report_fd,
            } => {
                let size = size
                    .as_deref()
                    .and_then(|s| s.split_once('x'))
                    .and_then(|(r, c)| Some((r.parse().ok()?, c.parse().ok()?)));
                Ok(crate::runtime::supervise(&app_root, &id, size, report_fd).await)
            }
            Command::Image(command) => image::run(&app_root, command).await,
            Command::Network(command) => network::run(&app_root, command).await,
            Command::Volume(command) => volume::run(&app_root, command).await,
            Command::Registry(command) => registry::run(&app_root, command).await,
            Command::System(command) => system::run(&app_root, command).await,
            Command::Completion { .. } => unreachable!("answered before the app root is made"),
        }
    });
    // Don't wait for a read of our stdin that nothing will finish.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => fail(e.as_ref(), failed),
    }
}

/// `--scheme`: how to reach a registry.
fn parse_scheme(s: &str) -> Result<crate::image::Scheme, String> {
    match s {
        "auto" => Ok(crate::image::Scheme::Auto),
        "http" => Ok(crate::image::Scheme::Http),
        "https" => Ok(crate::image::Scheme::Https),
        _ => Err(format!("unknown scheme {s:?}: use http, https or auto")),
    }
}

/// `KEY=VALUE` items (labels, options) as a map; `KEY` alone is empty.
fn pairs(items: &[String]) -> std::collections::BTreeMap<String, String> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => (item.clone(), String::new()),
        })
        .collect()
}

fn fail(e: &dyn std::error::Error, code: i32) -> i32 {
    eprintln!("Error: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        tracing::debug!("caused by: {cause}");
        source = cause.source();
    }
    code
}

fn init_tracing(debug: bool) {
    let filter = if debug {
        "debug,h2=info,hyper=info,tower=info,rustls=info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONTAINER_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
