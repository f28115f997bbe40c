//! Peer endpoints (`config/endpoint.rs`): an address, or a host name kept
//! unresolved until the tunnel comes up.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use super::parse_decimal;
/// Where a peer is reached: an address, or a host name kept unresolved
/// until the tunnel comes up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Addr(SocketAddr),
    Host { host: String, port: u16 },
}

impl Endpoint {
    /// The address to send to. A host name is looked up now (blocking, with
    /// the system resolver) and the first address wins, as with `wg`.
    pub fn resolve(&self) -> std::io::Result<SocketAddr> {
        match self {
            Self::Addr(a) => Ok(*a),
            Self::Host { host, port } => {
                std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port))?
                    .next()
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("{host} has no address"),
                        )
                    })
            }
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // SocketAddr already writes `[v6]:port`.
            Self::Addr(a) => write!(f, "{a}"),
            Self::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Why an endpoint string is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("expected host:port or [ipv6]:port")]
    Syntax,
    #[error("an IPv6 endpoint needs brackets: [address]:port")]
    Ipv6NeedsBrackets,
    #[error("{0:?} is not a valid IPv6 address")]
    BadIpv6(String),
    #[error("port {0:?} is not a number from 1 to 65535")]
    Port(String),
    #[error("{0:?} is not a valid host name")]
    Host(String),
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, EndpointError> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest.split_once(']').ok_or(EndpointError::Syntax)?;
            let p = p.strip_prefix(':').ok_or(EndpointError::Syntax)?;
            let ip: Ipv6Addr = h.parse().map_err(|_| EndpointError::BadIpv6(h.into()))?;
            (Some(IpAddr::V6(ip)), (h, p))
        } else {
            let (h, p) = s.rsplit_once(':').ok_or(EndpointError::Syntax)?;
            if h.contains(':') {
                return Err(EndpointError::Ipv6NeedsBrackets);
            }
            (h.parse::<Ipv4Addr>().ok().map(IpAddr::V4), (h, p))
        };
        let (h, p) = port;
        let port = parse_decimal::<u16>(p)
            .filter(|&n| n != 0)
            .ok_or_else(|| EndpointError::Port(p.into()))?;
        match host {
            Some(ip) => Ok(Self::Addr(SocketAddr::new(ip, port))),
            None if is_host_name(h) => Ok(Self::Host {
                host: h.to_owned(),
                port,
            }),
            None => Err(EndpointError::Host(h.into())),
        }
    }
}

/// Letters, digits, `-`, `_` and dots between non-empty labels of at most
/// 63 characters; 253 characters at most.
pub(super) fn is_host_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
