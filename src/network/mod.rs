//! Networks: named IPv4 subnets that containers attach to, as Docker and
//! Apple's `container` users know them.
//!
//! A network is a record, `networks/<name>/network.json` (its subnet,
//! gateway, whether it is internal), and the addresses handed out on it,
//! one file per address in `networks/<name>/leases/` naming the container
//! that holds it. Creating a lease file is atomic (`O_EXCL`), so many CLIs
//! can create containers at once without sharing an address, and removing
//! a container gives its address back. The `default` network exists
//! without being created: its record is written on first use, with the
//! `network.subnet` property's subnet if set, and written again with it
//! when that property changed and no container is on the network.
//!
//! What a network is on the host (a bridge, taps, NAT rules) is made when
//! its first container starts and removed when its last one goes: see
//! [`bridge`] (Linux). There is no daemon.

#[cfg(target_os = "linux")]
pub mod bridge;
pub mod dns;
pub mod ports;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::atomic;
use crate::io_error::io;

/// The network containers join when they name none.
pub const DEFAULT: &str = "default";
/// `--network none`: no interface but loopback.
pub const NONE: &str = "none";
/// The default network's subnet (Apple's `container` uses the same).
const DEFAULT_SUBNET: &str = "192.168.64.0/24";
/// Where subnets for networks created without `--subnet` come from: the
/// first free /24 after the default's.
const POOL_FIRST: u8 = 65;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such network: {0}")]
    NoSuchNetwork(String),
    #[error("network {0} already exists")]
    Exists(String),
    #[error(
        "invalid network name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("the {0} network is built in and cannot be created or removed")]
    BuiltIn(String),
    #[error("invalid subnet {0:?}: use an IPv4 CIDR such as 192.168.70.0/24 (prefix 8 to 29)")]
    InvalidSubnet(String),
    #[error("subnet {subnet} overlaps network {other}'s {other_subnet}")]
    Overlap {
        subnet: Ipv4Net,
        other: String,
        other_subnet: Ipv4Net,
    },
    #[error(
        "network {0}: containers reach each other through a bridge, which needs root; without root a container gets user-mode networking on the default network only (or --network none)"
    )]
    NeedsRoot(String),
    #[error(
        "network {0}: on macOS every container is on the host's NAT, which is the default network; use it or --network none"
    )]
    OnlyDefault(String),
    #[error("no free subnet left for a new network: give one with --subnet")]
    NoFreeSubnet,
    #[error("network {network} has no free address left ({subnet})")]
    Full { network: String, subnet: Ipv4Net },
    #[error("network {network} is in use by containers: {containers}")]
    InUse { network: String, containers: String },
    #[error("corrupt network record {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("invalid port {spec:?}: {reason}")]
    InvalidPort { spec: String, reason: String },
    #[error("invalid --add-host {spec:?}: {reason}")]
    InvalidHost { spec: String, reason: String },
    #[error("{0} needs a network, and --network none gives the container none")]
    NoNetwork(&'static str),
    #[error("port {0} is already in use on the host")]
    PortTaken(String),
    #[error("{0}")]
    Host(String),
    #[error(transparent)]
    Atomic(#[from] atomic::Error),
    #[error(transparent)]
    Properties(#[from] crate::properties::Error),
    #[error(transparent)]
    Io(#[from] crate::io_error::IoError),
}

/// A network's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub subnet: Ipv4Net,
    /// The host's address on the network: containers' default route, and
    /// how the host reaches them.
    pub gateway: Ipv4Addr,
    /// No way out: containers reach each other and the host, nothing else.
    pub internal: bool,
    pub created: u64,
}

/// Where a container is on a network: written into its record at create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub address: Ipv4Addr,
    #[serde(default)]
    pub mode: Mode,
}

/// How a container is on its network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// An address of its own on the network's bridge (Linux as root).
    #[default]
    Bridge,
    /// QEMU's user-mode stack (Linux without root): egress and published
    /// ports through QEMU's own NAT, no peers; address by DHCP from QEMU.
    User,
    /// The host's NAT (macOS, Virtualization.framework): address by DHCP
    /// from the host, known once the guest has it.
    Nat,
}

