//! The WireGuard wire format, in one place (as the kernel's `messages.h`):
//! message types, sizes and field offsets, plus checked parsers and writers.
//!
//! Every parser takes untrusted bytes and validates the length and the 4-byte
//! type word (type byte plus three zero reserved bytes) before reading any
//! field, in the spirit of smoltcp's `new_checked`.

use std::time::Duration;

/// Message type of a handshake initiation.
pub const MESSAGE_INITIATION: u8 = 1;
/// Message type of a handshake response.
pub const MESSAGE_RESPONSE: u8 = 2;
/// Message type of a cookie reply.
pub const MESSAGE_COOKIE_REPLY: u8 = 3;
/// Message type of a transport data message.
pub const MESSAGE_DATA: u8 = 4;

/// Size of a handshake initiation: type 4, sender 4, ephemeral 32, static
/// 32+16, timestamp 12+16, mac1 16, mac2 16.
pub const INITIATION_LEN: usize = 148;
/// Size of a handshake response: type 4, sender 4, receiver 4, ephemeral 32,
/// empty 0+16, mac1 16, mac2 16.
pub const RESPONSE_LEN: usize = 92;
/// Size of a cookie reply: type 4, receiver 4, nonce 24, cookie 16+16.
pub const COOKIE_REPLY_LEN: usize = 64;
/// Size of the transport data header: type 4, receiver 4, counter 8.
pub const DATA_HEADER_LEN: usize = 16;
/// Smallest transport data message (an empty keepalive: header + tag).
pub const DATA_MIN_LEN: usize = DATA_HEADER_LEN + TAG_LEN;
/// Per-packet overhead of a data message over the padded plaintext.
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN;
/// Plaintext of data messages is padded to a multiple of this.
pub const PADDING_MULTIPLE: usize = 16;

// Lengths of keys, tags and nonces (`NOISE_*_LEN`).

/// Length of symmetric keys, hashes and X25519 keys.
pub const KEY_LEN: usize = 32;
/// Length of a Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Length of `MAC` output (mac1, mac2, cookies).
pub const MAC_LEN: usize = 16;
/// Length of a TAI64N timestamp.
pub const TAI64N_LEN: usize = 12;
/// Length of an XChaCha20 nonce.
pub const XNONCE_LEN: usize = 24;

// The Noise construction.

/// Noise protocol name: `CONSTRUCTION`.
pub const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// WireGuard's prologue: `IDENTIFIER`.
pub const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
/// `INITIATIONS_PER_SECOND`: initiations faster than this are a flood.
pub const INITIATIONS_PER_SECOND: u32 = 50;

// Cookies (`cookie.h`).

/// `LABEL-MAC1`.
pub const LABEL_MAC1: &[u8] = b"mac1----";
/// `LABEL-COOKIE`.
pub const LABEL_COOKIE: &[u8] = b"cookie--";
/// The responder's secret `R` changes this often; cookies live this long.
pub const COOKIE_SECRET_MAX_AGE: Duration = Duration::from_secs(120);
/// A sender stops using a cookie this long before it would expire.
pub const COOKIE_SECRET_LATENCY: Duration = Duration::from_secs(5);

// Timers and limits (whitepaper §6).

/// Initiate a new handshake after this many messages on one key.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// Never send or accept this many messages on one key.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - COUNTER_WINDOW_SIZE - 1;
/// The initiator rekeys a session this old when sending.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// Sessions older than this are unusable.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Give up retrying a handshake after this long.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// Retry an unanswered initiation after this (plus jitter).
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of the random jitter added to `REKEY_TIMEOUT`.
pub const REKEY_TIMEOUT_JITTER_MAX: Duration = Duration::from_millis(333);
/// Send a keepalive if we received data and sent nothing for this long.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// `REKEY_ATTEMPT_TIME / REKEY_TIMEOUT`: retries before giving up.
pub const MAX_TIMER_HANDSHAKES: u32 = 18;

// Queues.

