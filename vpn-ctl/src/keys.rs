//! WireGuard keys: Curve25519 private and public keys and the optional
//! symmetric preshared key, 32 bytes each.
//!
//! Text forms match `wg(8)` exactly:
//! - base64: 44 characters, standard alphabet, one `=` of padding, canonical
//!   (the two unused bits of the last character must be zero), as in
//!   wg-quick files and `wg genkey` / `wg pubkey` output;
//! - hex: 64 characters, either case accepted, lowercase written, as in the
//!   cross-platform UAPI.
//!
//! Secret keys are zeroized on drop, never printed by `Debug`, and their text
//! forms are returned inside [`Zeroizing`] so the copies are wiped as well.

use std::{fmt, str::FromStr};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of every WireGuard key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a key in base64, with its one `=` of padding.
pub const KEY_LEN_BASE64: usize = 44;
/// Length of a key in hex.
pub const KEY_LEN_HEX: usize = 64;

/// Why a key could not be parsed. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key must be {KEY_LEN_BASE64} base64 characters, got {0}")]
    Base64Length(usize),
    #[error("key must end with '=' (a 32-byte key is 43 base64 characters plus one '=')")]
    Base64Padding,
    #[error("key is not valid base64 (bad character or non-canonical last character)")]
    Base64Invalid,
    #[error("key must be {KEY_LEN_HEX} hex characters, got {0}")]
    HexLength(usize),
    #[error("key has a non-hex character at position {0}")]
    HexInvalid(usize),
}

fn decode_base64(s: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    if s.len() != KEY_LEN_BASE64 {
        return Err(KeyError::Base64Length(s.chars().count()));
    }
    let bytes = s.as_bytes();
    if bytes[KEY_LEN_BASE64 - 1] != b'=' || bytes[KEY_LEN_BASE64 - 2] == b'=' {
        return Err(KeyError::Base64Padding);
    }
    // The engine wants room for its worst-case estimate (33 bytes for 44
    // characters); keep the scratch buffer zeroized too.
    let mut buf = Zeroizing::new([0u8; KEY_LEN + 1]);
    // STANDARD rejects non-zero trailing bits, like wg's key_from_base64.
    let n = STANDARD
        .decode_slice(bytes, &mut buf[..])
        .map_err(|_| KeyError::Base64Invalid)?;
    if n != KEY_LEN {
        return Err(KeyError::Base64Invalid);
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(&buf[..KEY_LEN]);
    Ok(out)
}

fn encode_base64(key: &[u8; KEY_LEN]) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(KEY_LEN_BASE64));
    STANDARD.encode_string(key, &mut s);
    s
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn decode_hex(s: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let bytes = s.as_bytes();
    if bytes.len() != KEY_LEN_HEX {
        return Err(KeyError::HexLength(s.chars().count()));
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = hex_val(pair[0]).ok_or(KeyError::HexInvalid(2 * i))?;
        let lo = hex_val(pair[1]).ok_or(KeyError::HexInvalid(2 * i + 1))?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

fn encode_hex(key: &[u8; KEY_LEN]) -> Zeroizing<String> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = Zeroizing::new(String::with_capacity(KEY_LEN_HEX));
    for b in key {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// Compares without an early exit, so timing does not reveal where two
/// secrets differ.
fn ct_eq(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A Curve25519 private key, stored clamped as `wg genkey` writes it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    /// A fresh random key, clamped like `wg genkey` (RFC 7748 section 5).
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut k = [0u8; KEY_LEN];
        rng.fill_bytes(&mut k);
        let key = Self::from_bytes(k);
        k.zeroize();
        key
    }

    /// Wraps raw bytes, clamping them. Clamping does not change the public
    /// key (X25519 clamps internally), so unclamped input is accepted as `wg`
    /// does.
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        // clamp: clear the 3 low bits, clear bit 255, set bit 254
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        let key = Self(bytes);
        bytes.zeroize();
        key
    }

    /// The raw (clamped) bytes. Handle with care.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The matching public key: X25519(k, 9).
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    /// X25519(self, peer): the raw shared secret. Returns `None` when the
    /// result is all zeros (the peer sent a low-order point), which WireGuard
    /// must reject.
    pub fn diffie_hellman(&self, peer: &PublicKey) -> Option<Zeroizing<[u8; KEY_LEN]>> {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(peer.0));
        let out = Zeroizing::new(*shared.as_bytes());
        if ct_eq(&out, &[0; KEY_LEN]) {
            None
        } else {
            Some(out)
        }
    }

    /// Parses the 44-character base64 form used by wg-quick files.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode_base64(s).map(|k| Self::from_bytes(*k))
    }

    /// Parses the 64-character hex form used by the UAPI.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        decode_hex(s).map(|k| Self::from_bytes(*k))
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        encode_base64(&self.0)
    }

    pub fn to_hex(&self) -> Zeroizing<String> {
        encode_hex(&self.0)
    }
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&self.0, &other.0)
    }
}
impl Eq for PrivateKey {}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_base64(s)
    }
}

