//! The WireGuard protocol core, sans-IO: time, randomness and packets are
//! inputs; datagrams and TUN packets are written into caller buffers.
//!
//! Layout follows the kernel's `drivers/net/wireguard`: [`messages`] (wire
//! format), [`crypto`] (primitives), [`handshake`] (Noise_IKpsk2), [`cookie`]
//! (mac1/mac2 and cookie replies), [`session`] (transport keys), [`replay`]
//! (sliding window), [`timers`], [`ratelimit`], [`peer`] (one peer's state
//! machine) and [`engine`] (many peers behind one static key).

pub mod cookie;
pub mod crypto;
pub mod engine;
pub mod handshake;
pub mod messages;
pub mod peer;
pub mod ratelimit;
pub mod replay;
pub mod session;
pub mod timers;

#[cfg(test)]
mod interop;

pub use engine::{Action, Engine, Error, PeerInfo, Transmit};
pub use peer::PeerId;
