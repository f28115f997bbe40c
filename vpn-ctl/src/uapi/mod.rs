//! The WireGuard cross-platform userspace API
//! (<https://www.wireguard.com/xplatform/>), so `wg show` / `wg set` /
//! `wg showconf` work against vpn's device.
//!
//! - [`wire`]: sans-IO. Parses `get=1` / `set=1` requests line by line into a
//!   typed [`Request`], validating every value before anything is applied,
//!   and serializes a [`DeviceSnapshot`] as the `get` reply.
//! - [`server`]: the Unix socket at `/var/run/wireguard/<iface>.sock`.
//!
//! The device implements [`UapiDevice`]. Keys, error numbers and value
//! syntax follow wireguard-go's `device/uapi.go`, the reference
//! implementation that `wg(8)` is tested against.

use std::{net::SocketAddr, time::Duration};

use crate::{
    config::{Config, Endpoint, IpPrefix},
    keys::{PresharedKey, PrivateKey, PublicKey},
};

pub mod server;
pub mod wire;

pub use server::{serve, socket_path, UapiServer, SOCKET_DIR};
pub use wire::{
    parse_get_response, parse_request, serialize_get, serialize_set, serialize_status, Parsed,
    Request, RequestParser,
};

/// What the daemon's device does for the UAPI.
///
/// Both calls run with the device locked and should not block on IO.
pub trait UapiDevice: Send + 'static {
    /// The current configuration and statistics, for `get=1`.
    fn snapshot(&self) -> DeviceSnapshot;

    /// Applies a validated `set=1` request, in this order: `private_key`,
    /// `listen_port`, `fwmark`, `replace_peers`, then each [`PeerUpdate`] in
    /// request order (see its fields for the semantics).
    ///
    /// Return [`UapiError::PortInUse`] when the port or mark cannot be
    /// applied to the socket, [`UapiError::Invalid`] for values the device
    /// refuses, and [`UapiError::Other`] for anything else.
    fn apply(&mut self, request: SetRequest) -> Result<(), UapiError>;
}

/// A validated `set=1` request. `None` / `false` / empty means "leave as is".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetRequest {
    /// `Some(None)`: remove the private key (the all-zero key was sent).
    pub private_key: Option<Option<PrivateKey>>,
    /// `Some(0)`: pick a random port.
    pub listen_port: Option<u16>,
    /// `Some(0)`: clear the mark.
    pub fwmark: Option<u32>,
    /// Remove every peer before applying [`SetRequest::peers`].
    pub replace_peers: bool,
    /// In request order; one public key may appear more than once.
    pub peers: Vec<PeerUpdate>,
}

/// The lines that followed one `public_key=` line.
///
/// The device should ignore an update whose key is its own public key (as
/// wireguard-go does), and skip it when `update_only` is set and the peer
/// does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUpdate {
    pub public_key: PublicKey,
    /// Remove the peer; every other field is then empty.
    pub remove: bool,
    /// Only change an existing peer, never create one.
    pub update_only: bool,
    /// The all-zero key clears the preshared key.
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<SocketAddr>,
    /// Seconds; `Some(0)` turns keepalives off.
    pub persistent_keepalive_interval: Option<u16>,
    /// Drop the peer's allowed IPs before adding [`PeerUpdate::allowed_ips`].
    pub replace_allowed_ips: bool,
    /// Prefixes to add, as sent (host bits not masked).
    pub allowed_ips: Vec<IpPrefix>,
}

impl SetRequest {
    /// The request that makes a device match a wg-quick config, as
    /// `wg setconf` does: every peer is replaced, and each peer's allowed
    /// IPs are exactly the config's. A missing `ListenPort` keeps the current
    /// port; a missing or `off` `FwMark` clears the mark. Host-name
    /// endpoints go through `resolve` (e.g. [`Endpoint::resolve`]).
    ///
    /// `wg-quick`-only settings (Address, DNS, MTU, Table) are not part of
    /// the UAPI; the caller applies them with netlink.
    ///
    /// [`Endpoint::resolve`]: crate::config::Endpoint::resolve
    pub fn from_config<E>(
        config: &Config,
        mut resolve: impl FnMut(&Endpoint) -> Result<SocketAddr, E>,
    ) -> Result<Self, E> {
        let i = &config.interface;
        let mut peers = Vec::with_capacity(config.peers.len());
        for p in &config.peers {
            let mut u = PeerUpdate::new(p.public_key);
            u.preshared_key.clone_from(&p.preshared_key);
            u.endpoint = match &p.endpoint {
                Some(Endpoint::Addr(a)) => Some(*a),
                Some(host) => Some(resolve(host)?),
                None => None,
            };
            u.persistent_keepalive_interval = p.persistent_keepalive;
            u.replace_allowed_ips = true;
            u.allowed_ips.clone_from(&p.allowed_ips);
            peers.push(u);
        }
        Ok(Self {
            private_key: Some(Some(i.private_key.clone())),
            listen_port: i.listen_port,
            fwmark: Some(i.fwmark.unwrap_or(0)),
            replace_peers: true,
            peers,
        })
    }
}

