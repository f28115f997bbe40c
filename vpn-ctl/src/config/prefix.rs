//! IP prefixes (`config/prefix.rs`): [`IpPrefix`], the one `address/len`
//! type of the crate (config addresses and allowed IPs, the UAPI, routes).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// Why an `address/len` string is not a valid prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    Address(String),
    #[error("prefix length {len:?} is not a number from 0 to {max}")]
    Length { len: String, max: u8 },
    #[error("{0:?} has no prefix length (expected address/length)")]
    MissingLength(String),
}

/// An IP address with a prefix length, e.g. `10.0.0.2/24` or `::/0`.
///
/// The address is kept as written (an interface `Address` needs its host
/// bits); [`IpPrefix::masked`] gives the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// `len` must be at most 32 for IPv4 and 128 for IPv6.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let max = max_len(&addr);
        if len > max {
            return Err(PrefixError::Length {
                len: len.to_string(),
                max,
            });
        }
        Ok(Self { addr, len })
    }

    /// A single host: /32 or /128.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            len: max_len(&addr),
            addr,
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// The same prefix with the host bits cleared (`10.0.0.2/24` →
    /// `10.0.0.0/24`).
    pub fn masked(&self) -> Self {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Self {
            addr,
            len: self.len,
        }
    }

    /// Parses `address/len`, requiring the length (the UAPI form).
    pub fn parse_with_len(s: &str) -> Result<Self, PrefixError> {
        if !s.contains('/') {
            return Err(PrefixError::MissingLength(s.to_owned()));
        }
        s.parse()
    }
}

fn max_len(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

impl FromStr for IpPrefix {
    type Err = PrefixError;

    /// `address/len`, or a bare address meaning a single host (as `wg` and
    /// wg-quick accept).
    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| PrefixError::Address(a.to_owned()))?;
        let max = max_len(&addr);
        let len = match l {
            None => max,
            Some(l) => parse_decimal::<u8>(l)
                .filter(|&n| n <= max)
                .ok_or_else(|| PrefixError::Length {
                    len: l.to_owned(),
                    max,
                })?,
        };
        Ok(Self { addr, len })
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Digits only: no sign, no spaces, no empty string (Rust's `parse` accepts
/// a leading `+`).
pub(crate) fn parse_decimal<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
