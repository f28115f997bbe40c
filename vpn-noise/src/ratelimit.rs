//! Per-source token-bucket limiter for handshake messages under load, as the
//! kernel's `ratelimiter.c`: 20 packets per second with a burst of 5, keyed
//! by IPv4 address or IPv6 /64.

use crate::messages::{GC_AGE, MAX_ENTRIES, PACKETS_BURSTABLE, PACKETS_PER_SECOND};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

const PACKET_COST: u64 = 1_000_000_000 / PACKETS_PER_SECOND;
const TOKEN_MAX: u64 = PACKET_COST * PACKETS_BURSTABLE;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u64,
    last: Instant,
}

/// Token buckets keyed by source.
#[derive(Debug, Default)]
pub struct RateLimiter {
    table: HashMap<u128, Bucket>,
}

fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        // Tag v6 so it never collides with a v4 key; keep the /64.
        IpAddr::V6(v) => (u128::from(v) & !((1u128 << 64) - 1)) | 1,
    }
}

impl RateLimiter {
    /// Whether one more packet from `ip` is allowed now.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let k = key(ip);
        if let Some(b) = self.table.get_mut(&k) {
            let elapsed =
                u64::try_from(now.saturating_duration_since(b.last).as_nanos()).unwrap_or(u64::MAX);
            b.tokens = b.tokens.saturating_add(elapsed).min(TOKEN_MAX);
            b.last = now;
            if b.tokens >= PACKET_COST {
                b.tokens -= PACKET_COST;
                return true;
            }
            return false;
        }
        if self.table.len() >= MAX_ENTRIES {
            self.gc(now);
            if self.table.len() >= MAX_ENTRIES {
                return false;
            }
        }
        self.table.insert(
            k,
            Bucket {
                tokens: TOKEN_MAX - PACKET_COST,
                last: now,
            },
        );
        true
    }

    /// Forgets sources idle for [`GC_AGE`].
    pub fn gc(&mut self, now: Instant) {
        self.table
            .retain(|_, b| now.saturating_duration_since(b.last) < GC_AGE);
    }

    /// Number of tracked sources.
    #[must_use]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no source is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let mut r = RateLimiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        for _ in 0..PACKETS_BURSTABLE {
            assert!(r.allow(a, t0));
        }
        assert!(!r.allow(a, t0));
        assert!(r.allow(b, t0), "sources are independent");
        assert!(!r.allow(a, t0 + Duration::from_millis(49)));
        assert!(r.allow(a, t0 + Duration::from_millis(50)));
        // v6 in the same /64 share a bucket.
        let c: IpAddr = "fd00::1".parse().unwrap();
        let d: IpAddr = "fd00::2".parse().unwrap();
        for _ in 0..PACKETS_BURSTABLE {
            assert!(r.allow(c, t0));
        }
        assert!(!r.allow(d, t0));
        r.gc(t0 + Duration::from_secs(2));
        assert!(r.is_empty());
    }
}
