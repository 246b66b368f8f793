//! `container image`: pull, push, list, inspect, tag, delete, prune, save, load.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::filter::Filters;
use super::output::{ListArgs, ListFormat, human_size, print_json, print_table, print_template};
use super::parse_scheme;
use super::progress::{self, Direction};
use super::template::Template;
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
    List(ImageListArgs),
    /// Show images' references, digests, platform, config and layers as JSON.
    Inspect {
        /// A Go template applied to each image's JSON: '{{.digest}} {{.platform.architecture}}'.
        #[arg(short, long)]
        format: Option<Template>,
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
        ImageCommand::Inspect {
            format,
            images: names,
        } => {
            let mut found = Vec::new();
            for name in &names {
                found.extend(images.inspect(name)?);
            }
            match format {
                Some(template) => {
                    let records: Vec<_> = found
                        .iter()
                        .map(serde_json::to_value)
                        .collect::<std::result::Result<_, _>>()?;
                    print_template(&template, &records, None, &[])?
                }
                None => print_json(&found)?,
            }
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

#[derive(Args)]
pub struct ImageListArgs {
    #[command(flatten)]
    list: ListArgs,
    /// Only images that match: reference=PATTERN (e.g. 'busybox*', '*:latest'),
    /// dangling=true|false (no tag), label=KEY[=VALUE], before=IMAGE, since=IMAGE.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Full digests.
    #[arg(long)]
    no_trunc: bool,
}

/// The fields `image ls --format` templates see, as `docker images` names them.
const LIST_FIELDS: [&str; 10] = [
    "ID",
    "Repository",
    "Tag",
    "Digest",
    "Platform",
    "CreatedAt",
    "CreatedSince",
    "Size",
    "Labels",
    "Label",
];
const LIST_HEADERS: [(&str, &str); 9] = [
    ("ID", "IMAGE ID"),
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("Digest", "DIGEST"),
    ("Platform", "PLATFORM"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedSince", "CREATED"),
    ("Size", "SIZE"),
    ("Labels", "LABELS"),
];

fn list(images: &ImageStore, args: &ImageListArgs) -> Result<()> {
    let filters = Filters::parse(
        &args.filter,
        &["reference", "dangling", "label", "before", "since"],
    )?;
    if let ListFormat::Template(template) = &args.list.format {
        template.check(&LIST_FIELDS)?;
    }
    let all = images.list()?;
    // before/since: relative to the image they name, by creation time.
    let created_of = |name: &str| -> Result<u64> {
        let found = images.inspect(name)?;
        Ok(found.first().and_then(created).unwrap_or(0))
    };
    let mut bounds = (None, None);
    for name in filters.values("before") {
        bounds.0 = Some(created_of(name)?);
    }
    for name in filters.values("since") {
        bounds.1 = Some(created_of(name)?);
    }
    for value in filters.values("dangling") {
        if value != "true" && value != "false" {
            return Err(format!("bad dangling filter {value:?}: use true or false").into());
        }
    }
    let mut kept = Vec::new();
    for image in all {
        let (name, tag) = name_and_tag(&image.reference);
        let mut matched = true;
        for pattern in filters.values("reference") {
            let names = [
                familiar(name),
                format!("{}:{tag}", familiar(name)),
                name.to_string(),
            ];
            let mut any = false;
            for candidate in names.iter().chain([&image.reference]) {
                any |= crate::build::ignore::path_match(pattern, candidate)?;
            }
            matched &= any;
        }
        let when = created(&image).unwrap_or(0);
        matched = matched
            && filters.any("dangling", |v| (v == "true") == (tag == "<none>"))
            && filters.labels_match(&image_labels(&image))
            && bounds.0.is_none_or(|before| when < before)
            && bounds.1.is_none_or(|since| when > since);
        if matched {
            kept.push(image);
        }
    }
    if args.list.quiet {
        for image in &kept {
            println!("{}", image.reference);
        }
        return Ok(());
    }
    match &args.list.format {
        ListFormat::Json => print_json(&kept)?,
        ListFormat::Template(template) => {
            let records: Vec<_> = kept.iter().map(|i| record(i, args.no_trunc)).collect();
            print_template(template, &records, Some(&LIST_FIELDS), &LIST_HEADERS)?;
        }
        ListFormat::Table => {
            let header = ["NAME", "TAG", "DIGEST", "PLATFORM", "SIZE"].map(String::from);
            let rows = kept.iter().map(|image| {
                let record = record(image, args.no_trunc);
                ["Repository", "Tag", "ID", "Platform", "Size"]
                    .map(|field| record[field].as_str().unwrap_or_default().to_string())
            });
            print_table(std::iter::once(header).chain(rows));
        }
    }
    Ok(())
}

/// An image as `image ls` templates see it, with `docker images`' field
/// names. ID is what `image ls` shows and IMAGE arguments accept: the
/// manifest digest's first 12 hex digits (all of it with --no-trunc).
fn record(image: &ImageInfo, no_trunc: bool) -> serde_json::Value {
    let (name, tag) = name_and_tag(&image.reference);
    let id = match crate::image::Digest::parse(&image.digest) {
        Ok(digest) if !no_trunc => digest.short().to_string(),
        _ => image.digest.clone(),
    };
    let created_at = image.config["created"].as_str().unwrap_or_default();
    let labels = image_labels(image);
    serde_json::json!({
        "ID": id,
        "Repository": name,
        "Tag": tag,
        "Digest": image.digest,
        "Platform": image.platform.to_string(),
        "CreatedAt": created_at,
        "CreatedSince": created(image).map_or(String::new(), super::output::ago),
        "Size": human_size(image.size),
        "Labels": labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "Label": labels,
    })
}

/// The reference's name and tag (`<none>` for one pinned by digest only).
/// It was normalized when stored: NAME[:TAG][@DIGEST].
fn name_and_tag(reference: &str) -> (&str, &str) {
    let without_digest = reference.split('@').next().unwrap_or_default();
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    match without_digest[last_slash..].rfind(':') {
        Some(i) => (
            &without_digest[..last_slash + i],
            &without_digest[last_slash + i + 1..],
        ),
        None => (without_digest, "<none>"),
    }
}

/// A name as Docker users type it: `alpine` for `docker.io/library/alpine`.
fn familiar(name: &str) -> String {
    let short = name.strip_prefix("docker.io/").unwrap_or(name);
    short.strip_prefix("library/").unwrap_or(short).to_string()
}

/// When the image was built (its config's `created`), in Unix seconds.
fn created(image: &ImageInfo) -> Option<u64> {
    let text = image.config["created"].as_str()?;
    let time = humantime::parse_rfc3339_weak(text).ok()?;
    time.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

fn image_labels(image: &ImageInfo) -> std::collections::BTreeMap<String, String> {
    image.config["config"]["Labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
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
