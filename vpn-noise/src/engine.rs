//! The multi-peer engine: our static key, the peers, cryptokey routing
//! (allowed IPs), the receiver-index map, the cookie checker and the
//! handshake rate limiter. Sans-IO: every call takes the current monotonic
//! time and writes datagrams or IP packets into caller buffers.
//!
//! Device loop, in short:
//! - a UDP datagram arrives: [`Engine::handle_datagram`]; act on the [`Action`];
//! - the TUN yields a packet: [`Engine::handle_tun_packet`]; act on the [`Action`];
//! - after either, and after [`Engine::handle_timeout`], drain
//!   [`Engine::poll_transmit`] until it returns `None` (handshake initiations,
//!   queued packets once a session exists, keepalives);
//! - sleep until [`Engine::poll_timeout`].
//!
//! The wall clock (for TAI64N and "latest handshake") is derived from the
//! monotonic input and an anchor given at construction
//! ([`Engine::set_wall_clock`] re-anchors it).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use rand_core::{CryptoRng, RngCore};
use x25519_dalek::PublicKey;

use crate::allowed_ips::{AllowedIps, BadPrefix};
use crate::cookie::{CookieChecker, MacState};
use crate::crypto::Tai64N;
use crate::handshake::{begin_consume_initiation, HandshakeError, StaticIdentity};
use crate::messages::{Message, COOKIE_REPLY_LEN, RESPONSE_LEN};
use crate::peer::{IndexTable, Peer, PeerId, ReceiveError};
use crate::ratelimit::RateLimiter;
use crate::session::SessionError;

/// Why a packet was dropped. Each kind is counted ([`Engine::error_count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Error {
    /// Not a well-formed WireGuard message (type, length, reserved bytes).
    Malformed,
    /// mac1 did not verify.
    InvalidMac,
    /// Under load, the source exceeded its handshake rate.
    RateLimited,
    /// The initiation's static key belongs to no configured peer.
    UnknownPeer,
    /// A handshake message failed to decrypt, or used a low-order point.
    HandshakeFailed,
    /// An initiation with a TAI64N not newer than the last one.
    ReplayedInitiation,
    /// Initiations from one peer faster than 50 per second.
    HandshakeFlood,
    /// A response that matches no initiation in flight.
    UnexpectedResponse,
    /// A cookie reply that did not decrypt.
    InvalidCookieReply,
    /// A receiver index we did not allocate (or already freed).
    UnknownIndex,
    /// A data message that failed to decrypt.
    DecryptFailed,
    /// A data message counter seen before or too old.
    Replay,
    /// A data message for an expired session.
    SessionExpired,
    /// A decrypted or TUN packet that is not a valid IPv4/IPv6 packet.
    InvalidIpPacket,
    /// The decrypted packet's source is not in the sending peer's allowed IPs.
    SourceNotAllowed,
    /// No peer's allowed IPs contain the TUN packet's destination.
    NoRoute,
    /// The peer has no endpoint yet.
    NoEndpoint,
    /// The output buffer is too small.
    BufferTooSmall,
}

impl Error {
    /// Number of error kinds.
    pub const COUNT: usize = Error::BufferTooSmall as usize + 1;
    /// Every kind, in discriminant order.
    pub const ALL: [Error; Error::COUNT] = [
        Error::Malformed,
        Error::InvalidMac,
        Error::RateLimited,
        Error::UnknownPeer,
        Error::HandshakeFailed,
        Error::ReplayedInitiation,
        Error::HandshakeFlood,
        Error::UnexpectedResponse,
        Error::InvalidCookieReply,
        Error::UnknownIndex,
        Error::DecryptFailed,
        Error::Replay,
        Error::SessionExpired,
        Error::InvalidIpPacket,
        Error::SourceNotAllowed,
        Error::NoRoute,
        Error::NoEndpoint,
        Error::BufferTooSmall,
    ];
}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::Decrypt | HandshakeError::BadPoint => Error::HandshakeFailed,
            HandshakeError::ReplayedTimestamp => Error::ReplayedInitiation,
            HandshakeError::Flood => Error::HandshakeFlood,
            HandshakeError::UnexpectedResponse => Error::UnexpectedResponse,
        }
    }
}

impl From<SessionError> for Error {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::BufferTooSmall => Error::BufferTooSmall,
            SessionError::Expired => Error::SessionExpired,
            SessionError::Decrypt => Error::DecryptFailed,
            SessionError::Replay => Error::Replay,
        }
    }
}

/// What the device should do after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do (a keepalive, a consumed handshake, a queued packet).
    Done,
    /// Send `out[..len]` to `to` over UDP.
    SendDatagram {
        /// Destination.
        to: SocketAddr,
        /// Length of the datagram in the output buffer.
        len: usize,
    },
    /// Write `out[..len]` (an IP packet whose source passed the allowed-IPs
    /// check of `peer`) to the TUN device.
    WriteToTun {
        /// Length of the IP packet in the output buffer.
        len: usize,
        /// The peer it came from.
        peer: PeerId,
    },
    /// The packet was dropped; the error has been counted.
    Error(Error),
}

/// A datagram produced by [`Engine::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// Length in the output buffer.
    pub len: usize,
    /// The peer it is for.
    pub peer: PeerId,
}

/// A peer's state for `wg show` / UAPI `get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Static public key.
    pub public_key: [u8; 32],
    /// Whether a preshared key is set.
    pub has_preshared_key: bool,
    /// Current endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Persistent keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
    /// Wall-clock time of the latest completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Allowed IPs.
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

/// The WireGuard engine.
pub struct Engine<R> {
    rng: R,
    identity: StaticIdentity,
    cookie_checker: CookieChecker,
    rate_limiter: RateLimiter,
    peers: BTreeMap<PeerId, Peer>,
    by_key: HashMap<[u8; 32], PeerId>,
    indices: IndexTable,
    allowed_ips: AllowedIps<PeerId>,
    next_peer_id: u32,
    under_load: bool,
    wall_anchor: (Instant, SystemTime),
    errors: [u64; Error::COUNT],
    last_gc: Option<Instant>,
}

