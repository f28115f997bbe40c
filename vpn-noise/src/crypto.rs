//! Cryptographic primitives of the WireGuard whitepaper (§5.4), thin wrappers
//! over RustCrypto: `HASH` (BLAKE2s-256), `MAC` (keyed BLAKE2s-128), `HMAC`
//! (HMAC-BLAKE2s), `KDF1..3`, `AEAD` (ChaCha20-Poly1305 with a 64-bit
//! little-endian counter nonce), `XAEAD` (XChaCha20-Poly1305), `DH` (X25519)
//! and `TAI64N` timestamps.
//!
//! All functions are pure; keys live in [`Zeroizing`] buffers where they are
//! intermediate values.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::messages::{KEY_LEN, MAC_LEN, TAG_LEN, TAI64N_LEN, XNONCE_LEN};
use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};
use hmac::SimpleHmac;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// A 32-byte secret that is wiped on drop.
pub type SecretKey = Zeroizing<[u8; KEY_LEN]>;

/// The AEAD or DH operation failed (bad tag, or a non-contributory point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptoError;

/// `HASH(input)`: BLAKE2s-256 over the concatenation of `parts`.
#[must_use]
pub fn hash(parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut h = Blake2s256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// `MAC(key, input)`: keyed BLAKE2s with a 16-byte output.
#[must_use]
pub fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut m = <Blake2sMac<U16> as KeyInit>::new_from_slice(key)
        .expect("BLAKE2s accepts keys of 1..=32 bytes");
    for p in parts {
        Update::update(&mut m, p);
    }
    m.finalize_fixed().into()
}

/// `HMAC(key, input)`: HMAC-BLAKE2s-256 (RFC 2104 over BLAKE2s).
#[must_use]
pub fn hmac(key: &[u8], parts: &[&[u8]]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut m = <SimpleHmac<Blake2s256> as hmac::Mac>::new_from_slice(key)
        .expect("HMAC accepts any key length");
    for p in parts {
        hmac::Mac::update(&mut m, p);
    }
    Zeroizing::new(hmac::Mac::finalize(m).into_bytes().into())
}

/// `KDF1(key, input)`: `τ0 = HMAC(key, input)`, `τ1 = HMAC(τ0, 0x1)`.
#[must_use]
pub fn kdf1(key: &[u8; KEY_LEN], input: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
    let t0 = hmac(key, &[input]);
    hmac(&*t0, &[&[1]])
}

/// `KDF2(key, input)`: `τ1 = HMAC(τ0, 0x1)`, `τ2 = HMAC(τ0, τ1 || 0x2)`.
#[must_use]
pub fn kdf2(key: &[u8; KEY_LEN], input: &[u8]) -> (SecretKey, SecretKey) {
    let t0 = hmac(key, &[input]);
    let t1 = hmac(&*t0, &[&[1]]);
    let t2 = hmac(&*t0, &[&*t1, &[2]]);
    (t1, t2)
}

/// `KDF3(key, input)`: as [`kdf2`] plus `τ3 = HMAC(τ0, τ2 || 0x3)`.
#[must_use]
pub fn kdf3(key: &[u8; KEY_LEN], input: &[u8]) -> (SecretKey, SecretKey, SecretKey) {
    let t0 = hmac(key, &[input]);
    let t1 = hmac(&*t0, &[&[1]]);
    let t2 = hmac(&*t0, &[&*t1, &[2]]);
    let t3 = hmac(&*t0, &[&*t2, &[3]]);
    (t1, t2, t3)
}

/// The 96-bit AEAD nonce: 32 zero bits then the little-endian 64-bit counter.
fn counter_nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// ChaCha20-Poly1305 seal in place with an explicit 96-bit nonce.
fn seal_nonce(key: &[u8; KEY_LEN], nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
    let cipher = ChaCha20Poly1305::new(key.into());
    cipher
        .encrypt_in_place_detached(nonce.into(), aad, buf)
        .expect("message shorter than the ChaCha20 limit")
        .into()
}

/// ChaCha20-Poly1305 open in place with an explicit 96-bit nonce.
fn open_nonce(
    key: &[u8; KEY_LEN],
    nonce: &[u8; 12],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), CryptoError> {
    let cipher = ChaCha20Poly1305::new(key.into());
    cipher
        .decrypt_in_place_detached(nonce.into(), aad, buf, tag.into())
        .map_err(|_| CryptoError)
}

