//! Sizes as users write them on the command line (`--memory 2G`,
//! `--shm-size 64m`, `--tmpfs /t:size=16M`), and as files take them on disk.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The host space a file, or a directory tree, takes: its blocks, not its
/// length, as disks and images are sparse. What cannot be read counts 0.
pub fn on_disk(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    let children = std::fs::read_dir(path).into_iter().flatten().flatten();
    own + children.map(|e| on_disk(&e.path())).sum::<u64>()
}

/// A size with an optional K, M, G or T suffix (binary, with or without a
/// trailing B or iB); a bare number counts in units of `bare` bytes.
pub fn parse(s: &str, bare: u64, what: &str) -> Result<u64, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("invalid {what} {s:?}"))?;
    let scale = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => bare,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("invalid {what} {s:?}: use a K, M, G or T suffix")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{what} {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn suffixes_and_bare_units() {
        assert_eq!(super::parse("64m", 1, "size"), Ok(64 << 20));
        assert_eq!(super::parse("2GiB", 1, "size"), Ok(2 << 30));
        assert_eq!(super::parse("512", 1 << 20, "size"), Ok(512 << 20));
        assert!(super::parse("12x", 1, "size").is_err());
        assert!(super::parse("99999999999T", 1, "size").is_err());
    }
}
