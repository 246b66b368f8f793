//! The agent API spoken between the host and vminitd over vsock.
//! Both sides use this crate so the wire types cannot drift apart.

tonic::include_proto!("container.agent.v1");

/// The guest vsock port vminitd serves the agent API on.
pub const AGENT_PORT: u32 = 1024;

/// The host vsock port vminitd dials once the agent is listening. Waiting
/// for this instead of polling AGENT_PORT keeps the host from connecting
/// while the guest's vsock driver is still coming up, which can wedge the
/// vhost-user vsock device.
pub const READY_PORT: u32 = 1025;

pub mod caps;
pub mod copy;
pub mod layer;
