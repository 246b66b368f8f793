//! How a VM is plugged into its network, for a container or a build step:
//! its NIC and the host side behind it (a tap on a bridge, QEMU's user-mode
//! stack, or the host's NAT), the network's DNS server, published ports, and
//! the guest's interface configured once it boots.

use std::path::{Path, PathBuf};

use agent_proto::{DhcpAcquireRequest, IpAddrAddRequest, IpLinkSetRequest, IpRouteAddRequest};

use super::container::Container;
use super::{Error, agent};
use crate::network::{self, Endpoint, Network, Networks};
use crate::vm;

/// What is plugged in: a container, or a build step.
pub struct Plug<'a> {
    pub app_root: &'a Path,
    /// Names its tap, and derives its MAC address.
    pub id: &'a str,
    /// The name its DHCP request gives.
    pub hostname: &'a str,
    pub endpoint: Option<Endpoint>,
    pub publish: &'a [network::ports::Port],
}

impl<'a> Plug<'a> {
    pub fn container(container: &'a Container) -> Plug<'a> {
        Plug {
            app_root: container.app_root(),
            id: container.id(),
            hostname: &container.config.name,
            endpoint: container.config.endpoint.clone(),
            publish: &container.config.spec.publish,
        }
    }
}

/// A VM's place on its network while it runs: on Linux as root a tap on
/// the network's bridge, made ready before the VM boots, with the network's
/// DNS server served; on Linux without root QEMU's user-mode stack, which
/// forwards the published ports itself; on macOS the host's NAT. Where the
/// guest gets its address by DHCP, what the lease says replaces the
/// placeholders once the guest has it.
pub struct Plugged {
    app_root: PathBuf,
    id: String,
    hostname: String,
    /// The network as the guest sees it (its subnet and gateway).
    pub network: Network,
    pub endpoint: Endpoint,
    /// The name server the guest's resolv.conf names.
    pub dns_server: Option<std::net::Ipv4Addr>,
    pub nic: vm::Nic,
    /// Published ports, bound, relayed once the guest's address is known.
    published: Option<network::ports::Published>,
    /// The DNS server and port relays: they stop with the container.
    services: Vec<tokio::task::JoinHandle<()>>,
}

/// The guest's interface.
pub const INTERFACE: &str = "eth0";
/// How long the guest may take to get a lease.
const DHCP_TIMEOUT_MS: u32 = 15_000;

impl Plugged {
    /// Published ports are bound first: a taken one fails the start before
    /// anything is made.
    pub fn plug(plug: Plug) -> Result<Option<Plugged>, Error> {
        let Some(endpoint) = plug.endpoint.clone() else {
            return Ok(None);
        };
        let ports = plug.publish;
        let published = network::ports::Published::bind(ports)?;
        let mac = vm::MacAddress::derive(plug.id);
        // Until a lease says otherwise (DHCP modes).
        let placeholder = |gateway| Network {
            name: endpoint.network.clone(),
            subnet: ipnet::Ipv4Net::new(endpoint.address, network::user_mode::PREFIX)
                .expect("a valid prefix")
                .trunc(),
            gateway,
            internal: false,
            created: 0,
        };
        let (network, dns_server, attachment, published, services) = match endpoint.mode {
            network::Mode::User => {
                // QEMU binds the ports itself; ours only showed they are free.
                drop(published);
                let forwards = ports
                    .iter()
                    .map(|p| vm::PortForward {
                        udp: p.protocol == network::ports::Protocol::Udp,
                        host: std::net::SocketAddr::new(p.host_ip, p.host_port),
                        guest_port: p.container_port,
                    })
                    .collect();
                (
                    placeholder(network::user_mode::GATEWAY),
                    None,
                    vm::NicAttachment::User { forwards },
                    None,
                    vec![],
                )
            }
            network::Mode::Nat => (
                placeholder(std::net::Ipv4Addr::UNSPECIFIED),
                None,
                vm::NicAttachment::Nat,
                Some(published),
                vec![],
            ),
            network::Mode::Bridge => {
                let networks = Networks::open(plug.app_root)?;
                let network = networks.get(&endpoint.network)?;
                let (tap, dns) = plug_bridge(plug.id, &networks, &network)?;
                (
                    network.clone(),
                    Some(network.gateway),
                    tap,
                    Some(published),
                    vec![dns],
                )
            }
        };
        Ok(Some(Plugged {
            app_root: plug.app_root.to_path_buf(),
            id: plug.id.to_string(),
            hostname: plug.hostname.to_string(),
            network,
            endpoint,
            dns_server,
            nic: vm::Nic { mac, attachment },
            published,
            services,
        }))
    }

