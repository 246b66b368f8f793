//! The agent API spoken between the host and vminitd over vsock.
//! Both sides use this crate so the wire types cannot drift apart.

tonic::include_proto!("container.agent.v1");

/// The guest vsock port vminitd serves the agent API on.
pub const AGENT_PORT: u32 = 1024;
