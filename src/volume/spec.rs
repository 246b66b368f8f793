//! Mounts as users write them, with Docker's three flags: `-v/--volume`,
//! `--mount` and `--tmpfs`. Parsed into [`Mount`]s, which a container's
//! record keeps. Only [`check`] looks at the disk (host paths must exist);
//! the runtime creates the volumes.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;

/// One filesystem mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub kind: Kind,
    /// An absolute path in the container.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
    /// Docker Desktop's bind-mount consistency: how soon each side sees the
    /// other's changes, traded for speed.
    #[serde(default)]
    pub consistency: Consistency,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Both sides see every change at once.
    #[default]
    Consistent,
    /// The host's view wins: its changes may show in the container a
    /// second late; much faster with many small files.
    Cached,
    /// The container's view wins: the host's changes may not show in it
    /// until it restarts.
    Delegated,
}

impl Consistency {
    fn parse(value: &str) -> Option<Consistency> {
        match value {
            "consistent" | "default" => Some(Consistency::Consistent),
            "cached" => Some(Consistency::Cached),
            "delegated" => Some(Consistency::Delegated),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Kind {
    /// A host file or directory, by its absolute path.
    Bind { source: PathBuf },
    /// A named volume. An anonymous one (`-v /path`, an image's `VOLUME`)
    /// has no name until its container is created, and goes with it
    /// (`rm -v`, `run --rm`).
    Volume {
        name: String,
        #[serde(default)]
        anonymous: bool,
        /// Docker's `nocopy`: a new volume is not filled from the image.
        #[serde(default)]
        no_copy: bool,
    },
    /// A new, empty tmpfs.
    Tmpfs {
        #[serde(default)]
        size: Option<u64>,
        #[serde(default)]
        mode: Option<u32>,
        /// Kernel flags by name: nosuid, nodev, noexec.
        #[serde(default)]
        flags: Vec<String>,
    },
}

impl Mount {
    /// How `inspect` and errors name its source.
    pub fn source(&self) -> String {
        match &self.kind {
            Kind::Bind { source } => source.display().to_string(),
            Kind::Volume { name, .. } => name.clone(),
            Kind::Tmpfs { .. } => "tmpfs".into(),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Bind { .. } => "bind",
            Kind::Volume { .. } => "volume",
            Kind::Tmpfs { .. } => "tmpfs",
        }
    }
}

impl std::fmt::Display for Mount {
    /// As `-v` or `--tmpfs` would say it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Tmpfs { .. } => write!(f, "tmpfs:{}", self.target)?,
            _ => write!(f, "{}:{}", self.source(), self.target)?,
        }
        if self.read_only {
            write!(f, ":ro")?;
        }
        Ok(())
    }
}

fn invalid(flag: &'static str, spec: &str, reason: impl Into<String>) -> Error {
    Error::InvalidMount {
        flag,
        spec: spec.to_string(),
        reason: reason.into(),
    }
}

/// `-v SOURCE:TARGET[:OPTIONS]` or `-v TARGET` (an anonymous volume). A
/// source that starts with `/` or `.` is a host path (a relative one is
/// taken from `cwd`); otherwise it names a volume. Options: `ro`, `rw`,
/// `nocopy`, and Docker's `z`/`Z` and `private`/`rprivate`, which change
/// nothing here.
pub fn parse_volume(spec: &str, cwd: &Path) -> Result<Mount, Error> {
    let bad = |reason: &str| invalid("-v", spec, reason);
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [target] => (None, *target, ""),
        [source, target] => (Some(*source), *target, ""),
        [source, target, options] => (Some(*source), *target, *options),
        _ => return Err(bad("use SOURCE:TARGET[:OPTIONS] or TARGET")),
    };
    let target = target_path(target).map_err(|reason| bad(&reason))?;
    let mut read_only = false;
    let mut no_copy = false;
    let mut consistency = Consistency::default();
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" | "readonly" => read_only = true,
            "rw" => read_only = false,
            "nocopy" => no_copy = true,
            "z" | "Z" | "private" | "rprivate" => {}
            other => {
                consistency = Consistency::parse(other).ok_or_else(|| {
                    bad(&format!(
                        "unknown option {other:?} (use ro, rw, nocopy, cached or delegated)"
                    ))
                })?
            }
        }
    }
    let kind = match source {
        None => Kind::Volume {
            name: String::new(),
            anonymous: true,
            no_copy,
        },
        Some("") => return Err(bad("the source is empty")),
        Some(source) => match host_path(source, cwd) {
            Some(path) if no_copy => {
                return Err(bad(&format!(
                    "nocopy is for volumes, and {} is a host path",
                    path.display()
                )));
            }
            Some(path) => Kind::Bind { source: path },
            None => Kind::Volume {
                name: volume_name(source).map_err(|reason| bad(&reason))?,
                anonymous: false,
                no_copy,
            },
        },
    };
    Ok(Mount {
        kind,
        target,
        read_only,
        consistency,
    })
}