/// Packets kept per peer while waiting for a handshake (oldest dropped).
pub const MAX_QUEUED_PACKETS: usize = 128;

// The replay window (`counter_values`).

/// Size of the bitmap.
pub const COUNTER_BITS_TOTAL: u64 = 2048;
/// One word is spare so the window can slide without losing bits.
pub const COUNTER_REDUNDANT_BITS: u64 = u64::BITS as u64;
/// How far behind the newest counter a packet may arrive.
pub const COUNTER_WINDOW_SIZE: u64 = COUNTER_BITS_TOTAL - COUNTER_REDUNDANT_BITS;

// The handshake rate limiter (`ratelimiter.c`).

/// Sustained rate per source.
pub const PACKETS_PER_SECOND: u64 = 20;
/// Burst allowance per source.
pub const PACKETS_BURSTABLE: u64 = 5;
/// Entries idle this long are dropped by [`RateLimiter::gc`].
pub const GC_AGE: Duration = Duration::from_secs(1);
/// Hard cap on tracked sources; beyond it new sources are refused.
pub const MAX_ENTRIES: usize = 65_536;

/// Field ranges of the initiation.
pub mod initiation {
    use core::ops::Range;
    /// `sender` index.
    pub const SENDER: Range<usize> = 4..8;
    /// Unencrypted ephemeral public key.
    pub const EPHEMERAL: Range<usize> = 8..40;
    /// `AEAD(static)`.
    pub const STATIC: Range<usize> = 40..88;
    /// `AEAD(timestamp)`.
    pub const TIMESTAMP: Range<usize> = 88..116;
    /// mac1.
    pub const MAC1: Range<usize> = 116..132;
    /// mac2.
    pub const MAC2: Range<usize> = 132..148;
}

/// Field ranges of the response.
pub mod response {
    use core::ops::Range;
    /// `sender` index.
    pub const SENDER: Range<usize> = 4..8;
    /// `receiver` index.
    pub const RECEIVER: Range<usize> = 8..12;
    /// Unencrypted ephemeral public key.
    pub const EPHEMERAL: Range<usize> = 12..44;
    /// `AEAD(ε)`.
    pub const EMPTY: Range<usize> = 44..60;
    /// mac1.
    pub const MAC1: Range<usize> = 60..76;
    /// mac2.
    pub const MAC2: Range<usize> = 76..92;
}

/// Field ranges of the cookie reply.
pub mod cookie_reply {
    use core::ops::Range;
    /// `receiver` index.
    pub const RECEIVER: Range<usize> = 4..8;
    /// XChaCha20 nonce.
    pub const NONCE: Range<usize> = 8..32;
    /// `XAEAD(cookie)`.
    pub const COOKIE: Range<usize> = 32..64;
}

/// Field ranges of the data header.
pub mod data {
    use core::ops::Range;
    /// `receiver` index.
    pub const RECEIVER: Range<usize> = 4..8;
    /// Little-endian nonce counter.
    pub const COUNTER: Range<usize> = 8..16;
}

/// Why bytes were not a well-formed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the fixed header.
    Truncated,
    /// Unknown type, or non-zero reserved bytes.
    UnknownType,
    /// Wrong length for the type.
    BadLength,
}

fn arr<const N: usize>(b: &[u8], r: core::ops::Range<usize>) -> [u8; N] {
    b[r].try_into().expect("range length matches array length")
}

fn le32(b: &[u8], r: core::ops::Range<usize>) -> u32 {
    u32::from_le_bytes(arr(b, r))
}

fn type_word(t: u8) -> [u8; 4] {
    [t, 0, 0, 0]
}

/// A handshake initiation (message type 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Initiation {
    /// Sender's index.
    pub sender: u32,
    /// Sender's ephemeral public key.
    pub ephemeral: [u8; KEY_LEN],
    /// Encrypted static public key.
    pub encrypted_static: [u8; KEY_LEN + TAG_LEN],
    /// Encrypted TAI64N timestamp.
    pub encrypted_timestamp: [u8; TAI64N_LEN + TAG_LEN],
    /// mac1.
    pub mac1: [u8; MAC_LEN],
    /// mac2.
    pub mac2: [u8; MAC_LEN],
}

