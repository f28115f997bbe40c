//! One steering rule map: a key (a cgroup id, a uid, an interface index, a
//! source prefix) to a [`SteerRule`] (include or exclude), with the same
//! add, delete and list over every kernel map that holds such rules.
//!
//! `STEER_CGROUPS` and `STEER_UIDS` (read by the cgroup hooks) and
//! `STEER_IFACES` (read by the ingress classifier) are hash maps; the source
//! prefixes are two LPM tries, one per family ([`Prefixes`]). [`RuleMap`] is
//! generic over the key and the kind of map, so each of them is one line
//! where the steering or the guard opens its maps.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        HashMap, MapData, MapError,
    },
    Pod,
};
use vpn_common::{SteerAction, SteerRule};

use super::object::{map_err, BpfError};
use crate::config::IpPrefix;

/// One entry read from a rule map.
pub type Entry<K> = Result<(K, SteerRule), MapError>;

/// A kernel map of steering rules: what [`RuleMap`] needs of it.
pub trait Store {
    /// The key as the map holds it.
    type Key;
    fn insert_rule(&mut self, key: &Self::Key, rule: SteerRule) -> Result<(), MapError>;
    fn remove_rule(&mut self, key: &Self::Key) -> Result<(), MapError>;
    fn each(&self, f: &mut dyn FnMut(Entry<Self::Key>));
}

impl<K: Pod> Store for HashMap<MapData, K, SteerRule> {
    type Key = K;

    fn insert_rule(&mut self, key: &K, rule: SteerRule) -> Result<(), MapError> {
        self.insert(key, rule, 0)
    }

    fn remove_rule(&mut self, key: &K) -> Result<(), MapError> {
        self.remove(key)
    }

    fn each(&self, f: &mut dyn FnMut(Entry<K>)) {
        self.iter().for_each(f);
    }
}

impl<K: Pod> Store for LpmTrie<MapData, K, SteerRule> {
    type Key = Key<K>;

    fn insert_rule(&mut self, key: &Key<K>, rule: SteerRule) -> Result<(), MapError> {
        self.insert(key, rule, 0)
    }

    fn remove_rule(&mut self, key: &Key<K>) -> Result<(), MapError> {
        self.remove(key)
    }

    fn each(&self, f: &mut dyn FnMut(Entry<Key<K>>)) {
        self.iter().for_each(f);
    }
}

/// Rules of one kind (`noun`, as in "adding cgroup 1234"; `plural`, as in
/// "listing cgroups") kept in one kernel map.
pub struct RuleMap<M> {
    map: M,
    noun: &'static str,
    plural: &'static str,
}

impl<M: Store> RuleMap<M> {
    #[must_use]
    pub fn new(map: M, noun: &'static str, plural: &'static str) -> Self {
        Self { map, noun, plural }
    }

    /// Steers (or excludes) `key`, replacing its rule if it has one;
    /// `shown` names it in an error.
    pub fn add(
        &mut self,
        key: &M::Key,
        action: SteerAction,
        shown: impl fmt::Display,
    ) -> Result<(), BpfError> {
        let rule = SteerRule {
            action: action as u32,
            tunnel: 0,
        };
        self.map
            .insert_rule(key, rule)
            .map_err(map_err(format!("adding {} {shown}", self.noun)))
    }

    /// Removes the rule of `key`; returns whether there was one.
    pub fn del(&mut self, key: &M::Key, shown: impl fmt::Display) -> Result<bool, BpfError> {
        match self.map.remove_rule(key) {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(map_err(format!("removing {} {shown}", self.noun))(e)),
        }
    }

    /// Every rule, as (key, action name), in the map's order.
    pub fn list(&self) -> Result<Vec<(M::Key, &'static str)>, BpfError> {
        let mut out = Vec::new();
        let mut failed = None;
        self.map.each(&mut |item| match item {
            Ok((key, rule)) => out.push((key, action_name(rule.action))),
            Err(e) => {
                failed.get_or_insert(e);
            }
        });
        match failed {
            Some(e) => Err(map_err(format!("listing {}", self.plural))(e)),
            None => Ok(out),
        }
    }
}

