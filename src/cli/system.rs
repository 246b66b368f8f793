//! `container system`: the host-wide setup every container shares.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::vm::kernel;

#[derive(Subcommand)]
pub enum SystemCommand {
    /// Manage the guest kernel.
    #[command(subcommand)]
    Kernel(KernelCommand),
}

#[derive(Subcommand)]
pub enum KernelCommand {
    /// Set the kernel new containers boot.
    Set(SetArgs),
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct SetArgs {
    /// A kernel image file (an uncompressed `vmlinux` on Apple silicon).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Download and install the recommended kernel for this platform.
    #[arg(long)]
    recommended: bool,
}

pub async fn run(
    app_root: &Path,
    command: SystemCommand,
) -> Result<i32, Box<dyn std::error::Error>> {
    let SystemCommand::Kernel(KernelCommand::Set(args)) = command;
    let installed = match args.binary {
        Some(binary) => kernel::install(app_root, &binary)?,
        None => kernel::install_recommended(app_root).await?,
    };
    println!("kernel set to {}", installed.display());
    Ok(0)
}
