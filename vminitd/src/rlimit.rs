//! Resource limits by the names `ulimit` and Docker's `--ulimit` use.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown ulimit type {0:?}")]
pub struct UnknownLimit(pub String);

/// setrlimit's resource argument: an enum in glibc, a plain int in musl
/// (the guest target on a Mac, scripts/build-vminitd).
#[cfg(target_env = "gnu")]
pub type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
pub type Resource = libc::c_int;

pub fn resource(name: &str) -> Result<Resource, UnknownLimit> {
    Ok(match name {
        "as" => libc::RLIMIT_AS,
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "rttime" => libc::RLIMIT_RTTIME,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => return Err(UnknownLimit(name.to_string())),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::resource("nofile"), Ok(libc::RLIMIT_NOFILE));
        assert!(super::resource("files").is_err());
    }
}
