//! wg-quick configuration files: what `wg-quick(8)` and VPN providers' files
//! contain, parsed strictly, with errors that name the file and line.
//!
//! ```text
//! [Interface]
//! PrivateKey = <base64>
//! Address = 10.64.0.2/32, fd00::2/128
//! DNS = 10.64.0.1, example.internal
//! ListenPort = 51820        MTU = 1420     Table = off|auto|<n>     FwMark = 0x1|off
//!
//! [Peer]                     (any number)
//! PublicKey = <base64>
//! PresharedKey = <base64>
//! Endpoint = vpn.example.com:51820 | 192.0.2.1:51820 | [2001:db8::1]:51820
//! AllowedIPs = 0.0.0.0/0, ::/0          (may repeat)
//! PersistentKeepalive = 25 | off
//! ```
//!
//! Keys and section names are case-insensitive, `#` starts a comment, blank
//! lines are ignored. Hooks (`PreUp`, `PostUp`, `PreDown`, `PostDown`) and
//! `SaveConfig` are refused: vpn never runs commands from a config file and
//! never writes it back.
//!
//! The folder (`config/`): this module holds the parser and the
//! [`Config`] it builds; the vocabulary it shares with the rest of the
//! crate sits beside it and is re-exported here: [`IpPrefix`]
//! (`prefix.rs`), [`Endpoint`] (`endpoint.rs`) and the interface-name rule
//! [`validate_interface_name`] (`name.rs`).

use std::{fmt::Write as _, net::IpAddr, path::Path, str::FromStr};

use zeroize::Zeroizing;

use crate::keys::{KeyError, PresharedKey, PrivateKey, PublicKey};

mod endpoint;
mod name;
mod prefix;

use self::endpoint::is_host_name;
pub(crate) use self::prefix::parse_decimal;
pub use self::{
    endpoint::{Endpoint, EndpointError},
    name::{interface_name_from_path, validate_interface_name},
    prefix::{IpPrefix, PrefixError},
};

// ---------------------------------------------------------------------------
// The configuration
// ---------------------------------------------------------------------------

/// Which routing table wg-quick would put the peers' routes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Table {
    /// Pick one (the default).
    #[default]
    Auto,
    /// Add no routes.
    Off,
    /// This table number.
    Id(u32),
}

/// The `[Interface]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub private_key: PrivateKey,
    /// Addresses to put on the tunnel device, host bits kept.
    pub addresses: Vec<IpPrefix>,
    /// `None`: pick a random port.
    pub listen_port: Option<u16>,
    /// DNS servers (the IP entries of `DNS`).
    pub dns: Vec<IpAddr>,
    /// DNS search domains (the other entries of `DNS`).
    pub dns_search: Vec<String>,
    pub mtu: Option<u16>,
    pub table: Table,
    /// `None`: off (no mark on the encrypted packets).
    pub fwmark: Option<u32>,
}

/// One `[Peer]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<Endpoint>,
    /// In file order, duplicates kept.
    pub allowed_ips: Vec<IpPrefix>,
    /// Seconds; `None`: off.
    pub persistent_keepalive: Option<u16>,
}

/// A whole wg-quick file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub interface: Interface,
    pub peers: Vec<Peer>,
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A configuration error, with the file and (usually) the line it is on.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {kind}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file's name as given (or `<input>`).
    pub file: String,
    /// 1-based line number, when the error is about one line.
    pub line: Option<usize>,
    #[source]
    pub kind: ConfigErrorKind,
}

