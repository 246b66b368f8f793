//! A network's DNS server: containers find each other by name.
//!
//! There is no daemon, so every supervisor of a running container on a
//! network serves the network's DNS on the gateway address, port 53, UDP
//! and TCP, bound with `SO_REUSEPORT`: the kernel spreads queries among
//! them, and the service lives exactly as long as the network has a running
//! container, with nothing to start, stop or hand over. Each query reads
//! the network's leases, so a container is found as soon as it has an
//! address and not after it gave it back: no cache to keep true.
//!
//! The name or short ID of a container on the network gets its address.
//! Every other query goes as it is to the host's name servers (those of
//! the host's resolv.conf, loopback ones too: this runs on the host, as
//! Docker's embedded DNS does) and their answer comes back as it is; an
//! internal network has no way out, so those get SERVFAIL. hickory-proto
//! reads and writes the messages.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType, rdata::A};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use serde::{Deserialize, Serialize};

use super::{Error, Network, Networks};
use crate::io_error::io;

/// What a container is told about names: its resolv.conf (`--dns`,
/// `--dns-search`, `--dns-option`, `--dns-domain`, `--no-dns`, as in
/// Apple's CLI) and extra /etc/hosts entries (`--add-host`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Name servers instead of the network's own.
    pub servers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
    pub domain: Option<String>,
    /// Leave the image's resolv.conf as it is.
    pub disabled: bool,
    pub hosts: Vec<ExtraHost>,
}

/// `--add-host NAME:ADDRESS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    pub name: String,
    pub address: HostAddress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostAddress {
    Ip(IpAddr),
    /// Docker's `host-gateway`: the host, as the container reaches it.
    Gateway,
}

/// Parses `--add-host NAME:ADDRESS` (or Docker's newer `NAME=ADDRESS`);
/// the address may be an IPv6 one, colons and all, or `host-gateway`.
pub fn parse_extra_host(text: &str) -> Result<ExtraHost, Error> {
    let bad = |reason: &str| Error::InvalidHost {
        spec: text.to_string(),
        reason: reason.to_string(),
    };
    let (name, address) = text
        .split_once('=')
        .or_else(|| text.split_once(':'))
        .ok_or_else(|| bad("use NAME:ADDRESS"))?;
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(bad(&format!("{name:?} is not a host name")));
    }
    let address = match address {
        "host-gateway" => HostAddress::Gateway,
        ip => {
            let ip = ip
                .strip_prefix('[')
                .and_then(|ip| ip.strip_suffix(']'))
                .unwrap_or(ip);
            HostAddress::Ip(
                ip.parse()
                    .map_err(|_| bad(&format!("{ip:?} is not an IP address or host-gateway")))?,
            )
        }
    };
    Ok(ExtraHost {
        name: name.to_string(),
        address,
    })
}

impl DnsConfig {
    /// The container's resolv.conf, naming `network_server` (the network's
    /// DNS server) unless `--dns` named others; None keeps the image's.
    pub fn resolv_conf(&self, network_server: Option<Ipv4Addr>) -> Option<String> {
        if self.disabled {
            return None;
        }
        let servers: Vec<IpAddr> = if self.servers.is_empty() {
            network_server.map(IpAddr::V4).into_iter().collect()
        } else {
            self.servers.clone()
        };
        if servers.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
            && self.domain.is_none()
        {
            return None;
        }
        let mut text = String::new();
        if let Some(domain) = &self.domain {
            text += &format!("domain {domain}\n");
        }
        for server in servers {
            text += &format!("nameserver {server}\n");
        }
        if !self.search.is_empty() {
            text += &format!("search {}\n", self.search.join(" "));
        }
        if !self.options.is_empty() {
            text += &format!("options {}\n", self.options.join(" "));
        }
        Some(text)
    }

    /// The `--add-host` lines of /etc/hosts; `host-gateway` is the network's
    /// gateway, and refused without a network.
    pub fn hosts_lines(&self, gateway: Option<Ipv4Addr>) -> Result<Vec<String>, Error> {
        self.hosts
            .iter()
            .map(|host| {
                let address = match host.address {
                    HostAddress::Ip(ip) => ip,
                    HostAddress::Gateway => {
                        IpAddr::V4(gateway.ok_or_else(|| Error::InvalidHost {
                            spec: format!("{}:host-gateway", host.name),
                            reason: "host-gateway needs a network; this container has none".into(),
                        })?)
                    }
                };
                Ok(format!("{address}\t{}", host.name))
            })
            .collect()
    }
}

const PORT: u16 = 53;
/// How long one upstream server gets before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Container addresses change when containers are made again: not cached.
const TTL: u32 = 0;

/// What a query gets from us.
#[derive(Debug, PartialEq)]
enum Answer {
    Reply(Vec<u8>),
    /// Not a name of ours: ask the host's servers.
    Forward,
    /// Not a DNS query at all: no answer.
    Ignore,
}