impl<R> core::fmt::Debug for Engine<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("identity", &self.identity)
            .field("peers", &self.peers.len())
            .field("under_load", &self.under_load)
            .finish_non_exhaustive()
    }
}

/// Source and destination of an IP packet, and its length from the header.
fn ip_header(p: &[u8]) -> Option<(IpAddr, IpAddr, usize)> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let len = usize::from(u16::from_be_bytes([p[2], p[3]]));
            let src: [u8; 4] = p[12..16].try_into().ok()?;
            let dst: [u8; 4] = p[16..20].try_into().ok()?;
            (20..=p.len()).contains(&len).then_some((
                IpAddr::V4(Ipv4Addr::from(src)),
                IpAddr::V4(Ipv4Addr::from(dst)),
                len,
            ))
        }
        6 if p.len() >= 40 => {
            let len = usize::from(u16::from_be_bytes([p[4], p[5]])) + 40;
            let src: [u8; 16] = p[8..24].try_into().ok()?;
            let dst: [u8; 16] = p[24..40].try_into().ok()?;
            (len <= p.len()).then_some((
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                len,
            ))
        }
        _ => None,
    }
}

impl<R: RngCore + CryptoRng> Engine<R> {
    /// An engine with our private key. `now`/`wall` anchor the wall clock.
    pub fn new(private_key: [u8; 32], rng: R, now: Instant, wall: SystemTime) -> Self {
        let identity = StaticIdentity::new(private_key);
        Self {
            rng,
            cookie_checker: CookieChecker::new(identity.public()),
            identity,
            rate_limiter: RateLimiter::default(),
            peers: BTreeMap::new(),
            by_key: HashMap::new(),
            indices: IndexTable::default(),
            allowed_ips: AllowedIps::new(),
            next_peer_id: 0,
            under_load: false,
            wall_anchor: (now, wall),
            errors: [0; Error::COUNT],
            last_gc: None,
        }
    }

    /// Our public key.
    #[must_use]
    pub fn public_key(&self) -> [u8; 32] {
        *self.identity.public().as_bytes()
    }

    /// Replaces our private key: all sessions and handshakes are dropped and
    /// a peer with the new public key (if any) is removed, as `wg set` does.
    pub fn set_private_key(&mut self, private_key: [u8; 32]) {
        self.identity = StaticIdentity::new(private_key);
        self.cookie_checker = CookieChecker::new(self.identity.public());
        for peer in self.peers.values_mut() {
            peer.clear_keys(&mut self.indices);
            peer.handshake.set_identity(&self.identity);
        }
        if let Some(id) = self.by_key.get(self.identity.public().as_bytes()).copied() {
            self.remove_peer(id);
        }
    }

    /// Re-anchors the wall clock: `now` corresponds to `wall`.
    pub fn set_wall_clock(&mut self, now: Instant, wall: SystemTime) {
        self.wall_anchor = (now, wall);
    }

    fn wall_at(&self, now: Instant) -> SystemTime {
        let (m, w) = self.wall_anchor;
        if now >= m {
            w + (now - m)
        } else {
            w.checked_sub(m - now).unwrap_or(w)
        }
    }

    /// Enters or leaves cookie mode: under load, handshakes need a valid
    /// mac2 (else they get a cookie reply) and are rate limited per source.
    pub fn set_under_load(&mut self, under_load: bool) {
        self.under_load = under_load;
    }

    /// Whether cookie mode is on.
    #[must_use]
    pub fn under_load(&self) -> bool {
        self.under_load
    }

    /// How many packets were dropped for `e`.
    #[must_use]
    pub fn error_count(&self, e: Error) -> u64 {
        self.errors[e as usize]
    }

    fn fail(&mut self, e: Error) -> Action {
        self.errors[e as usize] += 1;
        Action::Error(e)
    }

    // ---- configuration ------------------------------------------------

    /// Adds a peer, or returns the existing one with this public key.
    pub fn add_peer(&mut self, public_key: [u8; 32]) -> PeerId {
        if let Some(id) = self.by_key.get(&public_key) {
            return *id;
        }
        let id = PeerId(self.next_peer_id);
        self.next_peer_id += 1;
        let peer = Peer::new(id, &self.identity, PublicKey::from(public_key), None);
        self.peers.insert(id, peer);
        self.by_key.insert(public_key, id);
        id
    }

    /// Removes a peer, its sessions, indices and allowed IPs.
    pub fn remove_peer(&mut self, id: PeerId) -> bool {
        let Some(mut peer) = self.peers.remove(&id) else {
            return false;
        };
        peer.clear_keys(&mut self.indices);
        self.by_key.remove(peer.public_key().as_bytes());
        self.allowed_ips.remove_by_value(&id);
        true
    }

