//! Allowed-IPs table: longest-prefix match from an address to a value (a
//! peer handle), one path-compressed binary trie per address family, as the
//! kernel's `allowedips.c`. Used for both directions of cryptokey routing:
//! destination lookup on send and the source check on receive.
//!
//! Addresses are stored left-aligned in a `u128` (IPv4 in the top 32 bits).
//! Prefixes are masked on insert ("maskself"), and inserting an existing
//! prefix replaces its value.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone)]
struct Node<V> {
    /// Masked key, left-aligned.
    key: u128,
    /// Prefix length in bits.
    len: u8,
    value: Option<V>,
    children: [Option<Box<Node<V>>>; 2],
}

fn mask(key: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        key & (u128::MAX << (128 - u32::from(len)))
    }
}

fn bit(key: u128, i: u8) -> usize {
    usize::from((key >> (127 - u32::from(i))) & 1 == 1)
}

fn common_len(a: u128, b: u128, max: u8) -> u8 {
    let lz = u8::try_from((a ^ b).leading_zeros()).unwrap_or(128);
    lz.min(max)
}

impl<V> Node<V> {
    fn leaf(key: u128, len: u8, value: V) -> Box<Self> {
        Box::new(Self {
            key,
            len,
            value: Some(value),
            children: [None, None],
        })
    }
}

/// Inserts; returns the value replaced, if any.
fn insert<V>(slot: &mut Option<Box<Node<V>>>, key: u128, len: u8, value: V) -> Option<V> {
    let Some(node) = slot else {
        *slot = Some(Node::leaf(key, len, value));
        return None;
    };
    let common = common_len(node.key, key, node.len.min(len));
    if common == node.len && node.len == len {
        return node.value.replace(value);
    }
    if common == node.len {
        // The node's prefix contains the new one: descend.
        let b = bit(key, node.len);
        return insert(&mut node.children[b], key, len, value);
    }
    let old = slot.take().expect("checked above");
    if common == len {
        // The new prefix contains the node: put it above.
        let mut new = Node::leaf(key, len, value);
        let b = bit(old.key, len);
        new.children[b] = Some(old);
        *slot = Some(new);
    } else {
        // They diverge: split at the common prefix.
        let mut mid = Box::new(Node {
            key: mask(key, common),
            len: common,
            value: None,
            children: [None, None],
        });
        let b = bit(old.key, common);
        mid.children[b] = Some(old);
        mid.children[bit(key, common)] = Some(Node::leaf(key, len, value));
        *slot = Some(mid);
    }
    None
}

/// Removes a valueless node with fewer than two children, splicing its child up.
fn compact<V>(slot: &mut Option<Box<Node<V>>>) {
    let Some(node) = slot else { return };
    if node.value.is_some() {
        return;
    }
    match (&node.children[0], &node.children[1]) {
        (Some(_), Some(_)) => {}
        _ => {
            let mut node = slot.take().expect("checked above");
            *slot = node.children[0].take().or_else(|| node.children[1].take());
        }
    }
}

fn remove<V>(slot: &mut Option<Box<Node<V>>>, key: u128, len: u8) -> Option<V> {
    let node = slot.as_mut()?;
    if common_len(node.key, key, node.len.min(len)) < node.len || node.len > len {
        return None;
    }
    let removed = if node.len == len {
        node.value.take()
    } else {
        let b = bit(key, node.len);
        remove(&mut node.children[b], key, len)
    };
    compact(slot);
    removed
}

fn retain<V>(slot: &mut Option<Box<Node<V>>>, f: &mut impl FnMut(&V) -> bool) {
    let Some(node) = slot else { return };
    if node.value.as_ref().is_some_and(|v| !f(v)) {
        node.value = None;
    }
    retain(&mut node.children[0], f);
    retain(&mut node.children[1], f);
    compact(slot);
}

fn lookup<V>(mut slot: &Option<Box<Node<V>>>, key: u128, max: u8) -> Option<&V> {
    let mut best = None;
    while let Some(node) = slot {
        if common_len(node.key, key, node.len) < node.len {
            break;
        }
        if node.value.is_some() {
            best = node.value.as_ref();
        }
        if node.len >= max {
            break;
        }
        slot = &node.children[bit(key, node.len)];
    }
    best
}

fn walk<'a, V>(slot: &'a Option<Box<Node<V>>>, out: &mut Vec<(u128, u8, &'a V)>) {
    if let Some(node) = slot {
        if let Some(v) = &node.value {
            out.push((node.key, node.len, v));
        }
        walk(&node.children[0], out);
        walk(&node.children[1], out);
    }
}

/// An error for a prefix length longer than the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("prefix length {0} is too long for the address family")]
pub struct BadPrefix(pub u8);

