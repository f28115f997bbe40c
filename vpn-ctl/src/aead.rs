//! ChaCha20-Poly1305 for the data path, as WireGuard's transport messages
//! use it: a 32-byte key, and a 96-bit nonce made of 32 zero bits followed by
//! the 64-bit little-endian packet counter.
//!
//! Backed by ring 0.17 (assembly with run-time CPU dispatch: AVX2 where the
//! CPU has it, in a portable binary). `cargo xtask bench crypto` measured it
//! at about 3x RustCrypto's `chacha20poly1305` 0.10 default build per core at
//! 1420 bytes; the handshake, cookies and tests keep `chacha20poly1305`,
//! against which this module is cross-checked.
//!
//! Both calls work in place on the wire layout: the payload followed by the
//! 16-byte tag.
//!
//! ring does not zeroize its key schedule on drop; keep keys in long-lived
//! session state, as the transport does anyway.
use std::fmt;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

/// Key length in bytes.
pub const KEY_LEN: usize = 32;
/// Tag length in bytes.
pub const TAG_LEN: usize = 16;

/// The tag did not authenticate the message (or the buffer was shorter than
/// a tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ChaCha20-Poly1305: authentication failed")]
pub struct OpenError;

/// A ChaCha20-Poly1305 key ready for sealing and opening.
pub struct Key(LessSafeKey);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("aead::Key(..)")
    }
}

/// WireGuard's nonce: 4 zero bytes, then the counter little-endian.
fn wg_nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

