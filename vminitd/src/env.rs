//! The environment a container process gets: the image's, then the user's
//! (`-e`, later entries win), plus the variables Docker always provides.

/// Docker's PATH for images that set none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Deduplicates by key (the last value wins, in first-seen order) and adds
/// PATH, HOSTNAME, HOME and (with a terminal) TERM where missing.
pub fn finalize(entries: &[String], home: &str, hostname: &str, terminal: bool) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for entry in entries {
        let (key, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        match out.iter_mut().find(|(k, _)| k == key) {
            Some(existing) => existing.1 = value.to_string(),
            None => out.push((key.to_string(), value.to_string())),
        }
    }
    let mut defaults = vec![("PATH", DEFAULT_PATH), ("HOME", home)];
    if !hostname.is_empty() {
        defaults.insert(0, ("HOSTNAME", hostname));
    }
    if terminal {
        defaults.push(("TERM", "xterm"));
    }
    for (key, value) in defaults {
        if !out.iter().any(|(k, _)| k == key) {
            out.push((key.to_string(), value.to_string()));
        }
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn later_entries_win_and_defaults_fill_gaps() {
        let env = finalize(
            &s(&["A=1", "PATH=/bin", "B=2", "A=3"]),
            "/root",
            "web",
            false,
        );
        assert_eq!(
            env,
            s(&["A=3", "PATH=/bin", "B=2", "HOSTNAME=web", "HOME=/root"])
        );
    }

    #[test]
    fn defaults_and_terminal() {
        let env = finalize(&[], "/", "", true);
        assert_eq!(
            env,
            s(&[&format!("PATH={DEFAULT_PATH}"), "HOME=/", "TERM=xterm"])
        );
        let env = finalize(&s(&["HOME=/x", "TERM=dumb"]), "/root", "", true);
        assert_eq!(
            env,
            s(&["HOME=/x", "TERM=dumb", &format!("PATH={DEFAULT_PATH}")])
        );
    }
}