impl Mode {
    /// Whether the guest asks a DHCP server for its address (the host's
    /// NAT or QEMU's) rather than being told one we chose.
    pub fn dhcp(self) -> bool {
        self != Mode::Bridge
    }
}

/// QEMU's user-mode network as QEMU lays it out by default; every
/// container on it has the same address, reachable only through QEMU.
pub mod user_mode {
    use std::net::Ipv4Addr;

    pub const PREFIX: u8 = 24;
    pub const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
    pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    /// QEMU's DNS forwarder, which asks the host's resolvers.
    pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
}

/// What a lease file holds: who has the address, by ID and by name (the
/// name is what other containers look it up by).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Lease {
    pub container: String,
    pub name: String,
}

/// The networks under an app root.
#[derive(Clone)]
pub struct Networks {
    root: PathBuf,
    app_root: PathBuf,
}

impl Networks {
    pub fn open(app_root: &Path) -> Result<Networks, Error> {
        let root = app_root.join("networks");
        std::fs::create_dir_all(&root).map_err(io(format!("create {}", root.display())))?;
        Ok(Networks {
            root,
            app_root: app_root.to_path_buf(),
        })
    }

    /// The default network's subnet: the `network.subnet` property's, else
    /// Apple's.
    fn default_subnet(&self) -> Result<Ipv4Net, Error> {
        let property = crate::properties::Properties::open(&self.app_root)
            .get(crate::properties::NETWORK_SUBNET)?;
        // The property was checked when set.
        Ok(property
            .and_then(|s| parse_subnet(&s).ok())
            .unwrap_or_else(|| DEFAULT_SUBNET.parse().expect("valid")))
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn record(&self, name: &str) -> PathBuf {
        self.dir(name).join("network.json")
    }

    fn leases(&self, name: &str) -> PathBuf {
        self.dir(name).join("leases")
    }

    /// A network by name; `default` is made on first use, and made again
    /// when `network.subnet` changed and nothing is on it.
    pub fn get(&self, name: &str) -> Result<Network, Error> {
        if name != DEFAULT {
            return self
                .load(name)?
                .ok_or_else(|| Error::NoSuchNetwork(name.to_string()));
        }
        let subnet = self.default_subnet()?;
        if let Some(network) = self.load(name)?
            && network.subnet == subnet
        {
            return Ok(network);
        }
        let _lock = atomic::lock(&self.root.join(".lock"))?;
        match self.load(name)? {
            Some(network) if network.subnet == subnet || !self.users(name)?.is_empty() => {
                Ok(network)
            }
            Some(network) => {
                self.check_free(subnet)?;
                self.take_down(&network)?;
                self.write(DEFAULT, subnet, false)
            }
            None => {
                self.check_free(subnet)?;
                self.write(DEFAULT, subnet, false)
            }
        }
    }

    /// Refuses a subnet for the default network that another one has.
    fn check_free(&self, subnet: Ipv4Net) -> Result<(), Error> {
        for name in self.names()? {
            if let Ok(Some(other)) = self.load(&name)
                && overlaps(other.subnet, subnet)
            {
                return Err(Error::Overlap {
                    subnet,
                    other: other.name,
                    other_subnet: other.subnet,
                });
            }
        }
        Ok(())
    }

    /// The names of the created networks (all but `default`), sorted.
    fn names(&self) -> Result<Vec<String>, Error> {
        let entries =
            std::fs::read_dir(&self.root).map_err(io(format!("read {}", self.root.display())))?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n != DEFAULT && crate::name::valid(n))
            .collect();
        names.sort();
        Ok(names)
    }

