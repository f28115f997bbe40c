//! ChaCha20-Poly1305 seal and open per core, the way WireGuard's transport
//! uses it (32-byte key, 96-bit nonce = 4 zero bytes + 64-bit LE counter,
//! empty associated data, in place, detached 16-byte tag), at 128, 1420 and
//! 8192 bytes, for every candidate for the data path:
//!
//! - `rustcrypto`: `chacha20poly1305` 0.10 as built by default. chacha20 0.9
//!   and poly1305 0.8 both pick their AVX2 backends at run time (cpufeatures),
//!   but the generic code around them is compiled for baseline x86_64.
//! - `rustcrypto+avx2`: the same calls made from inside a
//!   `#[target_feature(enable = "avx2")]` function, chosen at run time with
//!   `is_x86_feature_detected!`, so that the generic code (keystream XOR,
//!   block buffering, the universal-hash glue) is inlined and compiled with
//!   AVX2 too: still a portable binary, no target-cpu=native.
//! - `ring`: ring 0.17 `aead::CHACHA20_POLY1305` (assembly, runtime dispatch).
//! - `aws-lc-rs`: the same API over AWS-LC.
//! - `vpn_ctl::aead`: the wrapper the data path uses.
//!
//! Run it with `cargo xtask bench crypto`
//! (`cargo bench -p vpn-ctl --features bench-aead --bench aead`).
//! Every figure is the best of several short rounds (the machines are shared
//! and noisy); "seal+open" is the rate at which one core can carry a byte
//! through both ends of a tunnel, and the ceiling line multiplies it by the
//! cores available.
use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use chacha20poly1305::{aead::AeadInPlace, ChaCha20Poly1305, KeyInit, Nonce, Tag};

const SIZES: [usize; 3] = [128, 1420, 8192];
/// Passes over all implementations (interleaved, so that the load of a shared
/// machine hits them alike), and timed rounds per pass; the best round counts.
const PASSES: usize = 4;
const ROUNDS: usize = 2;
const ROUND: Duration = Duration::from_millis(120);

fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// One implementation, on the wire layout: `buf` is the payload followed by
/// 16 bytes for the tag. `seal` encrypts the payload in place and writes the
/// tag; `open` checks and decrypts it in place.
trait Aead {
    fn name(&self) -> &'static str;
    fn seal(&self, counter: u64, buf: &mut [u8]);
    fn open(&self, counter: u64, buf: &mut [u8]) -> bool;
}

struct RustCrypto(ChaCha20Poly1305);

fn rc_seal(c: &ChaCha20Poly1305, counter: u64, buf: &mut [u8]) {
    let (data, tag) = buf.split_at_mut(buf.len() - 16);
    let t = c
        .encrypt_in_place_detached(Nonce::from_slice(&nonce(counter)), &[], data)
        .expect("length within limits");
    tag.copy_from_slice(&t);
}

fn rc_open(c: &ChaCha20Poly1305, counter: u64, buf: &mut [u8]) -> bool {
    let (data, tag) = buf.split_at_mut(buf.len() - 16);
    c.decrypt_in_place_detached(
        Nonce::from_slice(&nonce(counter)),
        &[],
        data,
        Tag::from_slice(tag),
    )
    .is_ok()
}

impl Aead for RustCrypto {
    fn name(&self) -> &'static str {
        "rustcrypto"
    }
    fn seal(&self, counter: u64, buf: &mut [u8]) {
        rc_seal(&self.0, counter, buf)
    }
    fn open(&self, counter: u64, buf: &mut [u8]) -> bool {
        rc_open(&self.0, counter, buf)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    /// RustCrypto compiled inside AVX2-enabled functions (runtime-selected).
    pub struct RustCryptoAvx2(pub ChaCha20Poly1305);

    #[target_feature(enable = "avx2")]
    unsafe fn seal(c: &ChaCha20Poly1305, counter: u64, buf: &mut [u8]) {
        rc_seal(c, counter, buf)
    }

    #[target_feature(enable = "avx2")]
    unsafe fn open(c: &ChaCha20Poly1305, counter: u64, buf: &mut [u8]) -> bool {
        rc_open(c, counter, buf)
    }

    impl Aead for RustCryptoAvx2 {
        fn name(&self) -> &'static str {
            "rustcrypto+avx2"
        }
        fn seal(&self, counter: u64, buf: &mut [u8]) {
            // SAFETY: constructed only when the CPU has AVX2 (see main).
            unsafe { seal(&self.0, counter, buf) }
        }
        fn open(&self, counter: u64, buf: &mut [u8]) -> bool {
            // SAFETY: as above.
            unsafe { open(&self.0, counter, buf) }
        }
    }
}

