//! The agent API spoken between the host and vminitd: gRPC over one
//! connection per VM (a virtio console port, or vsock on macOS).
//! Both sides use this crate so the wire types cannot drift apart.

tonic::include_proto!("container.agent.v1");

/// The name of the virtio console port vminitd serves the agent on, where
/// the VM has one (QEMU). A serial port, unlike vhost-user vsock, lets QEMU
/// save and restore the VM, and needs no device process of its own.
pub const AGENT_PORT_NAME: &str = "agent";

/// The host vsock port vminitd dials to serve the agent on, where the VM has
/// no agent port but a vsock device (Virtualization.framework).
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// What vminitd writes first on the agent's connection, once it serves:
/// the host speaks only after it. On a serial port this also matters for
/// correctness: the guest drops what arrives before it opens the port.
pub const READY: &[u8] = b"vminitd ready\n";

/// What the host answers READY with before it speaks HTTP/2: this, then
/// SEED_BYTES of randomness for the guest's kernel. vminitd waits for it, so
/// a VM saved as a template at READY is restored waiting for it too, and
/// every VM restored from one template reseeds its random numbers apart.
pub const GO: &[u8] = b"go\n";

/// How many random bytes follow GO.
pub const SEED_BYTES: usize = 32;

pub mod caps;
pub mod copy;
pub mod layer;
