//! The tunnel device: the WireGuard [`Engine`] glued to a TUN link and the
//! two underlay UDP sockets.
//!
//! - [`Device`] (this module) is the shared state behind one
//!   `Arc<Mutex<Device>>`: the engine, the current sockets, the preshared
//!   keys (for `wg showconf`) and the device's own drop counters. It
//!   implements [`UapiDevice`], so `wg set` and the wg-quick config take the
//!   same path ([`SetRequest::from_config`]).
//! - [`datapath`]: two dedicated threads, TUN → seal → UDP and UDP → open →
//!   TUN, each holding the lock only while the engine works on a batch.
//! - [`timers`]: the engine's timer wheel on tokio (sleeps until the next
//!   deadline, at most [`timers::MAX_SLEEP`]).
//! - [`icmp`]: "packet too big" for packets no datagram can hold.
//! - [`tun`]: the TUN device with its virtio-net header and both halves of
//!   its offloads (the GSO/TSO split and GRO coalescing).
//! - [`udp`]: the underlay sockets and their `recvmmsg` / `sendmmsg` batches.
//! - [`checksum`]: the Internet checksum the above share.
//!
//! The tunnel's lifecycle around this data path (bring-up, netlink
//! configuration, the status socket) is [`crate::tunnel`].

pub mod checksum;
pub mod datapath;
pub mod icmp;
pub mod timers;
pub mod tun;
pub mod udp;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, SeedableRng};
use vpn_noise::{Engine, Error};

use crate::{
    config::IpPrefix,
    keys::{PresharedKey, PrivateKey, PublicKey},
    uapi::{DeviceSnapshot, PeerSnapshot, SetRequest, UapiDevice, UapiError},
};

use self::udp::{DualStack, UdpOptions};

/// The default MTU of the TUN link (as wg-quick's default for an Ethernet
/// underlay: 1500 - 80).
pub const DEFAULT_MTU: u16 = 1420;

/// The engine's random source: ChaCha20 seeded from the OS, so the data
/// path never makes a `getrandom` call per packet.
pub type Rng = ChaCha20Rng;

/// The device state shared by the data path threads, the timer task and
/// the UAPI server.
pub type Shared = Arc<Mutex<Device>>;

/// Locks the device; a poisoned lock (a panicked thread) still holds a
/// consistent engine, so it is used as is.
pub fn lock(device: &Mutex<Device>) -> MutexGuard<'_, Device> {
    device
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Drops the device counts itself (the engine counts protocol drops).
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams larger than a receive slot (cut by the kernel).
    pub truncated: AtomicU64,
    /// Datagrams larger than the data path accepts.
    pub oversize: AtomicU64,
    /// TUN packets whose offload header could not be split.
    pub tun_malformed: AtomicU64,
    /// Writes to the TUN that failed.
    pub tun_write_errors: AtomicU64,
    /// Datagrams the kernel refused to send.
    pub udp_send_errors: AtomicU64,
    /// Times the receive path entered cookie (under load) mode.
    pub under_load_entered: AtomicU64,
}

impl Counters {
    /// Adds one to `c`.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Underlay socket settings that `wg set` may change.
#[derive(Debug, Clone)]
pub struct SocketSettings {
    /// Socket buffer sizes.
    pub buffer_size: usize,
    /// UDP GRO on receive.
    pub gro: bool,
}

impl Default for SocketSettings {
    fn default() -> Self {
        Self {
            buffer_size: udp::DEFAULT_BUFFER_SIZE,
            gro: true,
        }
    }
}

/// The device: engine, sockets, keys.
pub struct Device {
    /// The WireGuard engine.
    pub engine: Engine<Rng>,
    private_key: Option<PrivateKey>,
    psks: HashMap<[u8; 32], PresharedKey>,
    sockets: Arc<DualStack>,
    /// Bumped whenever [`Device::sockets`] changes (a new listen port), so
    /// the data path threads pick up the new sockets.
    pub sockets_generation: u64,
    fwmark: u32,
    settings: SocketSettings,
    /// Drop counters of the device itself.
    pub counters: Arc<Counters>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("engine", &self.engine)
            .field("port", &self.sockets.port())
            .field("fwmark", &self.fwmark)
            .finish_non_exhaustive()
    }
}

/// Binds `0.0.0.0:port` and `[::]:port` with the device's settings; an
/// address in use is reported as such.
///
/// # Errors
/// [`UapiError::PortInUse`] or [`UapiError::Other`].
pub fn bind_sockets(
    port: u16,
    fwmark: u32,
    settings: &SocketSettings,
) -> Result<DualStack, UapiError> {
    let opts = UdpOptions {
        buffer_size: settings.buffer_size,
        fwmark: (fwmark != 0).then_some(fwmark),
        gro: settings.gro,
    };
    udp::bind_dual(port, &opts).map_err(|e| {
        if e.source.raw_os_error() == Some(libc::EADDRINUSE) {
            UapiError::PortInUse(format!("UDP port {port} is already in use"))
        } else {
            UapiError::Other(format!("{e}: {}", e.source))
        }
    })
}