    /// Removes every peer.
    pub fn remove_all_peers(&mut self) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.remove_peer(id);
        }
    }

    /// The peer with this public key.
    #[must_use]
    pub fn peer_by_key(&self, public_key: &[u8; 32]) -> Option<PeerId> {
        self.by_key.get(public_key).copied()
    }

    /// All peer handles, in creation order.
    #[must_use]
    pub fn peer_ids(&self) -> Vec<PeerId> {
        self.peers.keys().copied().collect()
    }

    /// Sets or clears a peer's preshared key.
    pub fn set_preshared_key(&mut self, id: PeerId, psk: Option<[u8; 32]>) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.handshake
                .set_psk(psk.filter(|k| k.iter().any(|&b| b != 0)));
        }
    }

    /// Sets a peer's endpoint.
    pub fn set_endpoint(&mut self, id: PeerId, endpoint: Option<SocketAddr>) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.set_endpoint(endpoint);
        }
    }

    /// Sets a peer's persistent keepalive (seconds, 0/`None` = off). Turning
    /// it on sends a keepalive at the next poll, as `wg set` does.
    pub fn set_persistent_keepalive(&mut self, id: PeerId, secs: Option<u16>, now: Instant) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.set_persistent_keepalive(secs, now);
            if p.persistent_keepalive().is_some() {
                p.request_keepalive();
            }
        }
    }

    /// Routes `ip/cidr` to a peer (taking it from any other peer).
    pub fn add_allowed_ip(&mut self, id: PeerId, ip: IpAddr, cidr: u8) -> Result<(), BadPrefix> {
        if self.peers.contains_key(&id) {
            self.allowed_ips.insert(ip, cidr, id)?;
        }
        Ok(())
    }

    /// Removes one allowed IP of a peer.
    pub fn remove_allowed_ip(&mut self, id: PeerId, ip: IpAddr, cidr: u8) {
        if self.allowed_ips.lookup_exact_is(ip, cidr, &id) {
            self.allowed_ips.remove(ip, cidr);
        }
    }

    /// Removes all allowed IPs of a peer (`replace_allowed_ips=true`).
    pub fn clear_allowed_ips(&mut self, id: PeerId) {
        self.allowed_ips.remove_by_value(&id);
    }

    /// The peer whose allowed IPs contain `ip`.
    #[must_use]
    pub fn route(&self, ip: IpAddr) -> Option<PeerId> {
        self.allowed_ips.lookup(ip).copied()
    }

    /// A peer's state and statistics.
    #[must_use]
    pub fn peer_info(&self, id: PeerId) -> Option<PeerInfo> {
        let p = self.peers.get(&id)?;
        Some(PeerInfo {
            public_key: *p.public_key().as_bytes(),
            has_preshared_key: p.handshake.has_psk(),
            endpoint: p.endpoint(),
            persistent_keepalive: p.persistent_keepalive(),
            last_handshake: p.last_handshake.map(|t| self.wall_at(t)),
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            allowed_ips: self.allowed_ips.entries_for(&id),
        })
    }

    /// Direct access to a peer (tests, diagnostics).
    #[must_use]
    pub fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(&id)
    }

    // ---- data path ----------------------------------------------------

    /// Handles one UDP datagram from `from`. `out` should be at least as
    /// large as `datagram` (and 148 bytes).
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
        now: Instant,
    ) -> Action {
        let msg = match Message::parse(datagram) {
            Ok(m) => m,
            Err(_) => return self.fail(Error::Malformed),
        };
        match msg {
            Message::Initiation(m) => {
                if let Some(a) = self.check_handshake_macs(from, datagram, m.sender, out, now) {
                    return a;
                }
                self.handle_initiation(from, &m, datagram.len(), out, now)
            }
            Message::Response(m) => {
                if let Some(a) = self.check_handshake_macs(from, datagram, m.sender, out, now) {
                    return a;
                }
                self.handle_response(from, &m, datagram.len(), now)
            }
            Message::CookieReply(m) => {
                let Some(id) = self.indices.get(m.receiver) else {
                    return self.fail(Error::UnknownIndex);
                };
                let peer = self.peers.get_mut(&id).expect("index maps to live peer");
                match peer.cookie.consume_reply(&m, now) {
                    Ok(()) => Action::Done,
                    Err(_) => self.fail(Error::InvalidCookieReply),
                }
            }
            Message::Data(d) => {
                let Some(id) = self.indices.get(d.receiver) else {
                    return self.fail(Error::UnknownIndex);
                };
                let peer = self.peers.get_mut(&id).expect("index maps to live peer");
                let len = match peer.decapsulate(&d, datagram.len(), out, now, &mut self.indices) {
                    Ok(len) => len,
                    Err(ReceiveError::UnknownIndex) => return self.fail(Error::UnknownIndex),
                    Err(ReceiveError::Session(e)) => return self.fail(e.into()),
                };
                // Roaming: follow the newest authenticated source.
                peer.set_endpoint(Some(from));
                if len == 0 {
                    return Action::Done;
                }
                let Some((src, _, ip_len)) = ip_header(&out[..len]) else {
                    return self.fail(Error::InvalidIpPacket);
                };
                if self.allowed_ips.lookup(src) != Some(&id) {
                    return self.fail(Error::SourceNotAllowed);
                }
                Action::WriteToTun {
                    len: ip_len,
                    peer: id,
                }
            }
        }
    }

    /// mac1 always; under load mac2 (else a cookie reply) and the rate limit.
    fn check_handshake_macs(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        sender: u32,
        out: &mut [u8],
        now: Instant,
    ) -> Option<Action> {
        let under_load = self.under_load;
        match self
            .cookie_checker
            .check(datagram, from, under_load, now, &mut self.rng)
        {
            MacState::Invalid => Some(self.fail(Error::InvalidMac)),
            MacState::ValidMac1 if under_load => {
                if out.len() < COOKIE_REPLY_LEN {
                    return Some(self.fail(Error::BufferTooSmall));
                }
                let reply =
                    self.cookie_checker
                        .create_reply(datagram, sender, from, now, &mut self.rng);
                let len = reply.write(out);
                Some(Action::SendDatagram { to: from, len })
            }
            MacState::ValidCookie if !self.rate_limiter.allow(from.ip(), now) => {
                Some(self.fail(Error::RateLimited))
            }
            _ => None,
        }
    }

    fn handle_initiation(
        &mut self,
        from: SocketAddr,
        m: &crate::messages::Initiation,
        datagram_len: usize,
        out: &mut [u8],
        now: Instant,
    ) -> Action {
        if out.len() < RESPONSE_LEN {
            return self.fail(Error::BufferTooSmall);
        }
        let half = match begin_consume_initiation(&self.identity, m) {
            Ok(h) => h,
            Err(e) => return self.fail(e.into()),
        };
        let Some(id) = self.by_key.get(half.remote_static.as_bytes()).copied() else {
            return self.fail(Error::UnknownPeer);
        };
        let peer = self.peers.get_mut(&id).expect("key maps to live peer");
        let index = self.indices.alloc(id, &mut self.rng);
        let (resp, keys) = match peer.handshake.respond(&half, index, now, &mut self.rng) {
            Ok(r) => r,
            Err(e) => {
                self.indices.free(index);
                return self.fail(e.into());
            }
        };
        let len = resp.write(out);
        peer.cookie.add_macs(&mut out[..len], now);
        peer.install_session(keys, now, &mut self.indices);
        peer.set_endpoint(Some(from));
        peer.rx_bytes += datagram_len as u64;
        peer.tx_bytes += len as u64;
        // Received an authenticated initiation, derived a session, sent a response.
        peer.timers.any_authenticated_packet_received();
        peer.timers.any_authenticated_packet_traversal(now);
        peer.timers.session_derived(now);
        peer.timers.any_authenticated_packet_sent();
        Action::SendDatagram { to: from, len }
    }

    fn handle_response(
        &mut self,
        from: SocketAddr,
        m: &crate::messages::Response,
        datagram_len: usize,
        now: Instant,
    ) -> Action {
        let Some(id) = self.indices.get(m.receiver) else {
            return self.fail(Error::UnknownIndex);
        };
        let peer = self.peers.get_mut(&id).expect("index maps to live peer");
        let keys = match peer.handshake.consume_response(&self.identity, m) {
            Ok(k) => k,
            Err(e) => return self.fail(e.into()),
        };
        peer.install_session(keys, now, &mut self.indices);
        peer.set_endpoint(Some(from));
        peer.rx_bytes += datagram_len as u64;
        peer.last_handshake = Some(now);
        peer.timers.any_authenticated_packet_received();
        peer.timers.any_authenticated_packet_traversal(now);
        peer.timers.handshake_complete();
        peer.timers.session_derived(now);
        // Confirm the session to the responder: queued data or a keepalive.
        peer.request_keepalive();
        Action::Done
    }

    /// Handles one IP packet read from the TUN: routes it by destination,
    /// seals it into `out` (needs `packet.len() + 47` bytes), or queues it
    /// and asks for a handshake (then `Done`; drain [`Self::poll_transmit`]).
    pub fn handle_tun_packet(&mut self, packet: &[u8], out: &mut [u8], now: Instant) -> Action {
        let Some((_, dst, _)) = ip_header(packet) else {
            return self.fail(Error::InvalidIpPacket);
        };
        let Some(id) = self.allowed_ips.lookup(dst).copied() else {
            return self.fail(Error::NoRoute);
        };
        let peer = self
            .peers
            .get_mut(&id)
            .expect("allowed IPs map to live peers");
        let Some(to) = peer.endpoint() else {
            return self.fail(Error::NoEndpoint);
        };
        if peer.queued() == 0 {
            match peer.encapsulate(packet, out, now, &mut self.rng) {
                Ok(Some(len)) => return Action::SendDatagram { to, len },
                Ok(None) => {}
                Err(e) => return self.fail(e.into()),
            }
        }
        peer.enqueue(packet);
        if !peer.has_session(now) {
            peer.request_initiation(now, false);
        }
        Action::Done
    }

    /// Next datagram the engine wants sent (handshake initiations and
    /// retries, queued packets after a handshake, keepalives). Call until
    /// `None` after every other call. `out` needs room for the largest
    /// queued packet plus 47 bytes.
    pub fn poll_transmit(&mut self, out: &mut [u8], now: Instant) -> Option<Transmit> {
        let wall = Tai64N::from_system_time(self.wall_at(now));
        for (id, peer) in &mut self.peers {
            if !peer.has_pending(now) {
                continue;
            }
            if let Some((to, len)) = peer.poll_transmit(
                &self.identity,
                &mut self.indices,
                out,
                now,
                wall,
                &mut self.rng,
            ) {
                return Some(Transmit { to, len, peer: *id });
            }
        }
        None
    }

    /// Runs every timer due at `now`. Follow with [`Self::poll_transmit`].
    pub fn handle_timeout(&mut self, now: Instant) {
        for peer in self.peers.values_mut() {
            while let Some(ev) = peer.timers.pop_expired(now) {
                peer.on_timer(ev, now, &mut self.indices);
            }
        }
        if self
            .last_gc
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.rate_limiter.gc(now);
            self.last_gc = Some(now);
        }
    }

    /// The earliest timer deadline, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| p.timers.next_deadline())
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_AFTER_TIME};
    use crate::messages::{
        MESSAGE_COOKIE_REPLY, MESSAGE_DATA, MESSAGE_INITIATION, MESSAGE_RESPONSE,
    };
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::VecDeque;

    pub(super) fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        let len = u16::try_from(20 + payload.len()).unwrap();
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Side {
        A,
        B,
    }

    /// Two engines joined by an in-memory network in virtual time.
    struct Pair {
        a: Engine<StdRng>,
        b: Engine<StdRng>,
        a_addr: SocketAddr,
        b_addr: SocketAddr,
        now: Instant,
        /// Datagrams in flight: (sender, from address, bytes).
        wire: VecDeque<(Side, SocketAddr, Vec<u8>)>,
        /// Everything sent: (sender, destination, message type, length, time).
        log: Vec<(Side, SocketAddr, u8, usize, Instant)>,
        tun_a: Vec<Vec<u8>>,
        tun_b: Vec<Vec<u8>>,
        errors: Vec<(Side, Error)>,
    }

    const A_IP: [u8; 4] = [10, 0, 0, 1];
    const B_IP: [u8; 4] = [10, 0, 0, 2];

    impl Pair {
        fn new(seed: u64) -> Self {
            let t0 = Instant::now();
            let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let mut a = Engine::new([0xa1; 32], StdRng::seed_from_u64(seed), t0, wall);
            let mut b = Engine::new([0xb2; 32], StdRng::seed_from_u64(seed + 1), t0, wall);
            let a_addr: SocketAddr = "198.18.0.1:40000".parse().unwrap();
            let b_addr: SocketAddr = "198.18.1.1:51820".parse().unwrap();
            let pb = a.add_peer(b.public_key());
            a.add_allowed_ip(pb, IpAddr::from(B_IP), 32).unwrap();
            a.set_endpoint(pb, Some(b_addr));
            let pa = b.add_peer(a.public_key());
            b.add_allowed_ip(pa, IpAddr::from(A_IP), 32).unwrap();
            Self {
                a,
                b,
                a_addr,
                b_addr,
                now: t0,
                wire: VecDeque::new(),
                log: Vec::new(),
                tun_a: Vec::new(),
                tun_b: Vec::new(),
                errors: Vec::new(),
            }
        }

        fn eng(&mut self, s: Side) -> &mut Engine<StdRng> {
            match s {
                Side::A => &mut self.a,
                Side::B => &mut self.b,
            }
        }

        fn addr(&self, s: Side) -> SocketAddr {
            match s {
                Side::A => self.a_addr,
                Side::B => self.b_addr,
            }
        }

        fn emit(&mut self, from: Side, to: SocketAddr, bytes: &[u8]) {
            self.log.push((from, to, bytes[0], bytes.len(), self.now));
            let src = self.addr(from);
            self.wire.push_back((from, src, bytes.to_vec()));
        }

        fn poll_all(&mut self) {
            let mut buf = vec![0u8; 2048];
            for s in [Side::A, Side::B] {
                let now = self.now;
                while let Some(t) = self.eng(s).poll_transmit(&mut buf, now) {
                    self.emit(s, t.to, &buf[..t.len]);
                }
            }
        }

        /// Delivers until the network is quiet.
        fn run(&mut self) {
            let mut out = vec![0u8; 2048];
            loop {
                self.poll_all();
                let Some((from, src, bytes)) = self.wire.pop_front() else {
                    break;
                };
                let dst = if from == Side::A { Side::B } else { Side::A };
                let now = self.now;
                match self.eng(dst).handle_datagram(src, &bytes, &mut out, now) {
                    Action::SendDatagram { to, len } => {
                        let reply = out[..len].to_vec();
                        self.emit(dst, to, &reply);
                    }
                    Action::WriteToTun { len, .. } => {
                        let p = out[..len].to_vec();
                        match dst {
                            Side::A => self.tun_a.push(p),
                            Side::B => self.tun_b.push(p),
                        }
                    }
                    Action::Done => {}
                    Action::Error(e) => self.errors.push((dst, e)),
                }
            }
        }

        fn send_tun(&mut self, s: Side, payload: &[u8]) -> Action {
            let pkt = if s == Side::A {
                ipv4(A_IP, B_IP, payload)
            } else {
                ipv4(B_IP, A_IP, payload)
            };
            let mut out = vec![0u8; 2048];
            let now = self.now;
            let a = self.eng(s).handle_tun_packet(&pkt, &mut out, now);
            if let Action::SendDatagram { to, len } = a {
                let d = out[..len].to_vec();
                self.emit(s, to, &d);
            }
            self.run();
            a
        }

        /// Advances virtual time to `now + d`, firing timers on the way.
        fn advance(&mut self, d: Duration) {
            let target = self.now + d;
            loop {
                let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                match next {
                    Some(t) if t <= target => {
                        self.now = self.now.max(t);
                        let now = self.now;
                        self.a.handle_timeout(now);
                        self.b.handle_timeout(now);
                        self.run();
                    }
                    _ => break,
                }
            }
            self.now = target;
            let now = self.now;
            self.a.handle_timeout(now);
            self.b.handle_timeout(now);
            self.run();
        }

        fn count(&self, from: Side, ty: u8, len: Option<usize>, since: Instant) -> usize {
            self.log
                .iter()
                .filter(|e| {
                    e.0 == from && e.2 == ty && len.is_none_or(|l| e.3 == l) && e.4 >= since
                })
                .count()
        }

        fn established() -> Self {
            let mut p = Self::new(42);
            assert_eq!(
                p.send_tun(Side::A, b"ping"),
                Action::Done,
                "queued until handshake"
            );
            assert_eq!(p.tun_b.len(), 1, "queued packet flushed after handshake");
            p.send_tun(Side::B, b"pong");
            assert_eq!(p.tun_a.len(), 1);
            p
        }
    }

    #[test]
    fn handshake_then_data_both_ways() {
        let mut p = Pair::new(1);
        let t0 = p.now;
        assert_eq!(p.send_tun(Side::A, b"hello"), Action::Done);
        assert_eq!(p.count(Side::A, MESSAGE_INITIATION, Some(148), t0), 1);
        assert_eq!(p.count(Side::B, MESSAGE_RESPONSE, Some(92), t0), 1);
        assert_eq!(p.tun_b, vec![ipv4(A_IP, B_IP, b"hello")]);
        // The responder learnt A's endpoint from the initiation.
        let pa = p.b.peer_by_key(&p.a.public_key()).unwrap();
        assert_eq!(p.b.peer_info(pa).unwrap().endpoint, Some(p.a_addr));
        // Direct send once the session is confirmed.
        assert!(matches!(
            p.send_tun(Side::B, b"world"),
            Action::SendDatagram { .. }
        ));
        assert_eq!(p.tun_a, vec![ipv4(B_IP, A_IP, b"world")]);
        assert!(matches!(
            p.send_tun(Side::A, b"again"),
            Action::SendDatagram { .. }
        ));
        assert_eq!(p.tun_b.len(), 2);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let pb = p.a.peer_by_key(&p.b.public_key()).unwrap();
        let info = p.a.peer_info(pb).unwrap();
        assert_eq!(
            info.last_handshake,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert!(info.rx_bytes > 0 && info.tx_bytes > 0);
        assert_eq!(info.allowed_ips, vec![(IpAddr::from(B_IP), 32)]);
        let binfo = p.b.peer_info(pa).unwrap();
        assert_eq!(binfo.rx_bytes, info.tx_bytes);
        assert_eq!(binfo.tx_bytes, info.rx_bytes);
    }

    #[test]
    fn rekey_after_120s() {
        let mut p = Pair::established();
        let t0 = p.now + Duration::from_millis(1);
        let pb = p.a.peer_by_key(&p.b.public_key()).unwrap();
        let first_hs = p.a.peer_info(pb).unwrap().last_handshake.unwrap();
        for _ in 0..13 {
            p.advance(Duration::from_secs(10));
            p.send_tun(Side::A, b"tick");
            p.send_tun(Side::B, b"tock");
        }
        let inits: Vec<_> = p
            .log
            .iter()
            .filter(|e| e.2 == MESSAGE_INITIATION)
            .map(|e| (e.0, e.4 - t0))
            .collect();
        assert_eq!(
            p.count(Side::A, MESSAGE_INITIATION, None, t0),
            1,
            "one rekey by the initiator {inits:?}"
        );
        assert_eq!(p.count(Side::B, MESSAGE_INITIATION, None, t0), 0);
        let second_hs = p.a.peer_info(pb).unwrap().last_handshake.unwrap();
        assert!(second_hs >= first_hs + REKEY_AFTER_TIME);
        assert_eq!(p.tun_b.len(), 14);
        assert_eq!(p.tun_a.len(), 14);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
    }

    #[test]
    fn keepalive_after_10s_of_one_way_traffic() {
        let mut p = Pair::established();
        // A's data to B, B stays silent.
        p.advance(Duration::from_secs(1));
        let t0 = p.now;
        p.send_tun(Side::A, b"one-way");
        p.advance(KEEPALIVE_TIMEOUT - Duration::from_millis(1));
        assert_eq!(p.count(Side::B, MESSAGE_DATA, Some(32), t0), 0);
        p.advance(Duration::from_millis(1));
        assert_eq!(
            p.count(Side::B, MESSAGE_DATA, Some(32), t0),
            1,
            "B sends a keepalive"
        );
        // Keepalives are not written to the TUN, and do not beget keepalives.
        p.advance(Duration::from_secs(30));
        assert_eq!(p.count(Side::A, MESSAGE_DATA, Some(32), t0), 0);
        assert_eq!(p.count(Side::B, MESSAGE_DATA, Some(32), t0), 1);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
    }

    #[test]
    fn persistent_keepalive() {
        let mut p = Pair::established();
        let pb = p.a.peer_by_key(&p.b.public_key()).unwrap();
        let t0 = p.now;
        let now = p.now;
        p.a.set_persistent_keepalive(pb, Some(25), now);
        p.run();
        assert_eq!(
            p.count(Side::A, MESSAGE_DATA, Some(32), t0),
            1,
            "sent at once when enabled"
        );
        p.advance(Duration::from_secs(100));
        // t0 + 0, 25, 50, 75, 100.
        assert_eq!(p.count(Side::A, MESSAGE_DATA, Some(32), t0), 5);
        assert_eq!(p.a.peer_info(pb).unwrap().persistent_keepalive, Some(25));
        assert!(p.errors.is_empty(), "{:?}", p.errors);
    }

    #[test]
    fn persistent_keepalive_starts_handshake() {
        let mut p = Pair::new(9);
        let pb = p.a.peer_by_key(&p.b.public_key()).unwrap();
        let now = p.now;
        p.a.set_persistent_keepalive(pb, Some(25), now);
        p.run();
        assert_eq!(p.count(Side::A, MESSAGE_INITIATION, None, now), 1);
        assert!(p.a.peer(pb).unwrap().has_session(p.now));
        // The responder's session is confirmed by the keepalive.
        let pa = p.b.peer_by_key(&p.a.public_key()).unwrap();
        assert!(p.b.peer(pa).unwrap().has_session(p.now));
    }

    #[test]
    fn session_expires_after_180s_then_rehandshakes() {
        let mut p = Pair::established();
        let pb = p.a.peer_by_key(&p.b.public_key()).unwrap();
        let pa = p.b.peer_by_key(&p.a.public_key()).unwrap();
        let t0 = p.now;
        p.advance(REJECT_AFTER_TIME);
        assert!(!p.a.peer(pb).unwrap().has_session(p.now));
        assert!(!p.b.peer(pa).unwrap().has_session(p.now));
        // The responder side now initiates (its session is dead).
        assert_eq!(p.send_tun(Side::B, b"after expiry"), Action::Done);
        assert_eq!(p.count(Side::B, MESSAGE_INITIATION, None, t0), 1);
        assert_eq!(p.tun_a.last().unwrap(), &ipv4(B_IP, A_IP, b"after expiry"));
        assert!(p.b.peer(pa).unwrap().has_session(p.now));
        // Keys are erased after 3 * REJECT_AFTER_TIME of silence.
        p.advance(REJECT_AFTER_TIME * 3 + Duration::from_secs(1));
        assert!(!p.b.peer(pa).unwrap().has_session(p.now));
        assert_eq!(
            p.a.indices.len() + p.b.indices.len(),
            0,
            "all indices freed"
        );
        assert!(p.errors.is_empty(), "{:?}", p.errors);
    }

    #[test]
    fn handshake_retries_then_gives_up() {
        let mut p = Pair::new(3);
        let t0 = p.now;
        // B is gone: drop everything A sends.
        let pb = p.a.peer_by_key(&p.b.public_key()).unwrap();
        p.a.set_endpoint(pb, Some("198.18.9.9:1".parse().unwrap()));
        let mut out = vec![0u8; 2048];
        let pkt = ipv4(A_IP, B_IP, b"lost");
        assert_eq!(p.a.handle_tun_packet(&pkt, &mut out, t0), Action::Done);
        let mut sent = 0;
        let mut now = t0;
        while now < t0 + Duration::from_secs(200) {
            while p.a.poll_transmit(&mut out, now).is_some() {
                sent += 1;
            }
            match p.a.poll_timeout() {
                Some(t) => now = t,
                None => break,
            }
            p.a.handle_timeout(now);
        }
        // 1 initial + MAX_TIMER_HANDSHAKES + 1 retries (the kernel's `>` check), ~90 s.
        assert_eq!(sent, 20);
        assert_eq!(
            p.a.peer(pb).unwrap().queued(),
            0,
            "queue dropped on give-up"
        );
    }

    #[test]
    fn cookie_mode() {
        let mut p = Pair::new(4);
        p.b.set_under_load(true);
        let t0 = p.now;
        assert_eq!(p.send_tun(Side::A, b"under load"), Action::Done);
        assert_eq!(p.count(Side::B, MESSAGE_COOKIE_REPLY, Some(64), t0), 1);
        assert_eq!(p.count(Side::B, MESSAGE_RESPONSE, None, t0), 0);
        assert!(p.tun_b.is_empty());
        // The retry after REKEY_TIMEOUT carries mac2 and is answered.
        p.advance(Duration::from_secs(6));
        assert_eq!(p.count(Side::A, MESSAGE_INITIATION, None, t0), 2);
        assert_eq!(p.count(Side::B, MESSAGE_COOKIE_REPLY, None, t0), 1);
        assert_eq!(p.count(Side::B, MESSAGE_RESPONSE, None, t0), 1);
        assert_eq!(p.tun_b, vec![ipv4(A_IP, B_IP, b"under load")]);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        // Under load, a flood of valid-cookie initiations is rate limited
        // (checked before any handshake work).
        let pb = p.a.peer_by_key(&p.b.public_key()).unwrap();
        let mut out = vec![0u8; 2048];
        let mut reply = vec![0u8; 2048];
        let now = p.now + Duration::from_secs(10);
        p.a.peers
            .get_mut(&pb)
            .unwrap()
            .request_initiation(now, false);
        let t = p.a.poll_transmit(&mut out, now).unwrap();
        let mut results = Vec::new();
        for _ in 0..8 {
            results.push(p.b.handle_datagram(p.a_addr, &out[..t.len], &mut reply, now));
        }
        assert!(
            matches!(results[0], Action::SendDatagram { len: 92, .. }),
            "{results:?}"
        );
        assert_eq!(results[1], Action::Error(Error::ReplayedInitiation));
        assert_eq!(results[5..], [Action::Error(Error::RateLimited); 3]);
    }

    #[test]
    fn roaming_follows_authenticated_source() {
        let mut p = Pair::established();
        let pa = p.b.peer_by_key(&p.a.public_key()).unwrap();
        assert_eq!(p.b.peer_info(pa).unwrap().endpoint, Some(p.a_addr));
        // A moves.
        p.a_addr = "198.18.7.7:40001".parse().unwrap();
        p.send_tun(Side::A, b"from new address");
        assert_eq!(p.b.peer_info(pa).unwrap().endpoint, Some(p.a_addr));
        let t = p.now;
        p.send_tun(Side::B, b"reply");
        let last = p
            .log
            .iter()
            .rev()
            .find(|e| e.0 == Side::B && e.4 >= t)
            .unwrap();
        assert_eq!(last.1, p.a_addr, "reply goes to the new address");
        // A forged (unauthenticated) packet from elsewhere does not move it.
        let mut out = vec![0u8; 2048];
        let mut forged = vec![0u8; 64];
        forged[0] = 4;
        let idx = p.b.indices.map_keys_for_test();
        forged[4..8].copy_from_slice(&idx.to_le_bytes());
        let evil: SocketAddr = "203.0.113.9:1".parse().unwrap();
        let now = p.now;
        assert_eq!(
            p.b.handle_datagram(evil, &forged, &mut out, now),
            Action::Error(Error::DecryptFailed)
        );
        assert_eq!(p.b.peer_info(pa).unwrap().endpoint, Some(p.a_addr));
    }

    #[test]
    fn replayed_initiation_rejected() {
        let mut p = Pair::new(5);
        let mut out = vec![0u8; 2048];
        let mut reply = vec![0u8; 2048];
        let now = p.now;
        let pkt = ipv4(A_IP, B_IP, b"x");
        p.a.handle_tun_packet(&pkt, &mut out, now);
        let t = p.a.poll_transmit(&mut out, now).unwrap();
        let init = out[..t.len].to_vec();
        assert!(matches!(
            p.b.handle_datagram(p.a_addr, &init, &mut reply, now),
            Action::SendDatagram { len: 92, .. }
        ));
        let later = now + Duration::from_secs(1);
        assert_eq!(
            p.b.handle_datagram(p.a_addr, &init, &mut reply, later),
            Action::Error(Error::ReplayedInitiation)
        );
        assert_eq!(p.b.error_count(Error::ReplayedInitiation), 1);
        // A fresher initiation (later wall clock) is accepted.
        let fresh = now + Duration::from_secs(6);
        let pb = p.a.peer_by_key(&p.b.public_key()).unwrap();
        p.a.peers
            .get_mut(&pb)
            .unwrap()
            .request_initiation(fresh, false);
        let t = p.a.poll_transmit(&mut out, fresh).unwrap();
        let init2 = out[..t.len].to_vec();
        assert!(matches!(
            p.b.handle_datagram(p.a_addr, &init2, &mut reply, fresh),
            Action::SendDatagram { .. }
        ));
        // And then the older one is rejected too.
        assert_eq!(
            p.b.handle_datagram(p.a_addr, &init, &mut reply, fresh + Duration::from_secs(1)),
            Action::Error(Error::ReplayedInitiation)
        );
    }

    #[test]
    fn garbage_and_truncated_datagrams_counted() {
        let mut p = Pair::established();
        let mut out = vec![0u8; 2048];
        let now = p.now;
        let from = p.a_addr;
        let mut rng = StdRng::seed_from_u64(99);
        for n in 0..300 {
            let mut g = vec![0u8; n];
            rng.fill_bytes(&mut g);
            let a = p.b.handle_datagram(from, &g, &mut out, now);
            assert!(matches!(a, Action::Error(_)), "garbage accepted: {a:?}");
        }
        assert!(p.b.error_count(Error::Malformed) > 250);
        // Truncated real messages.
        let mut buf = vec![0u8; 2048];
        let pb = p.a.peer_by_key(&p.b.public_key()).unwrap();
        let len =
            p.a.peers
                .get_mut(&pb)
                .unwrap()
                .encapsulate(b"payload", &mut buf, now, &mut rng)
                .unwrap()
                .unwrap();
        for cut in [1, 3, 15, 16, 31] {
            assert_eq!(
                p.b.handle_datagram(from, &buf[..cut], &mut out, now),
                Action::Error(Error::Malformed)
            );
        }
        assert_eq!(
            p.b.handle_datagram(from, &buf[..len - 1], &mut out, now),
            Action::Error(Error::DecryptFailed)
        );
        assert!(matches!(
            p.b.handle_datagram(from, &buf[..len], &mut out, now),
            Action::Error(Error::InvalidIpPacket)
        ));
        // Same packet again: replay.
        assert_eq!(
            p.b.handle_datagram(from, &buf[..len], &mut out, now),
            Action::Error(Error::Replay)
        );
        // Unknown index.
        buf[4..8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert_eq!(
            p.b.handle_datagram(from, &buf[..len], &mut out, now),
            Action::Error(Error::UnknownIndex)
        );
        // Every single-byte corruption of a valid initiation is refused
        // (except in mac2, which is ignored when not under load).
        let pb = p.a.peer_by_key(&p.b.public_key()).unwrap();
        let later = now + Duration::from_secs(10);
        p.a.peers
            .get_mut(&pb)
            .unwrap()
            .request_initiation(later, false);
        let t = p.a.poll_transmit(&mut buf, later).unwrap();
        let good = buf[..t.len].to_vec();
        for i in 0..crate::messages::initiation::MAC2.start {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            let a = p.b.handle_datagram(from, &bad, &mut out, later);
            assert!(matches!(a, Action::Error(_)), "byte {i}: {a:?}");
        }
        // Initiation with a broken mac1.
        let mut init = vec![0u8; 148];
        init[0] = 1;
        assert_eq!(
            p.b.handle_datagram(from, &init, &mut out, now),
            Action::Error(Error::InvalidMac)
        );
        assert!(p.b.error_count(Error::InvalidMac) >= 1);
        // Still working afterwards.
        p.send_tun(Side::A, b"still fine");
        assert_eq!(p.tun_b.last().unwrap(), &ipv4(A_IP, B_IP, b"still fine"));
    }

    #[test]
    fn source_address_checked_against_allowed_ips() {
        let mut p = Pair::established();
        let pb = p.a.peer_by_key(&p.b.public_key()).unwrap();
        let mut buf = vec![0u8; 2048];
        let mut out = vec![0u8; 2048];
        let now = p.now;
        let mut rng = StdRng::seed_from_u64(1);
        let spoofed = ipv4([10, 9, 9, 9], B_IP, b"spoof");
        let len =
            p.a.peers
                .get_mut(&pb)
                .unwrap()
                .encapsulate(&spoofed, &mut buf, now, &mut rng)
                .unwrap()
                .unwrap();
        assert_eq!(
            p.b.handle_datagram(p.a_addr, &buf[..len], &mut out, now),
            Action::Error(Error::SourceNotAllowed)
        );
        // No route for an unknown destination.
        let pkt = ipv4(A_IP, [10, 7, 7, 7], b"?");
        assert_eq!(
            p.a.handle_tun_packet(&pkt, &mut out, now),
            Action::Error(Error::NoRoute)
        );
        assert_eq!(
            p.a.handle_tun_packet(&[0x45, 0, 0], &mut out, now),
            Action::Error(Error::InvalidIpPacket)
        );
    }

    #[test]
    fn peer_config_updates() {
        let mut p = Pair::established();
        let pb = p.a.peer_by_key(&p.b.public_key()).unwrap();
        p.a.add_allowed_ip(pb, "fd00::".parse().unwrap(), 8)
            .unwrap();
        p.a.set_preshared_key(pb, Some([7; 32]));
        let info = p.a.peer_info(pb).unwrap();
        assert!(info.has_preshared_key);
        assert_eq!(info.allowed_ips.len(), 2);
        assert_eq!(p.a.route("fd00::1".parse().unwrap()), Some(pb));
        p.a.remove_allowed_ip(pb, "fd00::".parse().unwrap(), 8);
        assert_eq!(p.a.route("fd00::1".parse().unwrap()), None);
        p.a.clear_allowed_ips(pb);
        assert_eq!(p.a.route(IpAddr::from(B_IP)), None);
        assert!(p.a.remove_peer(pb));
        assert!(p.a.peer_info(pb).is_none());
        assert_eq!(p.a.indices.len(), 0);
        // Mismatched PSKs: the handshake fails on the initiator.
        let mut p = Pair::new(6);
        let pb = p.a.peer_by_key(&p.b.public_key()).unwrap();
        p.a.set_preshared_key(pb, Some([1; 32]));
        p.send_tun(Side::A, b"x");
        assert!(p.tun_b.is_empty());
        assert!(p.errors.contains(&(Side::A, Error::HandshakeFailed)));
        // Matching PSKs work.
        let pa = p.b.peer_by_key(&p.a.public_key()).unwrap();
        p.b.set_preshared_key(pa, Some([1; 32]));
        p.advance(Duration::from_secs(6));
        assert_eq!(p.tun_b.len(), 1);
        // Changing our private key drops sessions.
        p.a.set_private_key([0x33; 32]);
        assert!(!p.a.peer(pb).unwrap().has_session(p.now));
    }
}
