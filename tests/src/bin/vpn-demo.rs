//! `cargo xtask run`: the self-contained demo, in network namespaces only.
//!
//! ```text
//!   client ──eth0── wan ──────── server (vpn-ctl up, 100.64.0.1)
//!   198.18.1.2      │ 198.18.1.1   198.18.2.2 :51820
//!   tunnel          │ 198.18.2.1
//!   100.64.0.2      │ 198.18.3.1
//!                   └──────────── internet 198.18.3.2 (reports who connects)
//! ```
//! The client runs `vpn-ctl up` against the server and steers one cgroup.
//! The internet host reports the source address of each connection, which
//! is how every outcome is judged. Everything is torn down on every exit path
//! (the harness's guards), Ctrl-C included; the exit code says whether every
//! outcome was as it should be.
use std::{
    fs,
    process::{Command, ExitCode},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use netns_harness::{self as h, Capture, Cgroup, Daemon, Netns, PinRoot};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn step(n: u32, text: &str) -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    println!("[{n}] {text}");
    Ok(())
}

fn main() -> ExitCode {
    // SAFETY: installs an async-signal-safe handler that only sets a flag;
    // the guards then unwind normally and tear the world down.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let result = demo();
    println!("[*] tearing everything down");
    match result {
        Ok(true) => {
            println!("demo: every outcome as expected");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("demo: some outcome was NOT as expected (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A DNS-port server that answers every query (UDP) with its own name.
const RESOLVER: &str = r#"
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((sys.argv[1], 53))
print("listening", flush=True)
while True:
    _, peer = u.recvfrom(512); u.sendto(sys.argv[2].encode(), peer)
"#;

/// Asks the local stub resolver, as glibc would (connected UDP).
const ASK_DNS: &str = r#"
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)
u.connect(("127.0.0.53", 53)); u.send(b"q")
try:
    print(u.recv(512).decode())
except OSError as e:
    print("failed:", e)
"#;

/// A client: connects to the internet host, says who it is; prints the outcome.
const VISIT: &str = r#"
import socket, sys
try:
    c = socket.create_connection(("198.18.3.2", 8080), timeout=3)
    c.sendall(sys.argv[1].encode()); c.close(); print("connected")
except OSError as e:
    print("failed:", e.strerror or e)
"#;

/// Like VISIT, after taking vpn's mark off the socket (root can).
const SNEAK: &str = r#"
import socket, sys
c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, 36, 0); c.settimeout(2)
try:
    c.connect(("198.18.3.2", 8080)); c.sendall(sys.argv[1].encode()); c.close(); print("connected")
except OSError as e:
    print("failed:", e.strerror or e)
"#;

/// A tunnel brought up with `vpn-ctl up`; `down` (and its files) on drop.
struct Tunnel<'a> {
    ns: &'a Netns,
    iface: String,
}

impl Drop for Tunnel<'_> {
    fn drop(&mut self) {
        let _ = self
            .ns
            .command(h::vpn_ctl_bin())
            .args(["down", &self.iface])
            .output();
        let _ = fs::remove_file(format!("/run/vpn/{}.log", self.iface));
    }
}

fn up<'a>(ns: &'a Netns, dir: &std::path::Path, iface: &str, conf: &str) -> Result<Tunnel<'a>> {
    let path = dir.join(format!("{iface}.conf"));
    fs::write(&path, conf)?;
    let tunnel = Tunnel {
        ns,
        iface: iface.to_owned(),
    };
    h::run(ns.command(h::vpn_ctl_bin()).arg("up").arg(&path))?;
    Ok(tunnel)
}

