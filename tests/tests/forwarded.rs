//! Forwarded sources against a provider that accepts only the tunnel's
//! address (`AllowedIPs = 100.64.0.2/32` on its side).
//!
//! ```text
//!  box 198.18.5.2 ──vbox── client ──eth0── server (vpn-ctl up, 100.64.0.1)
//!  (MTU 1500)      198.18.5.1  198.18.1.2   198.18.1.1    198.18.9.9 on lo
//!                  vpn-ctl up: 100.64.0.2, AllowedIPs 0/0 (vpn's table only)
//! ```
use std::{fs, path::PathBuf, time::Duration};

use netns_harness::{self as h, Daemon, Netns, PinRoot};

struct Tunnel<'a>(&'a Netns, String, PathBuf);

impl Drop for Tunnel<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .command(h::vpn_ctl_bin())
            .args(["down", &self.1])
            .output();
        let _ = fs::remove_file(format!("/run/vpn/{}.log", self.1));
        let _ = fs::remove_file(&self.2);
    }
}

fn up<'a>(ns: &'a Netns, iface: &str, conf: &str) -> Tunnel<'a> {
    let path = std::env::temp_dir().join(format!("{iface}.conf"));
    fs::write(&path, conf).unwrap();
    let t = Tunnel(ns, iface.to_owned(), path.clone());
    h::run(ns.command(h::vpn_ctl_bin()).arg("up").arg(&path)).unwrap();
    t
}

/// Counts what each connection sends; prints `seen ADDR BYTES`.
const SINK: &str = r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.9.9", 5001)); s.listen(4)
print("listening", flush=True)
while True:
    c, (addr, _) = s.accept(); n = 0
    while True:
        b = c.recv(1 << 16)
        if not b: break
        n += len(b)
    print("seen", addr, n, flush=True); c.close()
"#;

const SEND_50MB: &str = r#"
import socket
c = socket.create_connection(("198.18.9.9", 5001), timeout=30)
chunk = b"x" * (1 << 20)
for _ in range(50): c.sendall(chunk)
c.close(); print("sent")
"#;

const RESOLVER: &str = r#"
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("100.64.0.1", 53))
print("listening", flush=True)
while True:
    _, peer = u.recvfrom(512); u.sendto(b"tunnel-resolver", peer)
"#;

const ASK: &str = r#"
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
u.connect(("198.18.9.53", 53)); u.send(b"q"); print(u.recv(512).decode())
"#;

