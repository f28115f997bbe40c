//! Tunnel commands: `up`, `down`, `show`, `genkey`, `pubkey`, `genpsk`.
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use rand_core::OsRng;
use serde_json::json;
use vpn_ctl::{
    keys::{PresharedKey, PrivateKey},
    tunnel::{control, daemon},
    uapi::{self, DeviceSnapshot},
};

#[derive(Subcommand)]
pub enum TunnelCmd {
    /// Bring up a tunnel from a wg-quick file (interface named after it).
    ///
    /// The interface is named after the file (wg0.conf → wg0). Peer routes
    /// go to table 30318 (`Table = auto`), the given table, or nowhere
    /// (`off`). Runs as a daemon logging to /run/vpn/IFACE.log, pid in
    /// /run/vpn/IFACE.pid, unless --foreground.
    Up {
        /// The wg-quick configuration file.
        file: PathBuf,
        /// Stay attached and log to stderr.
        #[arg(long)]
        foreground: bool,
        /// Put the tunnel interface inside this network namespace, while
        /// the encrypted UDP socket stays here: a name (`ip netns`; created
        /// with lo up when missing, deleted again by `down`), a path such as
        /// /proc/PID/ns/net, or pid:PID. Address, MTU, routes are set in
        /// there; DNS= goes to /etc/netns/NAME/resolv.conf.
        #[arg(long, value_name = "TARGET")]
        netns: Option<String>,
    },
    /// Stop a tunnel: its daemon, routes, sockets and interface.
    Down {
        /// Interface name or the config file it was started from.
        target: String,
        /// Keep the tunnel's steering, guard and rules (steered traffic stays
        /// blocked until the tunnel is up again); without it, `down` removes
        /// them too.
        #[arg(long)]
        lockdown: bool,
    },
    /// Show tunnels (peers, endpoints, handshakes, transfer) via the
    /// WireGuard UAPI socket; works for any userspace WireGuard.
    Show {
        /// Interface [default: every interface with a UAPI socket].
        iface: Option<String>,
        /// Print JSON (adds vpn's own status: addresses, DNS, drop counters).
        #[arg(long)]
        json: bool,
    },
    /// Print a new private key (base64), as `wg genkey`.
    Genkey,
    /// Read a private key on stdin, print its public key, as `wg pubkey`.
    Pubkey,
    /// Print a new preshared key (base64), as `wg genpsk`.
    Genpsk,
}

pub fn run(cmd: &TunnelCmd) -> Result<()> {
    match cmd {
        TunnelCmd::Up {
            file,
            foreground,
            netns,
        } => up(file, *foreground, netns.as_deref()),
        TunnelCmd::Down { target, .. } => {
            println!("{}", daemon::down(target)?);
            Ok(())
        }
        TunnelCmd::Show { iface, json } => show(iface.as_deref(), *json),
        TunnelCmd::Genkey => {
            println!("{}", &*PrivateKey::generate(&mut OsRng).to_base64());
            Ok(())
        }
        TunnelCmd::Genpsk => {
            println!("{}", &*PresharedKey::generate(&mut OsRng).to_base64());
            Ok(())
        }
        TunnelCmd::Pubkey => {
            let mut s = zeroize::Zeroizing::new(String::new());
            std::io::stdin()
                .take(4096)
                .read_to_string(&mut s)
                .context("reading the private key from stdin")?;
            let key = PrivateKey::from_base64(s.trim())
                .map_err(|_| anyhow::anyhow!("Key is not the correct length or format"))?;
            println!("{}", key.public_key().to_base64());
            Ok(())
        }
    }
}

fn up(file: &Path, foreground: bool, netns: Option<&str>) -> Result<()> {
    let mode = daemon::Mode::Config {
        path: file.to_owned(),
        netns: netns
            .map(vpn_ctl::netlink::netns::Target::parse)
            .transpose()?,
    };
    if foreground {
        daemon::run_foreground(&mode)?;
        return Ok(());
    }
    let (pid, log) = daemon::up_background(&mode, daemon::DaemonOutput::LogFile)?;
    let iface = mode.interface()?;
    let place = netns.map_or(String::new(), |n| format!(" in network namespace {n}"));
    println!(
        "{iface} is up{place} (daemon pid {pid}, log {}, UAPI {})",
        log.display(),
        uapi::socket_path(&iface).display()
    );
    Ok(())
}

/// `get=1` over the UAPI socket of `iface`.
pub fn uapi_get(iface: &str) -> Result<DeviceSnapshot> {
    let path = uapi::socket_path(iface);
    let mut s = UnixStream::connect(&path)
        .with_context(|| format!("{iface} is not up (cannot connect to {})", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"get=1\n\n")?;
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    // The reply ends with "errno=N\n\n"; the server may keep the
    // connection open.
    while !(text.contains("errno=") && text.ends_with("\n\n")) {
        let n = s.read(&mut buf).context("reading the UAPI reply")?;
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let body = text.trim_end_matches('\n');
    Ok(uapi::parse_get_response(body)?)
}

fn interfaces() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(uapi::SOCKET_DIR)
        .map(|d| {
            d.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".sock").map(str::to_owned)
            })
            .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn ago(t: Duration) -> Option<u64> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    Some(now.saturating_sub(t).as_secs())
}

