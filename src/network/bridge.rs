//! A network on a Linux host (root): one bridge per network with the
//! gateway address, one tap per running container on it, and an nftables
//! table per network that masquerades its traffic out (unless internal)
//! and keeps other networks and the outside from opening connections in.
//!
//! Made when a network's first container starts, removed when its last one
//! stops, under a lock per network so that starts and stops in many
//! processes agree. A tap is opened by the supervisor and handed to QEMU;
//! it vanishes with the last descriptor, so even a killed VM leaves none.
//!
//! The bridge and rules are set up with iproute2's `ip` and with `nft`: a
//! few one-shot calls per start, and `nft -f` applies a whole table in one
//! transaction with nft's own parser, which hand-built netlink messages
//! would have to reproduce.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{Error, Network};
use crate::atomic;
use crate::io_error::io;

/// Bridges of ours start with this; isolation rules match on it.
const BRIDGE_PREFIX: &str = "ctrbr";
const TAP_PREFIX: &str = "ctrtap";
/// The MTU of every bridge, tap and guest interface.
pub const MTU: u32 = 1500;

/// One network's host side.
pub struct Host {
    network: Network,
    bridge: String,
    lock: PathBuf,
}

impl Host {
    /// `networks_dir` tells app roots apart: two app roots' networks of the
    /// same name are different bridges.
    pub fn new(networks_dir: &Path, network: &Network) -> Host {
        let key = Sha256::digest(
            networks_dir
                .join(&network.name)
                .as_os_str()
                .as_encoded_bytes(),
        );
        Host {
            network: network.clone(),
            bridge: format!("{BRIDGE_PREFIX}{}", &hex::encode(key)[..8]),
            lock: networks_dir.join(format!(".{}.lock", network.name)),
        }
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// Makes sure the bridge and its rules exist, and opens a tap on it for
    /// the container `id`.
    pub fn plug(&self, id: &str) -> Result<OwnedFd, Error> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::Host(format!(
                "network {}: containers on a network need root on Linux for now (a bridge and taps); use --network none",
                self.network.name
            )));
        }
        let _lock = atomic::lock(&self.lock)?;
        if !link_exists(&self.bridge) {
            self.create_bridge()?;
        }
        let name = tap_name(id);
        let tap = open_tap(&name)?;
        let mtu = MTU.to_string();
        ip(&[
            "link",
            "set",
            &name,
            "master",
            &self.bridge,
            "mtu",
            &mtu,
            "up",
        ])?;
        Ok(tap)
    }

    fn create_bridge(&self) -> Result<(), Error> {
        let gateway = format!(
            "{}/{}",
            self.network.gateway,
            self.network.subnet.prefix_len()
        );
        let result = ip(&["link", "add", &self.bridge, "type", "bridge"])
            .and_then(|()| ip(&["addr", "add", &gateway, "dev", &self.bridge]))
            .and_then(|()| ip(&["link", "set", &self.bridge, "mtu", &MTU.to_string(), "up"]))
            .and_then(|()| nft(&self.ruleset()));
        if result.is_ok() && !self.network.internal {
            // Forwarding is per network namespace: this one's, as Docker does.
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .map_err(io("enable IPv4 forwarding"))?;
        }
        if result.is_err() {
            let _ = self.teardown();
        }
        result
    }

    /// The network's nftables table: replaced whole, in one transaction.
    fn ruleset(&self) -> String {
        let (bridge, subnet) = (&self.bridge, self.network.subnet);
        let table = &self.bridge;
        let mut forward = vec![
            // Between containers of this network: with br_netfilter loaded,
            // bridged frames pass this hook too, in and out of the bridge.
            format!("iifname \"{bridge}\" oifname \"{bridge}\" accept"),
            format!("oifname \"{bridge}\" ct state established,related accept"),
            format!("oifname \"{bridge}\" ct status dnat accept"),
            // Nothing else comes in: not from other networks, not from outside.
            format!("oifname \"{bridge}\" iifname != \"{bridge}\" drop"),
        ];
        let mut postrouting = Vec::new();
        if self.network.internal {
            forward.push(format!("iifname \"{bridge}\" drop"));
        } else {
            forward.push(format!(
                "iifname \"{bridge}\" oifname \"{BRIDGE_PREFIX}*\" drop"
            ));
            postrouting.push(format!(
                "ip saddr {subnet} oifname != \"{bridge}\" masquerade"
            ));
        }
        format!(
            "table ip {table} {{}}\ndelete table ip {table}\ntable ip {table} {{\n\
             \tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\t\t{}\n\t}}\n\
             \tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\t{}\n\t}}\n}}\n",
            forward.join("\n\t\t"),
            postrouting.join("\n\t\t"),
        )
    }

    /// After a container stopped: waits for its tap to go (the VM's
    /// descriptor closes as QEMU dies), then removes the bridge and rules
    /// if no other container is on them.
    pub fn unplug(&self, id: &str) -> Result<(), Error> {
        let tap = tap_name(id);
        let deadline = Instant::now() + Duration::from_secs(10);
        while link_exists(&tap) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _lock = atomic::lock(&self.lock)?;
        if ports(&self.bridge) == 0 {
            self.teardown()?;
        }
        Ok(())
    }

    /// Removes the bridge and rules whatever is on them (`network rm`, which
    /// checked that no container uses the network).
    pub fn remove(&self) -> Result<(), Error> {
        let _lock = atomic::lock(&self.lock)?;
        self.teardown()
    }

    /// The bridge and its table are made together (and a failed making
    /// undone), so no bridge means nothing to remove: no root needed then.
    fn teardown(&self) -> Result<(), Error> {
        if !link_exists(&self.bridge) {
            return Ok(());
        }
        let table = &self.bridge;
        nft(&format!("table ip {table} {{}}\ndelete table ip {table}\n"))?;
        ip(&["link", "del", &self.bridge])
    }
}