/// `--mount type=bind|volume|tmpfs,source=...,target=...[,readonly]`, with
/// Docker's keys and aliases (`src`, `dst`, `destination`, `ro`,
/// `volume-nocopy`, `tmpfs-size`, `tmpfs-mode`). The type defaults to
/// volume, as in Docker.
pub fn parse_mount(spec: &str, cwd: &Path) -> Result<Mount, Error> {
    let bad = |reason: String| invalid("--mount", spec, reason);
    let mut kind = "volume".to_string();
    let mut source = None;
    let mut target = None;
    let mut read_only = false;
    let mut no_copy = false;
    let mut size = None;
    let mut mode = None;
    let mut consistency = Consistency::default();
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim())),
            None => (field.trim(), None),
        };
        let needs = |value: Option<&str>| {
            value
                .filter(|v| !v.is_empty())
                .map(String::from)
                .ok_or_else(|| bad(format!("{key} needs a value")))
        };
        match key.to_ascii_lowercase().as_str() {
            "type" => kind = needs(value)?,
            "source" | "src" => source = Some(needs(value)?),
            "target" | "destination" | "dst" => target = Some(needs(value)?),
            "readonly" | "ro" => read_only = boolean(key, value).map_err(bad)?,
            "volume-nocopy" => no_copy = boolean(key, value).map_err(bad)?,
            "tmpfs-size" => {
                size = Some(crate::bytes::parse(&needs(value)?, 1, "tmpfs-size").map_err(bad)?)
            }
            "tmpfs-mode" => mode = Some(octal(&needs(value)?).map_err(bad)?),
            "bind-propagation" if matches!(value, Some("private" | "rprivate")) => {}
            "consistency" => {
                let value = needs(value)?;
                consistency = Consistency::parse(&value)
                    .ok_or_else(|| bad(format!("unknown consistency {value:?}")))?
            }
            _ => return Err(bad(format!("unknown key {key:?}"))),
        }
    }
    let target =
        target_path(&target.ok_or_else(|| bad("a target is needed".into()))?).map_err(bad)?;
    let kind = match kind.as_str() {
        "bind" => {
            let source = source.ok_or_else(|| bad("a bind mount needs a source".into()))?;
            let path = host_path(&source, cwd).ok_or_else(|| {
                bad(format!(
                    "bind source {source:?} must be an absolute path or start with ./"
                ))
            })?;
            Kind::Bind { source: path }
        }
        "volume" => match source {
            Some(name) => Kind::Volume {
                name: volume_name(&name).map_err(bad)?,
                anonymous: false,
                no_copy,
            },
            None => Kind::Volume {
                name: String::new(),
                anonymous: true,
                no_copy,
            },
        },
        "tmpfs" => {
            if source.is_some() {
                return Err(bad("a tmpfs has no source".into()));
            }
            Kind::Tmpfs {
                size,
                mode,
                flags: vec!["nosuid".into(), "nodev".into()],
            }
        }
        other => {
            return Err(bad(format!(
                "unknown type {other:?} (use bind, volume or tmpfs)"
            )));
        }
    };
    if (size.is_some() || mode.is_some()) && !matches!(kind, Kind::Tmpfs { .. }) {
        return Err(bad("tmpfs-size and tmpfs-mode are for type=tmpfs".into()));
    }
    Ok(Mount {
        kind,
        target,
        read_only,
        consistency,
    })
}