/// A Curve25519 public key (a peer's identity). Printed as base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode_base64(s).map(|k| Self(*k))
    }

    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        decode_hex(s).map(|k| Self(*k))
    }

    pub fn to_base64(&self) -> String {
        encode_base64(&self.0).to_string()
    }

    pub fn to_hex(&self) -> String {
        encode_hex(&self.0).to_string()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_base64(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_base64(s)
    }
}

/// The optional symmetric key mixed into the handshake (`PresharedKey`).
/// All zeros means "none", as in the UAPI.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    /// A fresh random key, as `wg genpsk` (no clamping).
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut k = Self([0; KEY_LEN]);
        rng.fill_bytes(&mut k.0);
        k
    }

    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        let key = Self(bytes);
        bytes.zeroize();
        key
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// True for the all-zero key, which means "no preshared key".
    pub fn is_zero(&self) -> bool {
        ct_eq(&self.0, &[0; KEY_LEN])
    }

    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        decode_base64(s).map(|k| Self(*k))
    }

    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        decode_hex(s).map(|k| Self(*k))
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        encode_base64(&self.0)
    }

    pub fn to_hex(&self) -> Zeroizing<String> {
        encode_hex(&self.0)
    }
}

impl PartialEq for PresharedKey {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&self.0, &other.0)
    }
}
impl Eq for PresharedKey {}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

