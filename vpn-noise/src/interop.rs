//! Interoperability tests against an independent WireGuard implementation,
//! boringtun 0.6 (Cloudflare): our engine talks to boringtun's `Tunn` (which
//! also runs its mac1/cookie `RateLimiter`) in both roles, with and without
//! PSK, with cookies both ways, then exchanges data both ways.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::rate_limiter::RateLimiter as TheirRateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::engine::{Action, Engine};

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

/// An owned copy of boringtun's `TunnResult`.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    Done,
    Net(Vec<u8>),
    Tun(Vec<u8>),
    Err(String),
}

fn own(r: TunnResult<'_>) -> Out {
    match r {
        TunnResult::Done => Out::Done,
        TunnResult::Err(e) => Out::Err(format!("{e:?}")),
        TunnResult::WriteToNetwork(b) => Out::Net(b.to_vec()),
        TunnResult::WriteToTunnelV4(b, _) | TunnResult::WriteToTunnelV6(b, _) => {
            Out::Tun(b.to_vec())
        }
    }
}

struct Theirs {
    tunn: Tunn,
}

impl Theirs {
    /// boringtun with `THEIR_KEY`; `handshake_limit` 0 puts it "under load".
    fn new(psk: Option<[u8; 32]>, handshake_limit: u64) -> Self {
        let secret = x25519::StaticSecret::from(THEIR_KEY);
        let public = x25519::PublicKey::from(&secret);
        let ours = x25519::PublicKey::from(&x25519::StaticSecret::from(OUR_KEY));
        let limiter = Arc::new(TheirRateLimiter::new(&public, handshake_limit));
        let tunn = Tunn::new(secret, ours, psk, None, 0x42, Some(limiter)).unwrap();
        Self { tunn }
    }

    fn receive(&mut self, from: SocketAddr, bytes: &[u8]) -> Out {
        let mut buf = vec![0u8; 2048];
        own(self.tunn.decapsulate(Some(from.ip()), bytes, &mut buf))
    }

    fn send_ip(&mut self, ip: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        network(own(self.tunn.encapsulate(ip, &mut buf)))
    }

    fn initiation(&mut self, force: bool) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        network(own(self.tunn.format_handshake_initiation(&mut buf, force)))
    }
}

fn network(r: Out) -> Vec<u8> {
    match r {
        Out::Net(b) => b,
        other => panic!("expected a datagram, got {other:?}"),
    }
}

fn tun(r: Out) -> Vec<u8> {
    match r {
        Out::Tun(b) => b,
        other => panic!("expected a TUN packet, got {other:?}"),
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

/// Data both ways once both sides have a session.
fn exchange_data(us: &mut Engine<StdRng>, them: &mut Theirs, now: Instant) {
    let mut out = vec![0u8; 2048];
    for i in 0..3u8 {
        let ip = ipv4(OUR_IP, THEIR_IP, &[i; 100]);
        let Action::SendDatagram { to, len } = us.handle_tun_packet(&ip, &mut out, now) else {
            panic!("no session")
        };
        assert_eq!(to, their_addr());
        assert_eq!(tun(them.receive(our_addr(), &out[..len])), ip);
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
    assert_eq!(tun(them.receive(our_addr(), &out[..t.len])), first);
    assert!(us.poll_transmit(&mut out, now).is_none());
    exchange_data(&mut us, &mut them, now);
}

fn they_initiate(psk: Option<[u8; 32]>) {
    let now = Instant::now();
    let mut us = ours(psk, now, None);
    let mut them = Theirs::new(psk, 100);
    let mut out = vec![0u8; 2048];
    let init = them.initiation(false);
    let Action::SendDatagram { to, len } = us.handle_datagram(their_addr(), &init, &mut out, now)
    else {
        panic!("no response")
    };
    assert_eq!((to, len), (their_addr(), 92));
    // boringtun answers the response with a keepalive, which confirms our session.
    let keepalive = network(them.receive(our_addr(), &out[..len]));
    assert_eq!(keepalive.len(), 32);
    assert_eq!(
        us.handle_datagram(their_addr(), &keepalive, &mut out, now),
        Action::Done
    );
    exchange_data(&mut us, &mut them, now);
}

#[test]
fn we_initiate_to_boringtun() {
    we_initiate(None);
}

#[test]
fn we_initiate_to_boringtun_with_psk() {
    we_initiate(Some([0x5a; 32]));
}

#[test]
fn boringtun_initiates_to_us() {
    they_initiate(None);
}

#[test]
fn boringtun_initiates_to_us_with_psk() {
    they_initiate(Some([0xa5; 32]));
}

#[test]
fn boringtun_under_load_sends_cookie_we_retry_with_mac2() {
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
    assert_eq!(tun(them.receive(our_addr(), &out[..t.len])), first);
}

#[test]
fn we_send_cookie_to_boringtun_under_load() {
    let now = Instant::now();
    let mut us = ours(None, now, None);
    us.set_under_load(true);
    let mut them = Theirs::new(None, 100);
    let mut out = vec![0u8; 2048];
    let init = them.initiation(false);
    let Action::SendDatagram { len: 64, .. } =
        us.handle_datagram(their_addr(), &init, &mut out, now)
    else {
        panic!("expected a cookie reply")
    };
    // boringtun accepts our cookie reply...
    assert_eq!(them.receive(our_addr(), &out[..64]), Out::Done);
    // ...and its next initiation carries a mac2 we accept.
    let init = them.initiation(true);
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
