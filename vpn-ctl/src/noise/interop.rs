//! Interoperability tests against an independent WireGuard implementation:
//! gotatun (Mullvad's maintained fork of boringtun; boringtun 0.6 itself pins
//! `x25519-dalek = "=2.0.0-rc.3"`, which cannot coexist with our
//! `x25519-dalek 2`). Our engine talks to gotatun's `Tunn` and its
//! mac1/cookie `RateLimiter`, in both roles, then exchanges data both ways.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gotatun::noise::index_table::IndexTable as TheirIndexTable;
use gotatun::noise::rate_limiter::RateLimiter as TheirRateLimiter;
use gotatun::noise::{Tunn, TunnResult};
use gotatun::packet::{Packet, WgKind};
use gotatun::x25519;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::engine::{Action, Engine};

const OUR_IP: [u8; 4] = [10, 0, 0, 1];
const THEIR_IP: [u8; 4] = [10, 0, 0, 2];
const OUR_KEY: [u8; 32] = [0x11; 32];
const THEIR_KEY: [u8; 32] = [0x22; 32];

fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    let len = u16::try_from(20 + payload.len()).unwrap();
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    // Header checksum.
    let mut sum: u32 = p
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let ck = !u16::try_from(sum).unwrap();
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

struct Theirs {
    tunn: Tunn,
    limiter: Arc<TheirRateLimiter>,
}

impl Theirs {
    /// gotatun with `THEIR_KEY`; `handshake_limit` 0 puts it "under load".
    fn new(psk: Option<[u8; 32]>, handshake_limit: u64) -> Self {
        let secret = x25519::StaticSecret::from(THEIR_KEY);
        let public = x25519::PublicKey::from(&secret);
        let ours = x25519::PublicKey::from(&x25519::StaticSecret::from(OUR_KEY));
        let limiter = Arc::new(TheirRateLimiter::new(&public, handshake_limit));
        let tunn = Tunn::new(
            secret,
            ours,
            psk,
            None,
            TheirIndexTable::from_os_rng(),
            limiter.clone(),
        );
        Self { tunn, limiter }
    }

    fn receive(&mut self, from: SocketAddr, bytes: &[u8]) -> TunnResult {
        match self.limiter.verify_packet(from, Packet::copy_from(bytes)) {
            Ok(kind) => self.tunn.handle_incoming_packet(kind),
            Err(r) => r,
        }
    }

    fn send_ip(&mut self, ip: &[u8]) -> Vec<u8> {
        let kind = self
            .tunn
            .handle_outgoing_packet(Packet::copy_from(ip), None)
            .expect("a datagram");
        wire(kind)
    }
}

fn wire(kind: WgKind) -> Vec<u8> {
    let p: Packet = kind.into();
    p.to_vec()
}

fn network(r: TunnResult) -> Vec<u8> {
    match r {
        TunnResult::WriteToNetwork(k) => wire(k),
        other => panic!("expected a datagram, got {other:?}"),
    }
}

fn ours(psk: Option<[u8; 32]>, now: Instant, their_addr: Option<SocketAddr>) -> Engine<StdRng> {
    let mut e = Engine::new(OUR_KEY, StdRng::seed_from_u64(7), now, SystemTime::now());
    let their_pub = *x25519::PublicKey::from(&x25519::StaticSecret::from(THEIR_KEY)).as_bytes();
    let id = e.add_peer(their_pub);
    e.add_allowed_ip(id, IpAddr::from(THEIR_IP), 32).unwrap();
    e.set_preshared_key(id, psk);
    e.set_endpoint(id, their_addr);
    e
}

fn our_addr() -> SocketAddr {
    "198.18.0.1:40000".parse().unwrap()
}

fn their_addr() -> SocketAddr {
    "198.18.1.1:51820".parse().unwrap()
}

/// gotatun hands back the padded plaintext: our packet plus zero padding
/// to a multiple of 16.
fn assert_padded(got: &[u8], ip: &[u8]) {
    assert_eq!(&got[..ip.len()], ip);
    assert!(got[ip.len()..].iter().all(|&b| b == 0));
    assert_eq!(got.len(), ip.len().next_multiple_of(16));
}

/// Data both ways once both sides have a session.
fn exchange_data(us: &mut Engine<StdRng>, them: &mut Theirs, now: Instant) {
    let mut out = vec![0u8; 2048];
    for i in 0..3u8 {
        let ip = ipv4(OUR_IP, THEIR_IP, &[i; 100]);
        let Action::SendDatagram { to, len } = us.handle_tun_packet(&ip, &mut out, now) else {
            panic!("no session")
        };
        assert_eq!(to, their_addr());
        match them.receive(our_addr(), &out[..len]) {
            TunnResult::WriteToTunnel(p) => assert_padded(&p, &ip),
            other => panic!("gotatun did not decrypt: {other:?}"),
        }
        let ip = ipv4(THEIR_IP, OUR_IP, &[i; 1300]);
        let d = them.send_ip(&ip);
        assert_eq!(
            us.handle_datagram(their_addr(), &d, &mut out, now),
            Action::WriteToTun {
                len: ip.len(),
                peer: us.peer_ids()[0]
            }
        );
        assert_eq!(&out[..ip.len()], &ip[..]);
    }
}

