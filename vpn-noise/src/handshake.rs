//! The Noise_IKpsk2 handshake of WireGuard (whitepaper §5.4.2-§5.4.5).
//!
//! [`StaticIdentity`] is our long-term key. [`Handshake`] is the per-peer
//! handshake state: as initiator it creates an initiation and consumes the
//! response; as responder it finishes consuming an initiation (after
//! [`begin_consume_initiation`] has decrypted the initiator's static key so the
//! caller can find the peer) and creates the response. mac1/mac2 are added and
//! checked by the [`cookie`](crate::cookie) module, not here.
//!
//! A responder does not clobber its own in-flight initiation, so both sides
//! initiating at once still completes.

use std::time::{Duration, Instant};

use rand_core::{CryptoRng, RngCore};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::crypto::{aead_open, aead_seal, dh, hash, kdf1, kdf2, kdf3, Tai64N};
use crate::messages::{Initiation, Response};
use crate::messages::{CONSTRUCTION, IDENTIFIER, INITIATIONS_PER_SECOND};
use crate::messages::{KEY_LEN, TAI64N_LEN};

/// `HASH(CONSTRUCTION)`, the initial chaining key.
#[must_use]
pub fn initial_chaining_key() -> [u8; KEY_LEN] {
    hash(&[CONSTRUCTION])
}

/// `HASH(HASH(CONSTRUCTION) || IDENTIFIER)`, the initial hash.
#[must_use]
pub fn initial_hash() -> [u8; KEY_LEN] {
    hash(&[&initial_chaining_key(), IDENTIFIER])
}

/// Why a handshake message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// An AEAD tag did not verify.
    Decrypt,
    /// A DH result was all zero (low-order point).
    BadPoint,
    /// The initiation's TAI64N is not newer than the last accepted one.
    ReplayedTimestamp,
    /// Initiations from this peer arrive faster than `INITIATIONS_PER_SECOND`.
    Flood,
    /// A response for which no initiation is pending.
    UnexpectedResponse,
}

/// Our static key pair plus values derived from it.
pub struct StaticIdentity {
    secret: StaticSecret,
    public: PublicKey,
    /// `HASH(HASH(HASH(CONSTRUCTION) || IDENTIFIER) || S_pub_r)` with us as responder.
    responder_hash: [u8; KEY_LEN],
}

impl core::fmt::Debug for StaticIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StaticIdentity")
            .field("public", &self.public)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl StaticIdentity {
    /// Builds the identity from a private key (clamped by X25519).
    #[must_use]
    pub fn new(private: [u8; KEY_LEN]) -> Self {
        let private = Zeroizing::new(private);
        let secret = StaticSecret::from(*private);
        let public = PublicKey::from(&secret);
        let responder_hash = hash(&[&initial_hash(), public.as_bytes()]);
        Self {
            secret,
            public,
            responder_hash,
        }
    }

    /// Our public key.
    #[must_use]
    pub fn public(&self) -> &PublicKey {
        &self.public
    }
}

/// Transport keys derived by a completed handshake.
pub struct TransportKeys {
    /// Key for data we send.
    pub send: Zeroizing<[u8; KEY_LEN]>,
    /// Key for data we receive.
    pub recv: Zeroizing<[u8; KEY_LEN]>,
    /// Our index (the peer puts it in `receiver` fields).
    pub local_index: u32,
    /// The peer's index.
    pub remote_index: u32,
    /// Whether we were the initiator.
    pub initiator: bool,
}

impl core::fmt::Debug for TransportKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TransportKeys")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("initiator", &self.initiator)
            .finish_non_exhaustive()
    }
}

/// An initiation whose static key has been decrypted with our key; the
/// timestamp is still sealed under the (peer-specific) static-static secret.
pub struct HalfInitiation {
    /// The initiator's static public key.
    pub remote_static: PublicKey,
    remote_index: u32,
    remote_ephemeral: PublicKey,
    chaining_key: Zeroizing<[u8; KEY_LEN]>,
    hash: [u8; KEY_LEN],
    encrypted_timestamp: [u8; TAI64N_LEN + 16],
}

impl core::fmt::Debug for HalfInitiation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HalfInitiation")
            .field("remote_static", &self.remote_static)
            .field("remote_index", &self.remote_index)
            .finish_non_exhaustive()
    }
}

