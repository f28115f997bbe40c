//! The engine's timers on tokio: handshake retries, keepalives, rekeys and
//! session expiry run from [`Engine::handle_timeout`]; the task sleeps until
//! [`Engine::poll_timeout`] (at most [`MAX_SLEEP`], so a deadline added by
//! the data path or the UAPI is picked up soon) and sends what the engine
//! wants sent.
//!
//! [`Engine::handle_timeout`]: vpn_noise::Engine::handle_timeout
//! [`Engine::poll_timeout`]: vpn_noise::Engine::poll_timeout

use std::{
    io,
    time::{Duration, Instant, SystemTime},
};

use super::udp::SendBatch;
use super::{lock, Counters, Shared};

/// The longest the task sleeps between looks at the engine.
pub const MAX_SLEEP: Duration = Duration::from_millis(100);
/// How often the wall clock is re-anchored (suspend, clock steps).
const WALL_REANCHOR: Duration = Duration::from_secs(10);

/// Runs until the future is dropped.
pub async fn run(device: Shared) {
    let mut out = vec![0u8; 65_536 + 64];
    let mut v4 = SendBatch::new(64, 16 * 1024);
    let mut v6 = SendBatch::new(64, 16 * 1024);
    let mut last_anchor = Instant::now();
    loop {
        let now = Instant::now();
        let (deadline, sockets, counters) = {
            let mut d = lock(&device);
            if now.duration_since(last_anchor) >= WALL_REANCHOR {
                d.engine.set_wall_clock(now, SystemTime::now());
                last_anchor = now;
            }
            d.engine.handle_timeout(now);
            while let Some(t) = d.engine.poll_transmit(&mut out, now) {
                let b = if t.to.is_ipv4() { &mut v4 } else { &mut v6 };
                if t.len > b.slot_len() || !b.push(&out[..t.len], t.to) {
                    Counters::bump(&d.counters.udp_send_errors);
                }
            }
            (d.engine.poll_timeout(), d.sockets(), d.counters.clone())
        };
        for (b, sock) in [(&mut v4, Some(&sockets.v4)), (&mut v6, sockets.v6.as_ref())] {
            while !b.is_empty() {
                let Some(sock) = sock else {
                    b.clear();
                    break;
                };
                match sock.send_batch(b).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::debug!("UDP send (timers): {e}");
                        Counters::bump(&counters.udp_send_errors);
                    }
                }
            }
        }
        let cap = Instant::now() + MAX_SLEEP;
        let until = deadline.map_or(cap, |d| d.min(cap));
        tokio::time::sleep_until(until.into()).await;
    }
}