fn we_initiate(psk: Option<[u8; 32]>) {
    let now = Instant::now();
    let mut us = ours(psk, now, Some(their_addr()));
    let mut them = Theirs::new(psk, 100);
    let mut out = vec![0u8; 2048];
    let first = ipv4(OUR_IP, THEIR_IP, b"queued before the handshake");
    assert_eq!(us.handle_tun_packet(&first, &mut out, now), Action::Done);
    let init = us.poll_transmit(&mut out, now).expect("initiation");
    assert_eq!(init.len, 148);
    let resp = network(them.receive(our_addr(), &out[..init.len]));
    assert_eq!(resp.len(), 92);
    assert_eq!(
        us.handle_datagram(their_addr(), &resp, &mut out, now),
        Action::Done
    );
    // The queued packet goes out first and confirms the session.
    let t = us.poll_transmit(&mut out, now).expect("queued data");
    match them.receive(our_addr(), &out[..t.len]) {
        TunnResult::WriteToTunnel(p) => assert_padded(&p, &first),
        other => panic!("{other:?}"),
    }
    assert!(us.poll_transmit(&mut out, now).is_none());
    exchange_data(&mut us, &mut them, now);
}

fn they_initiate(psk: Option<[u8; 32]>) {
    let now = Instant::now();
    let mut us = ours(psk, now, None);
    let mut them = Theirs::new(psk, 100);
    let mut out = vec![0u8; 2048];
    let init = wire(
        them.tunn
            .format_handshake_initiation(false)
            .expect("initiation")
            .into(),
    );
    let Action::SendDatagram { to, len } = us.handle_datagram(their_addr(), &init, &mut out, now)
    else {
        panic!("no response")
    };
    assert_eq!((to, len), (their_addr(), 92));
    // gotatun answers the response with a keepalive, which confirms our session.
    let keepalive = network(them.receive(our_addr(), &out[..len]));
    assert_eq!(keepalive.len(), 32);
    assert_eq!(
        us.handle_datagram(their_addr(), &keepalive, &mut out, now),
        Action::Done
    );
    exchange_data(&mut us, &mut them, now);
}

#[test]
fn we_initiate_to_gotatun() {
    we_initiate(None);
}

#[test]
fn we_initiate_to_gotatun_with_psk() {
    we_initiate(Some([0x5a; 32]));
}

#[test]
fn gotatun_initiates_to_us() {
    they_initiate(None);
}

#[test]
fn gotatun_initiates_to_us_with_psk() {
    they_initiate(Some([0xa5; 32]));
}

#[test]
fn gotatun_under_load_sends_cookie_we_retry_with_mac2() {
    let now = Instant::now();
    let mut us = ours(None, now, Some(their_addr()));
    let mut them = Theirs::new(None, 0);
    let mut out = vec![0u8; 2048];
    let first = ipv4(OUR_IP, THEIR_IP, b"hi");
    us.handle_tun_packet(&first, &mut out, now);
    let init = us.poll_transmit(&mut out, now).unwrap();
    let cookie = network(them.receive(our_addr(), &out[..init.len]));
    assert_eq!(cookie.len(), 64);
    assert_eq!(
        us.handle_datagram(their_addr(), &cookie, &mut out, now),
        Action::Done
    );
    // Retry on the retransmit timer, now with mac2.
    let later = us.poll_timeout().unwrap();
    assert!(later <= now + Duration::from_millis(5333));
    us.handle_timeout(later);
    let init = us.poll_transmit(&mut out, later).unwrap();
    let resp = network(them.receive(our_addr(), &out[..init.len]));
    assert_eq!(resp.len(), 92);
    assert_eq!(
        us.handle_datagram(their_addr(), &resp, &mut out, later),
        Action::Done
    );
    let t = us.poll_transmit(&mut out, later).unwrap();
    assert!(matches!(
        them.receive(our_addr(), &out[..t.len]),
        TunnResult::WriteToTunnel(_)
    ));
}

#[test]
fn we_send_cookie_to_gotatun_under_load() {
    let now = Instant::now();
    let mut us = ours(None, now, None);
    us.set_under_load(true);
    let mut them = Theirs::new(None, 100);
    let mut out = vec![0u8; 2048];
    let init = wire(them.tunn.format_handshake_initiation(false).unwrap().into());
    let Action::SendDatagram { len: 64, .. } =
        us.handle_datagram(their_addr(), &init, &mut out, now)
    else {
        panic!("expected a cookie reply")
    };
    // gotatun accepts our cookie reply...
    assert!(matches!(
        them.receive(our_addr(), &out[..64]),
        TunnResult::Done
    ));
    // ...and its next initiation carries a mac2 we accept.
    let init = wire(them.tunn.format_handshake_initiation(true).unwrap().into());
    let Action::SendDatagram { len: 92, .. } =
        us.handle_datagram(their_addr(), &init, &mut out, now)
    else {
        panic!("expected a response")
    };
    let keepalive = network(them.receive(our_addr(), &out[..92]));
    assert_eq!(
        us.handle_datagram(their_addr(), &keepalive, &mut out, now),
        Action::Done
    );
    exchange_data(&mut us, &mut them, now);
}