impl Initiation {
    /// Parses exactly [`INITIATION_LEN`] bytes.
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        check(b, MESSAGE_INITIATION, INITIATION_LEN)?;
        Ok(Self {
            sender: le32(b, initiation::SENDER),
            ephemeral: arr(b, initiation::EPHEMERAL),
            encrypted_static: arr(b, initiation::STATIC),
            encrypted_timestamp: arr(b, initiation::TIMESTAMP),
            mac1: arr(b, initiation::MAC1),
            mac2: arr(b, initiation::MAC2),
        })
    }

    /// Serializes into the first [`INITIATION_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8]) -> usize {
        let o = &mut out[..INITIATION_LEN];
        o[..4].copy_from_slice(&type_word(MESSAGE_INITIATION));
        o[initiation::SENDER].copy_from_slice(&self.sender.to_le_bytes());
        o[initiation::EPHEMERAL].copy_from_slice(&self.ephemeral);
        o[initiation::STATIC].copy_from_slice(&self.encrypted_static);
        o[initiation::TIMESTAMP].copy_from_slice(&self.encrypted_timestamp);
        o[initiation::MAC1].copy_from_slice(&self.mac1);
        o[initiation::MAC2].copy_from_slice(&self.mac2);
        INITIATION_LEN
    }
}

/// A handshake response (message type 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Responder's index.
    pub sender: u32,
    /// Initiator's index.
    pub receiver: u32,
    /// Responder's ephemeral public key.
    pub ephemeral: [u8; KEY_LEN],
    /// `AEAD(ε)`: just a tag.
    pub encrypted_nothing: [u8; TAG_LEN],
    /// mac1.
    pub mac1: [u8; MAC_LEN],
    /// mac2.
    pub mac2: [u8; MAC_LEN],
}

impl Response {
    /// Parses exactly [`RESPONSE_LEN`] bytes.
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        check(b, MESSAGE_RESPONSE, RESPONSE_LEN)?;
        Ok(Self {
            sender: le32(b, response::SENDER),
            receiver: le32(b, response::RECEIVER),
            ephemeral: arr(b, response::EPHEMERAL),
            encrypted_nothing: arr(b, response::EMPTY),
            mac1: arr(b, response::MAC1),
            mac2: arr(b, response::MAC2),
        })
    }

    /// Serializes into the first [`RESPONSE_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8]) -> usize {
        let o = &mut out[..RESPONSE_LEN];
        o[..4].copy_from_slice(&type_word(MESSAGE_RESPONSE));
        o[response::SENDER].copy_from_slice(&self.sender.to_le_bytes());
        o[response::RECEIVER].copy_from_slice(&self.receiver.to_le_bytes());
        o[response::EPHEMERAL].copy_from_slice(&self.ephemeral);
        o[response::EMPTY].copy_from_slice(&self.encrypted_nothing);
        o[response::MAC1].copy_from_slice(&self.mac1);
        o[response::MAC2].copy_from_slice(&self.mac2);
        RESPONSE_LEN
    }
}

/// A cookie reply (message type 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieReply {
    /// Index of the message sender this replies to.
    pub receiver: u32,
    /// Random XChaCha20 nonce.
    pub nonce: [u8; XNONCE_LEN],
    /// `XAEAD(cookie)`.
    pub encrypted_cookie: [u8; MAC_LEN + TAG_LEN],
}

impl CookieReply {
    /// Parses exactly [`COOKIE_REPLY_LEN`] bytes.
    pub fn parse(b: &[u8]) -> Result<Self, ParseError> {
        check(b, MESSAGE_COOKIE_REPLY, COOKIE_REPLY_LEN)?;
        Ok(Self {
            receiver: le32(b, cookie_reply::RECEIVER),
            nonce: arr(b, cookie_reply::NONCE),
            encrypted_cookie: arr(b, cookie_reply::COOKIE),
        })
    }

