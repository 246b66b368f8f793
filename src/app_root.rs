//! Where `container` keeps its state: `CONTAINER_APP_ROOT`, else the
//! platform's data directory.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The app root: `CONTAINER_APP_ROOT` if set, else `$XDG_DATA_HOME/container`
/// (`~/.local/share/container`) on Linux and
/// `~/Library/Application Support/container` on macOS.
pub fn default_app_root() -> PathBuf {
    if let Some(root) = std::env::var_os("CONTAINER_APP_ROOT").filter(|v| !v.is_empty()) {
        return PathBuf::from(root);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    if cfg!(target_os = "macos") {
        return home.join("Library/Application Support/container");
    }
    match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(data) => PathBuf::from(data).join("container"),
        None => home.join(".local/share/container"),
    }
}

/// Makes the app root private to its owner: created 0700, or narrowed to
/// 0700 if it was made wider (by an earlier version, or by hand). Other
/// users then cannot reach anything under it (images, logs, sockets),
/// whatever each file's own mode.
pub fn make_private(root: &Path) -> std::io::Result<()> {
    if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(root) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        other => return other,
    }
    let meta = std::fs::metadata(root)?;
    if meta.mode() & 0o077 != 0 && meta.uid() == nix::unistd::geteuid().as_raw() {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates a directory (and its missing parents) that only its owner can
/// enter: for run directories, which may live outside the app root.
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_root_is_made_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/b/root");
        make_private(&root).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        make_private(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        let run = dir.path().join("run/x");
        private_dir(&run).unwrap();
        assert_eq!(mode(&run), 0o700);
    }
}