/// Responder, first half: decrypts the initiator's static key.
pub fn begin_consume_initiation(
    id: &StaticIdentity,
    msg: &Initiation,
) -> Result<HalfInitiation, HandshakeError> {
    // Ci = HASH(CONSTRUCTION)
    let ck = initial_chaining_key();
    // Hi = HASH(HASH(Ci || IDENTIFIER) || S_pub_r), precomputed
    let h = id.responder_hash;
    // Ci = KDF1(Ci, msg.ephemeral)
    let ck = kdf1(&ck, &msg.ephemeral);
    // Hi = HASH(Hi || msg.ephemeral)
    let h = hash(&[&h, &msg.ephemeral]);
    let remote_ephemeral = PublicKey::from(msg.ephemeral);
    // (Ci, k) = KDF2(Ci, DH(S_priv_r, msg.ephemeral))
    let es = dh(&id.secret, &remote_ephemeral).map_err(|_| HandshakeError::BadPoint)?;
    let (ck, k) = kdf2(&ck, &*es);
    // S_pub_i = AEAD-open(k, 0, msg.static, Hi)
    let mut remote_static = [0u8; KEY_LEN];
    aead_open(&k, 0, &msg.encrypted_static, &h, &mut remote_static)
        .map_err(|_| HandshakeError::Decrypt)?;
    // Hi = HASH(Hi || msg.static)
    let h = hash(&[&h, &msg.encrypted_static]);
    Ok(HalfInitiation {
        remote_static: PublicKey::from(remote_static),
        remote_index: msg.sender,
        remote_ephemeral,
        chaining_key: ck,
        hash: h,
        encrypted_timestamp: msg.encrypted_timestamp,
    })
}

/// An initiation we sent and whose response we await.
struct InitiationSent {
    local_index: u32,
    chaining_key: Zeroizing<[u8; KEY_LEN]>,
    hash: [u8; KEY_LEN],
    ephemeral: StaticSecret,
}

/// Per-peer handshake state (initiator and responder roles).
pub struct Handshake {
    remote_static: PublicKey,
    /// `HASH(HASH(HASH(CONSTRUCTION) || IDENTIFIER) || S_pub_r)` with the peer as responder.
    initiator_hash: [u8; KEY_LEN],
    psk: Zeroizing<[u8; KEY_LEN]>,
    /// `DH(S_priv_local, S_pub_remote)`, `None` if the peer's key is a low-order point.
    static_static: Option<Zeroizing<[u8; KEY_LEN]>>,
    latest_timestamp: Option<Tai64N>,
    last_initiation_consumption: Option<Instant>,
    sent: Option<InitiationSent>,
}