struct Ring(ring::aead::LessSafeKey);

impl Aead for Ring {
    fn name(&self) -> &'static str {
        "ring"
    }
    fn seal(&self, counter: u64, buf: &mut [u8]) {
        use ring::aead::{Aad, Nonce};
        let (data, tag) = buf.split_at_mut(buf.len() - 16);
        let t = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce(counter)),
                Aad::empty(),
                data,
            )
            .expect("length within limits");
        tag.copy_from_slice(t.as_ref());
    }
    fn open(&self, counter: u64, buf: &mut [u8]) -> bool {
        use ring::aead::{Aad, Nonce};
        self.0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce(counter)),
                Aad::empty(),
                buf,
            )
            .is_ok()
    }
}

struct AwsLc(aws_lc_rs::aead::LessSafeKey);

impl Aead for AwsLc {
    fn name(&self) -> &'static str {
        "aws-lc-rs"
    }
    fn seal(&self, counter: u64, buf: &mut [u8]) {
        use aws_lc_rs::aead::{Aad, Nonce};
        let (data, tag) = buf.split_at_mut(buf.len() - 16);
        let t = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce(counter)),
                Aad::empty(),
                data,
            )
            .expect("length within limits");
        tag.copy_from_slice(t.as_ref());
    }
    fn open(&self, counter: u64, buf: &mut [u8]) -> bool {
        use aws_lc_rs::aead::{Aad, Nonce};
        self.0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce(counter)),
                Aad::empty(),
                buf,
            )
            .is_ok()
    }
}

struct VpnAead(vpn_ctl::aead::Key);

impl Aead for VpnAead {
    fn name(&self) -> &'static str {
        "vpn_ctl::aead"
    }
    fn seal(&self, counter: u64, buf: &mut [u8]) {
        self.0.seal_in_place(counter, &[], buf);
    }
    fn open(&self, counter: u64, buf: &mut [u8]) -> bool {
        self.0.open_in_place(counter, &[], buf).is_ok()
    }
}

/// Nanoseconds per call of `f`, best of `ROUNDS` rounds of about `ROUND`.
fn time_ns(mut f: impl FnMut()) -> f64 {
    // Calibrate: how many calls fill one round.
    let mut n = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        if t.elapsed() >= ROUND / 4 {
            n = (n as f64 * (ROUND.as_secs_f64() / t.elapsed().as_secs_f64())).max(1.0) as u64;
            break;
        }
        n *= 2;
    }
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

struct Row {
    name: &'static str,
    /// Per size: (seal ns, open ns).
    ns: Vec<(f64, f64)>,
}

fn measure(a: &dyn Aead) -> Row {
    let ns = SIZES
        .iter()
        .map(|&size| {
            let mut buf = vec![0x5au8; size + 16];
            let mut counter = 0u64;
            let seal = time_ns(|| {
                counter += 1;
                a.seal(counter, black_box(&mut buf));
            });
            // Opening decrypts in place, so every call starts from a pristine
            // sealed copy; the copy is timed on its own and subtracted.
            let mut sealed = vec![0x5au8; size + 16];
            a.seal(7, &mut sealed);
            let mut work = sealed.clone();
            let open = time_ns(|| {
                work.copy_from_slice(&sealed);
                assert!(a.open(7, black_box(&mut work)));
            });
            let copy = time_ns(|| {
                work.copy_from_slice(black_box(&sealed));
                black_box(&mut work);
            });
            (seal, (open - copy).max(1.0))
        })
        .collect();
    Row { name: a.name(), ns }
}