    fn load(&self, name: &str) -> Result<Option<Network>, Error> {
        if !crate::name::valid(name) {
            return Ok(None);
        }
        let path = self.record(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("read {}", path.display()))(e).into()),
        }
    }

    /// Every network, `default` first; a broken record is reported beside
    /// the others rather than hiding them.
    pub fn list(&self) -> Result<(Vec<Network>, Vec<Error>), Error> {
        let mut networks = vec![self.get(DEFAULT)?];
        let mut broken = Vec::new();
        for name in self.names()? {
            match self.load(&name) {
                Ok(Some(network)) => networks.push(network),
                Ok(None) => {} // being created or removed
                Err(e) => broken.push(e),
            }
        }
        Ok((networks, broken))
    }

    /// Creates a network with `subnet`, or the first free /24 of the pool.
    pub fn create(
        &self,
        name: &str,
        subnet: Option<Ipv4Net>,
        internal: bool,
    ) -> Result<Network, Error> {
        if name == DEFAULT || name == NONE {
            return Err(Error::BuiltIn(name.to_string()));
        }
        if !crate::name::valid(name) {
            return Err(Error::InvalidName(name.to_string()));
        }
        // Its subnet is taken too; made now, since list() under our lock
        // must not need the lock to make it.
        self.get(DEFAULT)?;
        let _lock = atomic::lock(&self.root.join(".lock"))?;
        if self.load(name)?.is_some() {
            return Err(Error::Exists(name.to_string()));
        }
        let (existing, _) = self.list()?;
        let subnet = match subnet {
            Some(subnet) => {
                check_subnet(subnet)?;
                if let Some(other) = existing.iter().find(|n| overlaps(n.subnet, subnet)) {
                    return Err(Error::Overlap {
                        subnet,
                        other: other.name.clone(),
                        other_subnet: other.subnet,
                    });
                }
                subnet
            }
            None => (POOL_FIRST..=254)
                .map(|n| Ipv4Net::new(Ipv4Addr::new(192, 168, n, 0), 24).expect("valid"))
                .find(|s| !existing.iter().any(|n| overlaps(n.subnet, *s)))
                .ok_or(Error::NoFreeSubnet)?,
        };
        self.write(name, subnet, internal)
    }

    fn write(&self, name: &str, subnet: Ipv4Net, internal: bool) -> Result<Network, Error> {
        let network = Network {
            name: name.to_string(),
            subnet,
            gateway: subnet
                .hosts()
                .next()
                .expect("prefix 29 or shorter has hosts"),
            internal,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let leases = self.leases(name);
        std::fs::create_dir_all(&leases).map_err(io(format!("create {}", leases.display())))?;
        let bytes = serde_json::to_vec_pretty(&network).expect("network serializes");
        atomic::write_file(&self.record(name), &bytes, 0o644)?;
        Ok(network)
    }

    /// The addresses handed out on a network and who holds them, in
    /// address order. A lease being written (still empty) or broken is
    /// skipped: it must not hide the others.
    pub fn leases_of(&self, name: &str) -> Result<Vec<(Ipv4Addr, Lease)>, Error> {
        let dir = self.leases(name);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io(format!("read {}", dir.display()))(e).into()),
        };
        let mut leases: Vec<(Ipv4Addr, Lease)> = entries
            .flatten()
            .filter_map(|e| {
                let address = e.file_name().to_str()?.parse().ok()?;
                let lease = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
                Some((address, lease))
            })
            .collect();
        leases.sort();
        Ok(leases)
    }

    /// The containers holding addresses on a network.
    pub fn users(&self, name: &str) -> Result<Vec<String>, Error> {
        let mut users: Vec<String> = self
            .leases_of(name)?
            .into_iter()
            .map(|(_, lease)| lease.container)
            .collect();
        users.sort();
        Ok(users)
    }

    /// The address of the container called `host` (its name or its short
    /// ID, as Docker resolves them) on a network.
    pub fn lookup(&self, network: &str, host: &str) -> Option<Ipv4Addr> {
        let host = host.to_ascii_lowercase();
        self.leases_of(network)
            .ok()?
            .into_iter()
            .find_map(|(address, lease)| {
                let short = &lease.container[..lease.container.len().min(12)];
                (lease.name.to_ascii_lowercase() == host || short == host).then_some(address)
            })
    }

    /// Removes a network no container uses. Its host side (bridge, rules)
    /// goes too, if a killed supervisor left it.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        if name == DEFAULT || name == NONE {
            return Err(Error::BuiltIn(name.to_string()));
        }
        let _lock = atomic::lock(&self.root.join(".lock"))?;
        let network = self
            .load(name)?
            .ok_or_else(|| Error::NoSuchNetwork(name.to_string()))?;
        let users = self.users(name)?;
        if !users.is_empty() {
            let short: Vec<&str> = users.iter().map(|id| &id[..id.len().min(12)]).collect();
            return Err(Error::InUse {
                network: name.to_string(),
                containers: short.join(", "),
            });
        }
        self.take_down(&network)?;
        let record = self.record(name);
        std::fs::remove_file(&record).map_err(io(format!("remove {}", record.display())))?;
        let dir = self.dir(name);
        Ok(std::fs::remove_dir_all(&dir).map_err(io(format!("remove {}", dir.display())))?)
    }

    /// Removes a network's host side (bridge, rules), if a killed
    /// supervisor left it.
    fn take_down(&self, network: &Network) -> Result<(), Error> {
        #[cfg(target_os = "linux")]
        bridge::Host::new(&self.root, network).remove()?;
        #[cfg(not(target_os = "linux"))]
        let _ = network;
        Ok(())
    }

    /// Puts a container (`lease`) on a network: the lowest free address on
    /// it; or, on Linux without root (no bridges, no taps), QEMU's
    /// user-mode stack, which only the default network can be.
    pub fn attach(&self, name: &str, lease: &Lease) -> Result<Endpoint, Error> {
        match mode_for(name)? {
            Mode::Bridge => self.allocate(name, lease),
            Mode::User => Ok(Endpoint {
                network: DEFAULT.to_string(),
                address: user_mode::GUEST,
                mode: Mode::User,
            }),
            // Known once the guest has its lease.
            Mode::Nat => Ok(Endpoint {
                network: DEFAULT.to_string(),
                address: Ipv4Addr::UNSPECIFIED,
                mode: Mode::Nat,
            }),
        }
    }

    /// Gives a container (`lease`) the lowest free address on a network.
    fn allocate(&self, name: &str, lease: &Lease) -> Result<Endpoint, Error> {
        let network = self.get(name)?;
        let leases = self.leases(name);
        std::fs::create_dir_all(&leases).map_err(io(format!("create {}", leases.display())))?;
        for address in network.subnet.hosts().filter(|a| *a != network.gateway) {
            let path = leases.join(address.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    let bytes = serde_json::to_vec(lease).expect("a lease serializes");
                    std::io::Write::write_all(&mut file, &bytes)
                        .map_err(io(format!("write {}", path.display())))?;
                    return Ok(Endpoint {
                        network: name.to_string(),
                        address,
                        mode: Mode::Bridge,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(format!("create {}", path.display()))(e).into()),
            }
        }
        Err(Error::Full {
            network: name.to_string(),
            subnet: network.subnet,
        })
    }

    /// Gives an address back; one already given back is fine.
    pub fn release(&self, endpoint: &Endpoint) -> Result<(), Error> {
        if endpoint.mode != Mode::Bridge {
            return Ok(());
        }
        let path = self
            .leases(&endpoint.network)
            .join(endpoint.address.to_string());
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(format!("remove {}", path.display()))(e).into())
            }
            _ => Ok(()),
        }
    }

    /// Gives back every address `container` (an ID) holds, on any network:
    /// for a container whose record, which names its endpoint, is lost.
    /// Returns the networks it was on.
    pub fn release_all(&self, container: &str) -> Result<Vec<String>, Error> {
        let mut on = Vec::new();
        for name in std::iter::once(DEFAULT.to_string()).chain(self.names()?) {
            for (address, lease) in self.leases_of(&name)? {
                if lease.container == container {
                    self.release(&Endpoint {
                        network: name.clone(),
                        address,
                        mode: Mode::Bridge,
                    })?;
                    on.push(name.clone());
                }
            }
        }
        Ok(on)
    }

    /// The networks directory, where [`bridge`] keeps its locks.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// How a container can be on network `name` here: Linux without root has
