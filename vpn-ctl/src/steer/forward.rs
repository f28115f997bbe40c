//! Forwarded sources (a container or VM behind a veth or bridge, steered by
//! `iface` or `src`): what the kernel needs besides the ingress classifier's
//! mark for their packets to reach a real provider and come back.
//!
//! - **Forwarding, per interface only.** `net.ipv4.conf.<if>.forwarding` on
//!   the steered interface and on the tunnel; the global `ip_forward` is
//!   never touched. Previous values are recorded and put back.
//! - **Source translation.** A provider accepts only the tunnel's address
//!   (`AllowedIPs = <tunnel address>/32` on its side), so forwarded packets
//!   leaving by the tunnel are masqueraded to it and conntrack sends replies
//!   back to the right container. `--keep-source` skips it for a server that
//!   routes the container's subnet.
//! - **MSS clamping** on the tunnel (`rt mtu`), so TCP at full size from an
//!   MTU 1500 container does not stall on the tunnel's 1420.
//! - **DNS**: the sources' queries to port 53 go to the tunnel's resolver.
//!
//! All of it lives in vpn's own nftables table `inet vpn_<tunnel>`, rebuilt
//! from the recorded state on every change and deleted by `clear`; no other
//! table, chain or rule is touched. The state is a small file under
//! /run/vpn/<tunnel>/.
use std::{
    fmt::Write as _,
    fs,
    io::{self, Write as _},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde::{Deserialize, Serialize};

use crate::io_error;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("nftables refused vpn's table ({0}); is the nft binary installed (apt install nftables) and the kernel built with nf_tables?")]
    Nft(String),
    #[error("running nft (apt install nftables)")]
    NftMissing(#[source] io::Error),
    #[error(transparent)]
    Io(#[from] io_error::PathError),
    #[error("reading {path}: {message}")]
    State { path: PathBuf, message: String },
}

/// One forwarded source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    Iface(String),
    Prefix(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub source: Source,
    /// The interface its packets enter by (where the classifier sits).
    pub ingress: String,
    /// Do not translate to the tunnel's address.
    pub keep_source: bool,
    /// Included (true) or excluded.
    pub include: bool,
}

/// Recorded state: the sources, and the forwarding values vpn changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub entries: Vec<Entry>,
    /// (interface, previous `forwarding` value) for each interface vpn set.
    pub forwarding: Vec<(String, String)>,
}

fn state_path(tunnel: &str) -> PathBuf {
    Path::new("/run/vpn").join(tunnel).join("forward.json")
}

impl State {
    pub fn load(tunnel: &str) -> Result<Self, ForwardError> {
        let path = state_path(tunnel);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| ForwardError::State {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(io_error::at("reading", &path)(e).into()),
        }
    }

    pub fn save(&self, tunnel: &str) -> Result<(), ForwardError> {
        let path = state_path(tunnel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_error::at("creating", dir))?;
        }
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        fs::write(&path, text).map_err(io_error::at("writing", &path))?;
        Ok(())
    }
}

fn table(tunnel: &str) -> String {
    // nft identifiers: letters, digits, underscore.
    let safe: String = tunnel
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("vpn_{safe}")
}

/// The nftables script for a tunnel's forwarded sources (deletes and
/// recreates vpn's table, atomically: nft applies a script as one batch).
#[must_use]
pub fn ruleset(tunnel: &str, state: &State, resolver: Option<Ipv4Addr>) -> String {
    let t = table(tunnel);
    let mut s = format!("table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n");
    let matches: Vec<(String, &Entry)> = state
        .entries
        .iter()
        .filter(|e| e.include)
        .map(|e| {
            let m = match &e.source {
                Source::Iface(i) => format!("iifname \"{i}\""),
                Source::Prefix(p) if p.contains(':') => format!("ip6 saddr {p}"),
                Source::Prefix(p) => format!("ip saddr {p}"),
            };
            (m, e)
        })
        .collect();
    s.push_str(
        "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n",
    );
    if let Some(r) = resolver {
        for (m, _) in &matches {
            let _ = writeln!(
                s,
                "    {m} meta l4proto {{ udp, tcp }} th dport 53 dnat ip to {r}"
            );
        }
    }
    s.push_str("  }\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n");
    for (m, e) in &matches {
        if !e.keep_source {
            let _ = writeln!(s, "    oifname \"{tunnel}\" {m} masquerade");
        }
    }
    s.push_str(
        "  }\n  chain forward {\n    type filter hook forward priority mangle; policy accept;\n",
    );
    let _ = writeln!(
        s,
        "    oifname \"{tunnel}\" tcp flags syn tcp option maxseg size set rt mtu"
    );
    let _ = writeln!(
        s,
        "    iifname \"{tunnel}\" tcp flags syn tcp option maxseg size set rt mtu"
    );
    s.push_str("  }\n}\n");
    s
}