/// What is wrong. Never contains secret key material.
#[derive(Debug, thiserror::Error)]
pub enum ConfigErrorKind {
    #[error("cannot read the file")]
    Io(#[source] std::io::Error),
    #[error("the file is not UTF-8 text")]
    NotUtf8,
    #[error("{key:?} is outside any section (the file must start with [Interface])")]
    OutsideSection { key: String },
    #[error("unknown section {0:?} (expected [Interface] or [Peer])")]
    UnknownSection(String),
    #[error("a second [Interface] section (the first is on line {first_line})")]
    DuplicateInterface { first_line: usize },
    #[error("expected \"Key = Value\", got {0:?}")]
    Syntax(String),
    #[error("unknown key {key:?} in [{section}]")]
    UnknownKey { key: String, section: &'static str },
    #[error(
        "{key} is not supported: vpn never runs commands from a config file. \
         Remove the line; routing and firewalling are vpn-ctl's job \
         (see `vpn-ctl steer`), and anything else can run from a systemd unit \
         ordered after `vpn-ctl up`"
    )]
    Hook { key: String },
    #[error(
        "SaveConfig is not supported: vpn never writes to the config file. \
         Remove the line; save the running configuration with \
         `vpn-ctl showconf <iface> > file` instead"
    )]
    SaveConfig,
    #[error("{key} given twice in this section (first on line {first_line})")]
    Duplicate {
        key: &'static str,
        first_line: usize,
    },
    #[error("{key} has an empty value")]
    Empty { key: &'static str },
    #[error("bad {key}")]
    Key {
        key: &'static str,
        #[source]
        source: KeyError,
    },
    #[error("bad {key} entry {value:?}")]
    Prefix {
        key: &'static str,
        value: String,
        #[source]
        source: PrefixError,
    },
    #[error("bad Endpoint {value:?}")]
    Endpoint {
        value: String,
        #[source]
        source: EndpointError,
    },
    #[error("ListenPort {0:?} is not a number from 0 to 65535")]
    ListenPort(String),
    #[error("PersistentKeepalive {0:?} is not \"off\" or a number of seconds from 0 to 65535")]
    Keepalive(String),
    #[error("MTU {0:?} is not a number from 576 to 65535")]
    Mtu(String),
    #[error(
        "MTU {mtu} is below 1280, the minimum for IPv6, and the interface has an IPv6 address"
    )]
    MtuTooSmallForIpv6 { mtu: u16 },
    #[error("Table {0:?} is not \"off\", \"auto\" or a table number from 1 to 4294967295 (table names are not supported)")]
    Table(String),
    #[error(
        "FwMark {0:?} is not \"off\", a decimal number or 0x-prefixed hex number that fits 32 bits"
    )]
    FwMark(String),
    #[error("DNS entry {0:?} is neither an IP address nor a valid search domain")]
    Dns(String),
    #[error("there is no [Interface] section")]
    MissingInterface,
    #[error("[Interface] has no PrivateKey")]
    MissingPrivateKey,
    #[error("[Peer] has no PublicKey")]
    MissingPublicKey,
    #[error("this peer's PublicKey is also used by the peer on line {first_line}")]
    DuplicatePeer { first_line: usize },
    #[error("this peer's PublicKey is the interface's own public key")]
    PeerIsSelf,
    #[error(
        "interface name {0:?} is not valid: 1 to 15 characters from \
         letters, digits, and _=+.-"
    )]
    InterfaceName(String),
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

const HOOKS: [&str; 4] = ["PreUp", "PostUp", "PreDown", "PostDown"];

/// Interface keys, in the order they are rendered.
const INTERFACE_KEYS: [&str; 7] = [
    "PrivateKey",
    "Address",
    "ListenPort",
    "DNS",
    "MTU",
    "Table",
    "FwMark",
];
/// Keys that may repeat, their lists adding up.
const LIST_KEYS: [&str; 3] = ["Address", "DNS", "AllowedIPs"];
const PEER_KEYS: [&str; 5] = [
    "PublicKey",
    "PresharedKey",
    "Endpoint",
    "AllowedIPs",
    "PersistentKeepalive",
];

#[derive(Default)]
struct InterfaceBuilder {
    line: usize,
    seen: Vec<(&'static str, usize)>,
    private_key: Option<PrivateKey>,
    addresses: Vec<IpPrefix>,
    listen_port: Option<u16>,
    dns: Vec<IpAddr>,
    dns_search: Vec<String>,
    mtu: Option<u16>,
    table: Table,
    fwmark: Option<u32>,
}

#[derive(Default)]
struct PeerBuilder {
    line: usize,
    seen: Vec<(&'static str, usize)>,
    public_key: Option<PublicKey>,
    preshared_key: Option<PresharedKey>,
    endpoint: Option<Endpoint>,
    allowed_ips: Vec<IpPrefix>,
    persistent_keepalive: Option<u16>,
}

enum Section {
    None,
    Interface,
    Peer,
}

/// Records `key` as seen on `line`; an error if it was seen before and may
/// not repeat.
fn note_seen(
    seen: &mut Vec<(&'static str, usize)>,
    key: &'static str,
    line: usize,
) -> Result<(), ConfigErrorKind> {
    if let Some(&(_, first_line)) = seen.iter().find(|(k, _)| *k == key) {
        if !LIST_KEYS.contains(&key) {
            return Err(ConfigErrorKind::Duplicate { key, first_line });
        }
        return Ok(());
    }
    seen.push((key, line));
    Ok(())
}

/// Comma-separated list entries, trimmed, empty entries skipped.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn prefixes(
    key: &'static str,
    value: &str,
    out: &mut Vec<IpPrefix>,
) -> Result<(), ConfigErrorKind> {
    for item in list(value) {
        let p = item.parse().map_err(|source| ConfigErrorKind::Prefix {
            key,
            value: item.to_owned(),
            source,
        })?;
        out.push(p);
    }
    Ok(())
}

fn parse_fwmark(value: &str) -> Result<Option<u32>, ConfigErrorKind> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let hex = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"));
    let n = match hex {
        Some(h) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(h, 16).ok()
        }
        Some(_) => None,
        None => parse_decimal::<u32>(value),
    };
    match n {
        Some(0) => Ok(None),
        Some(n) => Ok(Some(n)),
        None => Err(ConfigErrorKind::FwMark(value.to_owned())),
    }
}