impl FromStr for PresharedKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_base64(s)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write as _,
        process::{Command, Stdio},
    };

    use rand_core::OsRng;

    use super::*;

    fn unhex(s: &str) -> [u8; KEY_LEN] {
        *decode_hex(s).unwrap()
    }

    // RFC 7748 section 6.1.
    const ALICE_PRIV: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const ALICE_PUB: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
    const BOB_PRIV: &str = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
    const BOB_PUB: &str = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
    const SHARED: &str = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

    #[test]
    fn rfc7748_vectors() {
        let alice = PrivateKey::from_bytes(unhex(ALICE_PRIV));
        let bob = PrivateKey::from_bytes(unhex(BOB_PRIV));
        assert_eq!(alice.public_key().to_hex(), ALICE_PUB);
        assert_eq!(bob.public_key().to_hex(), BOB_PUB);
        let s1 = alice.diffie_hellman(&bob.public_key()).unwrap();
        let s2 = bob.diffie_hellman(&alice.public_key()).unwrap();
        assert_eq!(*s1, unhex(SHARED));
        assert_eq!(*s1, *s2);
    }

    #[test]
    fn low_order_point_is_rejected() {
        let k = PrivateKey::generate(&mut OsRng);
        assert!(k.diffie_hellman(&PublicKey::from_bytes([0; 32])).is_none());
    }

    #[test]
    fn generate_is_clamped() {
        for _ in 0..32 {
            let k = PrivateKey::generate(&mut OsRng);
            let b = k.as_bytes();
            assert_eq!(b[0] & 7, 0);
            assert_eq!(b[31] & 0x80, 0);
            assert_eq!(b[31] & 0x40, 0x40);
        }
    }

    #[test]
    fn round_trips() {
        let k = PrivateKey::generate(&mut OsRng);
        let b64 = k.to_base64();
        assert_eq!(b64.len(), 44);
        assert!(b64.ends_with('='));
        assert_eq!(PrivateKey::from_base64(&b64).unwrap(), k);
        assert_eq!(PrivateKey::from_hex(&k.to_hex()).unwrap(), k);

        let p = k.public_key();
        assert_eq!(p.to_string().parse::<PublicKey>().unwrap(), p);
        assert_eq!(PublicKey::from_hex(&p.to_hex()).unwrap(), p);
        assert_eq!(PublicKey::from_hex(&p.to_hex().to_uppercase()).unwrap(), p);

        let psk = PresharedKey::generate(&mut OsRng);
        assert_eq!(PresharedKey::from_base64(&psk.to_base64()).unwrap(), psk);
        assert_eq!(PresharedKey::from_hex(&psk.to_hex()).unwrap(), psk);
        assert!(!psk.is_zero());
        assert!(PresharedKey::from_bytes([0; 32]).is_zero());
    }

    #[test]
    fn bad_text_is_refused() {
        let good = PublicKey::from_bytes([7; 32]).to_base64();
        assert_eq!(
            PublicKey::from_base64(&good[..43]),
            Err(KeyError::Base64Length(43))
        );
        assert_eq!(
            PublicKey::from_base64(&format!("{good}A")),
            Err(KeyError::Base64Length(45))
        );
        // Missing padding: 44 characters but no '='.
        let nopad = format!("{}A", &good[..43]);
        assert_eq!(PublicKey::from_base64(&nopad), Err(KeyError::Base64Padding));
        // Two padding characters would be a 31-byte key.
        let twopad = format!("{}==", &good[..42]);
        assert_eq!(
            PublicKey::from_base64(&twopad),
            Err(KeyError::Base64Padding)
        );
        // Bad alphabet (URL-safe characters).
        let url = format!("-{}", &good[1..]);
        assert_eq!(PublicKey::from_base64(&url), Err(KeyError::Base64Invalid));
        // Non-canonical: the last character before '=' carries 2 unused bits;
        // "AAAA...AAB=" sets one of them.
        let noncanon = format!("{}B=", "A".repeat(42));
        assert_eq!(
            PublicKey::from_base64(&noncanon),
            Err(KeyError::Base64Invalid)
        );
        assert!(PublicKey::from_base64(&format!("{}A=", "A".repeat(42))).is_ok());
        // Non-ASCII of the right byte length.
        let uni = format!("é{}", &good[2..]);
        assert!(PublicKey::from_base64(&uni).is_err());

        assert_eq!(PublicKey::from_hex("abcd"), Err(KeyError::HexLength(4)));
        let badhex = format!("{}g", "0".repeat(63));
        assert_eq!(PublicKey::from_hex(&badhex), Err(KeyError::HexInvalid(63)));
    }

    #[test]
    fn secrets_are_redacted() {
        let k = PrivateKey::generate(&mut OsRng);
        let dbg = format!("{k:?}");
        assert_eq!(dbg, "PrivateKey(<redacted>)");
        assert!(!dbg.contains(&*k.to_base64()));
        let psk = PresharedKey::generate(&mut OsRng);
        assert_eq!(format!("{psk:?}"), "PresharedKey(<redacted>)");
        // Errors never echo input.
        let err = PrivateKey::from_base64("secretsecretsecret").unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }

    fn wg(args: &[&str], stdin: &str) -> Option<String> {
        let mut child = Command::new("/usr/bin/wg")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "wg {args:?} failed");
        Some(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }

    #[test]
    fn pubkey_matches_wg() {
        if !std::path::Path::new("/usr/bin/wg").exists() {
            eprintln!("skipped: /usr/bin/wg not installed");
            return;
        }
        for _ in 0..4 {
            let k = PrivateKey::generate(&mut OsRng);
            let theirs = wg(&["pubkey"], &format!("{}\n", &*k.to_base64())).unwrap();
            assert_eq!(k.public_key().to_base64(), theirs);
        }
        // And the other way: parse wg's own keys.
        for _ in 0..4 {
            let secret = wg(&["genkey"], "").unwrap();
            let theirs = wg(&["pubkey"], &format!("{secret}\n")).unwrap();
            let k = PrivateKey::from_base64(&secret).unwrap();
            assert_eq!(*k.to_base64(), secret, "wg genkey output is clamped");
            assert_eq!(k.public_key().to_string(), theirs);
            let psk = wg(&["genpsk"], "").unwrap();
            assert_eq!(*PresharedKey::from_base64(&psk).unwrap().to_base64(), psk);
        }
    }
}