    /// Serializes into the first [`COOKIE_REPLY_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8]) -> usize {
        let o = &mut out[..COOKIE_REPLY_LEN];
        o[..4].copy_from_slice(&type_word(MESSAGE_COOKIE_REPLY));
        o[cookie_reply::RECEIVER].copy_from_slice(&self.receiver.to_le_bytes());
        o[cookie_reply::NONCE].copy_from_slice(&self.nonce);
        o[cookie_reply::COOKIE].copy_from_slice(&self.encrypted_cookie);
        COOKIE_REPLY_LEN
    }
}

/// A borrowed transport data message (message type 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Data<'a> {
    /// Our index, chosen by us during the handshake.
    pub receiver: u32,
    /// Nonce counter.
    pub counter: u64,
    /// Ciphertext followed by the 16-byte tag (at least 16 bytes).
    pub sealed: &'a [u8],
}

impl<'a> Data<'a> {
    /// Parses a data message of at least [`DATA_MIN_LEN`] bytes.
    pub fn parse(b: &'a [u8]) -> Result<Self, ParseError> {
        if b.len() < 4 {
            return Err(ParseError::Truncated);
        }
        if b[..4] != type_word(MESSAGE_DATA) {
            return Err(ParseError::UnknownType);
        }
        if b.len() < DATA_MIN_LEN {
            return Err(ParseError::BadLength);
        }
        Ok(Self {
            receiver: le32(b, data::RECEIVER),
            counter: u64::from_le_bytes(arr(b, data::COUNTER)),
            sealed: &b[DATA_HEADER_LEN..],
        })
    }
}

/// Writes the data header into `out[..16]`.
pub fn write_data_header(out: &mut [u8], receiver: u32, counter: u64) {
    out[..4].copy_from_slice(&type_word(MESSAGE_DATA));
    out[data::RECEIVER].copy_from_slice(&receiver.to_le_bytes());
    out[data::COUNTER].copy_from_slice(&counter.to_le_bytes());
}

/// Size of a data message carrying `plain_len` bytes of plaintext (padded).
#[must_use]
pub const fn data_len(plain_len: usize) -> usize {
    DATA_OVERHEAD + plain_len.next_multiple_of(PADDING_MULTIPLE)
}

fn check(b: &[u8], t: u8, len: usize) -> Result<(), ParseError> {
    if b.len() < 4 {
        return Err(ParseError::Truncated);
    }
    if b[..4] != type_word(t) {
        return Err(ParseError::UnknownType);
    }
    if b.len() != len {
        return Err(ParseError::BadLength);
    }
    Ok(())
}

/// Any WireGuard message, as classified by [`Message::parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Type 1.
    Initiation(Initiation),
    /// Type 2.
    Response(Response),
    /// Type 3.
    CookieReply(CookieReply),
    /// Type 4.
    Data(Data<'a>),
}

impl<'a> Message<'a> {
    /// Classifies and parses a datagram.
    pub fn parse(b: &'a [u8]) -> Result<Self, ParseError> {
        if b.len() < 4 {
            return Err(ParseError::Truncated);
        }
        if b[1..4] != [0, 0, 0] {
            return Err(ParseError::UnknownType);
        }
        match b[0] {
            MESSAGE_INITIATION => Initiation::parse(b).map(Message::Initiation),
            MESSAGE_RESPONSE => Response::parse(b).map(Message::Response),
            MESSAGE_COOKIE_REPLY => CookieReply::parse(b).map(Message::CookieReply),
            MESSAGE_DATA => Data::parse(b).map(Message::Data),
            _ => Err(ParseError::UnknownType),
        }
    }
}

