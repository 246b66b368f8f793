//! The host side of the agent API: a gRPC client over a guest vsock port.

use agent_proto::agent_client::AgentClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::vm::Dial;

pub type Client = AgentClient<Channel>;

/// A client for the agent on `port`, redialling through the VM's vsock when
/// the channel needs a new connection.
pub async fn connect(dial: Dial, port: u32) -> Result<Client, tonic::transport::Error> {
    // The URI is required by the API but never resolved: the connector dials.
    let channel = Endpoint::from_static("http://vminitd")
        .connect_with_connector(tower::service_fn(move |_| {
            let dial = dial.clone();
            async move { dial(port).await.map(TokioIo::new) }
        }))
        .await?;
    Ok(AgentClient::new(channel))
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