fn parse_table(value: &str) -> Result<Table, ConfigErrorKind> {
    if value.eq_ignore_ascii_case("off") {
        Ok(Table::Off)
    } else if value.eq_ignore_ascii_case("auto") {
        Ok(Table::Auto)
    } else {
        match parse_decimal::<u32>(value) {
            Some(n) if n != 0 => Ok(Table::Id(n)),
            _ => Err(ConfigErrorKind::Table(value.to_owned())),
        }
    }
}

impl InterfaceBuilder {
    fn set(&mut self, key: &'static str, value: &str, line: usize) -> Result<(), ConfigErrorKind> {
        note_seen(&mut self.seen, key, line)?;
        if value.is_empty() && !LIST_KEYS.contains(&key) {
            return Err(ConfigErrorKind::Empty { key });
        }
        match key {
            "PrivateKey" => {
                self.private_key = Some(
                    PrivateKey::from_base64(value)
                        .map_err(|source| ConfigErrorKind::Key { key, source })?,
                );
            }
            "Address" => prefixes(key, value, &mut self.addresses)?,
            "ListenPort" => {
                self.listen_port = Some(
                    parse_decimal::<u16>(value)
                        .ok_or_else(|| ConfigErrorKind::ListenPort(value.to_owned()))?,
                );
            }
            "DNS" => {
                for item in list(value) {
                    if let Ok(ip) = item.parse::<IpAddr>() {
                        self.dns.push(ip);
                    } else if is_host_name(item) {
                        self.dns_search.push(item.to_owned());
                    } else {
                        return Err(ConfigErrorKind::Dns(item.to_owned()));
                    }
                }
            }
            "MTU" => {
                self.mtu = Some(
                    parse_decimal::<u16>(value)
                        .filter(|&m| m >= 576)
                        .ok_or_else(|| ConfigErrorKind::Mtu(value.to_owned()))?,
                );
            }
            "Table" => self.table = parse_table(value)?,
            "FwMark" => self.fwmark = parse_fwmark(value)?,
            _ => unreachable!("key list and match agree"),
        }
        Ok(())
    }
}

impl PeerBuilder {
    fn set(&mut self, key: &'static str, value: &str, line: usize) -> Result<(), ConfigErrorKind> {
        note_seen(&mut self.seen, key, line)?;
        if value.is_empty() && !LIST_KEYS.contains(&key) {
            return Err(ConfigErrorKind::Empty { key });
        }
        match key {
            "PublicKey" => {
                self.public_key = Some(
                    PublicKey::from_base64(value)
                        .map_err(|source| ConfigErrorKind::Key { key, source })?,
                );
            }
            "PresharedKey" => {
                let psk = PresharedKey::from_base64(value)
                    .map_err(|source| ConfigErrorKind::Key { key, source })?;
                // All zeros means none, as in `wg`.
                self.preshared_key = (!psk.is_zero()).then_some(psk);
            }
            "Endpoint" => {
                self.endpoint =
                    Some(value.parse().map_err(|source| ConfigErrorKind::Endpoint {
                        value: value.to_owned(),
                        source,
                    })?);
            }
            "AllowedIPs" => prefixes(key, value, &mut self.allowed_ips)?,
            "PersistentKeepalive" => {
                self.persistent_keepalive = if value.eq_ignore_ascii_case("off") {
                    None
                } else {
                    let n = parse_decimal::<u16>(value)
                        .ok_or_else(|| ConfigErrorKind::Keepalive(value.to_owned()))?;
                    (n != 0).then_some(n)
                };
            }
            _ => unreachable!("key list and match agree"),
        }
        Ok(())
    }
}