/// `AEAD(key, counter, plain, aad)` in place: encrypts `buf`, returns the tag.
#[must_use]
pub fn aead_seal_in_place(
    key: &[u8; KEY_LEN],
    counter: u64,
    aad: &[u8],
    buf: &mut [u8],
) -> [u8; TAG_LEN] {
    seal_nonce(key, &counter_nonce(counter), aad, buf)
}

/// Inverse of [`aead_seal_in_place`]; `buf` is left garbled on failure.
pub fn aead_open_in_place(
    key: &[u8; KEY_LEN],
    counter: u64,
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), CryptoError> {
    open_nonce(key, &counter_nonce(counter), aad, buf, tag)
}

/// `AEAD(key, counter, plain, aad)` into `out` (`plain.len() + 16` bytes).
pub fn aead_seal(key: &[u8; KEY_LEN], counter: u64, plain: &[u8], aad: &[u8], out: &mut [u8]) {
    assert_eq!(out.len(), plain.len() + TAG_LEN, "AEAD output size");
    let (body, tag) = out.split_at_mut(plain.len());
    body.copy_from_slice(plain);
    tag.copy_from_slice(&aead_seal_in_place(key, counter, aad, body));
}

/// Opens `sealed` (ciphertext || tag) into `out` (`sealed.len() - 16` bytes).
pub fn aead_open(
    key: &[u8; KEY_LEN],
    counter: u64,
    sealed: &[u8],
    aad: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    if sealed.len() < TAG_LEN || out.len() != sealed.len() - TAG_LEN {
        return Err(CryptoError);
    }
    let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    out.copy_from_slice(body);
    let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| CryptoError)?;
    let r = aead_open_in_place(key, counter, aad, out, tag);
    if r.is_err() {
        out.fill(0);
    }
    r
}

/// `XAEAD(key, nonce, plain, aad)` into `out` (`plain.len() + 16` bytes).
pub fn xaead_seal(
    key: &[u8; KEY_LEN],
    nonce: &[u8; XNONCE_LEN],
    plain: &[u8],
    aad: &[u8],
    out: &mut [u8],
) {
    assert_eq!(out.len(), plain.len() + TAG_LEN, "XAEAD output size");
    let (body, tag) = out.split_at_mut(plain.len());
    body.copy_from_slice(plain);
    let t = XChaCha20Poly1305::new(key.into())
        .encrypt_in_place_detached(nonce.into(), aad, body)
        .expect("short message");
    tag.copy_from_slice(&t);
}

/// Opens an `XAEAD` box (ciphertext || tag) into `out`.
pub fn xaead_open(
    key: &[u8; KEY_LEN],
    nonce: &[u8; XNONCE_LEN],
    sealed: &[u8],
    aad: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    if sealed.len() < TAG_LEN || out.len() != sealed.len() - TAG_LEN {
        return Err(CryptoError);
    }
    let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    out.copy_from_slice(body);
    let r = XChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(nonce.into(), aad, out, tag.into())
        .map_err(|_| CryptoError);
    if r.is_err() {
        out.fill(0);
    }
    r
}

/// `DH(private, public)`: X25519, rejecting the all-zero (non-contributory) result.
pub fn dh(
    private: &StaticSecret,
    public: &PublicKey,
) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let shared = private.diffie_hellman(public);
    if !shared.was_contributory() {
        return Err(CryptoError);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// Constant-time equality of two byte strings of equal length.
#[must_use]
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut d = 0u8;
    for (x, y) in a.iter().zip(b) {
        d |= x ^ y;
    }
    // Route the result through black_box so the loop is not short-circuited.
    std::hint::black_box(d) == 0
}

/// A TAI64N label: 8 bytes of big-endian TAI seconds (offset 2^62 + 10) and 4
/// bytes of big-endian nanoseconds. Byte order equals time order, so replay
/// checks compare the arrays lexicographically.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tai64N(pub [u8; TAI64N_LEN]);