/// Answers `query` from `lookup` (a container's address by name), or says
/// to forward it when `forward` allows.
fn answer(query: &[u8], lookup: impl Fn(&str) -> Option<Ipv4Addr>, forward: bool) -> Answer {
    let Ok(request) = Message::from_vec(query) else {
        return Answer::Ignore;
    };
    if request.message_type() != MessageType::Query {
        return Answer::Ignore;
    }
    let mut response = response_to(&request);
    let [question] = request.queries() else {
        response.set_response_code(ResponseCode::FormErr);
        return reply(response);
    };
    if request.op_code() != OpCode::Query {
        response.set_response_code(ResponseCode::NotImp);
        return reply(response);
    }
    let name = question.name().to_ascii();
    match lookup(name.trim_end_matches('.')) {
        Some(address) => {
            response.set_authoritative(true);
            // Other types of a container's name exist but are empty (no
            // IPv6 yet): a client asking A and AAAA at once is not kept waiting.
            if matches!(question.query_type(), RecordType::A | RecordType::ANY) {
                response.add_answer(Record::from_rdata(
                    question.name().clone(),
                    TTL,
                    RData::A(A(address)),
                ));
            }
        }
        None if forward => return Answer::Forward,
        None => {
            response.set_response_code(ResponseCode::ServFail);
        }
    }
    reply(response)
}

fn response_to(request: &Message) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .add_queries(request.queries().iter().cloned());
    response
}

fn reply(response: Message) -> Answer {
    response.to_vec().map_or(Answer::Ignore, Answer::Reply)
}

/// SERVFAIL for a query no upstream server answered.
fn server_failure(query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let mut response = response_to(&request);
    response.set_response_code(ResponseCode::ServFail);
    response.to_vec().ok()
}

/// One network's DNS server.
pub struct Server {
    networks: Networks,
    network: Network,
    /// The host's name servers; none for an internal network.
    upstream: Vec<SocketAddr>,
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
}

impl Server {
    /// Binds the network's DNS port on its gateway (the bridge must have
    /// that address). `upstream` are the host's name servers.
    pub fn bind(
        networks: &Networks,
        network: &Network,
        upstream: &[IpAddr],
    ) -> Result<Server, Error> {
        let address = SocketAddr::new(network.gateway.into(), PORT);
        let context = || format!("serve DNS on {address}");
        let socket = |kind| -> std::io::Result<socket2::Socket> {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, kind, None)?;
            socket.set_reuse_port(true)?;
            socket.set_reuse_address(true)?;
            socket.set_nonblocking(true)?;
            socket.set_cloexec(true)?;
            socket.bind(&address.into())?;
            Ok(socket)
        };
        let udp = socket(socket2::Type::DGRAM).map_err(io(context()))?;
        let tcp = socket(socket2::Type::STREAM).map_err(io(context()))?;
        tcp.listen(64).map_err(io(context()))?;
        Ok(Server {
            networks: networks.clone(),
            network: network.clone(),
            upstream: if network.internal {
                vec![]
            } else {
                upstream
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, PORT))
                    .collect()
            },
            udp: udp.into(),
            tcp: tcp.into(),
        })
    }

    /// Answers queries until the task is aborted.
    pub fn serve(self) -> Result<tokio::task::JoinHandle<()>, Error> {
        let udp = UdpSocket::from_std(self.udp).map_err(io("serve DNS"))?;
        let tcp = TcpListener::from_std(self.tcp).map_err(io("serve DNS"))?;
        let shared = Arc::new(Shared {
            networks: self.networks,
            network: self.network.name,
            upstream: self.upstream,
        });
        Ok(tokio::spawn(async move {
            tokio::join!(
                serve_udp(Arc::new(udp), shared.clone()),
                serve_tcp(tcp, shared)
            );
        }))
    }
}

struct Shared {
    networks: Networks,
    network: String,
    upstream: Vec<SocketAddr>,
}

impl Shared {
    fn answer(&self, query: &[u8]) -> Answer {
        answer(
            query,
            |name| self.networks.lookup(&self.network, name),
            !self.upstream.is_empty(),
        )
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let query = buf[..len].to_vec();
        match shared.answer(&query) {
            Answer::Reply(bytes) => {
                let _ = socket.send_to(&bytes, from).await;
            }
            Answer::Forward => {
                let (socket, shared) = (socket.clone(), shared.clone());
                tokio::spawn(async move {
                    let reply = forward_udp(&shared.upstream, &query).await;
                    if let Some(bytes) = reply.or_else(|| server_failure(&query)) {
                        let _ = socket.send_to(&bytes, from).await;
                    }
                });
            }
            Answer::Ignore => {}
        }
    }
}

async fn forward_udp(upstream: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    for server in upstream {
        let attempt = async {
            let socket = super::connect_udp(*server).await.ok()?;
            socket.send(query).await.ok()?;
            let mut buf = vec![0u8; 65535];
            let len = socket.recv(&mut buf).await.ok()?;
            buf.truncate(len);
            Some(buf)
        };
        if let Ok(Some(reply)) = tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            return Some(reply);
        }
    }
    None
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = serve_connection(stream, &shared).await;
        });
    }
}