impl Config {
    /// Reads and parses a wg-quick file. Errors name the file as given.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: None,
            kind: ConfigErrorKind::Io(e),
        })?);
        let text = std::str::from_utf8(&bytes).map_err(|_| ConfigError {
            file: file.clone(),
            line: None,
            kind: ConfigErrorKind::NotUtf8,
        })?;
        Self::parse(text, &file)
    }

    /// Parses the text of a wg-quick file; `file` is used in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let err = |line: Option<usize>, kind| ConfigError {
            file: file.to_owned(),
            line,
            kind,
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);

        let mut section = Section::None;
        let mut interface: Option<InterfaceBuilder> = None;
        let mut peers: Vec<PeerBuilder> = Vec::new();

        for (idx, raw) in text.lines().enumerate() {
            let n = idx + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('[') {
                let name = line
                    .strip_prefix('[')
                    .and_then(|l| l.strip_suffix(']'))
                    .map(str::trim)
                    .unwrap_or(line);
                if name.eq_ignore_ascii_case("Interface") {
                    if let Some(first) = &interface {
                        return Err(err(
                            Some(n),
                            ConfigErrorKind::DuplicateInterface {
                                first_line: first.line,
                            },
                        ));
                    }
                    interface = Some(InterfaceBuilder {
                        line: n,
                        ..Default::default()
                    });
                    section = Section::Interface;
                } else if name.eq_ignore_ascii_case("Peer") {
                    peers.push(PeerBuilder {
                        line: n,
                        ..Default::default()
                    });
                    section = Section::Peer;
                } else {
                    return Err(err(Some(n), ConfigErrorKind::UnknownSection(line.into())));
                }
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(err(Some(n), ConfigErrorKind::Syntax(line.into())));
            };
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(err(Some(n), ConfigErrorKind::Syntax(line.into())));
            }
            let result = match section {
                Section::None => Err(ConfigErrorKind::OutsideSection { key: k.into() }),
                Section::Interface => {
                    if let Some(h) = HOOKS.iter().find(|h| h.eq_ignore_ascii_case(k)) {
                        Err(ConfigErrorKind::Hook {
                            key: (*h).to_owned(),
                        })
                    } else if k.eq_ignore_ascii_case("SaveConfig") {
                        Err(ConfigErrorKind::SaveConfig)
                    } else if let Some(key) =
                        INTERFACE_KEYS.iter().find(|c| c.eq_ignore_ascii_case(k))
                    {
                        interface
                            .as_mut()
                            .expect("section is Interface")
                            .set(key, v, n)
                    } else {
                        Err(ConfigErrorKind::UnknownKey {
                            key: k.into(),
                            section: "Interface",
                        })
                    }
                }
                Section::Peer => {
                    if let Some(key) = PEER_KEYS.iter().find(|c| c.eq_ignore_ascii_case(k)) {
                        peers.last_mut().expect("section is Peer").set(key, v, n)
                    } else {
                        Err(ConfigErrorKind::UnknownKey {
                            key: k.into(),
                            section: "Peer",
                        })
                    }
                }
            };
            result.map_err(|kind| err(Some(n), kind))?;
        }

        let iface = interface.ok_or_else(|| err(None, ConfigErrorKind::MissingInterface))?;
        let private_key = iface
            .private_key
            .ok_or_else(|| err(Some(iface.line), ConfigErrorKind::MissingPrivateKey))?;
        if let Some(mtu) = iface.mtu {
            if mtu < 1280 && iface.addresses.iter().any(IpPrefix::is_ipv6) {
                let line = iface.seen.iter().find(|(k, _)| *k == "MTU").map(|s| s.1);
                return Err(err(line, ConfigErrorKind::MtuTooSmallForIpv6 { mtu }));
            }
        }
        let own = private_key.public_key();

        let mut by_key = std::collections::HashMap::with_capacity(peers.len());
        let mut out = Vec::with_capacity(peers.len());
        for p in peers {
            let public_key = p
                .public_key
                .ok_or_else(|| err(Some(p.line), ConfigErrorKind::MissingPublicKey))?;
            if public_key == own {
                return Err(err(Some(p.line), ConfigErrorKind::PeerIsSelf));
            }
            if let Some(&first_line) = by_key.get(&public_key) {
                return Err(err(
                    Some(p.line),
                    ConfigErrorKind::DuplicatePeer { first_line },
                ));
            }
            by_key.insert(public_key, p.line);
            out.push(Peer {
                public_key,
                preshared_key: p.preshared_key,
                endpoint: p.endpoint,
                allowed_ips: p.allowed_ips,
                persistent_keepalive: p.persistent_keepalive,
            });
        }

        Ok(Self {
            interface: Interface {
                private_key,
                addresses: iface.addresses,
                listen_port: iface.listen_port,
                dns: iface.dns,
                dns_search: iface.dns_search,
                mtu: iface.mtu,
                table: iface.table,
                fwmark: iface.fwmark,
            },
            peers: out,
        })
    }

    /// Writes the configuration back as a wg-quick file (for `showconf`).
    /// Parsing the result gives an equal `Config`. The text holds the private
    /// key, so it is wiped when dropped.
    pub fn render(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::new());
        let i = &self.interface;
        // Writing to a String cannot fail.
        let _ = writeln!(s, "[Interface]");
        let _ = writeln!(s, "PrivateKey = {}", &*i.private_key.to_base64());
        if !i.addresses.is_empty() {
            let _ = writeln!(s, "Address = {}", join(&i.addresses));
        }
        if let Some(p) = i.listen_port {
            let _ = writeln!(s, "ListenPort = {p}");
        }
        if !i.dns.is_empty() || !i.dns_search.is_empty() {
            let items: Vec<String> = i
                .dns
                .iter()
                .map(ToString::to_string)
                .chain(i.dns_search.iter().cloned())
                .collect();
            let _ = writeln!(s, "DNS = {}", items.join(", "));
        }
        if let Some(m) = i.mtu {
            let _ = writeln!(s, "MTU = {m}");
        }
        match i.table {
            Table::Auto => {}
            Table::Off => {
                let _ = writeln!(s, "Table = off");
            }
            Table::Id(n) => {
                let _ = writeln!(s, "Table = {n}");
            }
        }
        if let Some(m) = i.fwmark {
            let _ = writeln!(s, "FwMark = {m:#x}");
        }
        for p in &self.peers {
            let _ = writeln!(s, "\n[Peer]");
            let _ = writeln!(s, "PublicKey = {}", p.public_key);
            if let Some(psk) = &p.preshared_key {
                let _ = writeln!(s, "PresharedKey = {}", &*psk.to_base64());
            }
            if !p.allowed_ips.is_empty() {
                let _ = writeln!(s, "AllowedIPs = {}", join(&p.allowed_ips));
            }
            if let Some(e) = &p.endpoint {
                let _ = writeln!(s, "Endpoint = {e}");
            }
            if let Some(k) = p.persistent_keepalive {
                let _ = writeln!(s, "PersistentKeepalive = {k}");
            }
        }
        s
    }
}

