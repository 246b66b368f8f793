//! Writes gzip layer tars into one ext4 image exactly as a snapshot is built
//! (same size, same decompressor), and nothing else: scripts/bench-ext4 times
//! this against `tar -xzf` plus `mke2fs -d`, and it is handy for looking at
//! an image with debugfs or mounting it.
//!
//! Usage: cargo run --release --example ext4_from_tar OUT.ext4 LAYER.tar.gz...

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use container::ext4::{FormatOptions, Formatter};
use container::image::{LAYER_READ_BUFFER, SNAPSHOT_SIZE_BYTES};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [out, layers @ ..] = &args[..] else {
        return Err("usage: ext4_from_tar OUT.ext4 LAYER.tar.gz...".into());
    };
    let options = FormatOptions {
        size_bytes: SNAPSHOT_SIZE_BYTES,
    };
    let mut fs = Formatter::create(out, options)?;
    for layer in layers {
        let gz = BufReader::with_capacity(LAYER_READ_BUFFER, File::open(layer)?);
        fs.unpack_layer(flate2::bufread::MultiGzDecoder::new(gz))?;
    }
    fs.finish()?;
    Ok(())
}
