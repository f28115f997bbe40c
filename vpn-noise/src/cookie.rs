//! mac1/mac2 and cookie replies (whitepaper §5.4.4 and §5.4.7).
//!
//! [`CookieChecker`] is the receiving side (one per device): it verifies
//! mac1, and under load mac2, against a cookie `MAC(R, source address)`
//! whose secret `R` rotates every [`COOKIE_SECRET_MAX_AGE`]. It builds cookie
//! replies sealed with XChaCha20-Poly1305. [`CookieState`] is the sending side
//! (one per peer): it adds mac1 and, while a fresh cookie is held, mac2.

use std::net::SocketAddr;
use std::time::Instant;

use rand_core::{CryptoRng, RngCore};
use x25519_dalek::PublicKey;
use zeroize::Zeroizing;

use crate::crypto::{ct_eq, hash, mac, xaead_open, xaead_seal};
use crate::messages::{mac_offsets, CookieReply};
use crate::messages::{COOKIE_SECRET_LATENCY, COOKIE_SECRET_MAX_AGE, LABEL_COOKIE, LABEL_MAC1};
use crate::messages::{KEY_LEN, MAC_LEN, XNONCE_LEN};

/// Outcome of checking the MACs of an incoming handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacState {
    /// mac1 is wrong (or the message has no MACs): drop silently.
    Invalid,
    /// mac1 is right; mac2 was not checked or is wrong.
    ValidMac1,
    /// mac1 and mac2 are right: the source address is proven.
    ValidCookie,
}

/// A cookie reply did not decrypt or was not expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieError;

fn addr_bytes(a: SocketAddr, out: &mut [u8; 18]) -> usize {
    let port = a.port().to_be_bytes();
    match a {
        SocketAddr::V4(v) => {
            out[..4].copy_from_slice(&v.ip().octets());
            out[4..6].copy_from_slice(&port);
            6
        }
        SocketAddr::V6(v) => {
            out[..16].copy_from_slice(&v.ip().octets());
            out[16..18].copy_from_slice(&port);
            18
        }
    }
}

/// Receiving side of mac1/mac2.
pub struct CookieChecker {
    /// `HASH(LABEL-MAC1 || S_pub_ours)`.
    mac1_key: [u8; KEY_LEN],
    /// `HASH(LABEL-COOKIE || S_pub_ours)`.
    cookie_key: [u8; KEY_LEN],
    secret: Zeroizing<[u8; KEY_LEN]>,
    secret_birth: Option<Instant>,
}

impl core::fmt::Debug for CookieChecker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CookieChecker").finish_non_exhaustive()
    }
}

impl CookieChecker {
    /// A checker for messages sent to `our_public`.
    #[must_use]
    pub fn new(our_public: &PublicKey) -> Self {
        Self {
            mac1_key: hash(&[LABEL_MAC1, our_public.as_bytes()]),
            cookie_key: hash(&[LABEL_COOKIE, our_public.as_bytes()]),
            secret: Zeroizing::new([0; KEY_LEN]),
            secret_birth: None,
        }
    }

    /// The current cookie for `from`, rotating `R` when it is too old.
    fn cookie(
        &mut self,
        from: SocketAddr,
        now: Instant,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> [u8; MAC_LEN] {
        if self
            .secret_birth
            .is_none_or(|b| now.saturating_duration_since(b) >= COOKIE_SECRET_MAX_AGE)
        {
            rng.fill_bytes(&mut *self.secret);
            self.secret_birth = Some(now);
        }
        let mut a = [0u8; 18];
        let n = addr_bytes(from, &mut a);
        // cookie = MAC(R, A_ip || A_port)
        mac(&*self.secret, &[&a[..n]])
    }

    /// Checks mac1 of a handshake message and, if `check_cookie`, its mac2.
    pub fn check(
        &mut self,
        msg: &[u8],
        from: SocketAddr,
        check_cookie: bool,
        now: Instant,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> MacState {
        let Some((m1, m2)) = msg.first().and_then(|&t| mac_offsets(t)) else {
            return MacState::Invalid;
        };
        if msg.len() < m2 + MAC_LEN {
            return MacState::Invalid;
        }
        // mac1 = MAC(HASH(LABEL-MAC1 || S_pub_m'), msg[0..mac1])
        if !ct_eq(&mac(&self.mac1_key, &[&msg[..m1]]), &msg[m1..m1 + MAC_LEN]) {
            return MacState::Invalid;
        }
        if !check_cookie {
            return MacState::ValidMac1;
        }
        let cookie = self.cookie(from, now, rng);
        // mac2 = MAC(cookie, msg[0..mac2])
        if ct_eq(&mac(&cookie, &[&msg[..m2]]), &msg[m2..m2 + MAC_LEN]) {
            MacState::ValidCookie
        } else {
            MacState::ValidMac1
        }
    }

    /// A cookie reply to handshake message `msg` (mac1 already verified)
    /// whose sender index is `sender_index`.
    pub fn create_reply(
        &mut self,
        msg: &[u8],
        sender_index: u32,
        from: SocketAddr,
        now: Instant,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> CookieReply {
        let (m1, _) = msg
            .first()
            .and_then(|&t| mac_offsets(t))
            .expect("handshake message");
        let cookie = self.cookie(from, now, rng);
        let mut nonce = [0u8; XNONCE_LEN];
        rng.fill_bytes(&mut nonce);
        // msg.cookie = XAEAD(HASH(LABEL-COOKIE || S_pub_m), msg.nonce, cookie, M.mac1)
        let mut encrypted_cookie = [0u8; MAC_LEN + 16];
        xaead_seal(
            &self.cookie_key,
            &nonce,
            &cookie,
            &msg[m1..m1 + MAC_LEN],
            &mut encrypted_cookie,
        );
        CookieReply {
            receiver: sender_index,
            nonce,
            encrypted_cookie,
        }
    }
}

/// Sending side of mac1/mac2, for one peer.
pub struct CookieState {
    /// `HASH(LABEL-MAC1 || S_pub_peer)`.
    mac1_key: [u8; KEY_LEN],
    /// `HASH(LABEL-COOKIE || S_pub_peer)`.
    cookie_key: [u8; KEY_LEN],
    cookie: Option<([u8; MAC_LEN], Instant)>,
    last_mac1: Option<[u8; MAC_LEN]>,
}

impl core::fmt::Debug for CookieState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CookieState")
            .field("has_cookie", &self.cookie.is_some())
            .finish_non_exhaustive()
    }
}

impl CookieState {
    /// MAC state for messages sent to `peer_public`.
    #[must_use]
    pub fn new(peer_public: &PublicKey) -> Self {
        Self {
            mac1_key: hash(&[LABEL_MAC1, peer_public.as_bytes()]),
            cookie_key: hash(&[LABEL_COOKIE, peer_public.as_bytes()]),
            cookie: None,
            last_mac1: None,
        }
    }