impl Tai64N {
    /// The TAI64 label of the Unix epoch (as used by WireGuard implementations).
    pub const BASE: u64 = 0x4000_0000_0000_000a;

    /// The timestamp for a wall-clock instant. Nanoseconds are rounded down to
    /// 2^24 ns (about 16.7 ms) as the kernel does, so the value does not leak
    /// fine-grained timing; that is still finer than the 50 initiations/s limit.
    #[must_use]
    pub fn from_system_time(t: SystemTime) -> Self {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self::from_unix(d.as_secs(), d.subsec_nanos() & !0x00ff_ffff)
    }

    /// The timestamp for Unix seconds and nanoseconds, without rounding.
    #[must_use]
    pub fn from_unix(secs: u64, nanos: u32) -> Self {
        let mut b = [0u8; TAI64N_LEN];
        b[..8].copy_from_slice(&Self::BASE.wrapping_add(secs).to_be_bytes());
        b[8..].copy_from_slice(&nanos.to_be_bytes());
        Self(b)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn blake2s_rfc7693() {
        // RFC 7693 Appendix B: BLAKE2s-256("abc").
        assert_eq!(
            hash(&[b"abc"]).to_vec(),
            hex("508C5E8C327C14E2E1A72BA34EEB452F37458B209ED63A294D999B4C86675982")
        );
        // Split input hashes the concatenation.
        assert_eq!(hash(&[b"a", b"", b"bc"]), hash(&[b"abc"]));
        assert_eq!(
            hash(&[]).to_vec(),
            hex("69217a3079908094e11121d042354a7c1f55b6482ca1a51e1b250dfd1ed0eef9")
        );
    }

    #[test]
    fn keyed_blake2s_kat() {
        // blake2s-kat.txt, keyed, empty input, key = 00..1f (256-bit output).
        let key: Vec<u8> = (0u8..32).collect();
        let mut m =
            <Blake2sMac<blake2::digest::consts::U32> as KeyInit>::new_from_slice(&key).unwrap();
        Update::update(&mut m, b"");
        let out: [u8; 32] = m.finalize_fixed().into();
        assert_eq!(
            out.to_vec(),
            hex("48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49")
        );
        // MAC is a different (16-byte) parameter set, not a truncation.
        assert_ne!(mac(&key, &[b""])[..], out[..16]);
    }

    /// HMAC built by hand from RFC 2104 with the BLAKE2s block size (64).
    fn hmac_reference(key: &[u8], msg: &[u8]) -> [u8; 32] {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&hash(&[key]));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let inner = hash(&[&ipad, msg]);
        hash(&[&opad, &inner])
    }

    #[test]
    fn hmac_and_kdf() {
        for (key, msg) in [
            (
                &b"key"[..],
                &b"The quick brown fox jumps over the lazy dog"[..],
            ),
            (&[0u8; 32][..], &b""[..]),
            (&[7u8; 100][..], &[1u8; 200][..]),
        ] {
            assert_eq!(*hmac(key, &[msg]), hmac_reference(key, msg));
        }
        let ck = [0x11u8; 32];
        let input = b"input key material";
        let t0 = hmac_reference(&ck, input);
        let t1 = hmac_reference(&t0, &[1]);
        let t2 = hmac_reference(&t0, &[&t1[..], &[2]].concat());
        let t3 = hmac_reference(&t0, &[&t2[..], &[3]].concat());
        assert_eq!(*kdf1(&ck, input), t1);
        let (a, b) = kdf2(&ck, input);
        assert_eq!((*a, *b), (t1, t2));
        let (a, b, c) = kdf3(&ck, input);
        assert_eq!((*a, *b, *c), (t1, t2, t3));
    }

    const RFC_KEY: &str = "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f";
    const RFC_AAD: &str = "50515253c0c1c2c3c4c5c6c7";
    const SUNSCREEN: &[u8] = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";

