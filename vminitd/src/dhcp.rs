//! A DHCPv4 client for one interface: DISCOVER, OFFER, REQUEST, ACK, and
//! the lease it gets back. The host applies the lease (address, route,
//! resolv.conf) through the same calls as a static one, and records the
//! address: on macOS the host's NAT (Virtualization.framework) hands out
//! guests' addresses, and under QEMU's user-mode stack so does QEMU.
//!
//! dhcproto reads and writes the messages. The socket is a UDP socket bound
//! to port 68 on the interface, with the broadcast flag set in every
//! request so servers broadcast their replies: the interface has no address
//! yet, so a unicast reply could not reach it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use tokio::net::UdpSocket;

const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;
/// How often an unanswered request is sent again.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no DHCP server answered on {interface} within {seconds} s")]
    NoAnswer { interface: String, seconds: u64 },
    #[error("the DHCP server refused the address it offered on {0}")]
    Refused(String),
    #[error("DHCP socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("DHCP message: {0}")]
    Encode(#[from] dhcproto::error::EncodeError),
}

/// What the server gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub mtu: Option<u16>,
    pub server: Ipv4Addr,
    pub seconds: Option<u32>,
}

/// The request messages of one exchange, all with the same transaction ID.
struct Exchange {
    xid: u32,
    mac: [u8; 6],
    hostname: String,
}

impl Exchange {
    fn message(&self, kind: MessageType) -> Message {
        let unspecified = Ipv4Addr::UNSPECIFIED;
        let mut message = Message::new_with_id(
            self.xid,
            unspecified,
            unspecified,
            unspecified,
            unspecified,
            &self.mac,
        );
        message.set_flags(Flags::default().set_broadcast());
        let options = message.opts_mut();
        options.insert(DhcpOption::MessageType(kind));
        options.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::InterfaceMtu,
        ]));
        if !self.hostname.is_empty() {
            options.insert(DhcpOption::Hostname(self.hostname.clone()));
        }
        message
    }

    fn discover(&self) -> Message {
        self.message(MessageType::Discover)
    }

    fn request(&self, offer: &Lease) -> Message {
        let mut message = self.message(MessageType::Request);
        let options = message.opts_mut();
        options.insert(DhcpOption::RequestedIpAddress(offer.address));
        options.insert(DhcpOption::ServerIdentifier(offer.server));
        message
    }

    /// A reply to this exchange of the kind wanted, as a lease; anything
    /// else (another client's, a stray message) is None.
    fn reply(&self, bytes: &[u8], wanted: MessageType) -> Option<Result<Lease, ()>> {
        let message = Message::decode(&mut Decoder::new(bytes)).ok()?;
        if message.xid() != self.xid || message.chaddr().get(..6) != Some(&self.mac[..]) {
            return None;
        }
        let kind = message.opts().msg_type()?;
        if kind == MessageType::Nak {
            return Some(Err(()));
        }
        if kind != wanted {
            return None;
        }
        let options = message.opts();
        let mask = match options.get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(mask)) => u32::from(*mask),
            _ => u32::MAX << 8,
        };
        let server = match options.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(server)) => *server,
            _ => message.siaddr(),
        };
        Some(Ok(Lease {
            address: message.yiaddr(),
            prefix: mask.leading_ones() as u8,
            router: match options.get(OptionCode::Router) {
                Some(DhcpOption::Router(routers)) => routers.first().copied(),
                _ => None,
            },
            dns: match options.get(OptionCode::DomainNameServer) {
                Some(DhcpOption::DomainNameServer(servers)) => servers.clone(),
                _ => vec![],
            },
            mtu: match options.get(OptionCode::InterfaceMtu) {
                Some(DhcpOption::InterfaceMtu(mtu)) => Some(*mtu),
                _ => None,
            },
            server,
            seconds: match options.get(OptionCode::AddressLeaseTime) {
                Some(DhcpOption::AddressLeaseTime(seconds)) => Some(*seconds),
                _ => None,
            },
        }))
    }
}

