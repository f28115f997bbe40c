//! One peer's state machine: its handshake, up to three sessions
//! (previous/current/next as in the kernel's `noise_keypairs`), timers,
//! endpoint, the queue of packets awaiting a session, and transfer stats.
//!
//! The engine routes packets here; the peer decides when to initiate,
//! when to send keepalives, and which session opens which packet. Outgoing
//! datagrams that are not direct replies are produced lazily by
//! [`Peer::poll_transmit`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::{CryptoRng, RngCore};
use x25519_dalek::PublicKey;

use crate::cookie::CookieState;
use crate::crypto::Tai64N;
use crate::handshake::{Handshake, StaticIdentity, TransportKeys};
use crate::messages::MAX_QUEUED_PACKETS;
use crate::messages::{Data, INITIATION_LEN};
use crate::messages::{KEEPALIVE_TIMEOUT, MAX_TIMER_HANDSHAKES, REJECT_AFTER_TIME, REKEY_TIMEOUT};
use crate::session::{Session, SessionError};
use crate::timers::{TimerEvent, Timers};

/// A stable handle for a peer inside an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u32);

/// Maps our 32-bit receiver indices to peers.
#[derive(Debug, Default)]
pub struct IndexTable {
    map: HashMap<u32, PeerId>,
}

impl IndexTable {
    /// Allocates a fresh random index for `peer`.
    pub fn alloc(&mut self, peer: PeerId, rng: &mut impl RngCore) -> u32 {
        loop {
            let i = rng.next_u32();
            if let std::collections::hash_map::Entry::Vacant(e) = self.map.entry(i) {
                e.insert(peer);
                return i;
            }
        }
    }

    /// Releases an index.
    pub fn free(&mut self, index: u32) {
        self.map.remove(&index);
    }

    /// The peer owning `index`.
    #[must_use]
    pub fn get(&self, index: u32) -> Option<PeerId> {
        self.map.get(&index).copied()
    }

    /// Some live index (tests).
    #[cfg(test)]
    pub(crate) fn map_keys_for_test(&self) -> u32 {
        *self.map.keys().next().expect("an index")
    }

    /// Number of live indices.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no index is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Why [`Peer::decapsulate`] refused a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveError {
    /// No session of this peer has that index.
    UnknownIndex,
    /// The session exists but failed (expired, bad tag, replay, small buffer).
    Session(SessionError),
}

/// One peer.
pub struct Peer {
    id: PeerId,
    /// Noise state for this peer.
    pub handshake: Handshake,
    /// mac1/mac2 state for messages we send to this peer.
    pub cookie: CookieState,
    /// Timer table.
    pub timers: Timers,
    current: Option<Session>,
    previous: Option<Session>,
    next: Option<Session>,
    endpoint: Option<SocketAddr>,
    queue: VecDeque<Vec<u8>>,
    pending_initiation: bool,
    pending_keepalive: bool,
    last_sent_initiation: Option<Instant>,
    /// When the latest handshake completed (monotonic).
    pub last_handshake: Option<Instant>,
    /// Bytes received in authenticated datagrams.
    pub rx_bytes: u64,
    /// Bytes sent in datagrams.
    pub tx_bytes: u64,
}

impl core::fmt::Debug for Peer {
    // Manual so queued plaintext never reaches logs.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("handshake", &self.handshake)
            .field("current", &self.current)
            .field("previous", &self.previous)
            .field("next", &self.next)
            .field("endpoint", &self.endpoint)
            .field("queued", &self.queue.len())
            .field("rx_bytes", &self.rx_bytes)
            .field("tx_bytes", &self.tx_bytes)
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// A new peer with static key `public`.
    #[must_use]
    pub fn new(
        id: PeerId,
        identity: &StaticIdentity,
        public: PublicKey,
        psk: Option<[u8; 32]>,
    ) -> Self {
        Self {
            id,
            handshake: Handshake::new(identity, public, psk),
            cookie: CookieState::new(&public),
            timers: Timers::default(),
            current: None,
            previous: None,
            next: None,
            endpoint: None,
            queue: VecDeque::new(),
            pending_initiation: false,
            pending_keepalive: false,
            last_sent_initiation: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }

    /// This peer's handle.
    #[must_use]
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The peer's static public key.
    #[must_use]
    pub fn public_key(&self) -> &PublicKey {
        self.handshake.remote_static()
    }

    /// Where datagrams for this peer go.
    #[must_use]
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint
    }

    /// Sets the endpoint (from configuration, or roaming on an authenticated packet).
    pub fn set_endpoint(&mut self, endpoint: Option<SocketAddr>) {
        self.endpoint = endpoint;
    }

