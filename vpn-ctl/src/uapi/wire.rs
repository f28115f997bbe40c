//! The UAPI text format, without IO.
//!
//! A request is `get=1\n\n`, or `set=1\n` followed by `key=value\n` lines and
//! a blank line. Every reply ends with `errno=<n>\n\n`. Device keys come
//! first; each `public_key=` line starts a peer, and the lines after it apply
//! to that peer.
//!
//! The parser is line-at-a-time and linear in the request size, so a request
//! with tens of thousands of `allowed_ip` lines costs nothing special. It
//! validates the whole request before the device sees any of it: a bad line
//! anywhere means nothing is applied (wireguard-go applies the lines before
//! the bad one).

use std::{
    fmt::Write as _,
    net::SocketAddr,
    str::{self, FromStr},
    time::Duration,
};

use zeroize::Zeroizing;

use super::{DeviceSnapshot, PeerSnapshot, PeerUpdate, SetRequest, UapiError};
use crate::{
    config::{parse_decimal, IpPrefix},
    keys::{PresharedKey, PrivateKey, PublicKey},
};

/// A complete, validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Get,
    Set(SetRequest),
}

/// What one line did to the parser.
#[derive(Debug)]
pub enum Parsed {
    /// The request goes on; feed the next line.
    Incomplete,
    /// A request is complete: run it and reply.
    Request(Request),
    /// A request ended (blank line) but was invalid: reply
    /// `errno=<error.errno()>`.
    Failed(UapiError),
    /// The first line was neither `get=1` nor `set=1`: close the connection,
    /// as wireguard-go does.
    BadOperation(String),
}

#[derive(Debug, Default)]
enum State {
    /// Waiting for `get=1` or `set=1`.
    #[default]
    Idle,
    /// After `get=1`: only the blank line may follow.
    Get,
    Set {
        request: SetRequest,
        /// The current peer was removed (`remove=true`): its later lines are
        /// checked but ignored, as wireguard-go does.
        removed: bool,
    },
}

/// Turns lines (without their `\n`) into requests. One parser serves a
/// whole connection; it returns to idle after every request.
#[derive(Debug, Default)]
pub struct RequestParser {
    state: State,
    /// The first error of the current request; later lines are skipped up
    /// to the blank line.
    error: Option<UapiError>,
}

