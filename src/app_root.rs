//! Where `container` keeps its state: `CONTAINER_APP_ROOT`, else the
//! platform's data directory.

use std::path::PathBuf;

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