/// `--tmpfs PATH[:OPTIONS]`: options are `size=`, `mode=` (octal) and the
/// flags `ro`/`rw`, `exec`/`noexec`, `suid`/`nosuid`, `dev`/`nodev`. Like
/// Docker's, it is noexec, nosuid and nodev unless told otherwise.
pub fn parse_tmpfs(spec: &str) -> Result<Mount, Error> {
    let bad = |reason: String| invalid("--tmpfs", spec, reason);
    let (target, options) = spec.split_once(':').unwrap_or((spec, ""));
    let target = target_path(target).map_err(bad)?;
    let (mut exec, mut suid, mut dev) = (false, false, false);
    let (mut size, mut mode, mut read_only) = (None, None, false);
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("size", value)) => {
                size = Some(crate::bytes::parse(value, 1, "tmpfs size").map_err(bad)?)
            }
            Some(("mode", value)) => mode = Some(octal(value).map_err(bad)?),
            Some(_) => return Err(bad(format!("unknown option {option:?}"))),
            None => match option {
                "ro" => read_only = true,
                "rw" => read_only = false,
                "exec" | "noexec" => exec = option == "exec",
                "suid" | "nosuid" => suid = option == "suid",
                "dev" | "nodev" => dev = option == "dev",
                _ => return Err(bad(format!("unknown option {option:?}"))),
            },
        }
    }
    let flags = [(suid, "nosuid"), (dev, "nodev"), (exec, "noexec")]
        .into_iter()
        .filter(|(allowed, _)| !allowed)
        .map(|(_, flag)| flag.to_string())
        .collect();
    Ok(Mount {
        kind: Kind::Tmpfs { size, mode, flags },
        target,
        read_only,
        consistency: Consistency::default(),
    })
}

/// Checks a container's mounts together, before anything is made: one
/// mount per target, and every host path there. Host paths become
/// canonical (a symlinked file is bound as the file it names, and its
/// directory is what the VM shares).
pub fn check(mounts: &mut [Mount]) -> Result<(), Error> {
    let mut targets = std::collections::HashSet::new();
    for mount in mounts.iter_mut() {
        if !targets.insert(mount.target.clone()) {
            return Err(Error::DuplicateTarget(mount.target.clone()));
        }
        if let Kind::Bind { source } = &mut mount.kind {
            *source = std::fs::canonicalize(&*source).map_err(|e| Error::BindSource {
                path: source.clone(),
                source: e,
            })?;
        }
    }
    Ok(())
}

/// An image's `VOLUME` path as a target; None for one no container could
/// mount on (relative, `/`).
pub fn image_volume_target(path: &str) -> Option<String> {
    target_path(path).ok()
}

/// A host path as written: absolute, or relative to `cwd` when it starts
/// with `.` (`./src`, `../x`, `.`). Anything else is not a path.
fn host_path(source: &str, cwd: &Path) -> Option<PathBuf> {
    if source.starts_with('/') {
        return Some(PathBuf::from(source));
    }
    if source == "." || source == ".." || source.starts_with("./") || source.starts_with("../") {
        let mut path = cwd.to_path_buf();
        for component in Path::new(source).components() {
            match component {
                Component::ParentDir => {
                    path.pop();
                }
                Component::Normal(part) => path.push(part),
                _ => {}
            }
        }
        return Some(path);
    }
    None
}

fn volume_name(name: &str) -> Result<String, String> {
    if crate::name::valid(name) {
        Ok(name.to_string())
    } else {
        Err(format!(
            "{name:?} is neither a volume name (letters, digits, '_', '.', '-') nor a host path (absolute, or starting with ./)"
        ))
    }
}

/// A target: absolute, not `/`, no `..`; cleaned of `.` and doubled slashes.
fn target_path(target: &str) -> Result<String, String> {
    if !target.starts_with('/') {
        return Err(format!("the target {target:?} must be an absolute path"));
    }
    let mut clean = String::new();
    for part in target.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return Err(format!("the target {target:?} must not contain \"..\""));
        }
        clean.push('/');
        clean.push_str(part);
    }
    if clean.is_empty() {
        return Err("the target cannot be / (the container's root)".into());
    }
    Ok(clean)
}

fn boolean(key: &str, value: Option<&str>) -> Result<bool, String> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(format!("{key}={other}: use true or false")),
    }
}