impl Device {
    /// A device with no peers on `sockets`. Must run inside a tokio runtime
    /// (the sockets are registered with it).
    pub fn new(private_key: PrivateKey, sockets: DualStack, settings: SocketSettings) -> Self {
        let engine = Engine::new(
            *private_key.as_bytes(),
            Rng::from_rng(OsRng).expect("the OS random source works"),
            Instant::now(),
            SystemTime::now(),
        );
        Self {
            engine,
            private_key: Some(private_key),
            psks: HashMap::new(),
            sockets: Arc::new(sockets),
            sockets_generation: 0,
            fwmark: 0,
            settings,
            counters: Arc::new(Counters::default()),
        }
    }

    /// A device with no private key yet (wireguard-go's state before the
    /// first `set`): the engine holds a random key until one is set over
    /// the UAPI, and `get` reports none.
    pub fn unconfigured(sockets: DualStack, settings: SocketSettings) -> Self {
        let mut d = Self::new(PrivateKey::generate(&mut OsRng), sockets, settings);
        d.private_key = None;
        d
    }

    /// The current underlay sockets.
    pub fn sockets(&self) -> Arc<DualStack> {
        Arc::clone(&self.sockets)
    }

    /// The UDP port both sockets listen on.
    pub fn listen_port(&self) -> u16 {
        self.sockets.port()
    }

    /// Our public key, if a private key is set.
    pub fn public_key(&self) -> Option<PublicKey> {
        self.private_key.as_ref().map(PrivateKey::public_key)
    }

    /// Engine drop counters by kind, with the device's own, as
    /// `(snake_case_name, count)`.
    pub fn drop_counters(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = Error::ALL
            .iter()
            .map(|e| (snake_case(&format!("{e:?}")), self.engine.error_count(*e)))
            .collect();
        let c = &self.counters;
        for (name, v) in [
            ("truncated", &c.truncated),
            ("oversize", &c.oversize),
            ("tun_malformed", &c.tun_malformed),
            ("tun_write_errors", &c.tun_write_errors),
            ("udp_send_errors", &c.udp_send_errors),
            ("under_load_entered", &c.under_load_entered),
        ] {
            out.push((name.to_owned(), v.load(Ordering::Relaxed)));
        }
        out
    }

    fn set_listen_port(&mut self, port: u16) -> Result<(), UapiError> {
        if port != 0 && port == self.listen_port() {
            return Ok(());
        }
        let new = bind_sockets(port, self.fwmark, &self.settings)?;
        log::info!("listening on UDP port {}", new.port());
        self.sockets = Arc::new(new);
        self.sockets_generation += 1;
        Ok(())
    }

    fn set_fwmark(&mut self, mark: u32) -> Result<(), UapiError> {
        if mark == self.fwmark {
            return Ok(());
        }
        let s = &self.sockets;
        for sock in std::iter::once(&s.v4).chain(s.v6.as_ref()) {
            sock.set_mark(mark)
                .map_err(|e| UapiError::PortInUse(format!("cannot set fwmark {mark:#x}: {e}")))?;
        }
        self.fwmark = mark;
        Ok(())
    }

    fn apply_peer(&mut self, u: crate::uapi::PeerUpdate, now: Instant) -> Result<(), UapiError> {
        let key = *u.public_key.as_bytes();
        if self.public_key().is_some_and(|k| k == u.public_key) {
            // wireguard-go ignores an update of our own key.
            return Ok(());
        }
        let existing = self.engine.peer_by_key(&key);
        if u.remove {
            if let Some(id) = existing {
                self.engine.remove_peer(id);
            }
            self.psks.remove(&key);
            return Ok(());
        }
        let id = match existing {
            Some(id) => id,
            None if u.update_only => return Ok(()),
            None => self.engine.add_peer(key),
        };
        if let Some(psk) = u.preshared_key {
            if psk.is_zero() {
                self.engine.set_preshared_key(id, None);
                self.psks.remove(&key);
            } else {
                self.engine.set_preshared_key(id, Some(*psk.as_bytes()));
                self.psks.insert(key, psk);
            }
        }
        if let Some(ep) = u.endpoint {
            self.engine.set_endpoint(id, Some(ep));
        }
        if let Some(secs) = u.persistent_keepalive_interval {
            self.engine
                .set_persistent_keepalive(id, (secs != 0).then_some(secs), now);
        }
        if u.replace_allowed_ips {
            self.engine.clear_allowed_ips(id);
        }
        for p in u.allowed_ips {
            let m = p.masked();
            self.engine
                .add_allowed_ip(id, m.addr(), m.prefix_len())
                .map_err(|e| UapiError::invalid("allowed_ip", e.to_string()))?;
        }
        Ok(())
    }
}

/// `DecryptFailed` → `decrypt_failed`.
fn snake_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