impl Key {
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self(LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, key).expect("ChaCha20-Poly1305 takes 32-byte keys"),
        ))
    }

    /// Encrypts `buf[..len - 16]` in place and writes the tag into its last
    /// 16 bytes. Panics if `buf` is shorter than a tag.
    pub fn seal_in_place(&self, counter: u64, aad: &[u8], buf: &mut [u8]) {
        let at = buf
            .len()
            .checked_sub(TAG_LEN)
            .expect("seal_in_place: the buffer must end with 16 bytes for the tag");
        let (data, tag) = buf.split_at_mut(at);
        tag.copy_from_slice(&self.seal_in_place_detached(counter, aad, data));
    }

    /// Encrypts `data` in place and returns the tag.
    pub fn seal_in_place_detached(
        &self,
        counter: u64,
        aad: &[u8],
        data: &mut [u8],
    ) -> [u8; TAG_LEN] {
        self.seal_nonce(wg_nonce(counter), aad, data)
    }

    fn seal_nonce(&self, nonce: [u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data)
            // ring only refuses inputs over 256 GiB (the 32-bit block counter).
            .expect("ChaCha20-Poly1305 message too long");
        tag.as_ref().try_into().expect("16-byte tag")
    }

    /// Checks the tag at the end of `buf` (ciphertext followed by the tag)
    /// and decrypts in place. Returns the plaintext length, `buf.len() - 16`:
    /// the plaintext is `buf[..n]`. On error the contents of `buf` are
    /// unspecified (drop the packet).
    pub fn open_in_place(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, OpenError> {
        self.open_nonce(wg_nonce(counter), aad, buf)
    }

    /// As [`Key::open_in_place`] with the tag apart from the ciphertext.
    pub fn open_in_place_detached(
        &self,
        counter: u64,
        aad: &[u8],
        data: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), OpenError> {
        self.0
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(wg_nonce(counter)),
                Aad::from(aad),
                ring::aead::Tag::from(*tag),
                data,
                0..,
            )
            .map(|_| ())
            .map_err(|_| OpenError)
    }

    fn open_nonce(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<usize, OpenError> {
        if buf.len() < TAG_LEN {
            return Err(OpenError);
        }
        self.0
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .map(|p| p.len())
            .map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use chacha20poly1305::{aead::AeadInPlace, ChaCha20Poly1305, KeyInit};
    use rand::{Rng, RngCore, SeedableRng};

    use super::*;

    // RFC 8439, section 2.8.2.
    const KEY: [u8; 32] = [
        0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e,
        0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d,
        0x9e, 0x9f,
    ];
    const NONCE: [u8; 12] = [
        0x07, 0x00, 0x00, 0x00, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
    ];
    const AAD: [u8; 12] = [
        0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
    ];
    const PLAINTEXT: &[u8] = b"Ladies and Gentlemen of the class of '99: \
        If I could offer you only one tip for the future, sunscreen would be it.";
    const CIPHERTEXT: [u8; 114] = [
        0xd3, 0x1a, 0x8d, 0x34, 0x64, 0x8e, 0x60, 0xdb, 0x7b, 0x86, 0xaf, 0xbc, 0x53, 0xef, 0x7e,
        0xc2, 0xa4, 0xad, 0xed, 0x51, 0x29, 0x6e, 0x08, 0xfe, 0xa9, 0xe2, 0xb5, 0xa7, 0x36, 0xee,
        0x62, 0xd6, 0x3d, 0xbe, 0xa4, 0x5e, 0x8c, 0xa9, 0x67, 0x12, 0x82, 0xfa, 0xfb, 0x69, 0xda,
        0x92, 0x72, 0x8b, 0x1a, 0x71, 0xde, 0x0a, 0x9e, 0x06, 0x0b, 0x29, 0x05, 0xd6, 0xa5, 0xb6,
        0x7e, 0xcd, 0x3b, 0x36, 0x92, 0xdd, 0xbd, 0x7f, 0x2d, 0x77, 0x8b, 0x8c, 0x98, 0x03, 0xae,
        0xe3, 0x28, 0x09, 0x1b, 0x58, 0xfa, 0xb3, 0x24, 0xe4, 0xfa, 0xd6, 0x75, 0x94, 0x55, 0x85,
        0x80, 0x8b, 0x48, 0x31, 0xd7, 0xbc, 0x3f, 0xf4, 0xde, 0xf0, 0x8e, 0x4b, 0x7a, 0x9d, 0xe5,
        0x76, 0xd2, 0x65, 0x86, 0xce, 0xc6, 0x4b, 0x61, 0x16,
    ];
    const TAG: [u8; 16] = [
        0x1a, 0xe1, 0x0b, 0x59, 0x4f, 0x09, 0xe2, 0x6a, 0x7e, 0x90, 0x2e, 0xcb, 0xd0, 0x60, 0x06,
        0x91,
    ];

    #[test]
    fn rfc8439_vector() {
        let key = Key::new(&KEY);
        let mut data = PLAINTEXT.to_vec();
        let tag = key.seal_nonce(NONCE, &AAD, &mut data);
        assert_eq!(data, CIPHERTEXT);
        assert_eq!(tag, TAG);

        let mut wire = [&CIPHERTEXT[..], &TAG].concat();
        assert_eq!(key.open_nonce(NONCE, &AAD, &mut wire), Ok(PLAINTEXT.len()));
        assert_eq!(&wire[..PLAINTEXT.len()], PLAINTEXT);

        for i in 0..CIPHERTEXT.len() + TAG.len() {
            let mut bad = [&CIPHERTEXT[..], &TAG].concat();
            bad[i] ^= 0x01;
            assert_eq!(key.open_nonce(NONCE, &AAD, &mut bad), Err(OpenError));
        }
        let mut wrong_aad = [&CIPHERTEXT[..], &TAG].concat();
        assert_eq!(
            key.open_nonce(NONCE, &AAD[1..], &mut wrong_aad),
            Err(OpenError)
        );
    }

    #[test]
    fn nonce_is_wireguards() {
        assert_eq!(
            wg_nonce(0x0102_0304_0506_0708),
            [0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]
        );
    }

    #[test]
    fn short_buffers() {
        let key = Key::new(&KEY);
        for n in 0..TAG_LEN {
            assert_eq!(key.open_in_place(0, &[], &mut vec![0; n]), Err(OpenError));
        }
        // An empty payload is a keepalive: a tag alone.
        let mut keepalive = [0u8; TAG_LEN];
        key.seal_in_place(9, &[], &mut keepalive);
        assert_eq!(key.open_in_place(9, &[], &mut keepalive), Ok(0));
    }

    #[test]
    #[should_panic(expected = "16 bytes for the tag")]
    fn seal_needs_room_for_the_tag() {
        Key::new(&KEY).seal_in_place(0, &[], &mut [0u8; 15]);
    }

    #[test]
    fn matches_chacha20poly1305_on_random_inputs() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_aead);
        for round in 0..500 {
            let mut k = [0u8; 32];
            rng.fill_bytes(&mut k);
            let counter: u64 = match round % 4 {
                0 => rng.gen(),
                1 => u64::MAX - rng.gen_range(0..4),
                2 => rng.gen_range(0..4),
                _ => rng.gen_range(0..1 << 32),
            };
            let len = match round % 5 {
                0 => rng.gen_range(0..64),
                1 => rng.gen_range(1400..1441),
                2 => rng.gen_range(8000..9000),
                _ => rng.gen_range(0..2048),
            };
            let mut plain = vec![0u8; len];
            rng.fill_bytes(&mut plain);
            let mut aad = vec![0u8; rng.gen_range(0..40)];
            rng.fill_bytes(&mut aad);

            let reference = ChaCha20Poly1305::new((&k).into());
            let mut want = plain.clone();
            let want_tag = reference
                .encrypt_in_place_detached((&wg_nonce(counter)).into(), &aad, &mut want)
                .unwrap();

            let key = Key::new(&k);
            let mut wire = [&plain[..], &[0; TAG_LEN]].concat();
            key.seal_in_place(counter, &aad, &mut wire);
            assert_eq!(wire[..len], want[..], "round {round}");
            assert_eq!(wire[len..], want_tag[..], "round {round}");

            let mut detached = plain.clone();
            assert_eq!(
                key.seal_in_place_detached(counter, &aad, &mut detached)[..],
                want_tag[..]
            );
            assert_eq!(detached, want);

            // What the reference seals, this opens (and the other way round).
            let mut theirs = [&want[..], &want_tag[..]].concat();
            assert_eq!(key.open_in_place(counter, &aad, &mut theirs), Ok(len));
            assert_eq!(theirs[..len], plain[..]);
            let mut mine = want.clone();
            reference
                .decrypt_in_place_detached((&wg_nonce(counter)).into(), &aad, &mut mine, &want_tag)
                .unwrap();
            assert_eq!(mine, plain);
            let mut split = want.clone();
            key.open_in_place_detached(counter, &aad, &mut split, &want_tag.into())
                .unwrap();
            assert_eq!(split, plain);

            // Any flipped bit, a wrong counter or wrong AAD fails.
            let mut bad = [&want[..], &want_tag[..]].concat();
            let i = rng.gen_range(0..bad.len());
            bad[i] ^= 1 << rng.gen_range(0..8);
            assert_eq!(key.open_in_place(counter, &aad, &mut bad), Err(OpenError));
            let mut bad = [&want[..], &want_tag[..]].concat();
            assert_eq!(
                key.open_in_place(counter.wrapping_add(1), &aad, &mut bad),
                Err(OpenError)
            );
            let mut bad = [&want[..], &want_tag[..]].concat();
            aad.push(0);
            assert_eq!(key.open_in_place(counter, &aad, &mut bad), Err(OpenError));
        }
    }
}
