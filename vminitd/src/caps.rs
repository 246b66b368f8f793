//! Capabilities: Docker's default set, adjusted by `--cap-add`/`--cap-drop`.

use std::collections::HashSet;
use std::str::FromStr;

use caps::Capability;

/// What Docker grants a container by default.
const DEFAULT: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown capability {0:?}")]
pub struct UnknownCapability(String);

/// Names as Docker takes them: `NET_ADMIN`, `CAP_NET_ADMIN`, any case, or
/// `ALL` (None). The host has normalized them already; older records may not be.
fn parse(name: &str) -> Result<Option<Capability>, UnknownCapability> {
    let unknown = || UnknownCapability(name.to_string());
    match agent_proto::caps::normalize(name)
        .ok_or_else(unknown)?
        .as_str()
    {
        "ALL" => Ok(None),
        full => Capability::from_str(full).map(Some).map_err(|_| unknown()),
    }
}

/// The default set plus `add` minus `drop`; `ALL` in either means every
/// capability. Drops win over adds, except `--cap-drop ALL --cap-add X`,
/// which means exactly X (as in Docker).
pub fn resolve(add: &[String], drop: &[String]) -> Result<HashSet<Capability>, UnknownCapability> {
    let add: Vec<Option<Capability>> = add.iter().map(|n| parse(n)).collect::<Result<_, _>>()?;
    let drop: Vec<Option<Capability>> = drop.iter().map(|n| parse(n)).collect::<Result<_, _>>()?;
    let mut set: HashSet<Capability> = if drop.contains(&None) {
        HashSet::new()
    } else {
        DEFAULT
            .iter()
            .copied()
            .filter(|c| !drop.contains(&Some(*c)))
            .collect()
    };
    if add.contains(&None) {
        set.extend(
            caps::all()
                .into_iter()
                .filter(|c| !drop.contains(&Some(*c))),
        );
    } else {
        set.extend(
            add.into_iter()
                .flatten()
                .filter(|c| drop.contains(&None) || !drop.contains(&Some(*c))),
        );
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_add_and_drop() {
        let set = resolve(&[], &[]).unwrap();
        assert_eq!(set.len(), DEFAULT.len());
        assert!(!set.contains(&Capability::CAP_NET_ADMIN));

        let set = resolve(&names(&["net_admin"]), &names(&["CAP_CHOWN", "kill"])).unwrap();
        assert!(set.contains(&Capability::CAP_NET_ADMIN));
        assert!(!set.contains(&Capability::CAP_CHOWN));
        assert!(!set.contains(&Capability::CAP_KILL));
        assert_eq!(set.len(), DEFAULT.len() - 1);
    }

    #[test]
    fn all() {
        let set = resolve(&names(&["NET_ADMIN"]), &names(&["ALL"])).unwrap();
        assert_eq!(set, HashSet::from([Capability::CAP_NET_ADMIN]));
        let set = resolve(&names(&["ALL"]), &names(&["SYS_ADMIN"])).unwrap();
        assert!(set.contains(&Capability::CAP_SYS_MODULE));
        assert!(!set.contains(&Capability::CAP_SYS_ADMIN));
    }

    #[test]
    fn the_shared_names_are_the_kernel_bits() {
        for (bit, name) in agent_proto::caps::NAMES.iter().enumerate() {
            assert_eq!(parse(name), Ok(Capability::from_str(name).ok()), "{name}");
            assert_eq!(Capability::from_str(name).unwrap().index() as usize, bit);
        }
        assert_eq!(caps::all().len(), agent_proto::caps::NAMES.len());
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            resolve(&names(&["FLY"]), &[]),
            Err(UnknownCapability("FLY".into()))
        );
    }
}