    #[test]
    fn chacha20poly1305_rfc8439_2_8_2() {
        let key: [u8; 32] = hex(RFC_KEY).try_into().unwrap();
        let nonce: [u8; 12] = hex("070000004041424344454647").try_into().unwrap();
        let aad = hex(RFC_AAD);
        let mut buf = SUNSCREEN.to_vec();
        let tag = seal_nonce(&key, &nonce, &aad, &mut buf);
        assert_eq!(
            buf,
            hex("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116")
        );
        assert_eq!(tag.to_vec(), hex("1ae10b594f09e26a7e902ecbd0600691"));
        open_nonce(&key, &nonce, &aad, &mut buf, &tag).unwrap();
        assert_eq!(buf, SUNSCREEN);
        let mut bad = tag;
        bad[0] ^= 1;
        assert_eq!(
            open_nonce(&key, &nonce, &aad, &mut buf, &bad),
            Err(CryptoError)
        );
    }

    #[test]
    fn aead_counter_nonce_roundtrip() {
        let key = [3u8; 32];
        let mut out = vec![0u8; 5 + TAG_LEN];
        aead_seal(&key, 0x0102_0304_0506_0708, b"hello", b"ad", &mut out);
        // The counter lands little-endian after four zero bytes.
        let mut manual = *b"hello";
        let tag = seal_nonce(
            &key,
            &[0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1],
            b"ad",
            &mut manual,
        );
        assert_eq!(&out[..5], &manual);
        assert_eq!(&out[5..], &tag);
        let mut plain = [0u8; 5];
        aead_open(&key, 0x0102_0304_0506_0708, &out, b"ad", &mut plain).unwrap();
        assert_eq!(&plain, b"hello");
        assert!(aead_open(&key, 1, &out, b"ad", &mut plain).is_err());
        assert!(aead_open(&key, 0x0102_0304_0506_0708, &out, b"xx", &mut plain).is_err());
    }

    #[test]
    fn xchacha20poly1305_draft_a3_1() {
        let key: [u8; 32] = hex(RFC_KEY).try_into().unwrap();
        let nonce: [u8; 24] = hex("404142434445464748494a4b4c4d4e4f5051525354555657")
            .try_into()
            .unwrap();
        let aad = hex(RFC_AAD);
        let mut out = vec![0u8; SUNSCREEN.len() + TAG_LEN];
        xaead_seal(&key, &nonce, SUNSCREEN, &aad, &mut out);
        assert_eq!(
            out,
            hex("bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e c0875924c1c7987947deafd8780acf49")
        );
        let mut plain = vec![0u8; SUNSCREEN.len()];
        xaead_open(&key, &nonce, &out, &aad, &mut plain).unwrap();
        assert_eq!(plain, SUNSCREEN);
        out[3] ^= 0x80;
        assert!(xaead_open(&key, &nonce, &out, &aad, &mut plain).is_err());
        assert!(plain.iter().all(|&b| b == 0));
    }

    #[test]
    fn x25519_rfc7748_6_1() {
        let a: [u8; 32] = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
            .try_into()
            .unwrap();
        let b: [u8; 32] = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
            .try_into()
            .unwrap();
        let (a, b) = (StaticSecret::from(a), StaticSecret::from(b));
        let (pa, pb) = (PublicKey::from(&a), PublicKey::from(&b));
        assert_eq!(
            pa.as_bytes().to_vec(),
            hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            pb.as_bytes().to_vec(),
            hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        );
        let k = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(dh(&a, &pb).unwrap().to_vec(), k);
        assert_eq!(dh(&b, &pa).unwrap().to_vec(), k);
        // A low-order point gives an all-zero secret and is rejected.
        assert_eq!(dh(&a, &PublicKey::from([0u8; 32])), Err(CryptoError));
    }

    #[test]
    fn tai64n_format() {
        // Unix epoch is TAI64 label 0x400000000000000a.
        assert_eq!(
            Tai64N::from_unix(0, 0).0.to_vec(),
            hex("400000000000000a00000000")
        );
        assert_eq!(
            Tai64N::from_unix(1_700_000_000, 123_456_789).0.to_vec(),
            hex("400000006553f10a075bcd15")
        );
        let t = UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
        let rounded = Tai64N::from_system_time(t);
        assert_eq!(
            rounded,
            Tai64N::from_unix(1_700_000_000, 123_456_789 & !0xff_ffff)
        );
        // Ordering of labels follows time.
        assert!(Tai64N::from_unix(5, 0) > Tai64N::from_unix(4, 999_999_999));
        assert!(Tai64N::from_unix(5, 2) > Tai64N::from_unix(5, 1));
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
