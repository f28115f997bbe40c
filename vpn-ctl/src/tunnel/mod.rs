//! The tunnel's lifecycle (`tunnel/`): what runs around the data path of
//! [`crate::device`] from `vpn-ctl up` to `down`.
//!
//! - [`daemon`]: `up` / `down`: the lifecycle, pidfile, signals, readiness.
//! - [`netcfg`]: addresses, MTU, link state and peer routes through netlink,
//!   undone on shutdown.
//! - [`control`]: `/run/vpn/<iface>.ctl`, the JSON status behind
//!   `vpn-ctl show --json` (settings the UAPI does not carry, and counters).

pub mod control;
pub mod daemon;
pub mod netcfg;