#[test]
fn a_container_by_source_prefix_reaches_a_provider_that_accepts_only_the_tunnel_address() {
    h::require_root();
    let h::Pair {
        a: client,
        b: server,
    } = h::Pair::new(("eth0", &["198.18.1.2/24"]), ("eth0", &["198.18.1.1/24"])).unwrap();
    let boxns = Netns::new().unwrap();
    h::veth(
        &client,
        ("vbox", &["198.18.5.1/24"]),
        &boxns,
        ("eth0", &["198.18.5.2/24"]),
    )
    .unwrap();
    boxns
        .ip(&["route", "add", "default", "via", "198.18.5.1"])
        .unwrap();
    server
        .ip(&["addr", "add", "198.18.9.9/32", "dev", "lo"])
        .unwrap();
    let (ck, sk) = (h::key_pair().unwrap(), h::key_pair().unwrap());
    let tag = std::process::id() % 100_000;
    let (civ, siv) = (format!("vf{tag}c"), format!("vf{tag}s"));
    let _s = up(
        &server,
        &siv,
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 100.64.0.1/24\nListenPort = 51820\nTable = off\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = 100.64.0.2/32\n",
            sk.0, ck.1
        ),
    );
    let _c = up(
        &client,
        &civ,
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 100.64.0.2/32\nDNS = 100.64.0.1\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = 198.18.1.1:51820\nAllowedIPs = 0.0.0.0/0\n",
            ck.0, sk.1
        ),
    );
    let pins = PinRoot::new().unwrap();
    let root = h::Cgroup::new().unwrap();
    let vpn_ctl = |args: &[&str]| {
        h::run(
            client
                .command(h::vpn_ctl_bin())
                .env("VPN_TUNNEL", &civ)
                .arg("--pin-root")
                .arg(pins.path())
                .arg("--attach-cgroup")
                .arg(root.path())
                .args(args),
        )
    };
    let forward_before = client.sysctl("net.ipv4.ip_forward").unwrap();
    let out = vpn_ctl(&["steer", "add", "src", "198.18.5.0/24"]).unwrap();
    assert!(
        out.contains("entering by vbox"),
        "the ingress is found from the route: {out}"
    );

    // Another tool deletes vpn's rule: the running tunnel daemon puts it back.
    client.ip(&["rule", "del", "priority", "10318"]).unwrap();
    let start = std::time::Instant::now();
    while !client
        .ip(&["rule", "show"])
        .unwrap()
        .contains("lookup 30318")
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the rule was not put back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut sink = Daemon::spawn(server.command("python3").args(["-c", SINK])).unwrap();
    sink.wait_for("listening", Duration::from_secs(10)).unwrap();
    let mut resolver = Daemon::spawn(server.command("python3").args(["-c", RESOLVER])).unwrap();
    resolver
        .wait_for("listening", Duration::from_secs(10))
        .unwrap();

    let sent = h::run(boxns.command("python3").args(["-c", SEND_50MB])).unwrap();
    assert_eq!(sent.trim(), "sent");
    sink.wait_for(
        &format!("seen 100.64.0.2 {}", 50 << 20),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(
        h::run(boxns.command("python3").args(["-c", ASK]))
            .unwrap()
            .trim(),
        "tunnel-resolver"
    );
    assert_eq!(
        client.sysctl("net.ipv4.ip_forward").unwrap(),
        forward_before,
        "global forwarding untouched"
    );
    assert_eq!(
        client.sysctl("net.ipv4.conf.vbox.forwarding").unwrap(),
        "1",
        "per-interface only"
    );

    let list = vpn_ctl(&["steer", "list", "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let row = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == "198.18.5.2")
        .expect("per-source row");
    assert!(row["steered_bytes"].as_u64().unwrap() >= 50 << 20, "{list}");
    assert!(v["stats"]["ingress_marked"].as_u64().unwrap() > 0, "{list}");

    // The opt-in Prometheus endpoint (loopback of the client namespace).
    let mut metrics = Daemon::spawn(
        client
            .command(h::vpn_ctl_bin())
            .env("VPN_TUNNEL", &civ)
            .arg("--pin-root")
            .arg(pins.path())
            .arg("--attach-cgroup")
            .arg(root.path())
            .args(["metrics", "--listen", "127.0.0.1:9586"]),
    )
    .unwrap();
    metrics
        .wait_for("serving metrics", Duration::from_secs(10))
        .unwrap();
    let text = h::run(client.command("python3").args([
        "-c",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9586/metrics', timeout=5).read().decode())",
    ]))
    .unwrap();
    assert!(
        text.contains(&format!("vpn_up{{tunnel=\"{civ}\"}} 1")),
        "{text}"
    );
    let tunnelled: u64 = text
        .lines()
        .find(|l| {
            l.starts_with("vpn_source_tunnelled_bytes_total") && l.contains("source=\"198.18.5.2\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(tunnelled >= 50 << 20, "{text}");
    let tx: u64 = text
        .lines()
        .find(|l| l.starts_with("vpn_peer_transmit_bytes_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(tx >= 50 << 20, "{text}");
    metrics.stop();
    let refused = client
        .command(h::vpn_ctl_bin())
        .args(["metrics", "--listen", "198.18.1.2:9586"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("loopback only"),
        "{refused:?}"
    );

    vpn_ctl(&["steer", "del", "src", "198.18.5.0/24"]).unwrap();
    assert_eq!(
        client.sysctl("net.ipv4.conf.vbox.forwarding").unwrap(),
        "0",
        "put back on del"
    );
    // Down means clean: `down --lockdown` keeps the steering, `down` removes it.
    vpn_ctl(&["steer", "add", "iface", "vbox"]).unwrap();
    vpn_ctl(&["down", "--lockdown", &civ]).unwrap();
    assert!(
        pins.path().join(&civ).exists(),
        "lockdown keeps the steering"
    );
    h::run(client.command(h::vpn_ctl_bin()).args(["up"]).arg(&_c.2)).unwrap();
    let out = vpn_ctl(&["down", &civ]).unwrap();
    assert!(out.contains("steering, guard and rules removed"), "{out}");
    assert!(!pins.path().join(&civ).exists(), "down removes the pins");
    assert!(!client.ip(&["rule", "show"]).unwrap().contains("30318"));
    let nft = h::run(client.command("nft").args(["list", "tables"])).unwrap();
    assert!(!nft.contains("vpn_"), "down removes vpn's table: {nft}");
    assert_eq!(client.sysctl("net.ipv4.conf.vbox.forwarding").unwrap(), "0");
}