/// All implementations must agree byte for byte before they are timed.
fn cross_check(all: &[Box<dyn Aead>]) {
    const COUNTER: u64 = 0x0102_0304_0506_0708;
    let plain = |size: usize| -> Vec<u8> {
        (0..size)
            .map(|i| (i * 31 + 7) as u8)
            .chain([0; 16])
            .collect()
    };
    for &size in &SIZES {
        let mut reference: Option<Vec<u8>> = None;
        for a in all {
            let mut buf = plain(size);
            a.seal(COUNTER, &mut buf);
            match &reference {
                None => reference = Some(buf.clone()),
                Some(r) => assert!(
                    r == &buf,
                    "{} disagrees with {} at {size} B",
                    a.name(),
                    all[0].name()
                ),
            }
            let mut bad = buf.clone();
            bad[size] ^= 1;
            assert!(
                !a.open(COUNTER, &mut bad),
                "{} accepted a bad tag",
                a.name()
            );
            assert!(
                a.open(COUNTER, &mut buf),
                "{} rejected its own seal",
                a.name()
            );
            assert_eq!(buf[..size], plain(size)[..size], "{}", a.name());
        }
    }
}

fn gbps(size: usize, ns: f64) -> f64 {
    size as f64 / ns
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let key = [0x42u8; 32];
    let mut all: Vec<Box<dyn Aead>> =
        vec![Box::new(RustCrypto(ChaCha20Poly1305::new((&key).into())))];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        all.push(Box::new(avx2::RustCryptoAvx2(ChaCha20Poly1305::new(
            (&key).into(),
        ))));
    } else {
        println!("(no AVX2 on this CPU: rustcrypto+avx2 skipped)");
    }
    all.push(Box::new(Ring(ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &key).expect("32-byte key"),
    ))));
    all.push(Box::new(AwsLc(aws_lc_rs::aead::LessSafeKey::new(
        aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::CHACHA20_POLY1305, &key)
            .expect("32-byte key"),
    ))));
    all.push(Box::new(VpnAead(vpn_ctl::aead::Key::new(&key))));
    cross_check(&all);

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_owned(), |m| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "ChaCha20-Poly1305 per core on {cpu} ({cores} cores), best of {} rounds in {PASSES} interleaved passes; GB/s = 10^9 bytes/s",
        PASSES * ROUNDS
    );
    let mut rows: Vec<Row> = all.iter().map(|a| measure(a.as_ref())).collect();
    for _ in 1..PASSES {
        for (row, a) in rows.iter_mut().zip(&all) {
            for (best, new) in row.ns.iter_mut().zip(measure(a.as_ref()).ns) {
                *best = (best.0.min(new.0), best.1.min(new.1));
            }
        }
    }

    for (i, &size) in SIZES.iter().enumerate() {
        let base = &rows[0].ns[i];
        let base_both = gbps(size, base.0 + base.1);
        println!("\n{size} B");
        println!(
            "  {:<16} {:>10} {:>10} {:>11} {:>9}  {:>22}",
            "", "seal GB/s", "open GB/s", "seal+open", "x default", "tunnel ceiling, Gbit/s"
        );
        for r in &rows {
            let (s, o) = r.ns[i];
            let both = gbps(size, s + o);
            println!(
                "  {:<16} {:>10.3} {:>10.3} {:>11.3} {:>8.2}x  {:>22.2}",
                r.name,
                gbps(size, s),
                gbps(size, o),
                both,
                both / base_both,
                both * 8.0 * cores as f64,
            );
        }
    }
    println!(
        "\nseal+open: payload bytes per second one core can seal and open (each tunnelled byte is \
         sealed once and opened once); x default: against rustcrypto's default build; tunnel \
         ceiling: seal+open x 8 bits x {cores} cores, crypto alone, nothing else."
    );
}