    /// Number of packets waiting for a session.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether a usable sending session exists.
    #[must_use]
    pub fn has_session(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|s| s.can_send(now))
    }

    /// Sets the persistent keepalive interval in seconds (0 or `None` disables).
    pub fn set_persistent_keepalive(&mut self, secs: Option<u16>, now: Instant) {
        self.timers
            .set_persistent_keepalive(secs.map(|s| Duration::from_secs(u64::from(s))), now);
    }

    /// Persistent keepalive interval in seconds.
    #[must_use]
    pub fn persistent_keepalive(&self) -> Option<u16> {
        self.timers
            .persistent_keepalive_interval
            .map(|d| u16::try_from(d.as_secs()).unwrap_or(u16::MAX))
    }

    /// Drops every session and the in-flight handshake, freeing their indices.
    pub fn clear_keys(&mut self, indices: &mut IndexTable) {
        for s in [self.current.take(), self.previous.take(), self.next.take()]
            .into_iter()
            .flatten()
        {
            indices.free(s.local_index);
        }
        if let Some(i) = self.handshake.clear() {
            indices.free(i);
        }
    }

    /// Installs keys from a completed handshake (`wg_noise_handshake_begin_session`):
    /// as initiator they become current at once; as responder they wait in
    /// `next` until the initiator's first data packet confirms them.
    pub fn install_session(&mut self, keys: TransportKeys, now: Instant, indices: &mut IndexTable) {
        let session = Session::new(keys, now);
        let free = |s: Option<Session>, indices: &mut IndexTable| {
            if let Some(s) = s {
                indices.free(s.local_index);
            }
        };
        if session.initiator {
            if let Some(next) = self.next.take() {
                free(self.previous.replace(next), indices);
                free(self.current.take(), indices);
            } else {
                let old = self.current.take();
                free(std::mem::replace(&mut self.previous, old), indices);
            }
            self.current = Some(session);
        } else {
            free(self.next.replace(session), indices);
            free(self.previous.take(), indices);
        }
    }

    /// Asks for a handshake initiation (`wg_packet_send_queued_handshake_initiation`):
    /// at most one per `REKEY_TIMEOUT`.
    pub fn request_initiation(&mut self, now: Instant, is_retry: bool) {
        if !is_retry {
            self.timers.handshake_attempts = 0;
        }
        if self
            .last_sent_initiation
            .is_some_and(|t| now.saturating_duration_since(t) < REKEY_TIMEOUT)
        {
            return;
        }
        self.pending_initiation = true;
    }

    /// Asks for a keepalive (or a flush of queued packets) at the next poll.
    pub fn request_keepalive(&mut self) {
        self.pending_keepalive = true;
    }

    /// Queues an IP packet until a session exists.
    pub fn enqueue(&mut self, packet: &[u8]) {
        if self.queue.len() >= MAX_QUEUED_PACKETS {
            self.queue.pop_front();
        }
        self.queue.push_back(packet.to_vec());
    }

    /// Seals `payload` with the current session if it can send. Runs the send
    /// hooks, including `keep_key_fresh`. `Ok(None)` means no usable session.
    pub fn encapsulate(
        &mut self,
        payload: &[u8],
        out: &mut [u8],
        now: Instant,
        rng: &mut impl RngCore,
    ) -> Result<Option<usize>, SessionError> {
        let Some(session) = self.current.as_mut().filter(|s| s.can_send(now)) else {
            return Ok(None);
        };
        let len = session.encapsulate(payload, out, now)?;
        let rekey = session.wants_rekey_on_send(now);
        if !payload.is_empty() {
            // Call after an authenticated data packet is sent.
            self.timers.data_sent(now, rng);
        }
        self.timers.any_authenticated_packet_sent();
        self.timers.any_authenticated_packet_traversal(now);
        self.tx_bytes += len as u64;
        if rekey {
            // keep_key_fresh (send side)
            self.request_initiation(now, false);
        }
        Ok(Some(len))
    }

    /// Opens a data message for one of our sessions into `out`; returns the
    /// padded plaintext length. Runs the receive hooks; a first packet on the
    /// `next` session confirms it (`wg_noise_received_with_keypair`).
    pub fn decapsulate(
        &mut self,
        msg: &Data<'_>,
        datagram_len: usize,
        out: &mut [u8],
        now: Instant,
        indices: &mut IndexTable,
    ) -> Result<usize, ReceiveError> {
        let idx = msg.receiver;
        let slot = if self.current.as_ref().is_some_and(|s| s.local_index == idx) {
            &mut self.current
        } else if self.next.as_ref().is_some_and(|s| s.local_index == idx) {
            &mut self.next
        } else if self.previous.as_ref().is_some_and(|s| s.local_index == idx) {
            &mut self.previous
        } else {
            return Err(ReceiveError::UnknownIndex);
        };
        let session = slot.as_mut().expect("matched above");
        let len = session
            .decapsulate(msg, out, now)
            .map_err(ReceiveError::Session)?;
        let is_next = self.next.as_ref().is_some_and(|s| s.local_index == idx);
        if is_next {
            // The initiator used the new keys: rotate next -> current -> previous.
            let next = self.next.take();
            let old = std::mem::replace(&mut self.current, next);
            if let Some(p) = std::mem::replace(&mut self.previous, old) {
                indices.free(p.local_index);
            }
            self.timers.handshake_complete();
            self.last_handshake = Some(now);
            if !self.queue.is_empty() {
                self.pending_keepalive = true;
            }
        }
        self.timers.any_authenticated_packet_received();
        self.timers.any_authenticated_packet_traversal(now);
        // keep_key_fresh (receive side): rekey before the session dies.
        let lastminute = self.current.as_ref().is_some_and(|s| {
            s.initiator
                && now.saturating_duration_since(s.birth)
                    >= REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
        });
        if lastminute && !self.timers.sent_lastminute_handshake {
            self.timers.sent_lastminute_handshake = true;
            self.request_initiation(now, false);
        }
        if len > 0 {
            self.timers.data_received(now);
        }
        self.rx_bytes += datagram_len as u64;
        Ok(len)
    }

    /// Reacts to an expired timer (the `wg_expired_*` functions).
    pub fn on_timer(&mut self, ev: TimerEvent, now: Instant, indices: &mut IndexTable) {
        match ev {
            TimerEvent::RetransmitHandshake => {
                if self.timers.handshake_attempts > MAX_TIMER_HANDSHAKES {
                    // Give up: drop what waited for this handshake.
                    self.timers.handshake_given_up(now);
                    self.queue.clear();
                    if let Some(i) = self.handshake.clear() {
                        indices.free(i);
                    }
                } else {
                    self.timers.handshake_attempts += 1;
                    self.request_initiation(now, true);
                }
            }
            TimerEvent::SendKeepalive => {
                self.pending_keepalive = true;
                self.timers.keepalive_sent_by_timer(now);
            }
            TimerEvent::NewHandshake => self.request_initiation(now, false),
            TimerEvent::ZeroKeyMaterial => self.clear_keys(indices),
            TimerEvent::PersistentKeepalive => {
                if self.timers.persistent_keepalive_interval.is_some() {
                    self.pending_keepalive = true;
                }
            }
        }
    }

    /// Whether [`Self::poll_transmit`] may produce something now.
    #[must_use]
    pub fn has_pending(&self, now: Instant) -> bool {
        self.pending_initiation
            || self.pending_keepalive
            || (!self.queue.is_empty() && self.has_session(now))
    }

    /// Produces the next datagram this peer wants sent (initiation, queued
    /// data, keepalive) into `out`; returns its destination and length.
    pub fn poll_transmit(
        &mut self,
        identity: &StaticIdentity,
        indices: &mut IndexTable,
        out: &mut [u8],
        now: Instant,
        wall: Tai64N,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Option<(SocketAddr, usize)> {
        loop {
            if self.pending_initiation {
                self.pending_initiation = false;
                let to = self.endpoint?;
                if out.len() < INITIATION_LEN {
                    return None;
                }
                if let Some(old) = self.handshake.clear() {
                    indices.free(old);
                }
                let index = indices.alloc(self.id, rng);
                let Ok(init) = self.handshake.create_initiation(identity, index, wall, rng) else {
                    indices.free(index);
                    return None;
                };
                let len = init.write(out);
                self.cookie.add_macs(&mut out[..len], now);
                self.timers.any_authenticated_packet_traversal(now);
                self.timers.any_authenticated_packet_sent();
                self.timers.handshake_initiated(now, rng);
                self.last_sent_initiation = Some(now);
                self.tx_bytes += len as u64;
                return Some((to, len));
            }
            let to = self.endpoint;
            if self.has_session(now) {
                if let Some(to) = to {
                    if let Some(pkt) = self.queue.pop_front() {
                        match self.encapsulate(&pkt, out, now, rng) {
                            Ok(Some(len)) => {
                                self.pending_keepalive = false;
                                return Some((to, len));
                            }
                            _ => continue,
                        }
                    }
                }
            }
            if !self.pending_keepalive {
                return None;
            }
            self.pending_keepalive = false;
            let to = to?;
            match self.encapsulate(&[], out, now, rng) {
                Ok(Some(len)) => return Some((to, len)),
                Ok(None) => {
                    // No session: a keepalive starts a handshake instead.
                    self.request_initiation(now, false);
                    if !self.pending_initiation {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    }
}