impl<M: Store> RuleMap<M>
where
    M::Key: Ord,
{
    /// Every rule, as (key, action name), sorted by key.
    pub fn sorted(&self) -> Result<Vec<(M::Key, &'static str)>, BpfError> {
        let mut out = self.list()?;
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// The source-prefix rules: one LPM trie per family.
pub struct Prefixes {
    pub v4: RuleMap<LpmTrie<MapData, [u8; 4], SteerRule>>,
    pub v6: RuleMap<LpmTrie<MapData, [u8; 16], SteerRule>>,
}

/// One steered source prefix.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PrefixRule {
    pub addr: IpAddr,
    pub len: u8,
    pub action: &'static str,
}

impl Prefixes {
    #[must_use]
    pub fn new(
        v4: LpmTrie<MapData, [u8; 4], SteerRule>,
        v6: LpmTrie<MapData, [u8; 16], SteerRule>,
    ) -> Self {
        Self {
            v4: RuleMap::new(v4, "prefix", "IPv4 prefixes"),
            v6: RuleMap::new(v6, "prefix", "IPv6 prefixes"),
        }
    }

    /// Steers (or excludes) `prefix`; host bits are cleared.
    pub fn add(&mut self, prefix: IpPrefix, action: SteerAction) -> Result<(), BpfError> {
        match prefix.masked().addr() {
            IpAddr::V4(a) => self.v4.add(&key(prefix, a.octets()), action, prefix),
            IpAddr::V6(a) => self.v6.add(&key(prefix, a.octets()), action, prefix),
        }
    }

    /// Returns whether the prefix was steered.
    pub fn del(&mut self, prefix: IpPrefix) -> Result<bool, BpfError> {
        match prefix.masked().addr() {
            IpAddr::V4(a) => self.v4.del(&key(prefix, a.octets()), prefix),
            IpAddr::V6(a) => self.v6.del(&key(prefix, a.octets()), prefix),
        }
    }

    /// Both families' rules, sorted by address and length.
    pub fn list(&self) -> Result<Vec<PrefixRule>, BpfError> {
        let rule = |addr, k_len: u32, action| PrefixRule {
            addr,
            len: k_len as u8,
            action,
        };
        let mut out: Vec<PrefixRule> = self
            .v4
            .list()?
            .into_iter()
            .map(|(k, a)| rule(IpAddr::V4(Ipv4Addr::from(k.data())), k.prefix_len(), a))
            .collect();
        out.extend(
            self.v6
                .list()?
                .into_iter()
                .map(|(k, a)| rule(IpAddr::V6(Ipv6Addr::from(k.data())), k.prefix_len(), a)),
        );
        out.sort_by_key(|r| (r.addr, r.len));
        Ok(out)
    }
}

/// "include", "exclude" or "unknown".
#[must_use]
pub fn action_name(action: u32) -> &'static str {
    match SteerAction::from_u32(action) {
        Some(SteerAction::Include) => "include",
        Some(SteerAction::Exclude) => "exclude",
        None => "unknown",
    }
}

/// A delete of a missing key: aya reports ENOENT from the syscall.
fn not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// The trie key of a prefix's network.
fn key<const N: usize>(prefix: IpPrefix, octets: [u8; N]) -> Key<[u8; N]> {
    Key::new(u32::from(prefix.prefix_len()), octets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalised() {
        let n = |p: &str| {
            let p: IpPrefix = p.parse().unwrap();
            (p.masked().addr().to_string(), key(p, [0u8; 4]).prefix_len())
        };
        assert_eq!(n("10.9.8.7/0"), ("0.0.0.0".into(), 0));
        assert_eq!(n("10.9.8.7/20"), ("10.9.0.0".into(), 20));
        assert_eq!(n("10.9.8.7/32"), ("10.9.8.7".into(), 32));
        assert_eq!(n("fd00:1:2:3::9/48"), ("fd00:1:2::".into(), 48));
        assert_eq!(n("fd00::9/128"), ("fd00::9".into(), 128));
    }

    #[test]
    fn actions_are_named() {
        assert_eq!(action_name(SteerAction::Include as u32), "include");
        assert_eq!(action_name(SteerAction::Exclude as u32), "exclude");
        assert_eq!(action_name(99), "unknown");
    }
}