impl RequestParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// True between requests (a clean place for the client to hang up).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Feeds one line, without its trailing `\n`.
    pub fn push_line(&mut self, line: &[u8]) -> Parsed {
        if let State::Idle = self.state {
            return match line {
                b"get=1" => {
                    self.state = State::Get;
                    Parsed::Incomplete
                }
                b"set=1" => {
                    self.state = State::Set {
                        request: SetRequest::default(),
                        removed: false,
                    };
                    Parsed::Incomplete
                }
                other => Parsed::BadOperation(String::from_utf8_lossy(other).into_owned()),
            };
        }
        if line.is_empty() {
            let state = std::mem::take(&mut self.state);
            if let Some(e) = self.error.take() {
                return Parsed::Failed(e);
            }
            return Parsed::Request(match state {
                State::Get => Request::Get,
                State::Set { request, .. } => Request::Set(request),
                State::Idle => unreachable!("handled above"),
            });
        }
        if self.error.is_none() {
            if let Err(e) = self.line(line) {
                self.error = Some(e);
            }
        }
        Parsed::Incomplete
    }

    fn line(&mut self, line: &[u8]) -> Result<(), UapiError> {
        let State::Set { request, removed } = &mut self.state else {
            return Err(UapiError::invalid("get", "trailing line after get=1"));
        };
        let line = str::from_utf8(line)
            .map_err(|_| UapiError::Protocol("line is not UTF-8".to_owned()))?;
        let Some((key, value)) = line.split_once('=') else {
            return Err(UapiError::Protocol(format!(
                "expected key=value, got {:?}",
                truncate(line)
            )));
        };
        if key == "public_key" {
            let public_key =
                PublicKey::from_hex(value).map_err(|e| UapiError::invalid(key, e.to_string()))?;
            request.peers.push(PeerUpdate::new(public_key));
            *removed = false;
            return Ok(());
        }
        match request.peers.last_mut() {
            None => device_line(request, key, value),
            Some(peer) => peer_line(peer, removed, key, value),
        }
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn number<T: FromStr>(key: &str, value: &str, what: &str) -> Result<T, UapiError> {
    parse_decimal(value)
        .ok_or_else(|| UapiError::invalid(key, format!("{:?} is not {what}", truncate(value))))
}

fn flag(key: &str, value: &str) -> Result<(), UapiError> {
    if value == "true" {
        Ok(())
    } else {
        Err(UapiError::invalid(key, "the only valid value is \"true\""))
    }
}

fn device_line(request: &mut SetRequest, key: &str, value: &str) -> Result<(), UapiError> {
    match key {
        "private_key" => {
            // Decode without clamping first: all zeros means "remove".
            let raw = PresharedKey::from_hex(value)
                .map_err(|e| UapiError::invalid(key, e.to_string()))?;
            request.private_key = Some(if raw.is_zero() {
                None
            } else {
                Some(PrivateKey::from_bytes(*raw.as_bytes()))
            });
        }
        "listen_port" => request.listen_port = Some(number(key, value, "a port (0-65535)")?),
        "fwmark" => request.fwmark = Some(number(key, value, "a 32-bit number")?),
        "replace_peers" => {
            flag(key, value)?;
            request.replace_peers = true;
        }
        _ => {
            return Err(UapiError::invalid(
                key,
                "unknown device key (peer keys must follow public_key)",
            ))
        }
    }
    Ok(())
}

fn peer_line(
    peer: &mut PeerUpdate,
    removed: &mut bool,
    key: &str,
    value: &str,
) -> Result<(), UapiError> {
    // Every value is checked; after `remove=true` none is recorded.
    let keep = !*removed;
    match key {
        "remove" => {
            flag(key, value)?;
            *peer = PeerUpdate::new(peer.public_key);
            peer.remove = true;
            *removed = true;
        }
        "update_only" => {
            flag(key, value)?;
            if keep {
                peer.update_only = true;
            }
        }
        "preshared_key" => {
            let psk = PresharedKey::from_hex(value)
                .map_err(|e| UapiError::invalid(key, e.to_string()))?;
            if keep {
                peer.preshared_key = Some(psk);
            }
        }
        "endpoint" => {
            let addr = SocketAddr::from_str(value).map_err(|_| {
                UapiError::invalid(
                    key,
                    format!("{:?} is not ip:port or [ipv6]:port", truncate(value)),
                )
            })?;
            if keep {
                peer.endpoint = Some(addr);
            }
        }
        "persistent_keepalive_interval" => {
            let secs = number(key, value, "a number of seconds (0-65535)")?;
            if keep {
                peer.persistent_keepalive_interval = Some(secs);
            }
        }
        "replace_allowed_ips" => {
            flag(key, value)?;
            if keep {
                // Order matters: it drops the allowed_ip lines before it too.
                peer.replace_allowed_ips = true;
                peer.allowed_ips.clear();
            }
        }
        "allowed_ip" => {
            let prefix = IpPrefix::parse_with_len(value)
                .map_err(|e| UapiError::invalid(key, e.to_string()))?;
            if keep {
                peer.allowed_ips.push(prefix);
            }
        }
        "protocol_version" => {
            if value != "1" {
                return Err(UapiError::invalid(
                    key,
                    format!("version {:?} is not supported (only 1)", truncate(value)),
                ));
            }
        }
        _ => return Err(UapiError::invalid(key, "unknown peer key")),
    }
    Ok(())
}

/// Parses one whole request (for tests and tools); the text must end with
/// the blank line.
pub fn parse_request(text: &str) -> Result<Request, UapiError> {
    let mut parser = RequestParser::new();
    for line in text.split_terminator('\n') {
        match parser.push_line(line.as_bytes()) {
            Parsed::Incomplete => {}
            Parsed::Request(r) => return Ok(r),
            Parsed::Failed(e) => return Err(e),
            Parsed::BadOperation(op) => {
                return Err(UapiError::Protocol(format!("unknown operation {op:?}")))
            }
        }
    }
    Err(UapiError::Protocol("request ended early".to_owned()))
}

/// The status line that ends every reply: `errno=0\n\n` on success.
pub fn serialize_status(result: &Result<(), UapiError>) -> String {
    let errno = match result {
        Ok(()) => 0,
        Err(e) => e.errno(),
    };
    format!("errno={errno}\n\n")
}

/// The whole `get=1` reply, status line included. It holds the private key,
/// so it is wiped when dropped.
pub fn serialize_get(snapshot: &DeviceSnapshot) -> Zeroizing<String> {
    let lines: usize = snapshot
        .peers
        .iter()
        .map(|p| 10 + p.allowed_ips.len())
        .sum();
    let mut out = Zeroizing::new(String::with_capacity(128 + lines * 56));
    let s = &mut *out;
    // `write!` into a String cannot fail.
    if let Some(k) = &snapshot.private_key {
        s.push_str("private_key=");
        s.push_str(&k.to_hex());
        s.push('\n');
    }
    if snapshot.listen_port != 0 {
        let _ = writeln!(s, "listen_port={}", snapshot.listen_port);
    }
    if snapshot.fwmark != 0 {
        let _ = writeln!(s, "fwmark={}", snapshot.fwmark);
    }
    for p in &snapshot.peers {
        let _ = writeln!(s, "public_key={}", p.public_key.to_hex());
        s.push_str("preshared_key=");
        match &p.preshared_key {
            Some(psk) => s.push_str(&psk.to_hex()),
            None => s.push_str(&"0".repeat(64)),
        }
        s.push('\n');
        s.push_str("protocol_version=1\n");
        if let Some(e) = p.endpoint {
            let _ = writeln!(s, "endpoint={e}");
        }
        let hs = p.last_handshake.unwrap_or_default();
        let _ = writeln!(s, "last_handshake_time_sec={}", hs.as_secs());
        let _ = writeln!(s, "last_handshake_time_nsec={}", hs.subsec_nanos());
        let _ = writeln!(s, "tx_bytes={}", p.tx_bytes);
        let _ = writeln!(s, "rx_bytes={}", p.rx_bytes);
        let _ = writeln!(
            s,
            "persistent_keepalive_interval={}",
            p.persistent_keepalive_interval
        );
        for a in &p.allowed_ips {
            let _ = writeln!(s, "allowed_ip={a}");
        }
    }
    s.push_str("errno=0\n\n");
    out
}

/// Writes a `set=1` request (for clients such as `vpn-ctl` talking to a
/// running daemon). Wiped when dropped.
pub fn serialize_set(request: &SetRequest) -> Zeroizing<String> {
    let lines: usize = request.peers.iter().map(|p| 8 + p.allowed_ips.len()).sum();
    let mut out = Zeroizing::new(String::with_capacity(128 + lines * 56));
    let s = &mut *out;
    s.push_str("set=1\n");
    match &request.private_key {
        Some(Some(k)) => {
            s.push_str("private_key=");
            s.push_str(&k.to_hex());
            s.push('\n');
        }
        Some(None) => {
            s.push_str("private_key=");
            s.push_str(&"0".repeat(64));
            s.push('\n');
        }
        None => {}
    }
    if let Some(p) = request.listen_port {
        let _ = writeln!(s, "listen_port={p}");
    }
    if let Some(m) = request.fwmark {
        let _ = writeln!(s, "fwmark={m}");
    }
    if request.replace_peers {
        s.push_str("replace_peers=true\n");
    }
    for p in &request.peers {
        let _ = writeln!(s, "public_key={}", p.public_key.to_hex());
        if p.remove {
            s.push_str("remove=true\n");
            continue;
        }
        if p.update_only {
            s.push_str("update_only=true\n");
        }
        if let Some(psk) = &p.preshared_key {
            s.push_str("preshared_key=");
            s.push_str(&psk.to_hex());
            s.push('\n');
        }
        if let Some(e) = p.endpoint {
            let _ = writeln!(s, "endpoint={e}");
        }
        if let Some(k) = p.persistent_keepalive_interval {
            let _ = writeln!(s, "persistent_keepalive_interval={k}");
        }
        if p.replace_allowed_ips {
            s.push_str("replace_allowed_ips=true\n");
        }
        for a in &p.allowed_ips {
            let _ = writeln!(s, "allowed_ip={a}");
        }
    }
    s.push('\n');
    out
}

/// Parses a `get=1` reply (for clients). A non-zero `errno` becomes
/// [`UapiError::Remote`].
pub fn parse_get_response(text: &str) -> Result<DeviceSnapshot, UapiError> {
    let mut snap = DeviceSnapshot::default();
    let mut hs_sec = 0u64;
    let mut hs_nsec = 0u32;
    // Moves the handshake time parsed so far into the last peer.
    let finish = |snap: &mut DeviceSnapshot, sec: &mut u64, nsec: &mut u32| {
        if let Some(p) = snap.peers.last_mut() {
            if *sec != 0 || *nsec != 0 {
                p.last_handshake = Some(Duration::new(*sec, *nsec));
            }
        }
        (*sec, *nsec) = (0, 0);
    };
    for line in text.split('\n') {
        let Some((key, value)) = line.split_once('=') else {
            return Err(UapiError::Protocol(format!(
                "expected key=value, got {:?}",
                truncate(line)
            )));
        };
        let bad = |e: &dyn std::fmt::Display| UapiError::invalid(key, e.to_string());
        if key == "errno" {
            finish(&mut snap, &mut hs_sec, &mut hs_nsec);
            let n: i64 = value.parse().map_err(|e| bad(&e))?;
            return if n == 0 {
                Ok(snap)
            } else {
                Err(UapiError::Remote { errno: n })
            };
        }
        if key == "public_key" {
            finish(&mut snap, &mut hs_sec, &mut hs_nsec);
            let pk = PublicKey::from_hex(value).map_err(|e| bad(&e))?;
            snap.peers.push(PeerSnapshot::new(pk));
            continue;
        }
        let Some(p) = snap.peers.last_mut() else {
            match key {
                "private_key" => {
                    snap.private_key = Some(PrivateKey::from_hex(value).map_err(|e| bad(&e))?);
                }
                "listen_port" => snap.listen_port = number(key, value, "a port")?,
                "fwmark" => snap.fwmark = number(key, value, "a 32-bit number")?,
                _ => return Err(UapiError::invalid(key, "unknown device key")),
            }
            continue;
        };
        match key {
            "preshared_key" => {
                let psk = PresharedKey::from_hex(value).map_err(|e| bad(&e))?;
                p.preshared_key = (!psk.is_zero()).then_some(psk);
            }
            "protocol_version" => {}
            "endpoint" => {
                p.endpoint = Some(SocketAddr::from_str(value).map_err(|e| bad(&e))?);
            }
            "last_handshake_time_sec" => hs_sec = number(key, value, "a number")?,
            "last_handshake_time_nsec" => {
                hs_nsec = number(key, value, "a number")?;
                if hs_nsec >= 1_000_000_000 {
                    return Err(UapiError::invalid(key, "nanoseconds out of range"));
                }
            }
            "tx_bytes" => p.tx_bytes = number(key, value, "a number")?,
            "rx_bytes" => p.rx_bytes = number(key, value, "a number")?,
            "persistent_keepalive_interval" => {
                p.persistent_keepalive_interval = number(key, value, "a number")?;
            }
            "allowed_ip" => {
                p.allowed_ips
                    .push(IpPrefix::parse_with_len(value).map_err(|e| bad(&e))?);
            }
            _ => return Err(UapiError::invalid(key, "unknown peer key")),
        }
    }
    Err(UapiError::Protocol("reply has no errno line".to_owned()))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rand_core::OsRng;

    use super::*;

    fn pk(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    fn parse_set(text: &str) -> SetRequest {
        match parse_request(text).unwrap() {
            Request::Set(s) => s,
            Request::Get => panic!("not a set"),
        }
    }

    fn errno(text: &str) -> i64 {
        parse_request(text).unwrap_err().errno()
    }

    #[test]
    fn get() {
        assert_eq!(parse_request("get=1\n\n").unwrap(), Request::Get);
        assert_eq!(errno("get=1\nfoo=1\n\n"), -22);
        assert_eq!(errno("get=2\n\n"), -71);
        assert_eq!(errno("get=1\n"), -71, "no blank line");
    }

    #[test]
    fn set_everything() {
        let sk = PrivateKey::generate(&mut OsRng);
        let psk = PresharedKey::generate(&mut OsRng);
        let text = format!(
            "set=1\nprivate_key={}\nlisten_port=51820\nfwmark=4660\nreplace_peers=true\n\
             public_key={}\nupdate_only=true\npreshared_key={}\nendpoint=[2001:db8::1]:51820\n\
             persistent_keepalive_interval=25\nreplace_allowed_ips=true\n\
             allowed_ip=10.0.0.0/8\nallowed_ip=fd00::/64\nprotocol_version=1\n\
             public_key={}\nremove=true\n\n",
            &*sk.to_hex(),
            pk(1).to_hex(),
            &*psk.to_hex(),
            pk(2).to_hex()
        );
        let r = parse_set(&text);
        assert_eq!(r.private_key, Some(Some(sk)));
        assert_eq!(r.listen_port, Some(51820));
        assert_eq!(r.fwmark, Some(4660));
        assert!(r.replace_peers);
        assert_eq!(r.peers.len(), 2);
        let a = &r.peers[0];
        assert_eq!(a.public_key, pk(1));
        assert!(a.update_only && a.replace_allowed_ips && !a.remove);
        assert_eq!(a.preshared_key.as_ref(), Some(&psk));
        assert_eq!(a.endpoint, Some("[2001:db8::1]:51820".parse().unwrap()));
        assert_eq!(a.persistent_keepalive_interval, Some(25));
        assert_eq!(
            a.allowed_ips,
            vec!["10.0.0.0/8".parse().unwrap(), "fd00::/64".parse().unwrap()]
        );
        assert!(r.peers[1].remove);
        // And back: serialize_set then parse gives the same request.
        assert_eq!(parse_set(&serialize_set(&r)), r);
    }

    #[test]
    fn set_semantics() {
        // The all-zero private key removes the key.
        let zero = "0".repeat(64);
        let r = parse_set(&format!("set=1\nprivate_key={zero}\n\n"));
        assert_eq!(r.private_key, Some(None));
        assert_eq!(parse_set(&serialize_set(&r)), r);
        // replace_allowed_ips drops the allowed_ip lines before it.
        let r = parse_set(&format!(
            "set=1\npublic_key={}\nallowed_ip=1.0.0.0/8\nreplace_allowed_ips=true\nallowed_ip=2.0.0.0/8\n\n",
            pk(1).to_hex()
        ));
        assert_eq!(r.peers[0].allowed_ips, vec!["2.0.0.0/8".parse().unwrap()]);
        // Lines after remove are checked but ignored.
        let r = parse_set(&format!(
            "set=1\npublic_key={}\nallowed_ip=1.0.0.0/8\nremove=true\nendpoint=1.2.3.4:5\n\n",
            pk(1).to_hex()
        ));
        assert_eq!(r.peers[0], {
            let mut p = PeerUpdate::new(pk(1));
            p.remove = true;
            p
        });
        assert_eq!(
            errno(&format!(
                "set=1\npublic_key={}\nremove=true\nendpoint=nonsense\n\n",
                pk(1).to_hex()
            )),
            -22
        );
        // The same key twice gives two updates, in order.
        let r = parse_set(&format!(
            "set=1\npublic_key={0}\nremove=true\npublic_key={0}\nallowed_ip=1.2.3.4/32\n\n",
            pk(1).to_hex()
        ));
        assert_eq!(r.peers.len(), 2);
        assert!(r.peers[0].remove && !r.peers[1].remove);
        // An empty set is fine.
        assert_eq!(parse_set("set=1\n\n"), SetRequest::default());
        // Upper-case hex is accepted.
        let r = parse_set(&format!(
            "set=1\npublic_key={}\n\n",
            pk(0xab).to_hex().to_uppercase()
        ));
        assert_eq!(r.peers[0].public_key, pk(0xab));
    }

    #[test]
    fn set_errors() {
        let p = format!("set=1\npublic_key={}\n", pk(1).to_hex());
        let cases: &[(String, i64)] = &[
            ("set=1\nnonsense\n\n".into(), -71),
            ("set=1\nlisten_port=65536\n\n".into(), -22),
            ("set=1\nlisten_port=-1\n\n".into(), -22),
            ("set=1\nlisten_port=+1\n\n".into(), -22),
            ("set=1\nfwmark=0x10\n\n".into(), -22),
            ("set=1\nfwmark=4294967296\n\n".into(), -22),
            ("set=1\nreplace_peers=false\n\n".into(), -22),
            ("set=1\nprivate_key=abcd\n\n".into(), -22),
            ("set=1\nfoo=bar\n\n".into(), -22),
            ("set=1\nallowed_ip=1.2.3.4/32\n\n".into(), -22),
            ("set=1\npublic_key=zz\n\n".into(), -22),
            (format!("{p}listen_port=1\n\n"), -22),
            (format!("{p}endpoint=example.com:1\n\n"), -22),
            (format!("{p}endpoint=::1:1\n\n"), -22),
            (format!("{p}persistent_keepalive_interval=65536\n\n"), -22),
            (format!("{p}allowed_ip=10.0.0.0\n\n"), -22),
            (format!("{p}allowed_ip=10.0.0.0/33\n\n"), -22),
            (format!("{p}allowed_ip=::/129\n\n"), -22),
            (format!("{p}protocol_version=2\n\n"), -22),
            (format!("{p}update_only=1\n\n"), -22),
            (format!("{p}preshared_key={}\n\n", "g".repeat(64)), -22),
        ];
        for (text, want) in cases {
            assert_eq!(errno(text), *want, "{text:?}");
        }
        let mut parser = RequestParser::new();
        assert!(matches!(parser.push_line(b"set=1"), Parsed::Incomplete));
        assert!(matches!(parser.push_line(b"\xff=1"), Parsed::Incomplete));
        assert!(matches!(
            parser.push_line(b""),
            Parsed::Failed(UapiError::Protocol(_))
        ));
        assert!(parser.is_idle());
        assert!(matches!(
            parser.push_line(b"hello"),
            Parsed::BadOperation(_)
        ));
    }

    #[test]
    fn errors_do_not_echo_keys() {
        let sk = PrivateKey::generate(&mut OsRng);
        let hex = format!("{}x", &sk.to_hex()[..63]);
        let e = parse_request(&format!("set=1\nprivate_key={hex}\n\n")).unwrap_err();
        assert!(!e.to_string().contains(&hex[..40]), "{e}");
    }

    #[test]
    fn parser_recovers_after_an_error() {
        let mut parser = RequestParser::new();
        let mut results = Vec::new();
        let text = "set=1\nbogus=1\nlisten_port=2\n\nget=1\n\nset=1\nlisten_port=3\n\n";
        for line in text.split_terminator('\n') {
            match parser.push_line(line.as_bytes()) {
                Parsed::Incomplete => {}
                Parsed::Request(r) => results.push(Ok(r)),
                Parsed::Failed(e) => results.push(Err(e.errno())),
                Parsed::BadOperation(op) => panic!("{op}"),
            }
        }
        assert_eq!(results.len(), 3);
        assert_eq!(results[0], Err(-22));
        assert_eq!(results[1], Ok(Request::Get));
        assert_eq!(
            results[2],
            Ok(Request::Set(SetRequest {
                listen_port: Some(3),
                ..Default::default()
            }))
        );
    }

    fn snapshot() -> DeviceSnapshot {
        let mut a = PeerSnapshot::new(pk(1));
        a.preshared_key = Some(PresharedKey::generate(&mut OsRng));
        a.endpoint = Some("192.0.2.1:51820".parse().unwrap());
        a.last_handshake = Some(Duration::new(1_700_000_000, 123_456_789));
        a.tx_bytes = 1 << 40;
        a.rx_bytes = 7;
        a.persistent_keepalive_interval = 25;
        a.allowed_ips = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/64".parse().unwrap()];
        let b = PeerSnapshot::new(pk(2));
        DeviceSnapshot {
            private_key: Some(PrivateKey::generate(&mut OsRng)),
            listen_port: 51820,
            fwmark: 0xca6c,
            peers: vec![a, b],
        }
    }

    #[test]
    fn get_reply_format() {
        let snap = snapshot();
        let text = serialize_get(&snap);
        let want = format!(
            "private_key={}\nlisten_port=51820\nfwmark=51820\n\
             public_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=192.0.2.1:51820\n\
             last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=123456789\n\
             tx_bytes=1099511627776\nrx_bytes=7\npersistent_keepalive_interval=25\n\
             allowed_ip=10.0.0.0/8\nallowed_ip=fd00::/64\n\
             public_key={}\npreshared_key={}\nprotocol_version=1\n\
             last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n\
             persistent_keepalive_interval=0\nerrno=0\n\n",
            &*snap.private_key.as_ref().unwrap().to_hex(),
            pk(1).to_hex(),
            &*snap.peers[0].preshared_key.as_ref().unwrap().to_hex(),
            pk(2).to_hex(),
            "0".repeat(64),
        );
        assert_eq!(*text, want);
        assert_eq!(parse_get_response(&text).unwrap(), snap);
        // An empty device is just the status line.
        assert_eq!(*serialize_get(&DeviceSnapshot::default()), "errno=0\n\n");
        assert_eq!(
            parse_get_response("errno=0\n\n").unwrap(),
            DeviceSnapshot::default()
        );
        assert_eq!(
            parse_get_response("errno=-22\n\n").unwrap_err().errno(),
            -22
        );
        assert_eq!(serialize_status(&Ok(())), "errno=0\n\n");
        assert_eq!(
            serialize_status(&Err(UapiError::PortInUse("x".into()))),
            "errno=-98\n\n"
        );
    }

    #[test]
    fn large_requests_are_linear() {
        // 64 peers x 1000 allowed IPs = 64 000 allowed_ip lines.
        let mut req = SetRequest {
            replace_peers: true,
            ..Default::default()
        };
        for i in 0..64u8 {
            let mut p = PeerUpdate::new(pk(i));
            p.replace_allowed_ips = true;
            for j in 0..1000u32 {
                let a = std::net::Ipv4Addr::from((u32::from(i) << 24) | (j << 8));
                p.allowed_ips.push(IpPrefix::new(a.into(), 24).unwrap());
            }
            req.peers.push(p);
        }
        let start = Instant::now();
        let text = serialize_set(&req);
        assert_eq!(parse_set(&text), req);
        let snap = DeviceSnapshot {
            peers: req
                .peers
                .iter()
                .map(|p| {
                    let mut s = PeerSnapshot::new(p.public_key);
                    s.allowed_ips.clone_from(&p.allowed_ips);
                    s
                })
                .collect(),
            ..Default::default()
        };
        let text = serialize_get(&snap);
        assert_eq!(parse_get_response(&text).unwrap(), snap);
        // Generous even for a debug build on a busy machine; a quadratic
        // step would take minutes.
        assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
    }
}