    /// Stops its services, and takes the network's host side down if this
    /// was its last VM.
    pub async fn unplug(self) {
        let Plugged {
            app_root,
            id,
            network,
            endpoint,
            nic,
            services,
            ..
        } = self;
        for service in &services {
            service.abort();
        }
        // Our copy of the tap: the tap goes away when the last one closes,
        // and the host side waits for that.
        drop(nic);
        #[cfg(target_os = "linux")]
        if endpoint.mode == network::Mode::Bridge {
            let Ok(networks) = Networks::open(&app_root) else {
                return;
            };
            let host = network::bridge::Host::new(networks.root(), &network);
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || host.unplug(&id)).await {
                eprintln!("Error: take network {} down: {e}", network.name);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (network, endpoint, app_root, id);
    }

    /// Brings the guest's interface up with the container's address (asking
    /// the link's DHCP server for it first, where one hands them out), and
    /// a default route through the gateway unless the network is internal;
    /// then relays the published ports to that address. Returns the
    /// address a lease gave, for the caller to record.
    pub async fn configure_guest(
        &mut self,
        agent: &mut agent::Client,
    ) -> Result<Option<std::net::Ipv4Addr>, Error> {
        agent
            .ip_link_set(IpLinkSetRequest {
                interface: INTERFACE.into(),
                up: true,
                mtu: MTU,
                // The guest's may be a VM template's.
                mac: self.nic.mac.to_string(),
            })
            .await?;
        let leased = if self.endpoint.mode.dhcp() {
            Some(self.take_lease(agent).await?)
        } else {
            None
        };
        agent
            .ip_addr_add(IpAddrAddRequest {
                interface: INTERFACE.into(),
                address: format!(
                    "{}/{}",
                    self.endpoint.address,
                    self.network.subnet.prefix_len()
                ),
            })
            .await?;
        if !self.network.internal && !self.network.gateway.is_unspecified() {
            agent
                .ip_route_add(IpRouteAddRequest {
                    destination: "default".into(),
                    gateway: self.network.gateway.to_string(),
                    interface: INTERFACE.into(),
                })
                .await?;
        }
        if let Some(published) = self.published.take() {
            self.services
                .push(published.serve(self.endpoint.address.into())?);
        }
        Ok(leased)
    }

    /// Gets the guest a lease; takes its address, gateway and name server.
    async fn take_lease(&mut self, agent: &mut agent::Client) -> Result<std::net::Ipv4Addr, Error> {
        let lease = agent
            .dhcp_acquire(DhcpAcquireRequest {
                interface: INTERFACE.into(),
                hostname: self.hostname.clone(),
                timeout_ms: DHCP_TIMEOUT_MS,
            })
            .await?
            .into_inner();
        let subnet: ipnet::Ipv4Net = lease.address.parse().map_err(|_| {
            Error::Agent(format!(
                "the guest's DHCP lease has a bad address {:?}",
                lease.address
            ))
        })?;
        self.endpoint.address = subnet.addr();
        self.network.subnet = subnet.trunc();
        if let Ok(gateway) = lease.gateway.parse() {
            self.network.gateway = gateway;
        }
        self.dns_server = lease.dns.iter().find_map(|s| s.parse().ok());
        Ok(subnet.addr())
    }
}

/// A tap on the network's bridge (made if missing), and the network's DNS
/// server on it.
#[cfg(target_os = "linux")]
fn plug_bridge(
    id: &str,
    networks: &Networks,
    network: &Network,
) -> Result<(vm::NicAttachment, tokio::task::JoinHandle<()>), Error> {
    let host = network::bridge::Host::new(networks.root(), network);
    let tap = host.plug(id)?;
    let host_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let dns = network::dns::Server::bind(networks, network, &network::nameservers(&host_conf))
        .and_then(network::dns::Server::serve);
    match dns {
        Ok(dns) => Ok((vm::NicAttachment::Tap(std::sync::Arc::new(tap)), dns)),
        Err(e) => {
            drop(tap);
            let _ = host.unplug(id);
            Err(e.into())
        }
    }
}

/// Bridges are Linux's; `network::mode_for` never picks them elsewhere.
#[cfg(not(target_os = "linux"))]
fn plug_bridge(
    _: &str,
    _: &Networks,
    network: &Network,
) -> Result<(vm::NicAttachment, tokio::task::JoinHandle<()>), Error> {
    Err(network::Error::Host(format!("network {}: bridges need Linux", network.name)).into())
}

/// The MTU of the guest's interface: the bridge's.
#[cfg(target_os = "linux")]
const MTU: u32 = network::bridge::MTU;
#[cfg(not(target_os = "linux"))]
const MTU: u32 = 1500;