impl UapiDevice for Device {
    fn snapshot(&self) -> DeviceSnapshot {
        let peers = self
            .engine
            .peer_ids()
            .into_iter()
            .filter_map(|id| self.engine.peer_info(id))
            .map(|info| {
                let mut p = PeerSnapshot::new(PublicKey::from_bytes(info.public_key));
                p.preshared_key = self.psks.get(&info.public_key).cloned();
                p.endpoint = info.endpoint;
                p.last_handshake = info
                    .last_handshake
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok());
                p.tx_bytes = info.tx_bytes;
                p.rx_bytes = info.rx_bytes;
                p.persistent_keepalive_interval = info.persistent_keepalive.unwrap_or(0);
                p.allowed_ips = info
                    .allowed_ips
                    .iter()
                    .filter_map(|(ip, len)| IpPrefix::new(*ip, *len).ok())
                    .collect();
                p
            })
            .collect();
        DeviceSnapshot {
            private_key: self.private_key.clone(),
            listen_port: self.listen_port(),
            fwmark: self.fwmark,
            peers,
        }
    }

    fn apply(&mut self, request: SetRequest) -> Result<(), UapiError> {
        let now = Instant::now();
        match request.private_key {
            Some(Some(k)) => {
                self.engine.set_private_key(*k.as_bytes());
                self.private_key = Some(k);
            }
            Some(None) => {
                // No key: handshakes must fail, so use a fresh random one
                // nobody knows.
                let k = PrivateKey::generate(&mut OsRng);
                self.engine.set_private_key(*k.as_bytes());
                self.private_key = None;
            }
            None => {}
        }
        if let Some(port) = request.listen_port {
            self.set_listen_port(port)?;
        }
        if let Some(mark) = request.fwmark {
            self.set_fwmark(mark)?;
        }
        if request.replace_peers {
            self.engine.remove_all_peers();
            self.psks.clear();
        }
        for u in request.peers {
            self.apply_peer(u, now)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uapi::PeerUpdate;

    fn device() -> Device {
        let sockets = bind_sockets(0, 0, &SocketSettings::default()).unwrap();
        Device::new(
            PrivateKey::generate(&mut OsRng),
            sockets,
            SocketSettings::default(),
        )
    }

    #[tokio::test]
    async fn apply_and_snapshot_round_trip() {
        let mut d = device();
        let peer = PrivateKey::generate(&mut OsRng).public_key();
        let psk = PresharedKey::generate(&mut OsRng);
        let mut u = PeerUpdate::new(peer);
        u.preshared_key = Some(psk.clone());
        u.endpoint = Some("198.18.0.2:51820".parse().unwrap());
        u.persistent_keepalive_interval = Some(25);
        u.allowed_ips = vec![
            "100.64.0.2/32".parse().unwrap(),
            "fd00::7/64".parse().unwrap(),
        ];
        d.apply(SetRequest {
            peers: vec![u],
            ..SetRequest::default()
        })
        .unwrap();
        let s = d.snapshot();
        assert_eq!(s.peers.len(), 1);
        let p = &s.peers[0];
        assert_eq!(p.public_key, peer);
        assert_eq!(p.preshared_key, Some(psk));
        assert_eq!(p.persistent_keepalive_interval, 25);
        let mut ips: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
        ips.sort();
        assert_eq!(ips, ["100.64.0.2/32", "fd00::/64"]);

        // Removing the PSK with the zero key, then the peer.
        let mut u = PeerUpdate::new(peer);
        u.preshared_key = Some(PresharedKey::from_bytes([0; 32]));
        d.apply(SetRequest {
            peers: vec![u],
            ..SetRequest::default()
        })
        .unwrap();
        assert_eq!(d.snapshot().peers[0].preshared_key, None);
        let mut u = PeerUpdate::new(peer);
        u.remove = true;
        d.apply(SetRequest {
            peers: vec![u],
            ..SetRequest::default()
        })
        .unwrap();
        assert!(d.snapshot().peers.is_empty());
    }

    #[tokio::test]
    async fn listen_port_change_rebinds_and_busy_port_is_reported() {
        let mut d = device();
        let other = bind_sockets(0, 0, &SocketSettings::default()).unwrap();
        let busy = other.port();
        let e = d
            .apply(SetRequest {
                listen_port: Some(busy),
                ..SetRequest::default()
            })
            .unwrap_err();
        assert!(matches!(e, UapiError::PortInUse(_)), "{e}");
        let g = d.sockets_generation;
        d.apply(SetRequest {
            listen_port: Some(0),
            ..SetRequest::default()
        })
        .unwrap();
        assert_eq!(d.sockets_generation, g + 1);
        assert_ne!(d.listen_port(), 0);
    }

    #[test]
    fn counter_names_are_snake_case() {
        assert_eq!(snake_case("DecryptFailed"), "decrypt_failed");
        assert_eq!(snake_case("Malformed"), "malformed");
    }
}