/// Byte offsets of mac1 and mac2 in a handshake message, by type; `None` for
/// messages without MACs.
#[must_use]
pub fn mac_offsets(message_type: u8) -> Option<(usize, usize)> {
    match message_type {
        MESSAGE_INITIATION => Some((initiation::MAC1.start, initiation::MAC2.start)),
        MESSAGE_RESPONSE => Some((response::MAC1.start, response::MAC2.start)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_offsets() {
        assert_eq!(initiation::MAC2.end, INITIATION_LEN);
        assert_eq!(response::MAC2.end, RESPONSE_LEN);
        assert_eq!(cookie_reply::COOKIE.end, COOKIE_REPLY_LEN);
        assert_eq!(data::COUNTER.end, DATA_HEADER_LEN);
        assert_eq!(data_len(0), 32);
        assert_eq!(data_len(1), 48);
        assert_eq!(data_len(16), 48);
        assert_eq!(data_len(1420), 1420 + 4 + 32);
    }

    #[test]
    fn roundtrip() {
        let i = Initiation {
            sender: 0xdead_beef,
            ephemeral: [1; 32],
            encrypted_static: [2; 48],
            encrypted_timestamp: [3; 28],
            mac1: [4; 16],
            mac2: [5; 16],
        };
        let mut b = [0u8; INITIATION_LEN];
        i.write(&mut b);
        assert_eq!(&b[..8], &[1, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde]);
        assert_eq!(Message::parse(&b), Ok(Message::Initiation(i)));
        let r = Response {
            sender: 1,
            receiver: 2,
            ephemeral: [6; 32],
            encrypted_nothing: [7; 16],
            mac1: [8; 16],
            mac2: [9; 16],
        };
        let mut b = [0u8; RESPONSE_LEN];
        r.write(&mut b);
        assert_eq!(Message::parse(&b), Ok(Message::Response(r)));
        let c = CookieReply {
            receiver: 3,
            nonce: [1; 24],
            encrypted_cookie: [2; 32],
        };
        let mut b = [0u8; COOKIE_REPLY_LEN];
        c.write(&mut b);
        assert_eq!(Message::parse(&b), Ok(Message::CookieReply(c)));
        let mut d = [0u8; 40];
        write_data_header(&mut d, 7, 0x0102);
        let Ok(Message::Data(p)) = Message::parse(&d) else {
            panic!()
        };
        assert_eq!((p.receiver, p.counter, p.sealed.len()), (7, 0x0102, 24));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Message::parse(&[]), Err(ParseError::Truncated));
        assert_eq!(Message::parse(&[1, 0, 0]), Err(ParseError::Truncated));
        assert_eq!(Message::parse(&[9, 0, 0, 0]), Err(ParseError::UnknownType));
        assert_eq!(Message::parse(&[1, 0, 0, 1]), Err(ParseError::UnknownType));
        assert_eq!(
            Message::parse(&[1; INITIATION_LEN]),
            Err(ParseError::UnknownType)
        );
        let mut b = [0u8; INITIATION_LEN + 1];
        b[0] = 1;
        assert_eq!(Message::parse(&b), Err(ParseError::BadLength));
        assert_eq!(
            Message::parse(&b[..INITIATION_LEN - 1]),
            Err(ParseError::BadLength)
        );
        b[0] = 2;
        assert_eq!(
            Message::parse(&b[..RESPONSE_LEN - 1]),
            Err(ParseError::BadLength)
        );
        b[0] = 3;
        assert_eq!(
            Message::parse(&b[..COOKIE_REPLY_LEN + 1]),
            Err(ParseError::BadLength)
        );
        b[0] = 4;
        assert_eq!(
            Message::parse(&b[..DATA_MIN_LEN - 1]),
            Err(ParseError::BadLength)
        );
        assert!(Message::parse(&b[..DATA_MIN_LEN]).is_ok());
        // Every prefix of every size is handled without panicking.
        for t in 0..6u8 {
            let mut buf = [0u8; 200];
            buf[0] = t;
            for n in 0..buf.len() {
                let _ = Message::parse(&buf[..n]);
            }
        }
    }
}
