//! vpn's WireGuard protocol core, sans-IO: time, randomness and packets are
//! inputs; datagrams and TUN packets are written into caller buffers. This
//! crate depends on no I/O, no eBPF and no async runtime, so "the protocol
//! core does no I/O" is checked by the compiler; its tests run with a plain
//! `cargo test -p vpn-noise`.
//!
//! Layout follows the kernel's `drivers/net/wireguard`: [`messages`] (wire
//! format and every protocol constant, as `messages.h`), [`crypto`]
//! (primitives), [`handshake`] (Noise_IKpsk2), [`cookie`] (mac1/mac2 and
//! cookie replies), [`session`] (transport keys), [`replay`] (sliding
//! window), [`timers`], [`ratelimit`], [`peer`] (one peer's state machine),
//! [`allowed_ips`] (the cryptokey routing table) and [`engine`] (many peers
//! behind one static key).

pub mod allowed_ips;
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