/// DNS over TCP: each message after its two-byte length.
async fn serve_connection(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    loop {
        let query = read_message(&mut stream).await?;
        let reply = match shared.answer(&query) {
            Answer::Reply(bytes) => Some(bytes),
            Answer::Forward => forward_tcp(&shared.upstream, &query)
                .await
                .or_else(|| server_failure(&query)),
            Answer::Ignore => return Ok(()),
        };
        if let Some(bytes) = reply {
            write_message(&mut stream, &bytes).await?;
        }
    }
}

async fn forward_tcp(upstream: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    for server in upstream {
        let attempt = async {
            let mut stream = TcpStream::connect(server).await.ok()?;
            write_message(&mut stream, query).await.ok()?;
            read_message(&mut stream).await.ok()
        };
        if let Ok(Some(reply)) = tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            return Some(reply);
        }
    }
    None
}

async fn read_message(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut message = vec![0u8; len.into()];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

async fn write_message(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len()).map_err(std::io::Error::other)?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn query(name: &str, kind: RecordType) -> Vec<u8> {
        let mut message = Message::new();
        message
            .set_id(4242)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        message.to_vec().unwrap()
    }

    fn lookup(name: &str) -> Option<Ipv4Addr> {
        (name == "web").then_some(Ipv4Addr::new(10, 77, 0, 2))
    }

    fn reply(answer: Answer) -> Message {
        match answer {
            Answer::Reply(bytes) => Message::from_vec(&bytes).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resolv_conf_and_extra_hosts() {
        let gateway = Some(Ipv4Addr::new(10, 77, 0, 1));
        let config = DnsConfig::default();
        assert_eq!(
            config.resolv_conf(gateway).unwrap(),
            "nameserver 10.77.0.1\n"
        );
        assert_eq!(config.resolv_conf(None), None);
        let config = DnsConfig {
            servers: vec!["203.0.113.53".parse().unwrap(), "::1".parse().unwrap()],
            search: vec!["a.test".into(), "b.test".into()],
            options: vec!["ndots:2".into()],
            domain: Some("a.test".into()),
            disabled: false,
            hosts: vec![
                parse_extra_host("db:10.1.2.3").unwrap(),
                parse_extra_host("v6=::1").unwrap(),
                parse_extra_host("host.docker.internal:host-gateway").unwrap(),
            ],
        };
        assert_eq!(
            config.resolv_conf(gateway).unwrap(),
            "domain a.test\nnameserver 203.0.113.53\nnameserver ::1\nsearch a.test b.test\noptions ndots:2\n"
        );
        assert_eq!(
            config.hosts_lines(gateway).unwrap(),
            ["10.1.2.3\tdb", "::1\tv6", "10.77.0.1\thost.docker.internal"]
        );
        assert!(config.hosts_lines(None).is_err());
        let disabled = DnsConfig {
            disabled: true,
            ..config
        };
        assert_eq!(disabled.resolv_conf(gateway), None);
        for bad in ["db", "db:", "db:1.2.3", ":1.2.3.4", "a b:1.2.3.4"] {
            let error = parse_extra_host(bad).unwrap_err().to_string();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn names_of_the_network_are_answered_others_forwarded_or_refused() {
        let web = reply(answer(&query("web.", RecordType::A), lookup, true));
        assert_eq!(web.id(), 4242);
        assert_eq!(web.message_type(), MessageType::Response);
        assert_eq!(web.response_code(), ResponseCode::NoError);
        assert_eq!(web.answers().len(), 1);
        assert_eq!(
            web.answers()[0].data(),
            &RData::A(A(Ipv4Addr::new(10, 77, 0, 2)))
        );
        assert_eq!(
            web.queries(),
            &[Query::query(
                Name::from_ascii("web.").unwrap(),
                RecordType::A
            )]
        );
        // AAAA of a container's name: there, but empty.
        let six = reply(answer(&query("web", RecordType::AAAA), lookup, true));
        assert_eq!(six.response_code(), ResponseCode::NoError);
        assert!(six.answers().is_empty());
        // Not ours: forwarded, or on an internal network a failure.
        assert_eq!(
            answer(&query("example.test.", RecordType::A), lookup, true),
            Answer::Forward
        );
        let internal = reply(answer(
            &query("example.test.", RecordType::A),
            lookup,
            false,
        ));
        assert_eq!(internal.response_code(), ResponseCode::ServFail);
        assert_eq!(
            Message::from_vec(&server_failure(&query("x.", RecordType::A)).unwrap())
                .unwrap()
                .response_code(),
            ResponseCode::ServFail
        );
        // Garbage and responses get no answer.
        assert_eq!(answer(b"\x01\x02", lookup, true), Answer::Ignore);
        let response = web.to_vec().unwrap();
        assert_eq!(answer(&response, lookup, true), Answer::Ignore);
    }
}
