//! The host side of the agent API: a gRPC client over the VM's one link to
//! vminitd.

use std::path::Path;
use std::sync::{Arc, Mutex};

use agent_proto::agent_client::AgentClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use super::Error;
use super::supervisor::BOOT_TIMEOUT;
use crate::vm::{self, VirtualMachine};

pub type Client = AgentClient<Channel>;

/// The agent of a VM that has just booted, once it serves: a channel over
/// its link, which carries every call (HTTP/2 multiplexes them). The link
/// is the VM's only one, so the channel cannot reconnect: once the link
/// breaks, its calls fail with the reason.
pub async fn connect(vm: &mut impl VirtualMachine, console_log: &Path) -> Result<Channel, Error> {
    let link = vm::connect_agent(vm, BOOT_TIMEOUT, console_log).await?;
    let link = Arc::new(Mutex::new(Some(link)));
    // The URI is required by the API but never resolved: the connector
    // hands over the link.
    let channel = Endpoint::from_static("http://vminitd")
        .connect_with_connector(tower::service_fn(move |_| {
            let link = link.lock().unwrap_or_else(|e| e.into_inner()).take();
            async move {
                let closed = || std::io::Error::other("the link to the guest agent closed");
                link.map(TokioIo::new).ok_or_else(closed)
            }
        }))
        .await?;
    Ok(channel)
}

/// A client for a running container's agent, through its supervisor's socket.
pub async fn connect_socket(socket: &std::path::Path) -> Result<Client, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    let channel = Endpoint::from_static("http://vminitd")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await?;
    Ok(AgentClient::new(channel))
}
