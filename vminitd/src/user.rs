//! Who a process runs as: Docker's `-u` resolved against the container's own
//! /etc/passwd and /etc/group. Parsed by hand because vminitd is static and
//! must not call NSS (getpwnam would look in the guest, not the container).

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: every group that lists the user as a member.
    pub groups: Vec<u32>,
    pub home: String,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Lines that do not parse (comments, NIS `+` entries) are skipped, as libc does.
pub fn parse_passwd(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(Passwd {
                name: f[0].into(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].into(),
            })
        })
        .collect()
}

pub fn parse_group(text: &str) -> Vec<Group> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let members = f[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(String::from)
                .collect();
            Some(Group {
                name: f[0].into(),
                gid: f[2].parse().ok()?,
                members,
            })
        })
        .collect()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
}

/// Resolves `user`, `uid`, `user:group`, `uid:gid` (or empty, meaning root)
/// the way runc does: names must exist, numbers need not.
pub fn resolve(spec: &str, passwd: &[Passwd], groups: &[Group]) -> Result<User, Error> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd.iter().find(|p| p.uid == uid),
        Err(_) => Some(
            passwd
                .iter()
                .find(|p| p.name == user_part)
                .ok_or_else(|| Error::NoUser(user_part.into()))?,
        ),
    };
    let uid = user_part
        .parse::<u32>()
        .unwrap_or_else(|_| entry.map(|e| e.uid).unwrap_or(0));
    let gid = match group_part {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                groups
                    .iter()
                    .find(|gr| gr.name == g)
                    .ok_or_else(|| Error::NoGroup(g.into()))?
                    .gid
            }
        },
        None => entry.map(|e| e.gid).unwrap_or(0),
    };
    // An explicit group replaces the user's groups, as with runc.
    let mut supplementary = Vec::new();
    if let (Some(entry), None) = (entry, group_part) {
        for g in groups.iter().filter(|g| g.members.contains(&entry.name)) {
            if g.gid != gid && !supplementary.contains(&g.gid) {
                supplementary.push(g.gid);
            }
        }
    }
    let home = entry
        .map(|e| e.home.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into());
    Ok(User {
        uid,
        gid,
        groups: supplementary,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nstaff:x:50:app,other\napp:x:1000:\nwheel:x:10:root\nnogroup:x:65534:\n";

    fn resolve_str(spec: &str) -> Result<User, Error> {
        resolve(spec, &parse_passwd(PASSWD), &parse_group(GROUP))
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(
            resolve_str("app"),
            Ok(User {
                uid: 1000,
                gid: 1000,
                groups: vec![50],
                home: "/home/app".into()
            })
        );
        assert_eq!(
            resolve_str(""),
            Ok(User {
                uid: 0,
                gid: 0,
                groups: vec![10],
                home: "/root".into()
            })
        );
        assert_eq!(
            resolve_str("1000"),
            Ok(User {
                uid: 1000,
                gid: 1000,
                groups: vec![50],
                home: "/home/app".into()
            })
        );
        // A uid with no entry is fine: group 0, home /.
        assert_eq!(
            resolve_str("4242"),
            Ok(User {
                uid: 4242,
                gid: 0,
                groups: vec![],
                home: "/".into()
            })
        );
    }

    #[test]
    fn explicit_groups() {
        assert_eq!(
            resolve_str("app:staff"),
            Ok(User {
                uid: 1000,
                gid: 50,
                groups: vec![],
                home: "/home/app".into()
            })
        );
        assert_eq!(
            resolve_str("1000:4000"),
            Ok(User {
                uid: 1000,
                gid: 4000,
                groups: vec![],
                home: "/home/app".into()
            })
        );
        assert_eq!(resolve_str("nobody:nogroup").unwrap().gid, 65534);
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(resolve_str("ghost"), Err(Error::NoUser("ghost".into())));
        assert_eq!(
            resolve_str("app:ghosts"),
            Err(Error::NoGroup("ghosts".into()))
        );
        assert_eq!(
            Error::NoUser("ghost".into()).to_string(),
            "unable to find user ghost: no matching entries in passwd file"
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let passwd = parse_passwd(
            "+::::::\nbad\napp:x:1000:1000::/home/app:/bin/sh\nx:x:notanumber:1::/:/bin/sh\n",
        );
        assert_eq!(passwd.len(), 1);
    }
}
