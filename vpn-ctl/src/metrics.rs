//! Prometheus text exposition of vpn's counters: per peer (from the
//! tunnel's UAPI snapshot) and per steered source (from the pinned maps).
//! Names follow Prometheus conventions: `vpn_` prefix, base units,
//! `_total` for counters, labels for the peer and the source.
use std::fmt::Write as _;

use crate::uapi::DeviceSnapshot;

/// One counter of the steering side: name (without prefix/suffix), help.
pub struct Counter<'a> {
    pub name: &'a str,
    pub value: u64,
}

/// One steered source's counters.
pub struct SourceRow<'a> {
    pub source: &'a str,
    pub tunnelled_packets: u64,
    pub tunnelled_bytes: u64,
    pub blocked_packets: u64,
    pub blocked_bytes: u64,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders everything known of one tunnel.
#[must_use]
pub fn render(
    tunnel: &str,
    snapshot: Option<&DeviceSnapshot>,
    counters: &[Counter<'_>],
    sources: &[SourceRow<'_>],
) -> String {
    let t = escape(tunnel);
    let mut out = String::new();
    family(
        &mut out,
        "vpn_up",
        "gauge",
        "Whether the tunnel's daemon answers (1) or not (0).",
    );
    let _ = writeln!(
        out,
        "vpn_up{{tunnel=\"{t}\"}} {}",
        u8::from(snapshot.is_some())
    );
    if let Some(snap) = snapshot {
        let peers: Vec<(String, &crate::uapi::PeerSnapshot)> = snap
            .peers
            .iter()
            .map(|p| (escape(&p.public_key.to_base64()), p))
            .collect();
        family(
            &mut out,
            "vpn_peer_receive_bytes_total",
            "counter",
            "Bytes received from the peer.",
        );
        for (k, p) in &peers {
            let _ = writeln!(
                out,
                "vpn_peer_receive_bytes_total{{tunnel=\"{t}\",peer=\"{k}\"}} {}",
                p.rx_bytes
            );
        }
        family(
            &mut out,
            "vpn_peer_transmit_bytes_total",
            "counter",
            "Bytes sent to the peer.",
        );
        for (k, p) in &peers {
            let _ = writeln!(
                out,
                "vpn_peer_transmit_bytes_total{{tunnel=\"{t}\",peer=\"{k}\"}} {}",
                p.tx_bytes
            );
        }
        family(
            &mut out,
            "vpn_peer_last_handshake_timestamp_seconds",
            "gauge",
            "Unix time of the latest handshake with the peer; 0: never.",
        );
        for (k, p) in &peers {
            let ts = p.last_handshake.map_or(0.0, |d| d.as_secs_f64());
            let _ = writeln!(
                out,
                "vpn_peer_last_handshake_timestamp_seconds{{tunnel=\"{t}\",peer=\"{k}\"}} {ts}"
            );
        }
    }
    for c in counters {
        let name = format!("vpn_{}_total", c.name);
        family(
            &mut out,
            &name,
            "counter",
            &format!("vpn steering counter {}.", c.name),
        );
        let _ = writeln!(out, "{name}{{tunnel=\"{t}\"}} {}", c.value);
    }
    if !sources.is_empty() {
        for (name, help, get) in [
            (
                "vpn_source_tunnelled_packets_total",
                "Forwarded packets of the source marked for the tunnel.",
                0,
            ),
            (
                "vpn_source_tunnelled_bytes_total",
                "Forwarded bytes of the source marked for the tunnel.",
                1,
            ),
            (
                "vpn_source_blocked_packets_total",
                "Plaintext packets of the source dropped by the uplink guard.",
                2,
            ),
            (
                "vpn_source_blocked_bytes_total",
                "Plaintext bytes of the source dropped by the uplink guard.",
                3,
            ),
        ] {
            family(&mut out, name, "counter", help);
            for s in sources {
                let v = [
                    s.tunnelled_packets,
                    s.tunnelled_bytes,
                    s.blocked_packets,
                    s.blocked_bytes,
                ][get];
                let _ = writeln!(
                    out,
                    "{name}{{tunnel=\"{t}\",source=\"{}\"}} {v}",
                    escape(s.source)
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_is_well_formed() {
        let text = render(
            "wg0",
            None,
            &[Counter {
                name: "guard_dropped",
                value: 3,
            }],
            &[SourceRow {
                source: "cgroup 42",
                tunnelled_packets: 1,
                tunnelled_bytes: 2,
                blocked_packets: 3,
                blocked_bytes: 4,
            }],
        );
        assert!(text.contains("vpn_up{tunnel=\"wg0\"} 0\n"));
        assert!(text.contains(
            "# TYPE vpn_guard_dropped_total counter\nvpn_guard_dropped_total{tunnel=\"wg0\"} 3\n"
        ));
        assert!(text
            .contains("vpn_source_blocked_bytes_total{tunnel=\"wg0\",source=\"cgroup 42\"} 4\n"));
        // Every sample line: name{labels} value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(
                series.starts_with("vpn_") && value.parse::<f64>().is_ok(),
                "{line}"
            );
        }
    }
}
