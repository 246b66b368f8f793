//! Published ports: `-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp]`.
//!
//! The supervisor binds every published host port before the VM boots, so
//! a port that is taken fails the start there, naming the port, and then
//! relays each connection (TCP) or flow of datagrams (UDP) to the
//! container's address. A relay in user space rather than DNAT rules, as
//! Docker's docker-proxy does for loopback: one mechanism for every host
//! address, 127.0.0.1 (which DNAT cannot send to a bridge) and IPv6 ones
//! included, and the bound socket is what holds the port while the
//! container runs.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::Error;
use crate::io_error::io;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Port {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl Port {
    fn host(&self) -> SocketAddr {
        SocketAddr::new(self.host_ip, self.host_port)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// Docker's form: `127.0.0.1:8080->80/tcp`.
impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}->{}/{}",
            self.host(),
            self.container_port,
            self.protocol
        )
    }
}

/// Docker's PORTS column: `0.0.0.0:8000-8002->9000-9002/tcp, ...`, a run
/// of consecutive ports as one range.
pub fn summary(ports: &[Port]) -> String {
    let mut runs: Vec<(Port, u16)> = Vec::new();
    for port in ports {
        match runs.last_mut() {
            Some((first, count))
                if first.host_ip == port.host_ip
                    && first.protocol == port.protocol
                    && first.host_port.checked_add(*count) == Some(port.host_port)
                    && first.container_port.checked_add(*count) == Some(port.container_port) =>
            {
                *count += 1
            }
            _ => runs.push((*port, 1)),
        }
    }
    let runs = runs.iter().map(|(first, count)| {
        if *count == 1 {
            return first.to_string();
        }
        let last = count - 1;
        format!(
            "{}-{}->{}-{}/{}",
            first.host(),
            first.host_port + last,
            first.container_port,
            first.container_port + last,
            first.protocol
        )
    });
    runs.collect::<Vec<_>>().join(", ")
}

/// Parses one `-p` value; a range gives one port per number.
pub fn parse(spec: &str) -> Result<Vec<Port>, Error> {
    let bad = |reason: &str| Error::InvalidPort {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (addresses, protocol) = match spec.rsplit_once('/') {
        Some((rest, "tcp")) => (rest, Protocol::Tcp),
        Some((rest, "udp")) => (rest, Protocol::Udp),
        Some(_) => return Err(bad("the protocol must be tcp or udp")),
        None => (spec, Protocol::Tcp),
    };
    // From the right, so that an IPv6 host address may keep its colons.
    let mut parts = addresses.rsplitn(3, ':');
    let container = parts.next().unwrap_or_default();
    let Some(host) = parts.next() else {
        return Err(bad("give the host port too, as HOST_PORT:CONTAINER_PORT"));
    };
    let host_ip = match parts.next() {
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(ip) => {
            let ip = ip
                .strip_prefix('[')
                .and_then(|ip| ip.strip_suffix(']'))
                .unwrap_or(ip);
            ip.parse()
                .map_err(|_| bad(&format!("{ip:?} is not an IP address")))?
        }
    };
    let hosts =
        range(host).ok_or_else(|| bad("the host port must be 1-65535 or a range of them"))?;
    let containers = range(container)
        .ok_or_else(|| bad("the container port must be 1-65535 or a range of them"))?;
    if hosts.len() != containers.len() {
        return Err(bad("the host and container port ranges must be as long"));
    }
    Ok(hosts
        .zip(containers)
        .map(|(host_port, container_port)| Port {
            host_ip,
            host_port,
            container_port,
            protocol,
        })
        .collect())
}

/// `80` or `8000-8010`.
fn range(text: &str) -> Option<std::ops::RangeInclusive<u16>> {
    let port = |s: &str| s.parse::<u16>().ok().filter(|p| *p != 0);
    let (first, last) = match text.split_once('-') {
        Some((first, last)) => (port(first)?, port(last)?),
        None => (port(text)?, port(text)?),
    };
    (first <= last).then_some(first..=last)
}

/// Refuses a host port published twice (the second could never be bound).
pub fn check_unique(ports: &[Port]) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    for port in ports {
        if !seen.insert((port.host(), port.protocol)) {
            return Err(Error::InvalidPort {
                spec: port.to_string(),
                reason: format!("host port {} is published twice", port.host()),
            });
        }
    }
    Ok(())
}