/// The tap of container `id`: names are limited to 15 bytes.
fn tap_name(id: &str) -> String {
    format!("{TAP_PREFIX}{}", &id[..id.len().min(9)])
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The interfaces on a bridge.
fn ports(bridge: &str) -> usize {
    std::fs::read_dir(Path::new("/sys/class/net").join(bridge).join("brif"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

/// Runs a configuration program; its error output is the error.
fn run(program: &str, package: &str, args: &[&str], stdin: Option<&str>) -> Result<(), Error> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Host(format!(
                "{program} is not installed: it comes with the Debian package {package}, which scripts/setup installs"
            )),
            _ => io(format!("run {program}"))(e).into(),
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        std::io::Write::write_all(&mut pipe, text.as_bytes())
            .map_err(io(format!("write to {program}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(io(format!("run {program}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::Host(format!(
            "{program} {}: {}",
            args.join(" "),
            stderr.trim().replace('\n', "; ")
        )));
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<(), Error> {
    run("ip", "iproute2", args, None)
}

fn nft(script: &str) -> Result<(), Error> {
    run("nft", "nftables", &["-f", "-"], Some(script))
}

/// Opens a new tap device named `name`. Not persistent: it exists while a
/// descriptor for it is open. With virtio-net headers, so QEMU offers the
/// guest checksum and segmentation offload: a guest under emulation sends
/// a few large frames instead of many small ones (1.4x the throughput
/// measured with scripts/bench-network).
fn open_tap(name: &str) -> Result<OwnedFd, Error> {
    const IFF_TAP: libc::c_short = 0x0002;
    const IFF_NO_PI: libc::c_short = 0x1000;
    const IFF_VNET_HDR: libc::c_short = 0x4000;
    // TUNSETIFF = _IOW('T', 202, int); libc does not export it.
    nix::ioctl_write_ptr_bad!(
        tun_set_iff,
        nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
        libc::ifreq
    );
    let context = || format!("create tap {name}");
    let raw = nix::fcntl::open(
        "/dev/net/tun",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| io(context())(e.into()))?;
    // SAFETY: ifreq is plain data; zero is a valid value for every field.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    // SAFETY: the request outlives the call, which only reads it.
    unsafe { tun_set_iff(std::os::fd::AsRawFd::as_raw_fd(&raw), &request) }
        .map_err(|e| io(context())(e.into()))?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn rules_masquerade_unless_internal_and_names_fit() {
        let network = Network {
            name: "web".into(),
            subnet: "10.5.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 5, 0, 1),
            internal: false,
            created: 0,
        };
        let host = Host::new(Path::new("/x/networks"), &network);
        assert_eq!(host.bridge().len(), 13);
        assert!(host.bridge().starts_with("ctrbr"));
        assert_ne!(
            host.bridge(),
            Host::new(Path::new("/y/networks"), &network).bridge()
        );
        let rules = host.ruleset();
        assert!(
            rules.contains("ip saddr 10.5.0.0/24 oifname != "),
            "{rules}"
        );
        let internal = Host::new(
            Path::new("/x/networks"),
            &Network {
                internal: true,
                ..network
            },
        );
        assert!(!internal.ruleset().contains("masquerade"));
        assert!(tap_name(&"a".repeat(64)).len() <= 15);
    }
}
