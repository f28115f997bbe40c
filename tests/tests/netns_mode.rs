//! `vpn-ctl up FILE --netns TARGET` end to end: the tunnel link lives in a
//! "container" namespace (only `lo` and the tunnel), the encrypted UDP
//! socket stays in the client namespace vpn-ctl runs in.
//!
//! ```text
//!  container C (--netns)   client               server                    internet
//!  ┌──────────────────┐   ┌─────────────────┐  ┌────────────────────────┐  ┌─────────────────┐
//!  │ lo               │   │ vpn-ctl up      │  │ vpn-ctl up, Table=off  │  │ reporter :8080  │
//!  │ vt…n 100.64.0.2  │   │ (UDP socket)    │  │ vt…m 100.64.0.1/24     │  │                 │
//!  │ default dev vt…n │   │ eth0 198.18.0.1 ┼──┼ eth0 198.18.0.2 :51820 │  │                 │
//!  └──────────────────┘   └─────────────────┘  │ inet0 198.19.0.1       ┼──┼ eth0 198.19.0.2 │
//!                                              │ ip_forward=1 here only │  │ 100.64/10 via   │
//!                                              └────────────────────────┘  └─────────────────┘
//! ```
//! The internet host reports the source address of every connection, which
//! is how "through the tunnel" is judged; tcpdump on the client's uplink
//! shows what leaves in plaintext. C is a named namespace (created by `up`
//! and deleted by `down`, or one that existed before and stays), or a
//! namespace held only by a running process (`pid:PID`, `/proc/PID/ns/net`).
//!
//! Names: namespaces are `h::unique()` (the suite's leftover sweep knows
//! them); interfaces are `vt<pid>n<k>` (client) and `vt<pid>m<k>` (server).
//! Every daemon, namespace and file is removed by drop guards on every exit
//! path; every wait is bounded.
use std::{
    fs::{self, File},
    os::{fd::AsRawFd, unix::fs::MetadataExt, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use netns_harness::{self as h, Capture, Daemon, Netns};

const CLIENT_UNDERLAY: &str = "198.18.0.1";
const SERVER_UNDERLAY: &str = "198.18.0.2";
const SERVER_INET: &str = "198.19.0.1";
const INTERNET: &str = "198.19.0.2";
const PORT: u16 = 51820;
const SERVER_TUN: &str = "100.64.0.1";
const CLIENT_TUN: &str = "100.64.0.2";

/// Connects to the internet host and says who it is; prints the outcome.
const VISIT: &str = r#"
import socket, sys
try:
    c = socket.create_connection(("198.19.0.2", 8080), timeout=3)
    c.sendall(sys.argv[1].encode()); c.close(); print("connected")
except OSError as e:
    print("failed:", e.strerror or e)
"#;

/// A `Command` that runs inside the namespace file `ns` (setns before exec,
/// keeping this mount namespace, as the harness does).
fn command_at(ns: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let f = File::open(ns).unwrap_or_else(|e| panic!("opening {}: {e}", ns.display()));
    let mut cmd = Command::new(program);
    // SAFETY: only setns (async-signal-safe) on a descriptor opened before
    // fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// The container: any namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`).
struct Container {
    path: PathBuf,
}

impl Container {
    fn named(name: &str) -> Self {
        Self {
            path: Path::new("/run/netns").join(name),
        }
    }

    fn pid(pid: u32) -> Self {
        Self {
            path: PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        h::run(command_at(&self.path, program).args(args))
    }

    fn ip(&self, args: &[&str]) -> String {
        self.run("ip", args)
            .unwrap_or_else(|e| panic!("ip {args:?} in the container: {e}"))
    }

    /// Interface names, one per link.
    fn links(&self) -> Vec<String> {
        self.ip(&["-br", "link"])
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect()
    }

    fn visit(&self, msg: &str) -> String {
        self.run("python3", &["-c", VISIT, msg])
            .unwrap_or_else(|e| panic!("visit from the container: {e}"))
            .trim()
            .to_owned()
    }

    fn ping(&self, dst: &str) -> anyhow::Result<String> {
        self.run("ping", &["-c", "3", "-i", "0.2", "-w", "5", dst])
    }
}

/// The namespace's identity (its nsfs inode).
fn ns_id(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.ino())
}

fn pidfile(iface: &str) -> PathBuf {
    PathBuf::from(format!("/run/vpn/{iface}.pid"))
}

fn uapi(iface: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{iface}.sock"))
}

fn run_files(iface: &str) -> [PathBuf; 4] {
    [
        pidfile(iface),
        uapi(iface),
        PathBuf::from(format!("/run/vpn/{iface}.ctl")),
        PathBuf::from(format!("/run/vpn/{iface}.netns.json")),
    ]
}

/// The daemon's run-time files that still exist.
fn files_left(iface: &str) -> Vec<PathBuf> {
    run_files(iface)
        .into_iter()
        .filter(|p| p.exists())
        .collect()
}

fn netns_listed(name: &str) -> bool {
    h::ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

fn resolv_conf(name: &str) -> PathBuf {
    Path::new("/etc/netns").join(name).join("resolv.conf")
}

/// A directory removed (with its contents) on drop.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A tunnel brought up by `vpn-ctl up` run inside namespace `at`; on drop
/// `vpn-ctl down`, its log, and (for a named target of this test) whatever
/// of the namespace and /etc/netns/NAME is still there.
struct Tunnel {
    at: PathBuf,
    iface: String,
    /// A named target of this test: /etc/netns/NAME is removed on drop.
    named: Option<String>,
    /// The named target is not the harness's: `ip netns del` it on drop.
    delete_ns: bool,
}

impl Tunnel {
    fn vpn_ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        vpn_ctl_at(&self.at, args)
    }

    fn daemon_pid(&self) -> u32 {
        fs::read_to_string(pidfile(&self.iface))
            .unwrap_or_else(|e| panic!("{}: {e}", pidfile(&self.iface).display()))
            .trim()
            .parse()
            .unwrap()
    }

    fn log(&self) -> String {
        fs::read_to_string(format!("/run/vpn/{}.log", self.iface)).unwrap_or_default()
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = vpn_ctl_at(&self.at, &["down", &self.iface]);
        let _ = fs::remove_file(format!("/run/vpn/{}.log", self.iface));
        if let Some(name) = &self.named {
            if self.delete_ns && Path::new("/run/netns").join(name).exists() {
                let _ = h::ip(&["netns", "del", name]);
            }
            let _ = fs::remove_dir_all(Path::new("/etc/netns").join(name));
        }
    }
}

fn vpn_ctl_at(at: &Path, args: &[&str]) -> anyhow::Result<String> {
    h::run(command_at(at, h::vpn_ctl_bin()).args(args))
}

/// Client, server and internet namespaces, the server's tunnel and the
/// internet host's reporter. Fields drop in order: daemons before the
/// namespaces they run in.
struct World {
    reporter: Daemon,
    _server_tunnel: Tunnel,
    client: Netns,
    _server: Netns,
    _internet: Netns,
    scratch: h::Scratch,
    client_key: String,
    server_pub: String,
}

fn world() -> World {
    h::require_root();
    let h::Pair {
        a: client,
        b: server,
    } = h::Pair::new(
        ("eth0", &[&format!("{CLIENT_UNDERLAY}/24")]),
        ("eth0", &[&format!("{SERVER_UNDERLAY}/24")]),
    )
    .unwrap();
    let internet = Netns::new().unwrap();
    h::veth(
        &server,
        ("inet0", &[&format!("{SERVER_INET}/24")]),
        &internet,
        ("eth0", &[&format!("{INTERNET}/24")]),
    )
    .unwrap();
    internet
        .ip(&["route", "add", "100.64.0.0/10", "via", SERVER_INET])
        .unwrap();
    // Forwarding in the server's namespace only (sysctl -w runs in there).
    server.sh("sysctl -qw net.ipv4.ip_forward=1").unwrap();
    assert_eq!(server.sysctl("net.ipv4.ip_forward").unwrap(), "1");

    let scratch = h::Scratch::new().unwrap();
    let (client_key, client_pub) = h::key_pair().unwrap();
    let (server_key, server_pub) = h::key_pair().unwrap();
    let siface = h::ifname('m');
    let sconf = scratch.write(
        &format!("{siface}.conf"),
        &format!(
            "[Interface]\nPrivateKey = {server_key}\nAddress = {SERVER_TUN}/24\n\
             ListenPort = {PORT}\nTable = off\n\n\
             [Peer]\nPublicKey = {client_pub}\nAllowedIPs = {CLIENT_TUN}/32\n"
        ),
    );
    let server_tunnel = Tunnel {
        at: server.path(),
        iface: siface.clone(),
        named: None,
        delete_ns: false,
    };
    server_tunnel
        .vpn_ctl(&["up", sconf.to_str().unwrap()])
        .unwrap();
    server
        .ip(&["route", "add", &format!("{CLIENT_TUN}/32"), "dev", &siface])
        .unwrap();

    let mut reporter = internet
        .spawn(
            internet
                .command("python3")
                .args(["-u", "-c", h::REPORTER_PY, "198.19.0.2"]),
        )
        .unwrap();
    reporter
        .wait_for("listening", Duration::from_secs(10))
        .unwrap();
    World {
        reporter,
        _server_tunnel: server_tunnel,
        client,
        _server: server,
        _internet: internet,
        scratch,
        client_key,
        server_pub,
    }
}

impl World {
    /// The client's config file `<iface>.conf`.
    fn client_conf(&self, iface: &str) -> PathBuf {
        self.scratch.write(
            &format!("{iface}.conf"),
            &format!(
                "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_TUN}/32\nDNS = {SERVER_TUN}\n\n\
                 [Peer]\nPublicKey = {}\nEndpoint = {SERVER_UNDERLAY}:{PORT}\nAllowedIPs = 0.0.0.0/0\n",
                self.client_key, self.server_pub
            ),
        )
    }

    /// `vpn-ctl up CONF --netns TARGET`, run in the client namespace; the
    /// guard is armed before `up` runs.
    fn up(&self, target: &str, named: Option<&str>, delete_ns: bool) -> (Tunnel, String) {
        let iface = h::ifname('n');
        let conf = self.client_conf(&iface);
        let t = Tunnel {
            at: self.client.path(),
            iface,
            named: named.map(str::to_owned),
            delete_ns,
        };
        let out = t
            .vpn_ctl(&["up", conf.to_str().unwrap(), "--netns", target])
            .unwrap();
        assert!(
            out.contains(&format!("{} is up in network namespace {target}", t.iface)),
            "{out}"
        );
        (t, out)
    }

    /// The reporter's `seen ADDR MSG` line for `msg`, waiting up to `timeout`.
    fn seen(&self, msg: &str, timeout: Duration) -> Option<String> {
        let start = Instant::now();
        loop {
            let found = self
                .reporter
                .stdout()
                .lines()
                .find(|l| l.starts_with("seen ") && l.ends_with(&format!(" {msg}")))
                .map(str::to_owned);
            if found.is_some() || start.elapsed() >= timeout {
                return found;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the client namespace itself looks like: its own links and
    /// routes are untouched by `up --netns`.
    fn assert_client_untouched(&self, iface: &str) {
        let links = self.client.ip(&["-br", "link"]).unwrap();
        assert!(
            !links.contains(iface),
            "tunnel link in the client ns: {links}"
        );
        let routes = self
            .client
            .ip(&["-4", "route", "show", "table", "all"])
            .unwrap();
        assert!(
            !routes.contains(iface) && !routes.contains("100.64."),
            "tunnel routes in the client ns:\n{routes}"
        );
    }
}

/// An `ip` capture line is encrypted tunnel traffic between the underlay
/// addresses (UDP to or from the server's port 51820).
fn is_tunnel_udp(line: &str) -> bool {
    line.contains(" UDP")
        && (line.contains(&format!("> {SERVER_UNDERLAY}.{PORT}:"))
            || line.contains(&format!(" {SERVER_UNDERLAY}.{PORT} > ")))
        && line.contains(&format!("{CLIENT_UNDERLAY}."))
}

/// The container while the tunnel runs: exactly `lo` and the tunnel,
/// the tunnel's address and MTU, a default route through the tunnel in its
/// main table; it reaches the server's tunnel address and the internet host
/// (seen as 100.64.0.2), and only encrypted UDP crosses the client's uplink.
/// Returns what was seen, for the transcript.
fn assert_tunnel_works(w: &World, c: &Container, iface: &str, tag: &str) -> Seen {
    let mut links = c.links();
    links.sort();
    let mut want = vec!["lo".to_owned(), iface.to_owned()];
    want.sort();
    assert_eq!(links, want, "the container has other interfaces");
    let addr = c.ip(&["-br", "addr"]);
    let tun_line = addr
        .lines()
        .find(|l| l.starts_with(iface))
        .unwrap_or_else(|| panic!("{iface} missing:\n{addr}"));
    assert!(tun_line.contains(&format!("{CLIENT_TUN}/32")), "{addr}");
    let link = c.ip(&["-d", "link", "show", iface]);
    assert!(link.contains("mtu 1420") && link.contains("tun"), "{link}");
    let routes = c.ip(&["-4", "route"]);
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("default") && l.contains(&format!("dev {iface}"))),
        "no default route through the tunnel in the container's main table:\n{routes}"
    );
    assert!(
        routes.lines().all(|l| l.contains(&format!("dev {iface}"))),
        "a route not through the tunnel:\n{routes}"
    );
    w.assert_client_untouched(iface);

    let cap = Capture::start(&w.client, "eth0", "ip").unwrap();
    let ping = c.ping(SERVER_TUN);
    let msg = format!("{tag}-before");
    let visited = c.visit(&msg);
    let seen = w.seen(&msg, Duration::from_secs(5));
    let lines = cap.finish().unwrap();
    ping.unwrap_or_else(|e| panic!("ping {SERVER_TUN} through the tunnel: {e}"));
    assert_eq!(visited, "connected");
    let seen = seen.unwrap_or_else(|| {
        panic!(
            "the internet host saw nothing of {msg}:\n{}",
            w.reporter.stdout()
        )
    });
    assert_eq!(seen, format!("seen {CLIENT_TUN} {msg}"));
    assert!(!lines.is_empty(), "nothing crossed the uplink");
    let plain: Vec<&String> = lines.iter().filter(|l| !is_tunnel_udp(l)).collect();
    assert!(
        plain.is_empty(),
        "non-tunnel packets on the uplink: {plain:#?}"
    );
    Seen {
        addr,
        routes,
        reporter: seen,
        uplink: lines,
    }
}

/// What a test saw in the container and on the uplink.
struct Seen {
    /// The container's `ip -br addr`.
    addr: String,
    /// The container's IPv4 routes (main table; all tables after a kill).
    routes: String,
    /// What the internet host reported (or the container's failure).
    reporter: String,
    /// tcpdump's lines on the client's uplink.
    uplink: Vec<String>,
}

/// After the daemon's SIGKILL: the container has only `lo` and no route
/// at all; it reaches nothing, and nothing crosses the uplink while it
/// tries. Returns what was seen and how long the link took to go.
fn assert_fails_closed(w: &World, c: &Container, t: &Tunnel, tag: &str) -> (Seen, Duration) {
    let pid = t.daemon_pid();
    assert!(h::alive(pid));
    // SAFETY: a plain signal to the daemon's pid, read from its pidfile.
    assert_eq!(unsafe { libc::kill(pid.cast_signed(), libc::SIGKILL) }, 0);
    let gone = h::wait_until("the tunnel link to go", Duration::from_secs(5), || {
        c.links() == ["lo"]
    });
    h::wait_until("the daemon to die", Duration::from_secs(5), || {
        !h::alive(pid)
    });
    let addr = c.ip(&["-br", "addr"]);
    let routes = c.ip(&["-4", "route", "show", "table", "all"]);
    assert!(
        routes.lines().all(|l| l.contains("dev lo")),
        "routes other than lo's own:\n{routes}"
    );
    assert_eq!(c.ip(&["-4", "route"]).trim(), "", "main table not empty");
    assert!(
        !c.ip(&["-6", "route", "show", "table", "all"])
            .contains(&t.iface),
        "IPv6 routes via the dead tunnel"
    );

    let cap = Capture::start(&w.client, "eth0", "ip").unwrap();
    let msg = format!("{tag}-after-kill");
    let visited = c.visit(&msg);
    let ping = c.ping(SERVER_TUN);
    let seen = w.seen(&msg, Duration::from_secs(2));
    let lines = cap.finish().unwrap();
    assert!(visited.starts_with("failed:"), "{visited}");
    assert!(ping.is_err(), "ping went somewhere: {ping:?}");
    assert_eq!(seen, None, "the internet host was reached after the kill");
    assert!(
        lines.is_empty(),
        "packets on the uplink while the container tried: {lines:#?}"
    );
    let ping = ping.unwrap_err().to_string();
    let ping = ping
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    (
        Seen {
            addr,
            routes,
            reporter: format!("container's connect: {visited}; ping {SERVER_TUN}: {ping}"),
            uplink: lines,
        },
        gone,
    )
}

/// The seed recipe: `up --netns NAME` creates NAME (only `lo` and the
/// tunnel in it), DNS goes to /etc/netns/NAME/resolv.conf; the container
/// reaches the internet host, seen as 100.64.0.2, with only encrypted UDP
/// on the uplink. SIGKILL of the daemon: the link goes, no route, nothing
/// reachable, no plaintext. `down` then deletes NAME and the resolv.conf.
#[test]
fn named_netns_created_by_up_fails_closed_and_down_deletes_it() {
    let w = world();
    let name = h::unique();
    assert!(!netns_listed(&name));
    let (t, up_out) = w.up(&name, Some(&name), true);
    assert!(netns_listed(&name), "up did not create {name}");
    let c = Container::named(&name);

    let resolv = fs::read_to_string(resolv_conf(&name)).unwrap();
    assert!(
        resolv.contains(&format!("nameserver {SERVER_TUN}\n")),
        "{resolv}"
    );
    let seen_inside =
        h::run(Command::new("ip").args(["netns", "exec", &name, "cat", "/etc/resolv.conf"]))
            .unwrap();
    assert_eq!(seen_inside, resolv);

    let before = assert_tunnel_works(&w, &c, &t.iface, "named");
    let j: serde_json::Value =
        serde_json::from_str(&t.vpn_ctl(&["show", &t.iface, "--json"]).unwrap()).unwrap();
    assert!(
        j["peers"][0]["latest_handshake"].as_u64().unwrap_or(0) > 0,
        "{j}"
    );
    assert_eq!(
        j["peers"][0]["endpoint"],
        format!("{SERVER_UNDERLAY}:{PORT}"),
        "{j}"
    );
    assert_eq!(j["vpn"]["dns"][0], SERVER_TUN, "{j}");

    let (after, gone) = assert_fails_closed(&w, &c, &t, "named");
    assert!(netns_listed(&name), "the namespace went with the daemon");

    let down = t.vpn_ctl(&["down", &t.iface]).unwrap();
    assert!(
        down.contains(&format!("{} is down (its daemon had died;", t.iface))
            && down.contains(&format!("deleted network namespace {name}")),
        "{down}"
    );
    assert!(!netns_listed(&name), "down left {name}");
    assert!(!Path::new("/run/netns").join(&name).exists());
    assert!(
        !Path::new("/etc/netns").join(&name).exists(),
        "down left /etc/netns/{name}"
    );
    assert_eq!(files_left(&t.iface), Vec::<PathBuf>::new());
    w.assert_client_untouched(&t.iface);

    let listed: Vec<String> = h::ip(&["netns", "list"])
        .unwrap()
        .lines()
        .filter(|l| l.contains(&name))
        .map(str::to_owned)
        .collect();
    let sample = |v: &[String]| {
        v.iter()
            .take(4)
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    };
    eprintln!(
        "--- seed recipe (vpn-ctl up {iface}.conf --netns {name}, in the client ns) ---\n\
         $ vpn-ctl up {iface}.conf --netns {name}\n{up_out}\
         $ ip netns exec {name} cat /etc/resolv.conf\n{seen_inside}\
         container $ ip -br addr\n{}\
         container $ ip -4 route\n{}\
         internet host: {}\n\
         client uplink eth0 (tcpdump ip): {} packets, all UDP {PORT}:\n{}\
         --- after SIGKILL of the daemon (link gone after {gone:?}) ---\n\
         container $ ip -br addr\n{}\
         container $ ip -4 route show table all\n{}\
         {}; internet host saw nothing\n\
         client uplink eth0 (tcpdump ip): {} packets\n{}\
         $ vpn-ctl down {iface}\n{down}\
         $ ip netns list | grep {name}\n{listed:?}\n---",
        before.addr,
        before.routes,
        before.reporter,
        before.uplink.len(),
        sample(&before.uplink),
        after.addr,
        after.routes,
        after.reporter,
        after.uplink.len(),
        sample(&after.uplink),
        iface = t.iface,
    );
}

/// A named namespace that existed before `up` (with a resolv.conf of its
/// own) is used as it is and left in place by a clean `down`: the tunnel
/// link goes, its routes with it, and the previous resolv.conf is back.
#[test]
fn named_netns_that_existed_is_left_in_place() {
    let w = world();
    let c_ns = Netns::new().unwrap();
    let name = c_ns.name().to_owned();
    let before_id = ns_id(&c_ns.path());
    let etc = RemoveDir(Path::new("/etc/netns").join(&name));
    fs::create_dir_all(&etc.0).unwrap();
    let old = "nameserver 198.18.0.53\n";
    fs::write(resolv_conf(&name), old).unwrap();
    let (t, _) = w.up(&name, Some(&name), false);
    let c = Container::named(&name);
    assert_eq!(ns_id(&c.path), before_id, "up replaced the namespace");
    let resolv = fs::read_to_string(resolv_conf(&name)).unwrap();
    assert!(
        resolv.contains(&format!("nameserver {SERVER_TUN}\n")),
        "{resolv}"
    );
    assert_tunnel_works(&w, &c, &t.iface, "existing");

    let pid = t.daemon_pid();
    let down = t.vpn_ctl(&["down", &t.iface]).unwrap();
    assert!(
        down.contains(&format!("{} is down (daemon pid {pid} stopped)", t.iface)),
        "{down}"
    );
    assert!(
        netns_listed(&name),
        "down deleted a namespace it did not create"
    );
    assert_eq!(ns_id(&c.path), before_id);
    assert_eq!(c.links(), ["lo"]);
    assert_eq!(c.ip(&["-4", "route"]).trim(), "");
    assert_eq!(fs::read_to_string(resolv_conf(&name)).unwrap(), old);
    assert_eq!(files_left(&t.iface), Vec::<PathBuf>::new());
    assert!(!h::alive(pid));
}

/// A clean `down` of a tunnel whose named namespace `up` created deletes
/// the namespace and the /etc/netns/NAME it wrote.
#[test]
fn named_netns_created_by_up_is_deleted_by_a_clean_down() {
    let w = world();
    let name = h::unique();
    let (t, _) = w.up(&name, Some(&name), true);
    let c = Container::named(&name);
    assert_tunnel_works(&w, &c, &t.iface, "clean");
    assert!(resolv_conf(&name).exists());
    let show = t.vpn_ctl(&["show", &t.iface]).unwrap();
    assert!(
        show.contains(&format!("network namespace: {name}")),
        "{show}"
    );
    // Steering in the client namespace cannot reach a tunnel that lives in
    // another one: refused before anything is loaded or pinned.
    let pins = h::PinRoot::new().unwrap();
    let pin_root = pins.path().to_str().unwrap();
    let e = t
        .vpn_ctl(&[
            "--tunnel",
            &t.iface,
            "--pin-root",
            pin_root,
            "steer",
            "add",
            "uid",
            "4242",
        ])
        .unwrap_err()
        .to_string();
    assert!(e.contains("lives in network namespace"), "{e}");
    let pinned: Vec<_> = fs::read_dir(pins.path())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(pinned.is_empty(), "a refused steer pinned {pinned:?}");
    let down = t.vpn_ctl(&["down", &t.iface]).unwrap();
    assert!(
        down.contains(&format!("{} is down (daemon pid", t.iface)),
        "{down}"
    );
    assert!(!netns_listed(&name), "down left {name}");
    assert!(
        !Path::new("/etc/netns").join(&name).exists(),
        "down left /etc/netns/{name}"
    );
    assert_eq!(files_left(&t.iface), Vec::<PathBuf>::new());
    w.assert_client_untouched(&t.iface);
}

/// A namespace held only by a process (`unshare -n sleep 600`), spawned in
/// the client namespace; returns it once it is in a namespace of its own.
fn holder(w: &World) -> Daemon {
    let d = w
        .client
        .spawn(w.client.command("unshare").args(["-n", "sleep", "600"]))
        .unwrap();
    let client_id = ns_id(&w.client.path());
    let path = PathBuf::from(format!("/proc/{}/ns/net", d.pid()));
    h::wait_until("unshare -n to take effect", Duration::from_secs(5), || {
        ns_id(&path).is_some_and(|id| Some(id) != client_id)
    });
    d
}

/// `--netns pid:PID` of a process-held namespace: the tunnel works in
/// there (DNS is not applied: a warning); SIGKILL of the daemon leaves
/// only `lo`, no route, no plaintext; `down` leaves no file behind.
#[test]
fn process_held_netns_by_pid_fails_closed() {
    let w = world();
    let sleeper = holder(&w);
    let pid = sleeper.pid();
    let (t, _) = w.up(&format!("pid:{pid}"), None, false);
    let c = Container::pid(pid);
    assert_tunnel_works(&w, &c, &t.iface, "pid");
    let log = t.log();
    assert!(log.contains("DNS= is not applied"), "{log}");
    assert!(!Path::new(&format!("/run/vpn/{}.netns.json", t.iface)).exists());

    assert_fails_closed(&w, &c, &t, "pid");
    assert!(h::alive(pid), "the holder died with the daemon");
    // The killed daemon's pidfile and UAPI socket are stale; nothing was
    // recorded to undo (no name, no resolv.conf). `down` clears the stale
    // files and says the daemon had died.
    let stale = files_left(&t.iface);
    assert!(
        stale.contains(&pidfile(&t.iface)) && stale.contains(&uapi(&t.iface)),
        "{stale:?}"
    );
    let out = t.vpn_ctl(&["down", &t.iface]).unwrap();
    assert!(
        out.contains(&format!("{} is down (its daemon had died", t.iface)),
        "{out}"
    );
    assert_eq!(files_left(&t.iface), Vec::<PathBuf>::new());
    assert_eq!(c.links(), ["lo"]);
    w.assert_client_untouched(&t.iface);
}

/// `--netns /proc/PID/ns/net`: when the process holding the namespace
/// exits, the namespace and the link die, and the daemon exits by itself,
/// removing its pidfile and sockets.
#[test]
fn process_held_netns_by_path_ends_with_its_process() {
    let w = world();
    let mut sleeper = holder(&w);
    let pid = sleeper.pid();
    let (t, _) = w.up(&format!("/proc/{pid}/ns/net"), None, false);
    let c = Container::pid(pid);
    assert_tunnel_works(&w, &c, &t.iface, "path");
    let daemon = t.daemon_pid();

    sleeper.signal(libc::SIGKILL);
    assert!(
        sleeper.wait(Duration::from_secs(5)).unwrap().is_some(),
        "the holder did not die"
    );
    let took = h::wait_until("the daemon to exit", Duration::from_secs(10), || {
        !h::alive(daemon) && files_left(&t.iface).is_empty()
    });
    eprintln!("holder killed: daemon {daemon} exited and cleaned up after {took:?}");
    assert!(took < Duration::from_secs(5), "the daemon took {took:?}");
    let log = t.log();
    assert!(log.contains("was deleted"), "{log}");
    let e = t.vpn_ctl(&["down", &t.iface]).unwrap_err().to_string();
    assert!(e.contains("is not up"), "{e}");
    w.assert_client_untouched(&t.iface);
}

/// Bad targets are refused with a clear error and leave nothing: no
/// daemon, no files, no interface, no namespace. A named namespace that
/// `up` created is deleted again when bring-up fails later.
#[test]
fn bad_targets_are_refused_and_leave_nothing() {
    let w = world();
    // (target, what the error must say, how it must name the target)
    let cases = [
        ("pid:abc", "pid:PID", "pid:abc"),
        ("pid:999999999", "still running", "/proc/999999999/ns/net"),
        (
            "/proc/self/status",
            "is not a network namespace",
            "/proc/self/status",
        ),
        ("pid:", "pid:PID", "pid:"),
    ];
    for (target, want, named) in cases {
        let iface = h::ifname('n');
        let conf = w.client_conf(&iface);
        let t = Tunnel {
            at: w.client.path(),
            iface: iface.clone(),
            named: None,
            delete_ns: false,
        };
        let e = t
            .vpn_ctl(&["up", conf.to_str().unwrap(), "--netns", target])
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "--netns {target}: {e}");
        assert!(
            e.contains(named),
            "--netns {target}: the error does not name it: {e}"
        );
        assert_eq!(
            files_left(&iface),
            Vec::<PathBuf>::new(),
            "--netns {target}"
        );
        let links = w.client.ip(&["-br", "link"]).unwrap();
        assert!(!links.contains(&iface), "--netns {target}: {links}");
        let tuns = h::ip(&["-br", "link"]).unwrap();
        assert!(!tuns.contains(&iface), "--netns {target}: {tuns}");
    }

    // A named target created by `up`, then the UDP port is busy: the
    // namespace (and anything in /etc/netns) is gone again.
    let name = h::unique();
    let iface = h::ifname('n');
    let conf = w.scratch.write(
        &format!("{iface}.conf"),
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {CLIENT_TUN}/32\nDNS = {SERVER_TUN}\nListenPort = 40404\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = {SERVER_UNDERLAY}:{PORT}\nAllowedIPs = 0.0.0.0/0\n",
            w.client_key, w.server_pub
        ),
    );
    let mut busy = w
        .client
        .spawn(w.client.command("python3").args([
            "-c",
            "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.bind(('0.0.0.0',40404))\nprint('bound',flush=True)\ntime.sleep(60)",
        ]))
        .unwrap();
    busy.wait_for("bound", Duration::from_secs(5)).unwrap();
    let t = Tunnel {
        at: w.client.path(),
        iface: iface.clone(),
        named: Some(name.clone()),
        delete_ns: true,
    };
    let e = t
        .vpn_ctl(&["up", conf.to_str().unwrap(), "--netns", &name])
        .unwrap_err()
        .to_string();
    assert!(e.contains("in use"), "{e}");
    assert!(!netns_listed(&name), "a failed up left {name}");
    assert!(!Path::new("/etc/netns").join(&name).exists());
    assert_eq!(files_left(&iface), Vec::<PathBuf>::new());
    let links = w.client.ip(&["-br", "link"]).unwrap();
    assert!(!links.contains(&iface), "{links}");
}
