//! `container image`: pull, push, list, inspect, tag, delete, prune, save, load.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::output::{Format, ListArgs, human_size, print_table};
use super::parse_scheme;
use super::progress::{self, Direction};
use crate::image::{ImageInfo, ImageStore, Platform, PullOptions, PushOptions, Roots, Scheme};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Download an image from a registry.
    Pull(PullArgs),
    /// Upload an image to a registry.
    Push(PushArgs),
    /// List images.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Show images' references, digests, platform, config and layers as JSON.
    Inspect {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Give an image another reference.
    Tag { source: String, target: String },
    /// Remove images, and the content no other image needs.
    #[command(alias = "rm")]
    Delete(DeleteArgs),
    /// Remove content no image needs; with --all, every image no container uses.
    Prune {
        /// Also remove every image no container uses.
        #[arg(short, long)]
        all: bool,
    },
    /// Write images to an OCI image layout tar (stdout without --output).
    Save {
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        platform: PlatformArgs,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Read images from an OCI layout or `docker save` tar (stdin without --input).
    Load {
        #[arg(short, long, value_name = "FILE")]
        input: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct TransferArgs {
    /// Registry scheme: https, http, or auto (http for loopback and private addresses).
    #[arg(long, default_value = "auto", value_parser = parse_scheme)]
    scheme: Scheme,
    /// Progress display: auto (bars on a terminal), ansi, plain or none
    /// (nothing but errors).
    #[arg(long, value_enum, default_value = "auto")]
    progress: progress::Mode,
}

impl TransferArgs {
    /// `--progress none` asks for silence: what the transfer did goes unsaid
    /// too, so scripts see output only when something failed.
    fn quiet(&self) -> bool {
        matches!(self.progress, progress::Mode::None)
    }
}

/// The platform flags of `image pull`, `image save`, `run` and `create`.
#[derive(Args)]
pub struct PlatformArgs {
    /// The platform of a multi-platform image, OS/ARCH[/VARIANT]; takes
    /// precedence over --os and --arch [default: the host's].
    #[arg(long)]
    platform: Option<String>,
    /// The architecture (amd64, arm64, ...) [default: the host's].
    #[arg(short, long)]
    arch: Option<String>,
    /// The operating system [default: linux].
    #[arg(long)]
    os: Option<String>,
}

impl PlatformArgs {
    /// The platform asked for; None if none was.
    pub fn platform(&self) -> Result<Option<Platform>> {
        Ok(Platform::from_flags(
            self.platform.as_deref(),
            self.os.as_deref(),
            self.arch.as_deref(),
        )?)
    }
}

#[derive(Args)]
pub struct PullArgs {
    #[command(flatten)]
    platform: PlatformArgs,
    /// Layers downloaded at once.
    #[arg(long, default_value_t = crate::image::DEFAULT_CONCURRENT_DOWNLOADS as u16, value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_downloads: u16,
    #[command(flatten)]
    transfer: TransferArgs,
    image: String,
}

#[derive(Args)]
pub struct PushArgs {
    #[command(flatten)]
    transfer: TransferArgs,
    image: String,
}

#[derive(Args)]
pub struct DeleteArgs {
    /// Remove images even if containers use them (their disks stay until then).
    #[arg(short, long)]
    force: bool,
    /// Remove every image.
    #[arg(short, long, conflicts_with = "images")]
    all: bool,
    #[arg(required_unless_present = "all")]
    images: Vec<String>,
}

pub async fn run(app_root: &Path, command: ImageCommand) -> Result<i32> {
    let images = ImageStore::open(app_root)?;
    match command {
        ImageCommand::Pull(args) => pull(&images, args).await?,
        ImageCommand::Push(args) => {
            let target = images.parse_reference(&args.image)?;
            let options = PushOptions {
                scheme: args.transfer.scheme,
                progress: progress::sink(args.transfer.progress, Direction::Upload),
            };
            let digest = images.push(&args.image, &target, &options).await?;
            if !args.transfer.quiet() {
                println!("{target}@{digest}");
            }
        }
        ImageCommand::List(args) => list(&images, &args)?,
        ImageCommand::Inspect { images: names } => {
            let mut found = Vec::new();
            for name in &names {
                found.extend(images.inspect(name)?);
            }
            println!("{}", serde_json::to_string_pretty(&found)?);
        }
        ImageCommand::Tag { source, target } => {
            let target = images.parse_reference(&target)?;
            images.tag(&source, &target)?;
        }
        ImageCommand::Delete(args) => {
            let names = if args.all {
                images.list()?.into_iter().map(|i| i.reference).collect()
            } else {
                args.images
            };
            let roots = gc_roots(app_root)?;
            let removed =
                tokio::task::block_in_place(|| images.remove(&names, args.force, &roots))?;
            for reference in removed.images {
                println!("{reference}");
            }
        }
        ImageCommand::Prune { all } => {
            let roots = gc_roots(app_root)?;
            let removed = tokio::task::block_in_place(|| images.prune(all, &roots))?;
            for reference in removed.images {
                println!("Deleted: {reference}");
            }
            println!("Reclaimed {}", human_size(removed.bytes));
        }
        ImageCommand::Save {
            output,
            platform,
            images: names,
        } => {
            let platform = platform.platform()?;
            tokio::task::block_in_place(|| {
                save(&images, &names, platform.as_ref(), output.as_deref())
            })?
        }
        ImageCommand::Load { input } => {
            let loaded = tokio::task::block_in_place(|| -> Result<Vec<String>> {
                Ok(match input {
                    Some(path) => {
                        let file =
                            File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                        images.load(BufReader::new(file))?
                    }
                    None => images.load(std::io::stdin().lock())?,
                })
            })?;
            for reference in loaded {
                println!("Loaded image: {reference}");
            }
        }
    }
    Ok(0)
}

async fn pull(images: &ImageStore, args: PullArgs) -> Result<()> {
    let reference = images.parse_reference(&args.image)?;
    let options = PullOptions {
        scheme: args.transfer.scheme,
        platform: args.platform.platform()?,
        max_concurrent_downloads: args.max_concurrent_downloads.into(),
        progress: progress::sink(args.transfer.progress, Direction::Download),
    };
    let image = images.pull(&reference, &options).await?;
    if !args.transfer.quiet() {
        eprintln!("Digest: {}", image.digest);
        println!("{}", image.reference);
    }
    Ok(())
}

fn list(images: &ImageStore, args: &ListArgs) -> Result<()> {
    let all = images.list()?;
    if args.quiet {
        for image in &all {
            println!("{}", image.reference);
        }
        return Ok(());
    }
    if let Format::Json = args.format {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let rows: Vec<[String; 5]> = all.iter().map(row).collect();
    let header = ["NAME", "TAG", "DIGEST", "PLATFORM", "SIZE"].map(String::from);
    print_table(std::iter::once(header).chain(rows));
    Ok(())
}

fn row(image: &ImageInfo) -> [String; 5] {
    // The reference was normalized when stored: NAME[:TAG][@DIGEST].
    let without_digest = image.reference.split('@').next().unwrap_or_default();
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match without_digest[last_slash..].rfind(':') {
        Some(i) => (
            &without_digest[..last_slash + i],
            &without_digest[last_slash + i + 1..],
        ),
        None => (without_digest, "<none>"),
    };
    let hex = image.digest.trim_start_matches("sha256:");
    [
        name.to_string(),
        tag.to_string(),
        hex[..12.min(hex.len())].to_string(),
        image.platform.to_string(),
        human_size(image.size),
    ]
}

fn save(
    images: &ImageStore,
    names: &[String],
    platform: Option<&Platform>,
    output: Option<&Path>,
) -> Result<()> {
    let Some(path) = output else {
        if std::io::stdout().is_terminal() {
            return Err(
                "refusing to write an image archive to a terminal; use --output or a pipe".into(),
            );
        }
        return Ok(images.save(names, platform, BufWriter::new(std::io::stdout().lock()))?);
    };
    let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let result = images.save(names, platform, BufWriter::new(file));
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    Ok(result?)
}

/// What image garbage collection must keep: the images containers use and
/// the build cache's layers, each from its owner.
pub(super) fn gc_roots(app_root: &Path) -> Result<Roots> {
    Ok(Roots {
        in_use: crate::runtime::Containers::open(app_root)?.images_in_use(),
        blobs: crate::build::cached_layers(app_root),
    })
}