    /// Fills mac1 and mac2 of a serialized initiation or response.
    pub fn add_macs(&mut self, msg: &mut [u8], now: Instant) {
        let (m1, m2) = mac_offsets(msg[0]).expect("handshake message");
        // msg.mac1 = MAC(HASH(LABEL-MAC1 || S_pub_m'), msg[0..mac1])
        let mac1 = mac(&self.mac1_key, &[&msg[..m1]]);
        msg[m1..m1 + MAC_LEN].copy_from_slice(&mac1);
        self.last_mac1 = Some(mac1);
        let fresh = self.cookie.filter(|(_, born)| {
            now.saturating_duration_since(*born) < COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY
        });
        // msg.mac2 = MAC(τ, msg[0..mac2]) if a fresh cookie τ is held, else zeros
        let mac2 = fresh.map_or([0; MAC_LEN], |(c, _)| mac(&c, &[&msg[..m2]]));
        msg[m2..m2 + MAC_LEN].copy_from_slice(&mac2);
    }

    /// Stores the cookie from a reply to the last message we sent.
    pub fn consume_reply(&mut self, reply: &CookieReply, now: Instant) -> Result<(), CookieError> {
        let last = self.last_mac1.ok_or(CookieError)?;
        let mut cookie = [0u8; MAC_LEN];
        xaead_open(
            &self.cookie_key,
            &reply.nonce,
            &reply.encrypted_cookie,
            &last,
            &mut cookie,
        )
        .map_err(|_| CookieError)?;
        self.cookie = Some((cookie, now));
        self.last_mac1 = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{Initiation, INITIATION_LEN};
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::time::Duration;
    use x25519_dalek::StaticSecret;

    #[test]
    fn mac1_cookie_mac2_flow() {
        let mut rng = StdRng::seed_from_u64(7);
        let responder = PublicKey::from(&StaticSecret::from([4u8; 32]));
        let mut checker = CookieChecker::new(&responder);
        let mut sender = CookieState::new(&responder);
        let t0 = Instant::now();
        let from: SocketAddr = "198.18.0.1:51820".parse().unwrap();
        let mut msg = [0u8; INITIATION_LEN];
        Initiation {
            sender: 42,
            ephemeral: [1; 32],
            encrypted_static: [2; 48],
            encrypted_timestamp: [3; 28],
            mac1: [0; 16],
            mac2: [0; 16],
        }
        .write(&mut msg);
        sender.add_macs(&mut msg, t0);
        assert_eq!(msg[132..], [0; 16]);
        assert_eq!(
            checker.check(&msg, from, false, t0, &mut rng),
            MacState::ValidMac1
        );
        assert_eq!(
            checker.check(&msg, from, true, t0, &mut rng),
            MacState::ValidMac1
        );
        // A message for another key fails mac1.
        let mut other = CookieState::new(&PublicKey::from([9u8; 32]));
        let mut bad = msg;
        other.add_macs(&mut bad, t0);
        assert_eq!(
            checker.check(&bad, from, false, t0, &mut rng),
            MacState::Invalid
        );

        let reply = checker.create_reply(&msg, 42, from, t0, &mut rng);
        assert_eq!(reply.receiver, 42);
        // A tampered reply is refused.
        let mut tampered = reply.clone();
        tampered.encrypted_cookie[0] ^= 1;
        assert_eq!(sender.consume_reply(&tampered, t0), Err(CookieError));
        sender.consume_reply(&reply, t0).unwrap();
        // The reply is single-use (mac1 it answers is forgotten).
        assert_eq!(sender.consume_reply(&reply, t0), Err(CookieError));

        sender.add_macs(&mut msg, t0 + Duration::from_secs(1));
        assert_ne!(msg[132..], [0; 16]);
        assert_eq!(
            checker.check(&msg, from, true, t0, &mut rng),
            MacState::ValidCookie
        );
        // The cookie is bound to the source address.
        let elsewhere: SocketAddr = "198.18.0.2:51820".parse().unwrap();
        assert_eq!(
            checker.check(&msg, elsewhere, true, t0, &mut rng),
            MacState::ValidMac1
        );
        // After the secret rotates the old cookie no longer works.
        let later = t0 + COOKIE_SECRET_MAX_AGE;
        assert_eq!(
            checker.check(&msg, from, true, later, &mut rng),
            MacState::ValidMac1
        );
        // And the sender stops using an old cookie.
        sender.add_macs(&mut msg, t0 + COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY);
        assert_eq!(msg[132..], [0; 16]);
    }
}