fn nft(script: &str) -> Result<(), ForwardError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(ForwardError::NftMissing)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(ForwardError::NftMissing)?;
    }
    let out = child.wait_with_output().map_err(ForwardError::NftMissing)?;
    if !out.status.success() {
        return Err(ForwardError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

fn forwarding_path(iface: &str) -> PathBuf {
    Path::new("/proc/sys/net/ipv4/conf")
        .join(iface)
        .join("forwarding")
}

/// Turns forwarding on for one interface (recording its old value once).
fn enable_forwarding(state: &mut State, iface: &str) -> Result<(), ForwardError> {
    let path = forwarding_path(iface);
    if !path.exists() {
        return Ok(()); // not there (yet): the tunnel is set when it comes up
    }
    if !state.forwarding.iter().any(|(i, _)| i == iface) {
        let old = fs::read_to_string(&path)
            .map_err(io_error::at("reading", &path))?
            .trim()
            .to_owned();
        state.forwarding.push((iface.to_owned(), old));
    }
    fs::write(&path, "1").map_err(io_error::at("writing", &path))?;
    Ok(())
}

/// Applies the state: forwarding on the sources' interfaces and the tunnel,
/// and vpn's nftables table.
pub fn apply(
    tunnel: &str,
    state: &mut State,
    resolver: Option<Ipv4Addr>,
) -> Result<(), ForwardError> {
    let mut needed: Vec<String> = state
        .entries
        .iter()
        .filter(|e| e.include)
        .map(|e| e.ingress.clone())
        .collect();
    if !needed.is_empty() {
        needed.push(tunnel.to_owned());
    }
    // Put back what no source needs any more.
    let (keep, restore): (Vec<_>, Vec<_>) = state
        .forwarding
        .drain(..)
        .partition(|(i, _)| needed.contains(i));
    state.forwarding = keep;
    for (iface, old) in restore {
        let path = forwarding_path(&iface);
        if path.exists() {
            fs::write(&path, old).map_err(io_error::at("writing", &path))?;
        }
    }
    for i in needed {
        enable_forwarding(state, &i)?;
    }
    if state.entries.is_empty() {
        // The last source went: no table, no state.
        let t = table(tunnel);
        nft(&format!("table inet {t}\ndelete table inet {t}\n"))?;
        return forget(tunnel);
    }
    nft(&ruleset(tunnel, state, resolver))?;
    state.save(tunnel)
}

fn forget(tunnel: &str) -> Result<(), ForwardError> {
    let path = state_path(tunnel);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error::at("removing", &path)(e).into()),
    }
    let _ = fs::remove_dir(Path::new("/run/vpn").join(tunnel));
    Ok(())
}

/// Removes vpn's table, puts forwarding values back and forgets the state.
pub fn remove(tunnel: &str) -> Result<(), ForwardError> {
    let state = State::load(tunnel)?;
    if state == State::default() {
        return Ok(()); // never used: no table, nothing changed
    }
    let t = table(tunnel);
    // Deleting an absent table is an error in nft; declare it first.
    nft(&format!("table inet {t}\ndelete table inet {t}\n"))?;
    for (iface, old) in &state.forwarding {
        let path = forwarding_path(iface);
        if path.exists() {
            let _ = fs::write(&path, old);
        }
    }
    forget(tunnel)
}

/// The tunnel's IPv4 resolver from the steering's tunnel info.
#[must_use]
pub fn resolver_of(dns4: [u8; 4]) -> Option<Ipv4Addr> {
    (dns4 != [0; 4]).then(|| Ipv4Addr::from(dns4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_masquerades_clamps_and_redirects_dns() {
        let state = State {
            entries: vec![
                Entry {
                    source: Source::Iface("ve-box".into()),
                    ingress: "ve-box".into(),
                    keep_source: false,
                    include: true,
                },
                Entry {
                    source: Source::Prefix("198.18.7.0/24".into()),
                    ingress: "br0".into(),
                    keep_source: true,
                    include: true,
                },
                Entry {
                    source: Source::Prefix("198.18.8.0/24".into()),
                    ingress: "br0".into(),
                    keep_source: false,
                    include: false,
                },
            ],
            forwarding: vec![],
        };
        let r = ruleset("wg-0", &state, Some(Ipv4Addr::new(100, 64, 0, 1)));
        assert!(
            r.starts_with("table inet vpn_wg_0\ndelete table inet vpn_wg_0\n"),
            "{r}"
        );
        assert!(
            r.contains("oifname \"wg-0\" iifname \"ve-box\" masquerade"),
            "{r}"
        );
        assert!(
            !r.contains("ip saddr 198.18.7.0/24 masquerade"),
            "keep-source: {r}"
        );
        assert!(
            !r.contains("198.18.8.0"),
            "excluded sources get nothing: {r}"
        );
        assert!(r.contains(
            "iifname \"ve-box\" meta l4proto { udp, tcp } th dport 53 dnat ip to 100.64.0.1"
        ));
        assert!(r.contains(
            "ip saddr 198.18.7.0/24 meta l4proto { udp, tcp } th dport 53 dnat ip to 100.64.0.1"
        ));
        assert!(r.contains("oifname \"wg-0\" tcp flags syn tcp option maxseg size set rt mtu"));
    }
}