/// The allowed-IPs table.
#[derive(Debug, Clone)]
pub struct AllowedIps<V> {
    v4: Option<Box<Node<V>>>,
    v6: Option<Box<Node<V>>>,
}

impl<V> Default for AllowedIps<V> {
    fn default() -> Self {
        Self { v4: None, v6: None }
    }
}

fn split(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v) => (u128::from(u32::from(v)) << 96, 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

impl<V> AllowedIps<V> {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn root(&mut self, ip: IpAddr) -> &mut Option<Box<Node<V>>> {
        if ip.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    /// Maps `ip/cidr` (host bits ignored) to `value`; returns the value it replaced.
    pub fn insert(&mut self, ip: IpAddr, cidr: u8, value: V) -> Result<Option<V>, BadPrefix> {
        let (key, max) = split(ip);
        if cidr > max {
            return Err(BadPrefix(cidr));
        }
        Ok(insert(self.root(ip), mask(key, cidr), cidr, value))
    }

    /// Removes exactly `ip/cidr`; returns its value.
    pub fn remove(&mut self, ip: IpAddr, cidr: u8) -> Option<V> {
        let (key, max) = split(ip);
        if cidr > max {
            return None;
        }
        remove(self.root(ip), mask(key, cidr), cidr)
    }

    /// Keeps only entries whose value satisfies `f`.
    pub fn retain(&mut self, mut f: impl FnMut(&V) -> bool) {
        retain(&mut self.v4, &mut f);
        retain(&mut self.v6, &mut f);
    }

    /// The value of the longest prefix containing `ip`.
    #[must_use]
    pub fn lookup(&self, ip: IpAddr) -> Option<&V> {
        let (key, max) = split(ip);
        match ip {
            IpAddr::V4(_) => lookup(&self.v4, key, max),
            IpAddr::V6(_) => lookup(&self.v6, key, max),
        }
    }

    /// All entries as `(network, cidr, value)`, v4 first, in trie order.
    #[must_use]
    pub fn iter(&self) -> Vec<(IpAddr, u8, &V)> {
        let mut v4 = Vec::new();
        walk(&self.v4, &mut v4);
        let mut v6 = Vec::new();
        walk(&self.v6, &mut v6);
        let to4 = |k: u128| IpAddr::V4(Ipv4Addr::from(u32::try_from(k >> 96).unwrap_or(0)));
        v4.into_iter()
            .map(|(k, l, v)| (to4(k), l, v))
            .chain(
                v6.into_iter()
                    .map(|(k, l, v)| (IpAddr::V6(Ipv6Addr::from(k)), l, v)),
            )
            .collect()
    }

    /// Whether the table has no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.v4.is_none() && self.v6.is_none()
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.v4 = None;
        self.v6 = None;
    }
}

impl<V: PartialEq> AllowedIps<V> {
    /// Removes every entry mapping to `value` (a peer being removed or its
    /// allowed IPs being replaced).
    pub fn remove_by_value(&mut self, value: &V) {
        self.retain(|v| v != value);
    }

    /// Whether exactly `ip/cidr` is present and maps to `value`.
    #[must_use]
    pub fn lookup_exact_is(&self, ip: IpAddr, cidr: u8, value: &V) -> bool {
        let (key, max) = split(ip);
        if cidr > max {
            return false;
        }
        let key = mask(key, cidr);
        self.iter()
            .into_iter()
            .any(|(i, c, v)| c == cidr && split(i).0 == key && v == value)
    }

    /// Entries mapping to `value`.
    #[must_use]
    pub fn entries_for(&self, value: &V) -> Vec<(IpAddr, u8)> {
        self.iter()
            .into_iter()
            .filter(|(_, _, v)| *v == value)
            .map(|(ip, c, _)| (ip, c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn ip4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }
    fn ip6(a: u32, b: u32, c: u32, d: u32) -> IpAddr {
        let v =
            (u128::from(a) << 96) | (u128::from(b) << 64) | (u128::from(c) << 32) | u128::from(d);
        IpAddr::V6(Ipv6Addr::from(v))
    }

    /// The kernel's `selftest/allowedips.c` fixed cases.
    #[test]
    fn kernel_selftest() {
        let (a, b, c, d, e, f, g, h) = ('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h');
        let mut t = AllowedIps::new();
        let mut ins = |ip, cidr, v| {
            t.insert(ip, cidr, v).unwrap();
        };
        ins(ip4(192, 168, 4, 0), 24, a);
        ins(ip4(192, 168, 4, 4), 32, b);
        ins(ip4(192, 168, 0, 0), 16, c);
        ins(ip4(192, 95, 5, 64), 27, d);
        ins(ip4(192, 95, 5, 65), 27, c);
        ins(ip6(0x2607_5300, 0x6000_6b00, 0, 0xc05f_0543), 128, d);
        ins(ip6(0x2607_5300, 0x6000_6b00, 0, 0), 64, c);
        ins(ip4(0, 0, 0, 0), 0, e);
        ins(ip6(0, 0, 0, 0), 0, e);
        ins(ip6(0, 0, 0, 0), 0, f);
        ins(ip6(0x2404_6800, 0, 0, 0), 32, g);
        ins(
            ip6(0x2404_6800, 0x4004_0800, 0xdead_beef, 0xdead_beef),
            64,
            h,
        );
        ins(
            ip6(0x2404_6800, 0x4004_0800, 0xdead_beef, 0xdead_beef),
            128,
            a,
        );
        ins(
            ip6(0x2444_6800, 0x40e4_0800, 0xdeae_beef, 0x0def_beef),
            128,
            c,
        );
        ins(ip6(0x2444_6800, 0xf0e4_0800, 0xeeae_beef, 0), 98, b);
        ins(ip4(64, 15, 112, 0), 20, g);
        ins(ip4(64, 15, 123, 211), 25, h);
        ins(ip4(10, 0, 0, 0), 25, a);
        ins(ip4(10, 0, 0, 128), 25, b);
        ins(ip4(10, 1, 0, 0), 30, a);
        ins(ip4(10, 1, 0, 4), 30, b);
        ins(ip4(10, 1, 0, 8), 29, c);
        ins(ip4(10, 1, 0, 16), 29, d);

        let cases = [
            (ip4(192, 168, 4, 20), a),
            (ip4(192, 168, 4, 0), a),
            (ip4(192, 168, 4, 4), b),
            (ip4(192, 168, 200, 182), c),
            (ip4(192, 95, 5, 68), c),
            (ip4(192, 95, 5, 96), e),
            (ip6(0x2607_5300, 0x6000_6b00, 0, 0xc05f_0543), d),
            (ip6(0x2607_5300, 0x6000_6b00, 0, 0xc02e_01ee), c),
            (ip6(0x2607_5300, 0x6000_6b01, 0, 0), f),
            (ip6(0x2404_6800, 0x4004_0806, 0, 0x1006), g),
            (ip6(0x2404_6800, 0x4004_0806, 0x1234, 0x5678), g),
            (ip6(0x2404_67ff, 0x4004_0806, 0x1234, 0x5678), f),
            (ip6(0x2404_6801, 0x4004_0806, 0x1234, 0x5678), f),
            (ip6(0x2404_6800, 0x4004_0800, 0x1234, 0x5678), h),
            (ip6(0x2404_6800, 0x4004_0800, 0, 0), h),
            (ip6(0x2404_6800, 0x4004_0800, 0x1010_1010, 0x1010_1010), h),
            (ip6(0x2404_6800, 0x4004_0800, 0xdead_beef, 0xdead_beef), a),
            (ip4(64, 15, 116, 26), g),
            (ip4(64, 15, 127, 3), g),
            (ip4(64, 15, 123, 1), g),
            (ip4(64, 15, 123, 128), h),
            (ip4(64, 15, 123, 129), h),
            (ip4(10, 0, 0, 52), a),
            (ip4(10, 0, 0, 220), b),
            (ip4(10, 1, 0, 2), a),
            (ip4(10, 1, 0, 6), b),
            (ip4(10, 1, 0, 10), c),
            (ip4(10, 1, 0, 20), d),
        ];
        for (i, (ip, want)) in cases.iter().enumerate() {
            assert_eq!(
                t.lookup(*ip),
                Some(want),
                "allowedips self-test {}: {ip}",
                i + 1
            );
        }

        for first in [1, 64, 128, 192, 255] {
            t.insert(ip4(first, 0, 0, 0), 32, a).unwrap();
        }
        t.remove_by_value(&a);
        for first in [1, 64, 128, 192, 255] {
            assert_ne!(t.lookup(ip4(first, 0, 0, 0)), Some(&a));
        }

        let mut t = AllowedIps::new();
        t.insert(ip4(192, 168, 0, 0), 16, a).unwrap();
        t.insert(ip4(192, 168, 0, 0), 24, a).unwrap();
        t.remove_by_value(&a);
        assert_eq!(t.lookup(ip4(192, 168, 0, 1)), None);
        assert!(t.is_empty());

        // Deep single-bit-different keys.
        for i in 0..128u32 {
            let k = !(1u128 << i);
            t.insert(IpAddr::V6(Ipv6Addr::from(k)), 128, a).unwrap();
        }
        assert_eq!(t.iter().len(), 128);

        let mut t = AllowedIps::new();
        t.insert(ip4(192, 95, 5, 93), 27, a).unwrap();
        t.insert(ip6(0x2607_5300, 0x6000_6b00, 0, 0xc05f_0543), 128, a)
            .unwrap();
        t.insert(ip4(10, 1, 0, 20), 29, a).unwrap();
        t.insert(
            ip6(0x2607_5300, 0x6d8a_6bf8, 0xdab1_f1df, 0xc05f_1523),
            83,
            a,
        )
        .unwrap();
        t.insert(
            ip6(0x2607_5300, 0x6d8a_6bf8, 0xdab1_f1df, 0xc05f_1523),
            21,
            a,
        )
        .unwrap();
        let mut got = t.entries_for(&a);
        got.sort();
        let mut want = vec![
            (ip4(192, 95, 5, 64), 27),
            (ip6(0x2607_5300, 0x6000_6b00, 0, 0xc05f_0543), 128),
            (ip4(10, 1, 0, 16), 29),
            (ip6(0x2607_5300, 0x6d8a_6bf8, 0xdab1_e000, 0), 83),
            (ip6(0x2607_5000, 0, 0, 0), 21),
        ];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(t.insert(ip4(1, 2, 3, 4), 33, a), Err(BadPrefix(33)));
    }

    /// Linear-scan reference ("horrible_allowedips" in the kernel selftest).
    #[derive(Default)]
    struct Naive(Vec<(u128, u8, bool, u32)>);

    impl Naive {
        fn insert(&mut self, key: u128, len: u8, v6: bool, v: u32) {
            let key = mask(key, len);
            self.0.retain(|e| !(e.0 == key && e.1 == len && e.2 == v6));
            self.0.push((key, len, v6, v));
        }
        fn lookup(&self, key: u128, v6: bool) -> Option<u32> {
            self.0
                .iter()
                .filter(|e| e.2 == v6 && mask(key, e.1) == e.0)
                .max_by_key(|e| e.1)
                .map(|e| e.3)
        }
    }

    #[test]
    fn random_against_naive() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let mut t = AllowedIps::new();
        let mut n = Naive::default();
        const PEERS: u32 = 16;
        let to_ip = |k: u128, v6: bool| {
            if v6 {
                IpAddr::V6(Ipv6Addr::from(k))
            } else {
                IpAddr::V4(Ipv4Addr::from(u32::try_from(k >> 96).unwrap()))
            }
        };
        for _ in 0..500 {
            let v6 = rng.gen_bool(0.5);
            let max = if v6 { 128 } else { 32 };
            let base: u128 = if v6 {
                rng.gen()
            } else {
                u128::from(rng.gen::<u32>()) << 96
            };
            // Also insert mutations that share a random-length prefix with base.
            for _ in 0..4 {
                let keep = rng.gen_range(0..=max);
                let noise: u128 = if v6 {
                    rng.gen()
                } else {
                    u128::from(rng.gen::<u32>()) << 96
                };
                let k = mask(base, keep) | (noise & !mask(u128::MAX, keep));
                let cidr = rng.gen_range(0..=max);
                let peer = rng.gen_range(0..PEERS);
                t.insert(to_ip(k, v6), cidr, peer).unwrap();
                n.insert(k, cidr, v6, peer);
            }
        }
        let check = |t: &AllowedIps<u32>, n: &Naive, rng: &mut StdRng| {
            for _ in 0..2000 {
                let v6 = rng.gen_bool(0.5);
                let k: u128 = if v6 {
                    rng.gen()
                } else {
                    u128::from(rng.gen::<u32>()) << 96
                };
                assert_eq!(t.lookup(to_ip(k, v6)).copied(), n.lookup(k, v6));
            }
            // Also probe exactly at stored prefixes.
            for e in &n.0 {
                assert_eq!(t.lookup(to_ip(e.0, e.2)).copied(), n.lookup(e.0, e.2));
            }
            assert_eq!(t.iter().len(), n.0.len());
        };
        check(&t, &n, &mut rng);
        // Remove some exact prefixes.
        let victims: Vec<_> = n.0.iter().step_by(7).copied().collect();
        for (k, len, v6, v) in victims {
            assert_eq!(t.remove(to_ip(k, v6), len), Some(v));
            n.0.retain(|e| !(e.0 == k && e.1 == len && e.2 == v6));
        }
        check(&t, &n, &mut rng);
        for p in 0..PEERS {
            t.remove_by_value(&p);
            n.0.retain(|e| e.3 != p);
            check(&t, &n, &mut rng);
        }
        assert!(t.is_empty());
    }
}