fn octal(value: &str) -> Result<u32, String> {
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| format!("mode {value:?} is not an octal permission (such as 1777)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cwd() -> PathBuf {
        PathBuf::from("/home/me/src")
    }

    fn bind(source: &str, target: &str, read_only: bool) -> Mount {
        Mount {
            kind: Kind::Bind {
                source: source.into(),
            },
            target: target.into(),
            read_only,
            consistency: Consistency::Consistent,
        }
    }

    #[test]
    fn volume_flag_host_paths_names_and_anonymous() {
        assert_eq!(
            parse_volume("/data:/srv", &cwd()).unwrap(),
            bind("/data", "/srv", false)
        );
        assert_eq!(
            parse_volume("./app.conf:/etc/app.conf:ro", &cwd()).unwrap(),
            bind("/home/me/src/app.conf", "/etc/app.conf", true)
        );
        assert_eq!(
            parse_volume("..:/up", &cwd()).unwrap(),
            bind("/home/me", "/up", false)
        );
        let named = parse_volume("db-data:/var/lib/db:rw,nocopy", &cwd()).unwrap();
        assert_eq!(
            named.kind,
            Kind::Volume {
                name: "db-data".into(),
                anonymous: false,
                no_copy: true
            }
        );
        let cached = parse_volume("/src:/src:cached,ro", &cwd()).unwrap();
        assert_eq!(cached.consistency, Consistency::Cached);
        assert!(cached.read_only);
        let delegated = parse_mount("type=bind,src=/a,dst=/b,consistency=delegated", &cwd());
        assert_eq!(delegated.unwrap().consistency, Consistency::Delegated);
        let anonymous = parse_volume("/cache/", &cwd()).unwrap();
        assert_eq!(anonymous.target, "/cache");
        assert!(matches!(
            anonymous.kind,
            Kind::Volume {
                anonymous: true,
                ..
            }
        ));
    }

    #[test]
    fn volume_flag_refuses_what_docker_refuses() {
        for spec in [
            "relative/dir:/x",
            "data:relative",
            "/a:/",
            "/a:/b/../c",
            "/a:/b:rx",
            "a:b:c:d",
            ":/x",
            "/host:/x:nocopy",
        ] {
            let error = parse_volume(spec, &cwd()).unwrap_err().to_string();
            assert!(error.starts_with("invalid -v"), "{spec}: {error}");
        }
    }

    #[test]
    fn mount_flag_types_and_keys() {
        assert_eq!(
            parse_mount("type=bind,src=/data,dst=/srv,readonly", &cwd()).unwrap(),
            bind("/data", "/srv", true)
        );
        assert_eq!(
            parse_mount("type=bind,source=.,target=/w,ro=false", &cwd()).unwrap(),
            bind("/home/me/src", "/w", false)
        );
        let volume = parse_mount("source=cache,target=/c", &cwd()).unwrap();
        assert!(matches!(volume.kind, Kind::Volume { ref name, .. } if name == "cache"));
        let tmpfs = parse_mount(
            "type=tmpfs,target=/t,tmpfs-size=16m,tmpfs-mode=1770",
            &cwd(),
        )
        .unwrap();
        assert_eq!(
            tmpfs.kind,
            Kind::Tmpfs {
                size: Some(16 << 20),
                mode: Some(0o1770),
                flags: vec!["nosuid".into(), "nodev".into()]
            }
        );
        for spec in [
            "type=bind,target=/x",
            "type=bind,source=rel,target=/x",
            "type=tmpfs,source=a,target=/x",
            "type=nfs,target=/x",
            "type=volume,source=v",
            "type=volume,target=/x,colour=red",
            "type=volume,source=v,target=/x,tmpfs-size=1m",
            "type=tmpfs,target=/x,tmpfs-mode=999",
        ] {
            let error = parse_mount(spec, &cwd()).unwrap_err().to_string();
            assert!(error.starts_with("invalid --mount"), "{spec}: {error}");
        }
    }

    #[test]
    fn check_finds_duplicate_targets_and_missing_host_paths() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::write(&real, b"x").unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let mut mounts = vec![bind(
            &dir.path().join("link").display().to_string(),
            "/a",
            false,
        )];
        check(&mut mounts).unwrap();
        assert_eq!(
            mounts[0],
            bind(
                &real.canonicalize().unwrap().display().to_string(),
                "/a",
                false
            )
        );
        let mut twice = vec![bind("/", "/a", false), parse_tmpfs("/a").unwrap()];
        assert!(matches!(check(&mut twice), Err(Error::DuplicateTarget(t)) if t == "/a"));
        let mut missing = vec![bind("/no/such/dir", "/a", false)];
        let error = check(&mut missing).unwrap_err().to_string();
        assert!(error.contains("/no/such/dir"), "{error}");
    }

    #[test]
    fn tmpfs_flag_defaults_to_docker_s_flags() {
        let plain = parse_tmpfs("/run").unwrap();
        assert_eq!(
            plain.kind,
            Kind::Tmpfs {
                size: None,
                mode: None,
                flags: vec!["nosuid".into(), "nodev".into(), "noexec".into()]
            }
        );
        let sized = parse_tmpfs("/cache:size=64m,mode=700,exec,ro").unwrap();
        assert!(sized.read_only);
        assert_eq!(
            sized.kind,
            Kind::Tmpfs {
                size: Some(64 << 20),
                mode: Some(0o700),
                flags: vec!["nosuid".into(), "nodev".into()]
            }
        );
        assert!(parse_tmpfs("run").is_err());
        assert!(parse_tmpfs("/run:size=lots").is_err());
        assert!(parse_tmpfs("/run:uid=5").is_err());
    }
}