enum Socket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// A container's published ports, bound and not yet relayed.
pub struct Published(Vec<(Port, Socket)>);

impl Published {
    /// Binds every host port; the first one taken is the error.
    pub fn bind(ports: &[Port]) -> Result<Published, Error> {
        let mut bound = Vec::new();
        for port in ports {
            let taken = |e: std::io::Error| match e.kind() {
                std::io::ErrorKind::AddrInUse => Error::PortTaken(port.host().to_string()),
                _ => io(format!("publish port {port}"))(e).into(),
            };
            let socket = match port.protocol {
                Protocol::Tcp => {
                    let listener = std::net::TcpListener::bind(port.host()).map_err(taken)?;
                    listener
                        .set_nonblocking(true)
                        .map_err(io("publish a port"))?;
                    Socket::Tcp(listener)
                }
                Protocol::Udp => {
                    let socket = std::net::UdpSocket::bind(port.host()).map_err(taken)?;
                    socket.set_nonblocking(true).map_err(io("publish a port"))?;
                    Socket::Udp(socket)
                }
            };
            bound.push((*port, socket));
        }
        Ok(Published(bound))
    }

    /// Relays to the container at `target` until the task is aborted.
    pub fn serve(self, target: IpAddr) -> Result<tokio::task::JoinHandle<()>, Error> {
        let mut relays = tokio::task::JoinSet::new();
        for (port, socket) in self.0 {
            let to = SocketAddr::new(target, port.container_port);
            match socket {
                Socket::Tcp(listener) => {
                    let listener = TcpListener::from_std(listener).map_err(io("publish a port"))?;
                    relays.spawn(relay_tcp(listener, to));
                }
                Socket::Udp(socket) => {
                    let socket = UdpSocket::from_std(socket).map_err(io("publish a port"))?;
                    relays.spawn(relay_udp(Arc::new(socket), to));
                }
            }
        }
        // Aborting this task drops the set, which aborts every relay.
        Ok(tokio::spawn(async move {
            while relays.join_next().await.is_some() {}
        }))
    }
}

async fn relay_tcp(listener: TcpListener, to: SocketAddr) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut server) = TcpStream::connect(to).await {
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}

/// A UDP flow ends after this long without a datagram back.
const UDP_IDLE: Duration = Duration::from_secs(120);

/// Each client address gets a socket of its own towards the container, so
/// replies find their way back to it.
async fn relay_udp(socket: Arc<UdpSocket>, to: SocketAddr) {
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((len, client)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let flow = flows.lock().expect("not poisoned").get(&client).cloned();
        let flow = match flow {
            Some(flow) => flow,
            None => {
                let Ok(flow) = super::connect_udp(to).await else {
                    continue;
                };
                let flow = Arc::new(flow);
                flows
                    .lock()
                    .expect("not poisoned")
                    .insert(client, flow.clone());
                tokio::spawn(relay_back(
                    socket.clone(),
                    flow.clone(),
                    client,
                    flows.clone(),
                ));
                flow
            }
        };
        let _ = flow.send(&buf[..len]).await;
    }
}