/// Gets a lease on `interface` (which must be up) within `timeout`.
pub async fn acquire(interface: &str, hostname: &str, timeout: Duration) -> Result<Lease, Error> {
    let mac = mac_address(interface)?;
    let exchange = Exchange {
        xid: rand_xid(),
        mac,
        hostname: hostname.to_string(),
    };
    let socket = bind(interface)?;
    let no_answer = || Error::NoAnswer {
        interface: interface.to_string(),
        seconds: timeout.as_secs(),
    };
    let run = async {
        let offer = ask(&socket, &exchange, &exchange.discover(), MessageType::Offer)
            .await?
            .map_err(|()| Error::Refused(interface.to_string()))?;
        ask(
            &socket,
            &exchange,
            &exchange.request(&offer),
            MessageType::Ack,
        )
        .await?
        .map_err(|()| Error::Refused(interface.to_string()))
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| no_answer())?
}

/// Broadcasts `message` every second until the reply wanted comes.
async fn ask(
    socket: &UdpSocket,
    exchange: &Exchange,
    message: &Message,
    wanted: MessageType,
) -> Result<Result<Lease, ()>, Error> {
    let bytes = message.to_vec()?;
    let servers = SocketAddr::from((Ipv4Addr::BROADCAST, SERVER_PORT));
    let mut buf = vec![0u8; 1500];
    loop {
        socket.send_to(&bytes, servers).await?;
        let deadline = tokio::time::Instant::now() + RETRY;
        while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            if let Some(reply) = exchange.reply(&buf[..received?], wanted) {
                return Ok(reply);
            }
        }
    }
}

fn bind(interface: &str) -> Result<UdpSocket, Error> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, CLIENT_PORT)).into())?;
    Ok(UdpSocket::from_std(socket.into())?)
}

fn mac_address(interface: &str) -> Result<[u8; 6], Error> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address"))?;
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        *byte = parts
            .next()
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .ok_or_else(|| std::io::Error::other(format!("{interface} has no MAC address")))?;
    }
    Ok(mac)
}

/// A transaction ID: only needs to tell our exchange from others on the link.
fn rand_xid() -> u32 {
    let mut bytes = [0u8; 4];
    // SAFETY: the kernel writes at most bytes.len() bytes into the buffer.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled != 4 {
        return std::process::id();
    }
    u32::from_ne_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's reply to `request`, as a DHCP server builds it.
    fn reply(request: &Message, kind: MessageType, xid: u32) -> Vec<u8> {
        let mut message = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::new(10, 0, 2, 2),
            Ipv4Addr::UNSPECIFIED,
            &request.chaddr()[..6],
        );
        message.set_opcode(dhcproto::v4::Opcode::BootReply);
        let options = message.opts_mut();
        options.insert(DhcpOption::MessageType(kind));
        options.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        options.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        options.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        options.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        options.insert(DhcpOption::AddressLeaseTime(86400));
        message.to_vec().unwrap()
    }

    #[test]
    fn offers_and_acks_become_leases_and_others_are_ignored() {
        let exchange = Exchange {
            xid: 7,
            mac: [2, 0, 0, 0, 0, 1],
            hostname: "web".into(),
        };
        let discover = exchange.discover();
        assert!(discover.flags().broadcast());
        assert_eq!(discover.opts().msg_type(), Some(MessageType::Discover));
        assert!(matches!(
            discover.opts().get(OptionCode::Hostname),
            Some(DhcpOption::Hostname(name)) if name == "web"
        ));
        let offer = exchange
            .reply(&reply(&discover, MessageType::Offer, 7), MessageType::Offer)
            .unwrap()
            .unwrap();
        assert_eq!(
            offer,
            Lease {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                router: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
                mtu: None,
                server: Ipv4Addr::new(10, 0, 2, 2),
                seconds: Some(86400),
            }
        );
        let request = exchange.request(&offer);
        assert!(matches!(
            request.opts().get(OptionCode::RequestedIpAddress),
            Some(DhcpOption::RequestedIpAddress(a)) if *a == offer.address
        ));
        // Another transaction's reply, or an offer when an ACK is awaited: not ours.
        assert!(
            exchange
                .reply(&reply(&request, MessageType::Ack, 8), MessageType::Ack)
                .is_none()
        );
        assert!(
            exchange
                .reply(&reply(&request, MessageType::Offer, 7), MessageType::Ack)
                .is_none()
        );
        assert_eq!(
            exchange.reply(&reply(&request, MessageType::Nak, 7), MessageType::Ack),
            Some(Err(()))
        );
        assert!(exchange.reply(b"garbage", MessageType::Ack).is_none());
    }
}