impl PeerUpdate {
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive_interval: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

/// The device as `get=1` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSnapshot {
    pub private_key: Option<PrivateKey>,
    /// 0: not listening (omitted from the reply).
    pub listen_port: u16,
    /// 0: no mark (omitted from the reply).
    pub fwmark: u32,
    pub peers: Vec<PeerSnapshot>,
}

/// One peer as `get=1` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSnapshot {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<SocketAddr>,
    /// Time of the last completed handshake since the Unix epoch; `None`:
    /// never (reported as 0).
    pub last_handshake: Option<Duration>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Seconds; 0 is off.
    pub persistent_keepalive_interval: u16,
    /// Reported as given; the device normally stores them masked.
    pub allowed_ips: Vec<IpPrefix>,
}

impl PeerSnapshot {
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            preshared_key: None,
            endpoint: None,
            last_handshake: None,
            tx_bytes: 0,
            rx_bytes: 0,
            persistent_keepalive_interval: 0,
            allowed_ips: Vec::new(),
        }
    }
}

/// A failed request, reported to the client as `errno=<n>`.
///
/// The numbers are wireguard-go's (negated errno values), which `wg set`
/// turns back into messages such as "Invalid argument".
#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    /// A line that is not `key=value`, a bad operation, a line too long.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An unknown key or a value that does not parse or is refused.
    #[error("invalid {key}: {reason}")]
    Invalid { key: String, reason: String },
    /// The listen port or fwmark could not be applied.
    #[error("cannot bind: {0}")]
    PortInUse(String),
    #[error("I/O error")]
    Io(#[source] std::io::Error),
    #[error("{0}")]
    Other(String),
    /// A client got this non-zero `errno` from the other side.
    #[error("the device replied errno={errno}")]
    Remote { errno: i64 },
}

impl UapiError {
    pub(crate) fn invalid(key: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    /// The value sent as `errno=` (wireguard-go's `ipc.IpcError*`).
    pub fn errno(&self) -> i64 {
        match self {
            Self::Protocol(_) => -i64::from(libc::EPROTO),
            Self::Invalid { .. } => -i64::from(libc::EINVAL),
            Self::PortInUse(_) => -i64::from(libc::EADDRINUSE),
            Self::Io(_) => -i64::from(libc::EIO),
            // ENOANO, as wireguard-go's IpcErrorUnknown.
            Self::Other(_) => -55,
            Self::Remote { errno } => *errno,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand_core::OsRng;

    use super::*;

    #[test]
    fn set_request_from_config() {
        let sk = PrivateKey::generate(&mut OsRng);
        let (a, b) = (
            PrivateKey::generate(&mut OsRng).public_key(),
            PrivateKey::generate(&mut OsRng).public_key(),
        );
        let text = format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.0.0.2/32\nDNS = 10.0.0.1\n\
             [Peer]\nPublicKey = {a}\nEndpoint = vpn.example.net:51820\nAllowedIPs = 0.0.0.0/0, ::/0\n\
             PersistentKeepalive = 25\n\
             [Peer]\nPublicKey = {b}\nEndpoint = [2001:db8::2]:1\n",
            &*sk.to_base64()
        );
        let config = Config::parse(&text, "t.conf").unwrap();
        let mut asked = Vec::new();
        let r = SetRequest::from_config(&config, |e| {
            asked.push(e.to_string());
            Ok::<_, std::io::Error>("192.0.2.50:51820".parse().unwrap())
        })
        .unwrap();
        assert_eq!(asked, ["vpn.example.net:51820"]);
        assert_eq!(r.private_key, Some(Some(sk)));
        assert_eq!(r.listen_port, None);
        assert_eq!(r.fwmark, Some(0));
        assert!(r.replace_peers);
        assert_eq!(
            r.peers[0].endpoint,
            Some("192.0.2.50:51820".parse().unwrap())
        );
        assert_eq!(r.peers[0].persistent_keepalive_interval, Some(25));
        assert!(r.peers[0].replace_allowed_ips);
        assert_eq!(r.peers[0].allowed_ips.len(), 2);
        assert_eq!(
            r.peers[1].endpoint,
            Some("[2001:db8::2]:1".parse().unwrap())
        );
        assert!(r.peers[1].allowed_ips.is_empty() && r.peers[1].replace_allowed_ips);
        // It survives the wire.
        assert_eq!(parse_request(&serialize_set(&r)).unwrap(), Request::Set(r));
        // A resolver failure is passed through.
        let e = SetRequest::from_config(&config, |_| Err("no DNS")).unwrap_err();
        assert_eq!(e, "no DNS");
    }
}