async fn relay_back(
    socket: Arc<UdpSocket>,
    flow: Arc<UdpSocket>,
    client: SocketAddr,
    flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
) {
    let mut buf = vec![0u8; 65535];
    while let Ok(Ok(len)) = tokio::time::timeout(UDP_IDLE, flow.recv(&mut buf)).await {
        let _ = socket.send_to(&buf[..len], client).await;
    }
    flows.lock().expect("not poisoned").remove(&client);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(spec: &str) -> String {
        let ports = parse(spec).unwrap();
        assert_eq!(ports.len(), 1, "{spec}");
        ports[0].to_string()
    }

    #[test]
    fn specs_parse_as_docker_writes_them() {
        assert_eq!(one("8080:80"), "0.0.0.0:8080->80/tcp");
        assert_eq!(one("127.0.0.1:8080:80/udp"), "127.0.0.1:8080->80/udp");
        assert_eq!(one("[::1]:8080:80"), "[::1]:8080->80/tcp");
        assert_eq!(one("::1:8080:80/tcp"), "[::1]:8080->80/tcp");
        let range = parse("8000-8002:9000-9002").unwrap();
        let text: Vec<String> = range.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "0.0.0.0:8000->9000/tcp",
                "0.0.0.0:8001->9001/tcp",
                "0.0.0.0:8002->9002/tcp"
            ]
        );
        for bad in [
            "80",
            "8080:80/sctp",
            "0:80",
            "8080:70000",
            "host:8080:80",
            "8000-8002:80",
            "8002-8000:80-82",
            ":80",
        ] {
            let error = parse(bad).unwrap_err().to_string();
            assert!(error.contains(bad), "{bad}: {error}");
        }
        let all = [
            range.clone(),
            parse("127.0.0.1:8003:9003").unwrap(),
            parse("8080:80/udp").unwrap(),
        ]
        .concat();
        assert_eq!(
            summary(&all),
            "0.0.0.0:8000-8002->9000-9002/tcp, 127.0.0.1:8003->9003/tcp, 0.0.0.0:8080->80/udp"
        );
        let twice = [parse("8080:80").unwrap(), parse("8080:81").unwrap()].concat();
        assert!(check_unique(&twice).is_err());
        let both = [parse("8080:80").unwrap(), parse("8080:80/udp").unwrap()].concat();
        assert!(check_unique(&both).is_ok());
    }

    #[tokio::test]
    async fn ports_are_relayed_and_a_taken_one_is_named() {
        // A TCP echo server and a UDP one stand in for the container.
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_target = server.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = server.accept().await.unwrap();
            let (mut read, mut write) = stream.split();
            tokio::io::copy(&mut read, &mut write).await.unwrap();
        });
        let udp_server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp_target = udp_server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 100];
            let (len, from) = udp_server.recv_from(&mut buf).await.unwrap();
            udp_server.send_to(&buf[..len], from).await.unwrap();
        });
        // Free host ports, found by binding port 0; relayed to the targets' ports.
        let free = |udp: bool| {
            if udp {
                std::net::UdpSocket::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            } else {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            }
        };
        let (tcp_port, udp_port) = (free(false), free(true));
        let tcp = parse(&format!("127.0.0.1:{tcp_port}:{}", tcp_target.port())).unwrap();
        let udp = parse(&format!("127.0.0.1:{udp_port}:{}/udp", udp_target.port())).unwrap();
        let ports = [tcp.clone(), udp].concat();
        let relay = Published::bind(&ports)
            .unwrap()
            .serve(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .unwrap();

        let again = Published::bind(&tcp).err().unwrap().to_string();
        assert!(again.contains(&format!("127.0.0.1:{tcp_port}")), "{again}");

        let mut client = TcpStream::connect(("127.0.0.1", tcp_port)).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut client, b"ping")
            .await
            .unwrap();
        let mut echo = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut client, &mut echo)
            .await
            .unwrap();
        assert_eq!(&echo, b"ping");

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(b"datagram", ("127.0.0.1", udp_port))
            .await
            .unwrap();
        let mut buf = [0u8; 100];
        let len = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..len], b"datagram");

        // Once the relay is gone, the port is free again.
        // (the relays are dropped as the runtime gets to them).
        relay.abort();
        let _ = relay.await;
        let mut tries = 0;
        while let Err(e) = Published::bind(&tcp) {
            tries += 1;
            assert!(tries < 100, "{e}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