/// Waits until the reporter has printed `needle`, or the timeout passes.
fn seen(reporter: &Daemon, tag: &str, timeout: Duration) -> Option<String> {
    let start = Instant::now();
    loop {
        if let Some(line) = reporter
            .stdout()
            .lines()
            .find(|l| l.ends_with(&format!(" {tag}")))
        {
            return line.split_whitespace().nth(1).map(str::to_owned);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "as expected"
    } else {
        "WRONG"
    }
}

#[allow(clippy::too_many_lines)]
fn demo() -> Result<bool> {
    h::require_root();
    let tag = std::process::id() % 100_000;
    step(
        1,
        "building the world: client, wan, vpn server, internet host (network namespaces)",
    )?;
    let h::Pair { a: client, b: wan } =
        h::Pair::new(("eth0", &["198.18.1.2/24"]), ("c0", &["198.18.1.1/24"]))?;
    let server = Netns::new()?;
    let internet = Netns::new()?;
    h::veth(
        &server,
        ("eth0", &["198.18.2.2/24"]),
        &wan,
        ("s0", &["198.18.2.1/24"]),
    )?;
    h::veth(
        &internet,
        ("eth0", &["198.18.3.2/24"]),
        &wan,
        ("i0", &["198.18.3.1/24"]),
    )?;
    client.ip(&["route", "add", "default", "via", "198.18.1.1"])?;
    server.ip(&["route", "add", "default", "via", "198.18.2.1"])?;
    internet.ip(&["route", "add", "default", "via", "198.18.3.1"])?;
    // The wan routes the tunnel's addresses to the server, which forwards
    // them: namespace-local sysctls of the demo's own hosts.
    wan.ip(&["route", "add", "100.64.0.0/10", "via", "198.18.2.2"])?;
    for ns in [&wan, &server] {
        ns.sh("sysctl -qw net.ipv4.ip_forward=1")?;
    }

    let scratch = h::Scratch::new()?;
    let (ck, sk) = (h::key_pair()?, h::key_pair()?);
    let (civ, siv) = (format!("vd{tag}c"), format!("vd{tag}s"));
    step(2, "vpn server: vpn-ctl up (100.64.0.1, port 51820)")?;
    let _server_tunnel = up(
        &server,
        scratch.path(),
        &siv,
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 100.64.0.1/24\nListenPort = 51820\nTable = off\n\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = 100.64.0.2/32\n",
            sk.0, ck.1
        ),
    )?;
    step(
        3,
        "client: vpn-ctl up (100.64.0.2, everything allowed, routes only in vpn's own table)",
    )?;
    let client_tunnel = up(
        &client,
        scratch.path(),
        &civ,
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 100.64.0.2/32\nDNS = 100.64.0.1\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = 198.18.2.2:51820\nAllowedIPs = 0.0.0.0/0\nPersistentKeepalive = 25\n",
            ck.0, sk.1
        ),
    )?;

    let root = Cgroup::new()?;
    let app = root.child("app")?;
    let other = root.child("other")?;
    let pins = PinRoot::new()?;
    let vpn_ctl = || {
        let mut c = client.command(h::vpn_ctl_bin());
        c.env("VPN_TUNNEL", &civ)
            .arg("--pin-root")
            .arg(pins.path())
            .arg("--attach-cgroup")
            .arg(root.path());
        c
    };
    step(
        4,
        "client: vpn-ctl steer add cgroup app (one app into the tunnel, the rest untouched)",
    )?;
    for line in h::run(vpn_ctl().args(["steer", "add", "cgroup"]).arg(app.path()))?.lines() {
        println!("    {line}");
    }

    let mut reporter =
        Daemon::spawn(
            internet
                .command("python3")
                .args(["-c", h::REPORTER_PY, "198.18.3.2"]),
        )?;
    reporter.wait_for("listening", Duration::from_secs(10))?;
    let visit = |cg: &Cgroup, tag: &str| -> Result<String> {
        Ok(h::run(
            client
                .command_in("python3", Some(cg))?
                .args(["-c", VISIT, tag]),
        )?
        .trim()
        .to_owned())
    };

    let mut ok = true;
    step(5, "DNS: a local stub answers on 127.0.0.53, the provider's resolver on 100.64.0.1 (DNS = in the config)")?;
    let mut stub = Daemon::spawn(client.command("python3").args([
        "-c",
        RESOLVER,
        "127.0.0.53",
        "local-stub",
    ]))?;
    let mut vpn_dns = Daemon::spawn(server.command("python3").args([
        "-c",
        RESOLVER,
        "100.64.0.1",
        "tunnel-resolver",
    ]))?;
    stub.wait_for("listening", Duration::from_secs(10))?;
    vpn_dns.wait_for("listening", Duration::from_secs(10))?;
    for (cg, name, want) in [
        (&app, "steered app", "tunnel-resolver"),
        (&other, "unsteered app", "local-stub"),
    ] {
        let got = h::run(
            client
                .command_in("python3", Some(cg))?
                .args(["-c", ASK_DNS]),
        )?
        .trim()
        .to_owned();
        let good = got == want;
        ok &= good;
        println!(
            "    {name} asks 127.0.0.53: answered by {got}: {}",
            verdict(good)
        );
    }

    step(6, "steered app connects to the internet host")?;
    let out = visit(&app, "steered")?;
    let who = seen(&reporter, "steered", Duration::from_secs(5));
    let good = who.as_deref() == Some("100.64.0.2");
    ok &= good;
    println!(
        "    client: {out}; internet host saw {}: {}",
        who.as_deref().unwrap_or("nothing"),
        verdict(good)
    );
    println!("    (the tunnel's address: the app went through the tunnel)");

    step(7, "unsteered app connects to the internet host")?;
    let out = visit(&other, "unsteered")?;
    let who = seen(&reporter, "unsteered", Duration::from_secs(5));
    let good = who.as_deref() == Some("198.18.1.2");
    ok &= good;
    println!(
        "    client: {out}; internet host saw {}: {}",
        who.as_deref().unwrap_or("nothing"),
        verdict(good)
    );
    println!("    (the client's own address: untouched by vpn)");

    step(
        8,
        "a container behind a veth (box, 198.18.5.2): vpn-ctl steer add iface vbox",
    )?;
    let boxns = Netns::new()?;
    h::veth(
        &client,
        ("vbox", &["198.18.5.1/24"]),
        &boxns,
        ("eth0", &["198.18.5.2/24"]),
    )?;
    boxns.ip(&["route", "add", "default", "via", "198.18.5.1"])?;
    for line in h::run(vpn_ctl().args(["steer", "add", "iface", "vbox"]))?.lines() {
        println!("    {line}");
    }
    let out = h::run(boxns.command("python3").args(["-c", VISIT, "container"]))?
        .trim()
        .to_owned();
    let who = seen(&reporter, "container", Duration::from_secs(5));
    let good = who.as_deref() == Some("100.64.0.2");
    ok &= good;
    println!(
        "    container: {out}; internet host saw {}: {}",
        who.as_deref().unwrap_or("nothing"),
        verdict(good)
    );
    println!("    (translated to the tunnel's address, the only one the server accepts; the client's ip_forward stays {})",
        client.sysctl("net.ipv4.ip_forward")?);
    let ip_forward_off = client.sysctl("net.ipv4.ip_forward")? == "0";
    ok &= ip_forward_off;

    step(9, "client: vpn-ctl attach eth0 (the uplink guard); a steered app tries to go around the tunnel")?;
    for line in h::run(vpn_ctl().args(["attach", "eth0"]))?.lines() {
        println!("    {line}");
    }
    // Root inside the steered cgroup takes vpn's mark off its socket, so
    // routing would send it out of eth0 in plaintext: the guard drops it.
    let out = h::run(
        client
            .command_in("python3", Some(&app))?
            .args(["-c", SNEAK, "sneaky"]),
    )?
    .trim()
    .to_owned();
    let who = seen(&reporter, "sneaky", Duration::from_secs(2));
    let list: serde_json::Value =
        serde_json::from_str(&h::run(vpn_ctl().args(["steer", "list", "--json"]))?)?;
    let blocked = list["stats"]["guard_dropped"].as_u64().unwrap_or(0);
    let good = who.is_none() && blocked > 0;
    ok &= good;
    println!(
        "    app: {out}; internet host saw {}; leaks blocked by the guard: {blocked}: {}",
        who.as_deref().unwrap_or("nothing"),
        verdict(good)
    );

    step(
        10,
        "the tunnel is cut (the client's vpn-ctl daemon is killed with SIGKILL)",
    )?;
    let pid: i32 = fs::read_to_string(format!("/run/vpn/{civ}.pid"))?
        .trim()
        .parse()?;
    // SAFETY: plain signal to the daemon the demo started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.ip(&["link", "show", &civ]).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let uplink = Capture::start(&client, "eth0", "host 198.18.3.2")?;
    let out = visit(&app, "while-cut")?;
    let who = seen(&reporter, "while-cut", Duration::from_secs(2));
    let leaked = uplink.finish()?;
    let good = who.is_none() && leaked.is_empty() && out.starts_with("failed");
    ok &= good;
    println!(
        "    client: {out}; internet host saw {}; plaintext packets on the uplink: {}: {}",
        who.as_deref().unwrap_or("nothing"),
        leaked.len(),
        verdict(good)
    );
    println!(
        "    (blocked: vpn's table ends in a blackhole, so steered traffic has nowhere else to go)"
    );
    let out = visit(&other, "unsteered-while-cut")?;
    let who = seen(&reporter, "unsteered-while-cut", Duration::from_secs(5));
    let good = who.as_deref() == Some("198.18.1.2");
    ok &= good;
    println!(
        "    unsteered app meanwhile: {out}, seen as {}: {}",
        who.as_deref().unwrap_or("nothing"),
        verdict(good)
    );

    // With the tunnel cut, a steered app that takes its mark off (so routing
    // would send it out of eth0) is still dropped, and the leak counter moves.
    let before = guard_dropped(&vpn_ctl)?;
    let out =
        h::run(
            client
                .command_in("python3", Some(&app))?
                .args(["-c", SNEAK, "sneaky-while-cut"]),
        )?
        .trim()
        .to_owned();
    let who = seen(&reporter, "sneaky-while-cut", Duration::from_secs(2));
    let after = guard_dropped(&vpn_ctl)?;
    let good = who.is_none() && after > before;
    ok &= good;
    println!(
        "    steered app going around the dead tunnel: {out}; internet host saw {}; leak counter {before} -> {after}: {}",
        who.as_deref().unwrap_or("nothing"),
        verdict(good)
    );

    h::run(vpn_ctl().args(["steer", "clear"]))?;
    drop(client_tunnel);
    Ok(ok)
}

/// The guard's drop counter, from `steer list --json`.
fn guard_dropped(vpn_ctl: &dyn Fn() -> Command) -> Result<u64> {
    let list: serde_json::Value =
        serde_json::from_str(&h::run(vpn_ctl().args(["steer", "list", "--json"]))?)?;
    Ok(list["stats"]["guard_dropped"].as_u64().unwrap_or(0))
}
