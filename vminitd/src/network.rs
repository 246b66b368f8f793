//! Guest network configuration through netlink (rtnetlink): what `ip link
//! set`, `ip addr add` and `ip route add` would do, without an `ip` binary
//! in the guest.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no network interface named {0}")]
    NoInterface(String),
    #[error("{0:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")]
    BadMac(String),
    #[error("invalid address {0:?}: expected ADDRESS/PREFIX")]
    BadCidr(String),
    #[error("gateway {0} and destination {1} are not the same address family")]
    MixedFamilies(String, String),
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses `aa:bb:cc:dd:ee:ff`.
fn parse_mac(text: &str) -> Result<Vec<u8>, Error> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|part| u8::from_str_radix(part, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| Error::BadMac(text.to_string()))?;
    if bytes.len() != 6 {
        return Err(Error::BadMac(text.to_string()));
    }
    Ok(bytes)
}

/// Parses `10.0.0.2/24` (a bare address means a host prefix).
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), Error> {
    let bad = || Error::BadCidr(text.to_string());
    let (address, prefix) = match text.split_once('/') {
        Some((a, p)) => (
            a.parse::<IpAddr>().map_err(|_| bad())?,
            Some(p.parse::<u8>().map_err(|_| bad())?),
        ),
        None => (text.parse::<IpAddr>().map_err(|_| bad())?, None),
    };
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    if prefix > max {
        return Err(bad());
    }
    Ok((address, prefix))
}

pub struct Network {
    handle: Handle,
}

impl Network {
    /// Opens a netlink connection, served by a task on the current runtime.
    pub fn connect() -> Result<Network, Error> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Network { handle })
    }

    async fn index(&self, name: &str) -> Result<u32, Error> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            _ => Err(Error::NoInterface(name.to_string())),
        }
    }

    pub async fn link_set(&self, name: &str, up: bool, mtu: u32, mac: &str) -> Result<(), Error> {
        let index = self.index(name).await?;
        if !mac.is_empty() {
            // Alone and first: the address changes while the link is down.
            let address = parse_mac(mac)?;
            let message = LinkUnspec::new_with_index(index).address(address);
            self.handle.link().set(message.build()).execute().await?;
        }
        let mut message = LinkUnspec::new_with_index(index);
        message = if up { message.up() } else { message.down() };
        if mtu > 0 {
            message = message.mtu(mtu);
        }
        self.handle.link().set(message.build()).execute().await?;
        Ok(())
    }

    pub async fn addr_add(&self, name: &str, cidr: &str) -> Result<(), Error> {
        let index = self.index(name).await?;
        let (address, prefix) = parse_cidr(cidr)?;
        self.handle
            .address()
            .add(index, address, prefix)
            .execute()
            .await?;
        Ok(())
    }

    pub async fn route_add(
        &self,
        destination: &str,
        gateway: &str,
        interface: &str,
    ) -> Result<(), Error> {
        let index = if interface.is_empty() {
            None
        } else {
            Some(self.index(interface).await?)
        };
        let gateway = if gateway.is_empty() {
            None
        } else {
            Some(
                gateway
                    .parse::<IpAddr>()
                    .map_err(|_| Error::BadCidr(gateway.to_string()))?,
            )
        };
        let (address, prefix) = match destination {
            "default" => match gateway {
                Some(IpAddr::V6(_)) => (IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0),
                _ => (IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
            },
            cidr => parse_cidr(cidr)?,
        };
        let mismatch = || {
            Error::MixedFamilies(
                gateway.map(|g| g.to_string()).unwrap_or_default(),
                destination.into(),
            )
        };
        let v4 = RouteMessageBuilder::<std::net::Ipv4Addr>::new;
        let v6 = RouteMessageBuilder::<std::net::Ipv6Addr>::new;
        let route = match (address, gateway) {
            (IpAddr::V4(dst), None) => on(v4().destination_prefix(dst, prefix), index),
            (IpAddr::V4(dst), Some(IpAddr::V4(gw))) => {
                on(v4().destination_prefix(dst, prefix).gateway(gw), index)
            }
            (IpAddr::V6(dst), None) => on(v6().destination_prefix(dst, prefix), index),
            (IpAddr::V6(dst), Some(IpAddr::V6(gw))) => {
                on(v6().destination_prefix(dst, prefix).gateway(gw), index)
            }
            _ => return Err(mismatch()),
        };
        self.handle.route().add(route).execute().await?;
        Ok(())
    }
}

/// The route, out through `index` when one was named.
fn on<T>(
    route: RouteMessageBuilder<T>,
    index: Option<u32>,
) -> rtnetlink::packet_route::route::RouteMessage {
    match index {
        Some(index) => route.output_interface(index).build(),
        None => route.build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.0.0.2/24").unwrap(),
            ("10.0.0.2".parse().unwrap(), 24)
        );
        assert_eq!(
            parse_cidr("fd00::2").unwrap(),
            ("fd00::2".parse().unwrap(), 128)
        );
        assert!(parse_cidr("10.0.0.2/33").is_err());
        assert!(parse_cidr("nope/8").is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:0a:FF:00:01:9c").unwrap(),
            [0x02, 0x0a, 0xff, 0x00, 0x01, 0x9c]
        );
        for bad in [
            "",
            "02:0a:ff:00:01",
            "02:0a:ff:00:01:9c:00",
            "02:0a:ff:00:01:zz",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }
}
