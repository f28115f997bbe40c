//! The per-peer timer table (the protocol's timer constants, whitepaper §6,
//! are in `messages`).
//!
//! Each timer is an optional deadline. Hooks are named after the events that
//! call them, as in the kernel's `timers.c`; [`Timers::pop_expired`] yields
//! expired timers and the peer decides what to send (see `peer.rs`).

use std::time::{Duration, Instant};

use rand_core::RngCore;

use crate::messages::{
    KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX,
};

/// Which timer expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerEvent {
    /// No response to our initiation: retry or give up.
    RetransmitHandshake,
    /// We received data and have not replied: send a keepalive.
    SendKeepalive,
    /// We sent data and heard nothing back: initiate a new handshake.
    NewHandshake,
    /// No new session for `3 * REJECT_AFTER_TIME`: erase all keys.
    ZeroKeyMaterial,
    /// The configured persistent keepalive interval passed.
    PersistentKeepalive,
}

/// One peer's timers and the counters that go with them.
#[derive(Debug, Clone, Default)]
pub struct Timers {
    retransmit_handshake: Option<Instant>,
    send_keepalive: Option<Instant>,
    new_handshake: Option<Instant>,
    zero_key_material: Option<Instant>,
    persistent_keepalive: Option<Instant>,
    /// Retries of the current handshake so far.
    pub handshake_attempts: u32,
    need_another_keepalive: bool,
    /// A handshake was started because the session is about to expire.
    pub sent_lastminute_handshake: bool,
    /// Persistent keepalive interval, if enabled.
    pub persistent_keepalive_interval: Option<Duration>,
}

fn jitter(rng: &mut impl RngCore) -> Duration {
    let max = u32::try_from(REKEY_TIMEOUT_JITTER_MAX.as_millis()).unwrap_or(u32::MAX);
    Duration::from_millis(u64::from(rng.next_u32() % max))
}

impl Timers {
    /// The earliest pending deadline.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.retransmit_handshake,
            self.send_keepalive,
            self.new_handshake,
            self.zero_key_material,
            self.persistent_keepalive,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Removes and returns one timer whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<TimerEvent> {
        let slots = [
            (&mut self.zero_key_material, TimerEvent::ZeroKeyMaterial),
            (
                &mut self.retransmit_handshake,
                TimerEvent::RetransmitHandshake,
            ),
            (&mut self.new_handshake, TimerEvent::NewHandshake),
            (&mut self.send_keepalive, TimerEvent::SendKeepalive),
            (
                &mut self.persistent_keepalive,
                TimerEvent::PersistentKeepalive,
            ),
        ];
        for (slot, ev) in slots {
            if slot.is_some_and(|d| d <= now) {
                *slot = None;
                return Some(ev);
            }
        }
        None
    }

    /// After the keepalive timer fired: re-arm it if more data came meanwhile.
    pub fn keepalive_sent_by_timer(&mut self, now: Instant) {
        if self.need_another_keepalive {
            self.need_another_keepalive = false;
            self.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
        }
    }

    /// Call after an authenticated data packet is sent.
    pub fn data_sent(&mut self, now: Instant, rng: &mut impl RngCore) {
        if self.new_handshake.is_none() {
            self.new_handshake = Some(now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter(rng));
        }
    }

    /// Call after an authenticated data packet is received.
    pub fn data_received(&mut self, now: Instant) {
        if self.send_keepalive.is_none() {
            self.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
        } else {
            self.need_another_keepalive = true;
        }
    }

    /// Call after any type of authenticated packet is sent: keepalive, data,
    /// or handshake.
    pub fn any_authenticated_packet_sent(&mut self) {
        self.send_keepalive = None;
    }

    /// Call after any type of authenticated packet is received: keepalive,
    /// data, or handshake.
    pub fn any_authenticated_packet_received(&mut self) {
        self.new_handshake = None;
    }

    /// Call after a handshake initiation is sent.
    pub fn handshake_initiated(&mut self, now: Instant, rng: &mut impl RngCore) {
        self.retransmit_handshake = Some(now + REKEY_TIMEOUT + jitter(rng));
    }

    /// Call after a handshake response is consumed, or after the first data
    /// packet confirms a session we responded to.
    pub fn handshake_complete(&mut self) {
        self.retransmit_handshake = None;
        self.handshake_attempts = 0;
        self.sent_lastminute_handshake = false;
    }

    /// Call after a session key is derived (either side).
    pub fn session_derived(&mut self, now: Instant) {
        self.zero_key_material = Some(now + REJECT_AFTER_TIME * 3);
    }

    /// Call after any authenticated packet is sent or received: re-arms the
    /// persistent keepalive.
    pub fn any_authenticated_packet_traversal(&mut self, now: Instant) {
        if let Some(i) = self.persistent_keepalive_interval {
            self.persistent_keepalive = Some(now + i);
        }
    }

    /// Call when retries are exhausted: stop keepalives and schedule key erasure.
    pub fn handshake_given_up(&mut self, now: Instant) {
        self.send_keepalive = None;
        if self.zero_key_material.is_none() {
            self.zero_key_material = Some(now + REJECT_AFTER_TIME * 3);
        }
    }

    /// Sets the persistent keepalive interval (`None` or zero disables it).
    pub fn set_persistent_keepalive(&mut self, interval: Option<Duration>, now: Instant) {
        self.persistent_keepalive_interval = interval.filter(|d| !d.is_zero());
        self.persistent_keepalive = self.persistent_keepalive_interval.map(|_| now);
    }

    /// Cancels every timer (peer removed or keys erased).
    pub fn stop_all(&mut self) {
        let interval = self.persistent_keepalive_interval;
        *self = Self {
            persistent_keepalive_interval: interval,
            ..Self::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{
        MAX_TIMER_HANDSHAKES, REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES, REKEY_ATTEMPT_TIME,
    };
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn constants() {
        assert_eq!(
            MAX_TIMER_HANDSHAKES as u64,
            REKEY_ATTEMPT_TIME.as_secs() / REKEY_TIMEOUT.as_secs()
        );
        const { assert!(REJECT_AFTER_MESSAGES > REKEY_AFTER_MESSAGES) };
    }

    #[test]
    fn hooks_arm_and_pop() {
        let mut rng = StdRng::seed_from_u64(0);
        let t0 = Instant::now();
        let mut t = Timers::default();
        assert_eq!(t.next_deadline(), None);
        t.data_received(t0);
        assert_eq!(t.next_deadline(), Some(t0 + KEEPALIVE_TIMEOUT));
        t.data_received(t0 + Duration::from_secs(1));
        assert_eq!(t.pop_expired(t0 + Duration::from_secs(9)), None);
        assert_eq!(
            t.pop_expired(t0 + KEEPALIVE_TIMEOUT),
            Some(TimerEvent::SendKeepalive)
        );
        t.keepalive_sent_by_timer(t0 + KEEPALIVE_TIMEOUT);
        assert_eq!(t.next_deadline(), Some(t0 + KEEPALIVE_TIMEOUT * 2));
        t.any_authenticated_packet_sent();
        assert_eq!(t.next_deadline(), None);
        t.handshake_initiated(t0, &mut rng);
        let d = t.next_deadline().unwrap();
        assert!(d >= t0 + REKEY_TIMEOUT && d < t0 + REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX);
        t.handshake_complete();
        assert_eq!(t.next_deadline(), None);
        t.set_persistent_keepalive(Some(Duration::from_secs(25)), t0);
        assert_eq!(t.pop_expired(t0), Some(TimerEvent::PersistentKeepalive));
        t.any_authenticated_packet_traversal(t0);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(25)));
    }
}