fn human_ago(secs: u64) -> String {
    let parts = [
        (secs / 86_400, "day"),
        (secs / 3600 % 24, "hour"),
        (secs / 60 % 60, "minute"),
        (secs % 60, "second"),
    ];
    let mut out: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n} {u}{}", if *n == 1 { "" } else { "s" }))
        .collect();
    if out.is_empty() {
        out.push("0 seconds".into());
    }
    format!("{} ago", out.join(", "))
}

fn bytes(n: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let f = n as f64;
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.2} KiB", f / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.2} MiB", f / 1_048_576.0),
        _ => format!("{:.2} GiB", f / 1_073_741_824.0),
    }
}

fn snapshot_json(iface: &str, s: &DeviceSnapshot) -> serde_json::Value {
    let status = control::query(&daemon::ctl_path(iface)).ok();
    let peers: Vec<_> = s
        .peers
        .iter()
        .map(|p| {
            json!({
                "public_key": p.public_key.to_base64(),
                "preshared_key": p.preshared_key.is_some(),
                "endpoint": p.endpoint.map(|e| e.to_string()),
                "allowed_ips": p.allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "latest_handshake": p.last_handshake.map(|d| d.as_secs()),
                "latest_handshake_seconds_ago": p.last_handshake.and_then(ago),
                "rx_bytes": p.rx_bytes,
                "tx_bytes": p.tx_bytes,
                "persistent_keepalive": (p.persistent_keepalive_interval != 0)
                    .then_some(p.persistent_keepalive_interval),
            })
        })
        .collect();
    json!({
        "interface": iface,
        "public_key": s.private_key.as_ref().map(|k| k.public_key().to_base64()),
        "listen_port": s.listen_port,
        "fwmark": (s.fwmark != 0).then_some(s.fwmark),
        "peers": peers,
        "vpn": status,
    })
}

fn print_human(iface: &str, s: &DeviceSnapshot) {
    println!("interface: {iface}");
    if let Some(k) = &s.private_key {
        println!("  public key: {}", k.public_key().to_base64());
        println!("  private key: (hidden)");
    }
    if s.listen_port != 0 {
        println!("  listening port: {}", s.listen_port);
    }
    if s.fwmark != 0 {
        println!("  fwmark: {:#x}", s.fwmark);
    }
    if let Ok(st) = control::query(&daemon::ctl_path(iface)) {
        if let Some(ns) = &st.info.netns {
            println!("  network namespace: {ns}");
        }
        if !st.info.addresses.is_empty() {
            println!("  addresses: {}", st.info.addresses.join(", "));
        }
        if !st.info.dns.is_empty() {
            println!("  dns: {}", st.info.dns.join(", "));
        }
        let dropped: u64 = st.drops.values().sum();
        if dropped > 0 {
            let parts: Vec<String> = st
                .drops
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            println!("  dropped: {}", parts.join(", "));
        }
    }
    for p in &s.peers {
        println!();
        println!("peer: {}", p.public_key.to_base64());
        if p.preshared_key.is_some() {
            println!("  preshared key: (hidden)");
        }
        if let Some(e) = p.endpoint {
            println!("  endpoint: {e}");
        }
        let ips: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
        println!(
            "  allowed ips: {}",
            if ips.is_empty() {
                "(none)".to_owned()
            } else {
                ips.join(", ")
            }
        );
        if let Some(secs) = p.last_handshake.and_then(ago) {
            println!("  latest handshake: {}", human_ago(secs));
        }
        if p.rx_bytes != 0 || p.tx_bytes != 0 {
            println!(
                "  transfer: {} received, {} sent",
                bytes(p.rx_bytes),
                bytes(p.tx_bytes)
            );
        }
        if p.persistent_keepalive_interval != 0 {
            println!(
                "  persistent keepalive: every {} seconds",
                p.persistent_keepalive_interval
            );
        }
    }
}

fn show(iface: Option<&str>, as_json: bool) -> Result<()> {
    let list = match iface {
        Some(i) => vec![i.to_owned()],
        None => interfaces(),
    };
    if iface.is_none() && list.is_empty() && !as_json {
        bail!(
            "no interfaces are up (no UAPI sockets in {})",
            uapi::SOCKET_DIR
        );
    }
    let mut values = Vec::new();
    for (n, i) in list.iter().enumerate() {
        let snap = match uapi_get(i) {
            Ok(s) => s,
            Err(e) if iface.is_none() => {
                log::debug!("{i}: {e:#}");
                continue;
            }
            Err(e) => return Err(e),
        };
        if as_json {
            values.push(snapshot_json(i, &snap));
        } else {
            if n > 0 {
                println!();
            }
            print_human(i, &snap);
        }
    }
    if as_json {
        let v = if iface.is_some() {
            values.pop().unwrap_or_default()
        } else {
            serde_json::Value::Array(values)
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_formats_match_wg() {
        assert_eq!(human_ago(0), "0 seconds ago");
        assert_eq!(human_ago(1), "1 second ago");
        assert_eq!(human_ago(3725), "1 hour, 2 minutes, 5 seconds ago");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2048), "2.00 KiB");
    }
}