/// no bridges and taps, so only the default network, in user mode; on
/// macOS every container is on the host's one NAT, which is the default
/// network.
pub fn mode_for(name: &str) -> Result<Mode, Error> {
    if !cfg!(target_os = "linux") {
        return match name {
            DEFAULT => Ok(Mode::Nat),
            _ => Err(Error::OnlyDefault(name.to_string())),
        };
    }
    if !nix::unistd::geteuid().is_root() {
        return match name {
            DEFAULT => Ok(Mode::User),
            _ => Err(Error::NeedsRoot(name.to_string())),
        };
    }
    Ok(Mode::Bridge)
}

fn check_subnet(subnet: Ipv4Net) -> Result<(), Error> {
    if !(8..=29).contains(&subnet.prefix_len()) || subnet.trunc() != subnet {
        return Err(Error::InvalidSubnet(subnet.to_string()));
    }
    Ok(())
}

/// Parses `--subnet`: an IPv4 CIDR whose host bits are zero.
pub fn parse_subnet(text: &str) -> Result<Ipv4Net, Error> {
    let subnet: Ipv4Net = text
        .parse()
        .map_err(|_| Error::InvalidSubnet(text.to_string()))?;
    check_subnet(subnet).map(|()| subnet)
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A UDP socket of our own towards `to` (the port relays' flows, the DNS
/// server's questions upstream).
async fn connect_udp(to: std::net::SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let any: std::net::SocketAddr = match to {
        std::net::SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        std::net::SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(any).await?;
    socket.connect(to).await?;
    Ok(socket)
}

/// The name servers in a resolv.conf: where a network's DNS server sends
/// the names it does not know. Loopback ones included: that server runs on
/// the host.
pub fn nameservers(resolv_conf: &str) -> Vec<std::net::IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_exists_created_networks_get_free_subnets_and_names_are_checked() {
        let root = tempfile::tempdir().unwrap();
        let networks = Networks::open(root.path()).unwrap();
        let default = networks.get(DEFAULT).unwrap();
        assert_eq!(default.subnet.to_string(), "192.168.64.0/24");
        assert_eq!(default.gateway, Ipv4Addr::new(192, 168, 64, 1));
        let a = networks.create("a", None, false).unwrap();
        assert_eq!(a.subnet.to_string(), "192.168.65.0/24");
        let b = networks
            .create("b", Some(parse_subnet("10.9.0.0/16").unwrap()), true)
            .unwrap();
        assert!(b.internal);
        assert!(matches!(
            networks.create("a", None, false),
            Err(Error::Exists(_))
        ));
        assert!(matches!(
            networks.create("c", Some(parse_subnet("10.9.8.0/24").unwrap()), false),
            Err(Error::Overlap { .. })
        ));
        assert!(matches!(
            networks.create("none", None, false),
            Err(Error::BuiltIn(_))
        ));
        assert!(matches!(
            networks.create("-x", None, false),
            Err(Error::InvalidName(_))
        ));
        assert!(parse_subnet("10.0.0.1/24").is_err());
        assert!(parse_subnet("10.0.0.0/30").is_err());
        let (all, broken) = networks.list().unwrap();
        let names: Vec<&str> = all.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["default", "a", "b"]);
        assert!(broken.is_empty());

        // network.subnet moves the default network while nothing is on it,
        // and never onto another network's subnet.
        let properties = crate::properties::Properties::open(root.path());
        properties
            .set(crate::properties::NETWORK_SUBNET, Some("10.30.0.0/24"))
            .unwrap();
        let default = networks.get(DEFAULT).unwrap();
        assert_eq!(default.gateway, Ipv4Addr::new(10, 30, 0, 1));
        let lease = Lease {
            container: "c".repeat(64),
            name: "c".into(),
        };
        let endpoint = networks.allocate(DEFAULT, &lease).unwrap();
        properties
            .set(crate::properties::NETWORK_SUBNET, Some("10.31.0.0/24"))
            .unwrap();
        assert_eq!(networks.get(DEFAULT).unwrap().subnet, default.subnet);
        networks.release(&endpoint).unwrap();
        assert_eq!(
            networks.get(DEFAULT).unwrap().subnet.to_string(),
            "10.31.0.0/24"
        );
        properties
            .set(crate::properties::NETWORK_SUBNET, Some("10.9.0.0/24"))
            .unwrap();
        assert!(matches!(networks.get(DEFAULT), Err(Error::Overlap { .. })));
        properties
            .set(crate::properties::NETWORK_SUBNET, None)
            .unwrap();

        // A broken record is listed as broken; the rest still are.
        std::fs::write(root.path().join("networks/a/network.json"), b"{").unwrap();
        let (all, broken) = networks.list().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(broken.len(), 1);
    }

    fn lease(id: &str) -> Lease {
        Lease {
            container: format!("{id}xxxxxxxxxxxxxxxx"),
            name: format!("name-{id}"),
        }
    }

    #[test]
    fn addresses_are_handed_out_once_and_given_back() {
        let root = tempfile::tempdir().unwrap();
        let networks = Networks::open(root.path()).unwrap();
        let subnet = parse_subnet("10.1.0.0/29").unwrap();
        networks.create("small", Some(subnet), false).unwrap();
        // .1 is the gateway: .2 to .6 are for containers.
        let endpoints: Vec<Endpoint> = (0..5)
            .map(|i| {
                networks
                    .allocate("small", &lease(&format!("c{i}")))
                    .unwrap()
            })
            .collect();
        assert_eq!(endpoints[0].address, Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(endpoints[4].address, Ipv4Addr::new(10, 1, 0, 6));
        assert!(matches!(
            networks.allocate("small", &lease("c5")),
            Err(Error::Full { .. })
        ));
        assert_eq!(networks.users("small").unwrap().len(), 5);
        assert!(matches!(networks.remove("small"), Err(Error::InUse { .. })));
        networks.release(&endpoints[1]).unwrap();
        networks.release(&endpoints[1]).unwrap();
        assert_eq!(
            networks.allocate("small", &lease("c6")).unwrap().address,
            Ipv4Addr::new(10, 1, 0, 3)
        );
        // By name (any case) or short ID; a broken lease hides no other.
        assert_eq!(
            networks.lookup("small", "NAME-c6"),
            Some(Ipv4Addr::new(10, 1, 0, 3))
        );
        assert_eq!(
            networks.lookup("small", "c0xxxxxxxxxx"),
            Some(Ipv4Addr::new(10, 1, 0, 2))
        );
        assert_eq!(networks.lookup("small", "c1"), None);
        std::fs::write(root.path().join("networks/small/leases/10.1.0.4"), b"{").unwrap();
        assert_eq!(networks.users("small").unwrap().len(), 4);
        assert_eq!(
            networks.lookup("small", "name-c4"),
            Some(Ipv4Addr::new(10, 1, 0, 6))
        );
    }

    #[test]
    fn concurrent_allocations_never_share_an_address() {
        let root = tempfile::tempdir().unwrap();
        let networks = Networks::open(root.path()).unwrap();
        networks
            .create("busy", Some(parse_subnet("10.2.0.0/24").unwrap()), false)
            .unwrap();
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let networks = networks.clone();
                std::thread::spawn(move || {
                    (0..8)
                        .map(|j| {
                            let id = format!("t{i}-{j}");
                            networks.allocate("busy", &lease(&id)).unwrap().address
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Ipv4Addr> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 128);
        assert_eq!(networks.users("busy").unwrap().len(), 128);
    }

    #[test]
    fn nameservers_are_read_from_resolv_conf() {
        let conf = "# x\nnameserver 127.0.0.53\nnameserver 203.0.113.53\nnameserver ::1\nnameserver x\nsearch lan\n";
        let servers: Vec<String> = nameservers(conf).iter().map(|s| s.to_string()).collect();
        assert_eq!(servers, ["127.0.0.53", "203.0.113.53", "::1"]);
    }
}
