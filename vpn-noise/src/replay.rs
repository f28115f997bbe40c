//! Sliding-window replay protection for transport counters, as the kernel's
//! `counter_validate` in `receive.c` (RFC 6479 style bitmap of
//! [`COUNTER_BITS_TOTAL`] bits, one word kept spare).
//!
//! Call [`ReplayWindow::check_and_update`] only after the packet decrypted,
//! so forged packets cannot move the window.

use crate::messages::REJECT_AFTER_MESSAGES;
use crate::messages::{COUNTER_BITS_TOTAL, COUNTER_WINDOW_SIZE};

const WORD_BITS: u64 = u64::BITS as u64;
const WORDS: usize = (COUNTER_BITS_TOTAL / WORD_BITS) as usize;

/// The receive window of one session.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// One past the greatest counter accepted (0 = none yet).
    counter: u64,
    backtrack: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            counter: 0,
            backtrack: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    /// Accepts `their_counter` once; rejects repeats, ones too old, and ones
    /// at or past `REJECT_AFTER_MESSAGES`.
    pub fn check_and_update(&mut self, their_counter: u64) -> bool {
        if self.counter > REJECT_AFTER_MESSAGES || their_counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        let their = their_counter + 1;
        if COUNTER_WINDOW_SIZE + their < self.counter {
            return false;
        }
        let index = their / WORD_BITS;
        if their > self.counter {
            let index_current = self.counter / WORD_BITS;
            let top = (index - index_current).min(WORDS as u64);
            for i in 1..=top {
                self.backtrack[((i + index_current) % WORDS as u64) as usize] = 0;
            }
            self.counter = their;
        }
        let word = &mut self.backtrack[(index % WORDS as u64) as usize];
        let bit = 1u64 << (their % WORD_BITS);
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }

    /// Greatest counter accepted plus one (0 before any packet).
    #[must_use]
    pub fn next_expected(&self) -> u64 {
        self.counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's `selftest/counter.c`, case by case.
    #[test]
    fn kernel_counter_selftest() {
        let mut w = ReplayWindow::default();
        let mut n = 0u32;
        let mut t = |w: &mut ReplayWindow, c: u64, v: bool| {
            n += 1;
            assert_eq!(w.check_and_update(c), v, "nonce counter self-test {n}");
        };
        const LIM: u64 = COUNTER_WINDOW_SIZE + 1;
        const RAM: u64 = REJECT_AFTER_MESSAGES;
        /*  1 */
        t(&mut w, 0, true);
        /*  2 */
        t(&mut w, 1, true);
        /*  3 */
        t(&mut w, 1, false);
        /*  4 */
        t(&mut w, 9, true);
        /*  5 */
        t(&mut w, 8, true);
        /*  6 */
        t(&mut w, 7, true);
        /*  7 */
        t(&mut w, 7, false);
        /*  8 */
        t(&mut w, LIM, true);
        /*  9 */
        t(&mut w, LIM - 1, true);
        /* 10 */
        t(&mut w, LIM - 1, false);
        /* 11 */
        t(&mut w, LIM - 2, true);
        /* 12 */
        t(&mut w, 2, true);
        /* 13 */
        t(&mut w, 2, false);
        /* 14 */
        t(&mut w, LIM + 16, true);
        /* 15 */
        t(&mut w, 3, false);
        /* 16 */
        t(&mut w, LIM + 16, false);
        /* 17 */
        t(&mut w, LIM * 4, true);
        /* 18 */
        t(&mut w, LIM * 4 - (LIM - 1), true);
        /* 19 */
        t(&mut w, 10, false);
        /* 20 */
        t(&mut w, LIM * 4 - LIM, false);
        /* 21 */
        t(&mut w, LIM * 4 - (LIM + 1), false);
        /* 22 */
        t(&mut w, LIM * 4 - (LIM - 2), true);
        /* 23 */
        t(&mut w, LIM * 4 + 1 - LIM, false);
        /* 24 */
        t(&mut w, 0, false);
        /* 25 */
        t(&mut w, RAM, false);
        /* 26 */
        t(&mut w, RAM - 1, true);
        /* 27 */
        t(&mut w, RAM, false);
        /* 28 */
        t(&mut w, RAM - 1, false);
        /* 29 */
        t(&mut w, RAM - 2, true);
        /* 30 */
        t(&mut w, RAM + 1, false);
        /* 31 */
        t(&mut w, RAM + 2, false);
        /* 32 */
        t(&mut w, RAM - 2, false);
        /* 33 */
        t(&mut w, RAM - 3, true);
        /* 34 */
        t(&mut w, 0, false);

        let mut w = ReplayWindow::default();
        for i in 1..=COUNTER_WINDOW_SIZE {
            t(&mut w, i, true);
        }
        t(&mut w, 0, true);
        t(&mut w, 0, false);

        let mut w = ReplayWindow::default();
        for i in 2..=COUNTER_WINDOW_SIZE + 1 {
            t(&mut w, i, true);
        }
        t(&mut w, 1, true);
        t(&mut w, 0, false);

        let mut w = ReplayWindow::default();
        for i in (0..=COUNTER_WINDOW_SIZE).rev() {
            t(&mut w, i, true);
        }

        let mut w = ReplayWindow::default();
        for i in (1..=COUNTER_WINDOW_SIZE + 1).rev() {
            t(&mut w, i, true);
        }
        t(&mut w, 0, false);

        let mut w = ReplayWindow::default();
        for i in (1..=COUNTER_WINDOW_SIZE).rev() {
            t(&mut w, i, true);
        }
        t(&mut w, COUNTER_WINDOW_SIZE + 1, true);
        t(&mut w, 0, false);

        let mut w = ReplayWindow::default();
        for i in (1..=COUNTER_WINDOW_SIZE).rev() {
            t(&mut w, i, true);
        }
        t(&mut w, 0, true);
        t(&mut w, COUNTER_WINDOW_SIZE + 1, true);
    }
}
