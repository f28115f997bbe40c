//! A transport session: the two keys from a handshake, the send counter and
//! the receive replay window. Encrypts and decrypts into caller buffers with
//! no allocation (whitepaper §5.4.6).

use std::time::Instant;

use zeroize::Zeroizing;

use crate::crypto::{aead_open_in_place, aead_seal_in_place};
use crate::handshake::TransportKeys;
use crate::messages::{data_len, write_data_header, Data, DATA_HEADER_LEN};
use crate::messages::{KEY_LEN, TAG_LEN};
use crate::messages::{
    REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME,
};
use crate::replay::ReplayWindow;

/// Why a data message could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// The output buffer is too small.
    BufferTooSmall,
    /// The key is past `REJECT_AFTER_TIME` or `REJECT_AFTER_MESSAGES`.
    Expired,
    /// The tag did not verify.
    Decrypt,
    /// The counter was seen before or is too old.
    Replay,
}

/// One direction pair of transport keys.
pub struct Session {
    /// Our index (`receiver` of incoming data).
    pub local_index: u32,
    /// The peer's index (`receiver` of outgoing data).
    pub remote_index: u32,
    /// Whether we initiated the handshake that made this session.
    pub initiator: bool,
    /// When the keys were derived.
    pub birth: Instant,
    send_key: Zeroizing<[u8; KEY_LEN]>,
    recv_key: Zeroizing<[u8; KEY_LEN]>,
    send_counter: u64,
    replay: ReplayWindow,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("initiator", &self.initiator)
            .field("send_counter", &self.send_counter)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session from freshly derived keys.
    #[must_use]
    pub fn new(keys: TransportKeys, now: Instant) -> Self {
        Self {
            local_index: keys.local_index,
            remote_index: keys.remote_index,
            initiator: keys.initiator,
            birth: now,
            send_key: keys.send,
            recv_key: keys.recv,
            send_counter: 0,
            replay: ReplayWindow::default(),
        }
    }

    /// Whether the session may still send.
    #[must_use]
    pub fn can_send(&self, now: Instant) -> bool {
        self.send_counter < REJECT_AFTER_MESSAGES
            && now.saturating_duration_since(self.birth) < REJECT_AFTER_TIME
    }

    /// Whether the session may still receive.
    #[must_use]
    pub fn can_receive(&self, now: Instant) -> bool {
        self.replay.next_expected() < REJECT_AFTER_MESSAGES
            && now.saturating_duration_since(self.birth) < REJECT_AFTER_TIME
    }

    /// Sending should start a new handshake (`keep_key_fresh` on send).
    #[must_use]
    pub fn wants_rekey_on_send(&self, now: Instant) -> bool {
        self.send_counter > REKEY_AFTER_MESSAGES
            || (self.initiator && now.saturating_duration_since(self.birth) >= REKEY_AFTER_TIME)
    }

    /// Messages sent so far.
    #[must_use]
    pub fn send_counter(&self) -> u64 {
        self.send_counter
    }

    /// Seals `payload` (an IP packet, or empty for a keepalive) as a data
    /// message into `out`; returns the message length.
    pub fn encapsulate(
        &mut self,
        payload: &[u8],
        out: &mut [u8],
        now: Instant,
    ) -> Result<usize, SessionError> {
        if !self.can_send(now) {
            return Err(SessionError::Expired);
        }
        let total = data_len(payload.len());
        if out.len() < total {
            return Err(SessionError::BufferTooSmall);
        }
        let counter = self.send_counter;
        self.send_counter += 1;
        write_data_header(out, self.remote_index, counter);
        let padded = total - DATA_HEADER_LEN - TAG_LEN;
        let body = &mut out[DATA_HEADER_LEN..DATA_HEADER_LEN + padded];
        body[..payload.len()].copy_from_slice(payload);
        body[payload.len()..].fill(0);
        // msg.packet = AEAD(T_send, counter, P || padding, ε)
        let tag = aead_seal_in_place(&self.send_key, counter, &[], body);
        out[DATA_HEADER_LEN + padded..total].copy_from_slice(&tag);
        Ok(total)
    }

    /// Opens a data message addressed to this session into `out`; returns the
    /// (padded) plaintext length. The replay window moves only on success.
    pub fn decapsulate(
        &mut self,
        msg: &Data<'_>,
        out: &mut [u8],
        now: Instant,
    ) -> Result<usize, SessionError> {
        if !self.can_receive(now) || msg.counter >= REJECT_AFTER_MESSAGES {
            return Err(SessionError::Expired);
        }
        let len = msg.sealed.len() - TAG_LEN;
        if out.len() < len {
            return Err(SessionError::BufferTooSmall);
        }
        let (body, tag) = msg.sealed.split_at(len);
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| SessionError::Decrypt)?;
        out[..len].copy_from_slice(body);
        if aead_open_in_place(&self.recv_key, msg.counter, &[], &mut out[..len], tag).is_err() {
            return Err(SessionError::Decrypt);
        }
        if !self.replay.check_and_update(msg.counter) {
            return Err(SessionError::Replay);
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pair(now: Instant) -> (Session, Session) {
        let k = |s: u8, r: u8, l, rem, i| TransportKeys {
            send: Zeroizing::new([s; 32]),
            recv: Zeroizing::new([r; 32]),
            local_index: l,
            remote_index: rem,
            initiator: i,
        };
        (
            Session::new(k(1, 2, 10, 20, true), now),
            Session::new(k(2, 1, 20, 10, false), now),
        )
    }

    #[test]
    fn roundtrip_padding_replay_expiry() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        let mut wire = [0u8; 128];
        let mut plain = [0u8; 128];
        let n = a.encapsulate(b"hello", &mut wire, t0).unwrap();
        assert_eq!(n, 16 + 16 + 16);
        let msg = Data::parse(&wire[..n]).unwrap();
        assert_eq!((msg.receiver, msg.counter), (20, 0));
        let m = b.decapsulate(&msg, &mut plain, t0).unwrap();
        assert_eq!(&plain[..m], b"hello\0\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(
            b.decapsulate(&msg, &mut plain, t0),
            Err(SessionError::Replay)
        );
        // Keepalive.
        let n = b.encapsulate(&[], &mut wire, t0).unwrap();
        assert_eq!(n, 32);
        assert_eq!(
            a.decapsulate(&Data::parse(&wire[..n]).unwrap(), &mut plain, t0),
            Ok(0)
        );
        // Tampering.
        let n = a.encapsulate(b"x", &mut wire, t0).unwrap();
        wire[n - 1] ^= 1;
        assert_eq!(
            b.decapsulate(&Data::parse(&wire[..n]).unwrap(), &mut plain, t0),
            Err(SessionError::Decrypt)
        );
        // Small buffer.
        assert_eq!(
            a.encapsulate(&[0; 100], &mut wire[..100], t0),
            Err(SessionError::BufferTooSmall)
        );
        // Rekey/expiry.
        assert!(!a.wants_rekey_on_send(t0 + Duration::from_secs(119)));
        assert!(a.wants_rekey_on_send(t0 + REKEY_AFTER_TIME));
        assert!(!b.wants_rekey_on_send(t0 + REKEY_AFTER_TIME));
        let late = t0 + REJECT_AFTER_TIME;
        assert_eq!(
            a.encapsulate(b"x", &mut wire, late),
            Err(SessionError::Expired)
        );
    }
}