impl core::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Handshake")
            .field("remote_static", &self.remote_static)
            .field("pending_index", &self.pending_index())
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// State for a peer with static key `remote_static` and an optional PSK.
    #[must_use]
    pub fn new(id: &StaticIdentity, remote_static: PublicKey, psk: Option<[u8; KEY_LEN]>) -> Self {
        Self {
            initiator_hash: hash(&[&initial_hash(), remote_static.as_bytes()]),
            static_static: dh(&id.secret, &remote_static).ok(),
            remote_static,
            psk: Zeroizing::new(psk.unwrap_or([0; KEY_LEN])),
            latest_timestamp: None,
            last_initiation_consumption: None,
            sent: None,
        }
    }

    /// Our static key changed: recompute `DH(S_priv, S_pub)` and forget any
    /// in-flight initiation.
    pub fn set_identity(&mut self, id: &StaticIdentity) {
        self.static_static = dh(&id.secret, &self.remote_static).ok();
        self.sent = None;
    }

    /// Sets or clears (all zero, as in the spec) the preshared key `Q`.
    pub fn set_psk(&mut self, psk: Option<[u8; KEY_LEN]>) {
        *self.psk = psk.unwrap_or([0; KEY_LEN]);
    }

    /// Whether a non-zero PSK is configured.
    #[must_use]
    pub fn has_psk(&self) -> bool {
        self.psk.iter().any(|&b| b != 0)
    }

    /// The peer's static public key.
    #[must_use]
    pub fn remote_static(&self) -> &PublicKey {
        &self.remote_static
    }

    /// Our index of the initiation in flight, if any.
    #[must_use]
    pub fn pending_index(&self) -> Option<u32> {
        self.sent.as_ref().map(|s| s.local_index)
    }

    /// Forgets the in-flight initiation; returns its index so it can be freed.
    pub fn clear(&mut self) -> Option<u32> {
        self.sent.take().map(|s| s.local_index)
    }

    /// Initiator: builds an initiation (mac1/mac2 left zero). Replaces any
    /// earlier in-flight initiation (the caller frees [`Self::pending_index`] first).
    pub fn create_initiation(
        &mut self,
        id: &StaticIdentity,
        local_index: u32,
        now_wall: Tai64N,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Initiation, HandshakeError> {
        self.sent = None;
        let ss = self
            .static_static
            .as_ref()
            .ok_or(HandshakeError::BadPoint)?;
        // Ci = HASH(CONSTRUCTION)
        let ck = initial_chaining_key();
        // Hi = HASH(HASH(Ci || IDENTIFIER) || S_pub_r), precomputed
        let h = self.initiator_hash;
        // (E_priv_i, E_pub_i) = DH-GENERATE()
        let ephemeral = StaticSecret::random_from_rng(&mut *rng);
        let e_pub = PublicKey::from(&ephemeral);
        // Ci = KDF1(Ci, E_pub_i)
        let ck = kdf1(&ck, e_pub.as_bytes());
        // msg.ephemeral = E_pub_i; Hi = HASH(Hi || msg.ephemeral)
        let h = hash(&[&h, e_pub.as_bytes()]);
        // (Ci, k) = KDF2(Ci, DH(E_priv_i, S_pub_r))
        let es = dh(&ephemeral, &self.remote_static).map_err(|_| HandshakeError::BadPoint)?;
        let (ck, k) = kdf2(&ck, &*es);
        // msg.static = AEAD(k, 0, S_pub_i, Hi)
        let mut encrypted_static = [0u8; KEY_LEN + 16];
        aead_seal(&k, 0, id.public.as_bytes(), &h, &mut encrypted_static);
        // Hi = HASH(Hi || msg.static)
        let h = hash(&[&h, &encrypted_static]);
        // (Ci, k) = KDF2(Ci, DH(S_priv_i, S_pub_r))
        let (ck, k) = kdf2(&ck, &**ss);
        // msg.timestamp = AEAD(k, 0, TAI64N(), Hi)
        let mut encrypted_timestamp = [0u8; TAI64N_LEN + 16];
        aead_seal(&k, 0, &now_wall.0, &h, &mut encrypted_timestamp);
        // Hi = HASH(Hi || msg.timestamp)
        let h = hash(&[&h, &encrypted_timestamp]);
        self.sent = Some(InitiationSent {
            local_index,
            chaining_key: ck,
            hash: h,
            ephemeral,
        });
        Ok(Initiation {
            sender: local_index,
            ephemeral: *e_pub.as_bytes(),
            encrypted_static,
            encrypted_timestamp,
            mac1: [0; 16],
            mac2: [0; 16],
        })
    }

    /// Responder, second half: checks the timestamp and flood limit, then
    /// builds the response (mac1/mac2 left zero) and the transport keys.
    pub fn respond(
        &mut self,
        half: &HalfInitiation,
        local_index: u32,
        now: Instant,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(Response, TransportKeys), HandshakeError> {
        debug_assert_eq!(half.remote_static, self.remote_static);
        let ss = self
            .static_static
            .as_ref()
            .ok_or(HandshakeError::BadPoint)?;
        // (Ci, k) = KDF2(Ci, DH(S_priv_r, S_pub_i))
        let (ck, k) = kdf2(&half.chaining_key, &**ss);
        // timestamp = AEAD-open(k, 0, msg.timestamp, Hi)
        let mut ts = [0u8; TAI64N_LEN];
        aead_open(&k, 0, &half.encrypted_timestamp, &half.hash, &mut ts)
            .map_err(|_| HandshakeError::Decrypt)?;
        let ts = Tai64N(ts);
        // Hi = HASH(Hi || msg.timestamp)
        let h = hash(&[&half.hash, &half.encrypted_timestamp]);
        // Replay: the timestamp must grow strictly.
        if self.latest_timestamp.is_some_and(|l| ts <= l) {
            return Err(HandshakeError::ReplayedTimestamp);
        }
        // Flood: at most INITIATIONS_PER_SECOND accepted initiations per second.
        let min_gap = Duration::from_secs(1) / INITIATIONS_PER_SECOND;
        if self
            .last_initiation_consumption
            .is_some_and(|l| now.saturating_duration_since(l) < min_gap)
        {
            return Err(HandshakeError::Flood);
        }

        // (E_priv_r, E_pub_r) = DH-GENERATE()
        let ephemeral = StaticSecret::random_from_rng(&mut *rng);
        let e_pub = PublicKey::from(&ephemeral);
        // Cr = KDF1(Cr, E_pub_r)
        let ck = kdf1(&ck, e_pub.as_bytes());
        // msg.ephemeral = E_pub_r; Hr = HASH(Hr || msg.ephemeral)
        let h = hash(&[&h, e_pub.as_bytes()]);
        // Cr = KDF1(Cr, DH(E_priv_r, E_pub_i))
        let ee = dh(&ephemeral, &half.remote_ephemeral).map_err(|_| HandshakeError::BadPoint)?;
        let ck = kdf1(&ck, &*ee);
        // Cr = KDF1(Cr, DH(E_priv_r, S_pub_i))
        let se = dh(&ephemeral, &self.remote_static).map_err(|_| HandshakeError::BadPoint)?;
        let ck = kdf1(&ck, &*se);
        // (Cr, τ, k) = KDF3(Cr, Q)
        let (ck, tau, k) = kdf3(&ck, &*self.psk);
        // Hr = HASH(Hr || τ)
        let h = hash(&[&h, &*tau]);
        // msg.empty = AEAD(k, 0, ε, Hr)
        let mut encrypted_nothing = [0u8; 16];
        aead_seal(&k, 0, &[], &h, &mut encrypted_nothing);
        // Hr = HASH(Hr || msg.empty) -- not needed further.
        // (T_recv_r, T_send_r) = KDF2(Cr, ε)
        let (recv, send) = kdf2(&ck, &[]);

        self.latest_timestamp = Some(ts);
        self.last_initiation_consumption = Some(now);
        let response = Response {
            sender: local_index,
            receiver: half.remote_index,
            ephemeral: *e_pub.as_bytes(),
            encrypted_nothing,
            mac1: [0; 16],
            mac2: [0; 16],
        };
        let keys = TransportKeys {
            send,
            recv,
            local_index,
            remote_index: half.remote_index,
            initiator: false,
        };
        Ok((response, keys))
    }

    /// Initiator: consumes the response to our in-flight initiation.
    pub fn consume_response(
        &mut self,
        id: &StaticIdentity,
        msg: &Response,
    ) -> Result<TransportKeys, HandshakeError> {
        let sent = match &self.sent {
            Some(s) if s.local_index == msg.receiver => s,
            _ => return Err(HandshakeError::UnexpectedResponse),
        };
        let e_pub_r = PublicKey::from(msg.ephemeral);
        // Cr = KDF1(Ci, msg.ephemeral)
        let ck = kdf1(&sent.chaining_key, &msg.ephemeral);
        // Hr = HASH(Hi || msg.ephemeral)
        let h = hash(&[&sent.hash, &msg.ephemeral]);
        // Cr = KDF1(Cr, DH(E_priv_i, E_pub_r))
        let ee = dh(&sent.ephemeral, &e_pub_r).map_err(|_| HandshakeError::BadPoint)?;
        let ck = kdf1(&ck, &*ee);
        // Cr = KDF1(Cr, DH(S_priv_i, E_pub_r))
        let se = dh(&id.secret, &e_pub_r).map_err(|_| HandshakeError::BadPoint)?;
        let ck = kdf1(&ck, &*se);
        // (Cr, τ, k) = KDF3(Cr, Q)
        let (ck, tau, k) = kdf3(&ck, &*self.psk);
        // Hr = HASH(Hr || τ)
        let h = hash(&[&h, &*tau]);
        // ε = AEAD-open(k, 0, msg.empty, Hr)
        aead_open(&k, 0, &msg.encrypted_nothing, &h, &mut [])
            .map_err(|_| HandshakeError::Decrypt)?;
        // (T_send_i, T_recv_i) = KDF2(Ci, ε)
        let (send, recv) = kdf2(&ck, &[]);
        let local_index = sent.local_index;
        self.sent = None;
        Ok(TransportKeys {
            send,
            recv,
            local_index,
            remote_index: msg.sender,
            initiator: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tests::hex;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn construction_constants() {
        // Well-known values (e.g. boringtun's INITIAL_CHAIN_KEY / INITIAL_CHAIN_HASH).
        assert_eq!(
            initial_chaining_key().to_vec(),
            hex("60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36")
        );
        assert_eq!(
            initial_hash().to_vec(),
            hex("2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3")
        );
    }

    fn pair(psk: Option<[u8; 32]>) -> (StaticIdentity, StaticIdentity, Handshake, Handshake) {
        let a = StaticIdentity::new([1; 32]);
        let b = StaticIdentity::new([2; 32]);
        let ha = Handshake::new(&a, *b.public(), psk);
        let hb = Handshake::new(&b, *a.public(), psk);
        (a, b, ha, hb)
    }

    #[test]
    fn full_handshake_derives_matching_keys() {
        for psk in [None, Some([9u8; 32])] {
            let mut rng = StdRng::seed_from_u64(1);
            let (a, b, mut ha, mut hb) = pair(psk);
            let t0 = Instant::now();
            let init = ha
                .create_initiation(&a, 11, Tai64N::from_unix(100, 0), &mut rng)
                .unwrap();
            let half = begin_consume_initiation(&b, &init).unwrap();
            assert_eq!(half.remote_static, *a.public());
            let (resp, kb) = hb.respond(&half, 22, t0, &mut rng).unwrap();
            assert_eq!(resp.receiver, 11);
            let ka = ha.consume_response(&a, &resp).unwrap();
            assert_eq!(*ka.send, *kb.recv);
            assert_eq!(*ka.recv, *kb.send);
            assert_ne!(*ka.send, *ka.recv);
            assert_eq!((ka.local_index, ka.remote_index), (11, 22));
            assert_eq!((kb.local_index, kb.remote_index), (22, 11));
            assert!(ka.initiator && !kb.initiator);
            // The response is consumed once.
            assert_eq!(
                ha.consume_response(&a, &resp).unwrap_err(),
                HandshakeError::UnexpectedResponse
            );
        }
    }

    #[test]
    fn psk_mismatch_fails() {
        let mut rng = StdRng::seed_from_u64(2);
        let (a, b, mut ha, mut hb) = pair(None);
        hb.set_psk(Some([5; 32]));
        let init = ha
            .create_initiation(&a, 1, Tai64N::from_unix(1, 0), &mut rng)
            .unwrap();
        let half = begin_consume_initiation(&b, &init).unwrap();
        let (resp, _) = hb.respond(&half, 2, Instant::now(), &mut rng).unwrap();
        assert_eq!(
            ha.consume_response(&a, &resp).unwrap_err(),
            HandshakeError::Decrypt
        );
    }

    #[test]
    fn replayed_or_old_initiation_rejected() {
        let mut rng = StdRng::seed_from_u64(3);
        let (a, b, mut ha, mut hb) = pair(None);
        let t0 = Instant::now();
        let old = ha
            .create_initiation(&a, 1, Tai64N::from_unix(10, 0), &mut rng)
            .unwrap();
        let new = ha
            .create_initiation(&a, 2, Tai64N::from_unix(11, 0), &mut rng)
            .unwrap();
        let half = begin_consume_initiation(&b, &new).unwrap();
        hb.respond(&half, 3, t0, &mut rng).unwrap();
        // Same message again: equal timestamp.
        let half = begin_consume_initiation(&b, &new).unwrap();
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            hb.respond(&half, 4, later, &mut rng).unwrap_err(),
            HandshakeError::ReplayedTimestamp
        );
        // Older timestamp.
        let half = begin_consume_initiation(&b, &old).unwrap();
        assert_eq!(
            hb.respond(&half, 4, later, &mut rng).unwrap_err(),
            HandshakeError::ReplayedTimestamp
        );
        // Newer timestamp but too soon after the last one: flood.
        let newer = ha
            .create_initiation(&a, 5, Tai64N::from_unix(12, 0), &mut rng)
            .unwrap();
        let half = begin_consume_initiation(&b, &newer).unwrap();
        assert_eq!(
            hb.respond(&half, 6, t0 + Duration::from_millis(5), &mut rng)
                .unwrap_err(),
            HandshakeError::Flood
        );
        assert!(hb.respond(&half, 6, later, &mut rng).is_ok());
    }

    #[test]
    fn tampered_initiation_rejected() {
        let mut rng = StdRng::seed_from_u64(4);
        let (a, b, mut ha, _) = pair(None);
        let init = ha
            .create_initiation(&a, 1, Tai64N::from_unix(10, 0), &mut rng)
            .unwrap();
        let mut bad = init.clone();
        bad.encrypted_static[0] ^= 1;
        assert_eq!(
            begin_consume_initiation(&b, &bad).unwrap_err(),
            HandshakeError::Decrypt
        );
        let mut bad = init.clone();
        bad.ephemeral[0] ^= 1;
        assert_eq!(
            begin_consume_initiation(&b, &bad).unwrap_err(),
            HandshakeError::Decrypt
        );
        // Sent to the wrong responder.
        let c = StaticIdentity::new([3; 32]);
        assert_eq!(
            begin_consume_initiation(&c, &init).unwrap_err(),
            HandshakeError::Decrypt
        );
    }
}
