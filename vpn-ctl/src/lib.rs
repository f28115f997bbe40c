//! vpn's controller as a library: the WireGuard-compatible protocol core
//! (sans-IO), the device that drives it, and the eBPF steering control plane.
//! The `vpn-ctl` binary is a thin clap front end over these modules.

pub mod aead;
pub mod config;
pub mod device;
pub mod doctor;
pub mod io_error;
pub mod keys;
pub mod metrics;
pub mod netlink;
pub mod steer;
pub mod tunnel;
pub mod uapi;