impl FromStr for Config {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Self::parse(s, "<input>")
    }
}

fn join(items: &[IpPrefix]) -> String {
    let mut s = String::with_capacity(items.len() * 20);
    for (i, p) in items.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{p}");
    }
    s
}

#[cfg(test)]
mod tests {
    use rand_core::OsRng;

    use super::*;

    fn key() -> PrivateKey {
        PrivateKey::generate(&mut OsRng)
    }

    fn pubkey() -> PublicKey {
        key().public_key()
    }

    /// Parses and returns the error text.
    fn fail(text: &str) -> String {
        let e = Config::parse(text, "provider.conf").unwrap_err();
        e.to_string()
    }

    fn iface() -> String {
        format!("[Interface]\nPrivateKey = {}\n", &*key().to_base64())
    }

    #[test]
    fn provider_file() {
        let k = key();
        let (p1, p2) = (pubkey(), pubkey());
        let psk = PresharedKey::generate(&mut OsRng);
        let text = format!(
            "\u{feff}# Provider X, server nl-ams-12\r\n\
             [Interface]\r\n\
             privatekey = {}\r\n\
             Address = 10.64.12.7/32,fc00:bbbb:bbbb:bb01::1:c06/128  # tunnel\n\
             Address = 10.65.0.1\n\
             DNS = 10.64.0.1, 2001:db8::53, corp.example, lan\n\
             ListenPort = 51820\n\
             MTU = 1380\n\
             Table = 1234\n\
             FwMark = 0xca6c\n\
             \n\
             [Peer]\n\
             PublicKey = {p1}\n\
             PresharedKey = {}\n\
             AllowedIPs = 0.0.0.0/0\n\
             AllowedIPs = ::/0, 10.0.0.0/8\n\
             Endpoint = nl-ams-wg-012.example.net:51820\n\
             PersistentKeepalive = 25\n\
             [peer]\n\
             PUBLICKEY={p2}\n\
             Endpoint = [2001:db8::1]:443\n\
             PersistentKeepalive = off\n\
             AllowedIPs =\n",
            &*k.to_base64(),
            &*psk.to_base64()
        );
        let c = Config::parse(&text, "provider.conf").unwrap();
        let i = &c.interface;
        assert_eq!(i.private_key, k);
        assert_eq!(
            i.addresses,
            vec![
                "10.64.12.7/32".parse().unwrap(),
                "fc00:bbbb:bbbb:bb01::1:c06/128".parse().unwrap(),
                "10.65.0.1/32".parse().unwrap()
            ]
        );
        assert_eq!(
            i.dns,
            vec![
                "10.64.0.1".parse::<IpAddr>().unwrap(),
                "2001:db8::53".parse().unwrap()
            ]
        );
        assert_eq!(i.dns_search, vec!["corp.example", "lan"]);
        assert_eq!(i.listen_port, Some(51820));
        assert_eq!(i.mtu, Some(1380));
        assert_eq!(i.table, Table::Id(1234));
        assert_eq!(i.fwmark, Some(0xca6c));
        assert_eq!(c.peers.len(), 2);
        let a = &c.peers[0];
        assert_eq!(a.public_key, p1);
        assert_eq!(a.preshared_key.as_ref(), Some(&psk));
        assert_eq!(a.allowed_ips.len(), 3);
        assert_eq!(
            a.endpoint,
            Some(Endpoint::Host {
                host: "nl-ams-wg-012.example.net".into(),
                port: 51820
            })
        );
        assert_eq!(a.persistent_keepalive, Some(25));
        let b = &c.peers[1];
        assert_eq!(b.public_key, p2);
        assert_eq!(b.preshared_key, None);
        assert_eq!(
            b.endpoint,
            Some(Endpoint::Addr("[2001:db8::1]:443".parse().unwrap()))
        );
        assert_eq!(b.persistent_keepalive, None);
        assert!(b.allowed_ips.is_empty());

        // Render and parse back.
        let again = Config::parse(&c.render(), "rendered").unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn minimal_and_defaults() {
        let c: Config = iface().parse().unwrap();
        assert!(c.peers.is_empty());
        assert_eq!(c.interface.table, Table::Auto);
        assert_eq!(c.interface.listen_port, None);
        assert_eq!(c.interface.fwmark, None);
        assert_eq!(c.interface.mtu, None);
        let again: Config = c.render().parse().unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn table_and_fwmark_forms() {
        let t = |v: &str| {
            Config::parse(&format!("{}Table = {v}\n", iface()), "x")
                .map(|c| c.interface.table)
                .map_err(|e| e.to_string())
        };
        assert_eq!(t("off"), Ok(Table::Off));
        assert_eq!(t("Auto"), Ok(Table::Auto));
        assert_eq!(t("51820"), Ok(Table::Id(51820)));
        assert!(t("main").unwrap_err().contains("names are not supported"));
        assert!(t("0").is_err());
        assert!(t("-1").is_err());
        assert!(t("4294967296").is_err());

        let m = |v: &str| {
            Config::parse(&format!("{}FwMark = {v}\n", iface()), "x")
                .map(|c| c.interface.fwmark)
                .map_err(|e| e.to_string())
        };
        assert_eq!(m("off"), Ok(None));
        assert_eq!(m("0"), Ok(None));
        assert_eq!(m("1234"), Ok(Some(1234)));
        assert_eq!(m("0x80000"), Ok(Some(0x80000)));
        assert_eq!(m("0XFFFFFFFF"), Ok(Some(u32::MAX)));
        assert!(m("0x").is_err());
        assert!(m("0x100000000").is_err());
        assert!(m("+5").is_err());
        assert!(m("12ab").unwrap_err().contains("FwMark"));
    }

    #[test]
    fn endpoints() {
        let e = |s: &str| s.parse::<Endpoint>();
        assert_eq!(
            e("192.0.2.1:51820"),
            Ok(Endpoint::Addr("192.0.2.1:51820".parse().unwrap()))
        );
        assert_eq!(
            e("[fe80::1]:1"),
            Ok(Endpoint::Addr("[fe80::1]:1".parse().unwrap()))
        );
        assert_eq!(
            e("vpn.example.com.:443"),
            Ok(Endpoint::Host {
                host: "vpn.example.com.".into(),
                port: 443
            })
        );
        assert_eq!(e("fe80::1:51820"), Err(EndpointError::Ipv6NeedsBrackets));
        assert_eq!(e("example.com"), Err(EndpointError::Syntax));
        assert_eq!(e("[::1]51820"), Err(EndpointError::Syntax));
        assert_eq!(e("[::1"), Err(EndpointError::Syntax));
        assert_eq!(e("[zz]:1"), Err(EndpointError::BadIpv6("zz".into())));
        assert_eq!(e("h:0"), Err(EndpointError::Port("0".into())));
        assert_eq!(e("h:65536"), Err(EndpointError::Port("65536".into())));
        assert_eq!(e("h:"), Err(EndpointError::Port(String::new())));
        assert_eq!(e(":1"), Err(EndpointError::Host(String::new())));
        assert_eq!(e("bad host:1"), Err(EndpointError::Host("bad host".into())));
        for ok in ["192.0.2.1:51820", "[2001:db8::1]:443", "a-b.c:9"] {
            assert_eq!(e(ok).unwrap().to_string(), ok);
        }
        // Resolution: addresses as they are, names through the resolver
        // ("localhost" is in /etc/hosts, no network needed).
        assert_eq!(
            e("192.0.2.1:7").unwrap().resolve().unwrap(),
            "192.0.2.1:7".parse().unwrap()
        );
        let local = e("localhost:51820").unwrap().resolve().unwrap();
        assert!(local.ip().is_loopback() && local.port() == 51820);
    }

    #[test]
    fn prefixes_parse_and_mask() {
        let p = |s: &str| s.parse::<IpPrefix>();
        assert_eq!(p("10.1.2.3/8").unwrap().masked().to_string(), "10.0.0.0/8");
        assert_eq!(p("10.1.2.3/0").unwrap().masked().to_string(), "0.0.0.0/0");
        assert_eq!(p("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(
            p("2001:db8:ffff::1/33").unwrap().masked().to_string(),
            "2001:db8:8000::/33"
        );
        assert_eq!(p("::1").unwrap().prefix_len(), 128);
        assert!(matches!(
            p("10.0.0.0/33"),
            Err(PrefixError::Length { max: 32, .. })
        ));
        assert!(matches!(
            p("::/129"),
            Err(PrefixError::Length { max: 128, .. })
        ));
        assert!(p("10.0.0.0/+8").is_err());
        assert!(p("10.0.0.0/").is_err());
        assert!(p("10.0.0/8").is_err());
        assert!(IpPrefix::parse_with_len("10.0.0.1").is_err());
        assert!(IpPrefix::new("10.0.0.0".parse().unwrap(), 33).is_err());
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let i = iface();
        assert_eq!(
            fail(&format!(
                "{i}\n[Peer]\nPublicKey = {}\nFoo = bar\n",
                pubkey()
            )),
            "provider.conf:6: unknown key \"Foo\" in [Peer]"
        );
        assert_eq!(
            fail(&format!("{i}Bar = 1\n")),
            "provider.conf:3: unknown key \"Bar\" in [Interface]"
        );
        assert!(fail("PrivateKey = x\n").starts_with("provider.conf:1: \"PrivateKey\" is outside"));
        assert!(fail(&format!("{i}[Server]\n")).contains(":3: unknown section \"[Server]\""));
        assert!(fail(&format!("{i}[Interface]\n")).contains(":3: a second [Interface]"));
        assert!(fail(&format!("{i}just words\n")).contains(":3: expected \"Key = Value\""));
        assert!(fail(&format!("{i}= 5\n")).contains(":3: expected"));
    }

    #[test]
    fn hooks_and_saveconfig_are_refused() {
        for hook in ["PreUp", "postup", "PreDown", "POSTDOWN"] {
            let e = fail(&format!("{}{hook} = iptables -A ...\n", iface()));
            assert!(e.starts_with("provider.conf:3: "), "{e}");
            assert!(e.contains("never runs commands"), "{e}");
            assert!(e.contains("Remove the line"), "{e}");
        }
        let e = fail(&format!("{}SaveConfig = true\n", iface()));
        assert!(e.contains(":3: SaveConfig is not supported"), "{e}");
        assert!(e.contains("showconf"), "{e}");
    }

    #[test]
    fn missing_keys() {
        assert_eq!(fail(""), "provider.conf: there is no [Interface] section");
        assert_eq!(
            fail("# nothing\n[Interface]\nListenPort = 1\n"),
            "provider.conf:2: [Interface] has no PrivateKey"
        );
        assert_eq!(
            fail(&format!("{}[Peer]\nAllowedIPs = 0.0.0.0/0\n", iface())),
            "provider.conf:3: [Peer] has no PublicKey"
        );
    }

    #[test]
    fn duplicates() {
        let i = iface();
        assert_eq!(
            fail(&format!("{i}ListenPort = 1\nlistenport = 2\n")),
            "provider.conf:4: ListenPort given twice in this section (first on line 3)"
        );
        assert!(fail(&format!("{i}PrivateKey = {}\n", &*key().to_base64()))
            .contains(":3: PrivateKey given twice"));
        let p = pubkey();
        assert!(
            fail(&format!("{i}[Peer]\nPublicKey = {p}\nPublicKey = {p}\n"))
                .contains(":5: PublicKey given twice")
        );
        assert_eq!(
            fail(&format!(
                "{i}[Peer]\nPublicKey = {p}\n[Peer]\nPublicKey = {p}\n"
            )),
            "provider.conf:5: this peer's PublicKey is also used by the peer on line 3"
        );
        let k = key();
        assert!(fail(&format!(
            "[Interface]\nPrivateKey = {}\n[Peer]\nPublicKey = {}\n",
            &*k.to_base64(),
            k.public_key()
        ))
        .contains(":3: this peer's PublicKey is the interface's own"));
    }

    #[test]
    fn bad_values() {
        let i = iface();
        let peer = format!("{i}[Peer]\nPublicKey = {}\n", pubkey());
        let cases: &[(String, &str)] = &[
            (
                format!("{i}Address = 10.0.0.1/33\n"),
                ":3: bad Address entry \"10.0.0.1/33\"",
            ),
            (
                format!("{i}Address = 10.0.0.1/24, fd00::1/200\n"),
                ":3: bad Address entry \"fd00::1/200\"",
            ),
            (
                format!("{i}Address = 10.0.0.256/24\n"),
                ":3: bad Address entry",
            ),
            (
                format!("{i}ListenPort = 65536\n"),
                ":3: ListenPort \"65536\" is not a number",
            ),
            (format!("{i}ListenPort = -1\n"), ":3: ListenPort"),
            (
                format!("{i}ListenPort =\n"),
                ":3: ListenPort has an empty value",
            ),
            (format!("{i}MTU = 100\n"), ":3: MTU \"100\""),
            (format!("{i}MTU = 70000\n"), ":3: MTU \"70000\""),
            (
                format!("{i}Address = fd00::2/64\nMTU = 1200\n"),
                ":4: MTU 1200 is below 1280",
            ),
            (
                format!("{i}DNS = 10.0.0.1, bad domain!\n"),
                ":3: DNS entry \"bad domain!\"",
            ),
            (
                "[Interface]\nPrivateKey = abc\n".to_owned(),
                ":2: bad PrivateKey",
            ),
            (
                format!("{peer}PresharedKey = abc=\n"),
                ":5: bad PresharedKey",
            ),
            (
                format!("{peer}AllowedIPs = 10.0.0.0/8, 1.2.3.4/40\n"),
                ":5: bad AllowedIPs entry \"1.2.3.4/40\"",
            ),
            (
                format!("{peer}AllowedIPs = everything\n"),
                ":5: bad AllowedIPs entry \"everything\"",
            ),
            (
                format!("{peer}Endpoint = 1.2.3.4:70000\n"),
                ":5: bad Endpoint \"1.2.3.4:70000\"",
            ),
            (format!("{peer}Endpoint = 1.2.3.4\n"), ":5: bad Endpoint"),
            (
                format!("{peer}PersistentKeepalive = 65536\n"),
                ":5: PersistentKeepalive \"65536\"",
            ),
            (
                format!("{peer}PersistentKeepalive = 10s\n"),
                ":5: PersistentKeepalive",
            ),
            (
                format!(
                    "[Interface]\nPrivateKey = x\n[Peer]\nPublicKey = {}x\n",
                    pubkey()
                ),
                ":2: bad PrivateKey",
            ),
        ];
        for (text, want) in cases {
            let got = fail(text);
            assert!(got.starts_with("provider.conf:"), "{got}");
            assert!(got.contains(want), "want {want:?} in {got:?}");
        }
        // The cause is reachable through `source()` for keys.
        let e = Config::parse("[Interface]\nPrivateKey = abc\n", "f").unwrap_err();
        assert!(matches!(
            e.kind,
            ConfigErrorKind::Key {
                source: KeyError::Base64Length(3),
                ..
            }
        ));
    }

    #[test]
    fn secrets_do_not_leak_into_errors() {
        let k = key();
        let b64 = k.to_base64();
        let text = format!("[Interface]\nPrivateKey = {}x\n", &*b64);
        let e = Config::parse(&text, "f").unwrap_err();
        let msg = format!("{e} {e:?}");
        assert!(!msg.contains(&b64[..40]), "{msg}");
        let c = Config::parse(&format!("[Interface]\nPrivateKey = {}\n", &*b64), "f").unwrap();
        assert!(!format!("{c:?}").contains(&b64[..40]));
    }

    #[test]
    fn zero_keepalive_and_psk_mean_off() {
        let text = format!(
            "{}[Peer]\nPublicKey = {}\nPersistentKeepalive = 0\nPresharedKey = {}\n",
            iface(),
            pubkey(),
            PresharedKey::from_bytes([0; 32]).to_base64().as_str()
        );
        let c = Config::parse(&text, "f").unwrap();
        assert_eq!(c.peers[0].persistent_keepalive, None);
        assert_eq!(c.peers[0].preshared_key, None);
    }

    #[test]
    fn load_from_file() {
        let dir = std::env::temp_dir().join(format!("vpn-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wg7.conf");
        std::fs::write(&path, iface()).unwrap();
        assert!(Config::load(&path).is_ok());
        std::fs::write(&path, format!("{}Oops = 1\n", iface())).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:3: unknown key", path.display())),
            "{e}"
        );
        let missing = Config::load(&dir.join("nope.conf")).unwrap_err();
        assert!(matches!(missing.kind, ConfigErrorKind::Io(_)));
        std::fs::write(&path, b"\xff\xfe[Interface]\n").unwrap();
        assert!(matches!(
            Config::load(&path).unwrap_err().kind,
            ConfigErrorKind::NotUtf8
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn interface_names() {
        let n = |p: &str| interface_name_from_path(Path::new(p)).map_err(|e| e.to_string());
        assert_eq!(n("/etc/wireguard/wg0.conf"), Ok("wg0".into()));
        assert_eq!(n("provider-nl_1.conf"), Ok("provider-nl_1".into()));
        assert_eq!(n("a.b=c+d.conf"), Ok("a.b=c+d".into()));
        assert_eq!(n("mullvad"), Ok("mullvad".into()));
        assert_eq!(n("123456789012345.conf"), Ok("123456789012345".into()));
        assert!(n("1234567890123456.conf")
            .unwrap_err()
            .contains("not valid"));
        assert!(n("my vpn.conf").is_err());
        assert!(n("wg/0").is_ok()); // file name "0"
        assert!(n(".conf").is_err());
        assert!(n("/").is_err());
        assert!(n("ünï.conf").is_err());
        assert!(validate_interface_name("vpn0").is_ok());
        assert!(validate_interface_name("").is_err());
    }
}
