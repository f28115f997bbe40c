//! `cargo xtask bench steer`: what classifying a steered source costs, per
//! packet, as the number of steered sources grows (1, 100, 10 000).
//!
//! 1. In the kernel alone: vpn's TC classifiers run with BPF_PROG_TEST_RUN
//!    (`repeat`) on a packet from a steered source; the kernel reports the
//!    mean time per run.
//! 2. End to end, beside nftables: UDP datagrams from a steered source go
//!    through a veth pair into a namespace that classifies them at ingress
//!    (vpn's tc ingress, an nftables set, or the linear rule list that
//!    tools generate) and then drops them at a blackhole route. The sender
//!    times `send()`; with veth, the receive side runs inside that call. The
//!    cost of a classifier is the time per packet minus the time with no
//!    classifier (best of several interleaved rounds).
//!
//! Needs root. Everything lives in namespaces named `vpnb-<pid>-*`, removed
//! on every exit path. Arguments: `--packets N` per round (default 30000),
//! `--rounds N` (default 15; many short rounds, so that the best of them
//! misses the other load of a shared machine), `--repeat N` for test_run
//! (default 200000).
use std::{
    fmt::Write as _,
    fs::File,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, MapData},
    Ebpf, EbpfLoader,
};
use vpn_common::{names, Config, SteerAction};
use vpn_ctl::steer::{
    guard::{self, Hook, Maps},
    testing,
};

const MARK: u32 = 0x1000_0000;
const COUNTS: [u32; 3] = [1, 100, 10_000];
/// Steered sources are 10.64.0.0 + i; the probe comes from the last one
/// (the worst case for a linear rule list).
const BASE: u32 = 0x0a40_0000;
const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 9);

fn source(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(BASE + i)
}

struct Opts {
    packets: u32,
    rounds: u32,
    repeat: u32,
}

fn opts() -> Result<Opts> {
    let mut o = Opts {
        packets: 30_000,
        rounds: 15,
        repeat: 200_000,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().context("every option takes a value")?;
        let n: u32 = v.parse().with_context(|| format!("{a} {v}"))?;
        match a.as_str() {
            "--packets" => o.packets = n,
            "--rounds" => o.rounds = n.max(1),
            "--repeat" => o.repeat = n.max(1),
            _ => bail!("unknown option {a} (--packets, --rounds, --repeat)"),
        }
    }
    Ok(o)
}

fn load() -> Result<(Ebpf, Maps)> {
    let mut bpf = EbpfLoader::new()
        .load(vpn_ctl::steer::object::OBJECT)
        .context("loading vpn's eBPF object")?;
    let mut config: Array<MapData, Config> = Array::try_from(
        bpf.take_map(names::CONFIG)
            .context("no VPN_CONFIG in the object")?,
    )?;
    config.set(
        0,
        Config {
            mark: MARK,
            mark_mask: MARK,
            ..Config::default()
        },
        0,
    )?;
    let mut maps = Maps::take(&mut bpf, None)?;
    // No events: a benchmark of drops must not measure the ring buffer.
    let mut c = maps.config()?;
    c.no_events = 1;
    maps.set_config(c)?;
    guard::load_programs(&mut bpf)?;
    Ok((bpf, maps))
}

/// Grows the steered set to `n` /32 sources.
fn steer_sources(maps: &mut Maps, from: u32, n: u32) -> Result<()> {
    for i in from..n {
        maps.add_prefix(IpAddr::V4(source(i)), 32, SteerAction::Include)?;
    }
    Ok(())
}

// ------------------------------------------------------------- test_run

fn mean_ns(bpf: &Ebpf, hook: Hook, frame: &[u8], mark: u32, o: &Opts) -> Result<f64> {
    let prog = guard::program(bpf, hook)?;
    let mut best = f64::MAX;
    for _ in 0..o.rounds {
        let r = testing::test_run(prog, frame, mark, o.repeat)?;
        best = best.min(r.duration.as_nanos() as f64);
    }
    Ok(best)
}

struct Row {
    name: String,
    values: Vec<f64>,
}

fn kernel_rows(o: &Opts) -> Result<Vec<Row>> {
    let (bpf, mut maps) = load()?;
    let mut rows = vec![
        Row {
            name: "tc ingress, source prefix (marks)".into(),
            values: vec![],
        },
        Row {
            name: "tc guard, source prefix (drops)".into(),
            values: vec![],
        },
        Row {
            name: "tc guard, vpn's mark (drops)".into(),
            values: vec![],
        },
        Row {
            name: "tc guard, unsteered (passes)".into(),
            values: vec![],
        },
    ];
    let mut have = 0;
    for n in COUNTS {
        steer_sources(&mut maps, have, n)?;
        have = n;
        let steered =
            testing::eth_frame(IpAddr::V4(source(n - 1)), IpAddr::V4(DST), 17, 40000, 443);
        let other = testing::eth_frame(
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            IpAddr::V4(DST),
            17,
            40000,
            443,
        );
        rows[0]
            .values
            .push(mean_ns(&bpf, Hook::Ingress, &steered, 0, o)?);
        rows[1]
            .values
            .push(mean_ns(&bpf, Hook::Guard, &steered, 0, o)?);
        rows[2]
            .values
            .push(mean_ns(&bpf, Hook::Guard, &other, MARK, o)?);
        rows[3]
            .values
            .push(mean_ns(&bpf, Hook::Guard, &other, 0, o)?);
    }
    Ok(rows)
}

// ------------------------------------------------------------ end to end

/// A namespace removed on drop.
struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Result<Self> {
        let name = format!("vpnb-{}-{tag}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Self(name);
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<()> {
        run(Command::new("ip").arg("-n").arg(&self.0).args(args))
    }

    fn nft_file(&self, ruleset: &str) -> Result<()> {
        let path = std::env::temp_dir().join(format!("{}.nft", self.0));
        std::fs::write(&path, ruleset)?;
        let r = run(Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "-f"])
            .arg(&path));
        let _ = std::fs::remove_file(&path);
        r
    }

    fn file(&self) -> Result<File> {
        Ok(File::open(format!("/run/netns/{}", self.0))?)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `f` on a thread inside `ns`.
fn in_ns<T: Send>(ns: &Ns, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let file = ns.file()?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: moves only this scoped thread into the namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))?
    })
}

/// sender (10.64.x.y on eth0) ── veth ── router (r0: classifier, then a
/// blackhole route for 198.18.0.0/16).
struct Path {
    sender: Ns,
    router: Ns,
    src: Ipv4Addr,
}

fn path(n: u32) -> Result<Path> {
    let sender = Ns::new("send")?;
    let router = Ns::new("route")?;
    sender.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "r0", "netns", &router.0,
    ])?;
    let src = source(n - 1);
    sender.ip(&["addr", "add", &format!("{src}/8"), "dev", "eth0"])?;
    router.ip(&["addr", "add", "10.0.0.1/8", "dev", "r0"])?;
    sender.ip(&["link", "set", "eth0", "up"])?;
    router.ip(&["link", "set", "r0", "up"])?;
    sender.ip(&["route", "add", "198.18.0.0/16", "via", "10.0.0.1"])?;
    router.ip(&["route", "add", "blackhole", "198.18.0.0/16"])?;
    // Forwarding inside the router namespace only, so packets are routed
    // (and classified on the way) like a container's.
    run(Command::new("ip").args([
        "netns",
        "exec",
        &router.0,
        "sysctl",
        "-qw",
        "net.ipv4.conf.all.forwarding=1",
    ]))?;
    Ok(Path {
        sender,
        router,
        src,
    })
}

/// ns per packet to send `packets` datagrams from the sender.
fn blast(p: &Path, packets: u32) -> Result<f64> {
    let src = p.src;
    in_ns(&p.sender, move || {
        let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(src), 0))?;
        s.connect(SocketAddr::new(IpAddr::V4(DST), 9))?;
        let payload = [0u8; 32];
        // Warm up (neighbour resolution, caches) and estimate, so that a
        // slow classifier is measured for about a second, not minutes.
        let t = Instant::now();
        for _ in 0..2000 {
            let _ = s.send(&payload);
        }
        let per = t.elapsed().as_secs_f64() / 2000.0;
        let packets = packets.min((1.0 / per) as u32).max(2000);
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        for _ in 0..packets {
            let _ = s.send(&payload);
        }
        Ok(t.elapsed().as_nanos() as f64 / f64::from(packets))
    })
}

fn nft_set(n: u32) -> String {
    let mut s = String::from(
        "table ip vpnbench {\n set steered { type ipv4_addr; flags constant; elements = { ",
    );
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        write!(s, "{}", source(i)).unwrap();
    }
    s.push_str(
        " } }\n chain pre { type filter hook prerouting priority mangle; policy accept;\n  \
         ip saddr @steered meta mark set meta mark or 0x10000000\n }\n}\n",
    );
    s
}

fn nft_linear(n: u32) -> String {
    let mut s = String::from(
        "table ip vpnbench {\n chain pre { type filter hook prerouting priority mangle; policy accept;\n",
    );
    for i in 0..n {
        writeln!(
            s,
            "  ip saddr {} meta mark set meta mark or 0x10000000",
            source(i)
        )
        .unwrap();
    }
    s.push_str(" }\n}\n");
    s
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Classifier {
    None,
    Ebpf,
    NftSet,
    NftLinear,
}

/// What keeps vpn's classifier attached while it is measured (dropping
/// the owned link detaches it).
type Keep = Option<(guard::Attachment, Maps, Ebpf)>;

/// Sets the router's classifier up for `n` sources.
fn install(p: &Path, c: Classifier, n: u32) -> Result<Keep> {
    let _ = p.router.nft_file("flush ruleset\n");
    match c {
        Classifier::None => Ok(None),
        Classifier::NftSet => p.router.nft_file(&nft_set(n)).map(|()| None),
        Classifier::NftLinear => p.router.nft_file(&nft_linear(n)).map(|()| None),
        Classifier::Ebpf => {
            let (mut bpf, mut maps) = load()?;
            steer_sources(&mut maps, 0, n)?;
            let link = in_ns(&p.router, || {
                Ok(guard::attach(&mut bpf, Hook::Ingress, "r0", None)?)
            })?;
            Ok(Some((link, maps, bpf)))
        }
    }
}

struct E2e {
    baseline: f64,
    rows: Vec<(Classifier, Vec<f64>)>,
}

fn end_to_end(o: &Opts) -> Result<E2e> {
    let kinds = [Classifier::Ebpf, Classifier::NftSet, Classifier::NftLinear];
    let mut rows: Vec<(Classifier, Vec<f64>)> = kinds.iter().map(|&k| (k, vec![])).collect();
    let mut baseline = f64::MAX;
    for n in COUNTS {
        let p = path(n)?;
        let mut best = [f64::MAX; 4];
        for _ in 0..o.rounds {
            for (slot, c) in [
                Classifier::None,
                Classifier::Ebpf,
                Classifier::NftSet,
                Classifier::NftLinear,
            ]
            .into_iter()
            .enumerate()
            {
                let keep = install(&p, c, n)?;
                let ns = blast(&p, o.packets)?;
                best[slot] = best[slot].min(ns);
                drop(keep);
            }
        }
        baseline = baseline.min(best[0]);
        for (i, row) in rows.iter_mut().enumerate() {
            row.1.push(best[i + 1] - best[0]);
        }
        eprintln!(
            "  {n:>5} sources: none {:.0}, ebpf {:.0}, nft set {:.0}, nft linear {:.0} ns/packet",
            best[0], best[1], best[2], best[3]
        );
    }
    Ok(E2e { baseline, rows })
}

fn main() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the steering benchmark loads eBPF programs and creates namespaces: run it as root");
    }
    let o = opts()?;
    eprintln!(
        "==> test_run: {} repeats, best of {} rounds",
        o.repeat, o.rounds
    );
    let kernel = kernel_rows(&o)?;
    eprintln!(
        "==> end to end: {} UDP datagrams per round through a veth, best of {} rounds",
        o.packets, o.rounds
    );
    let e2e = end_to_end(&o)?;

    let head = COUNTS
        .iter()
        .map(|n| format!("{:>12}", format!("{n} src")))
        .collect::<String>();
    println!();
    println!("steering classifiers, ns per packet");
    println!("{:<44}{head}", "in the kernel alone (BPF_PROG_TEST_RUN)");
    for r in &kernel {
        let v: String = r.values.iter().map(|v| format!("{v:>12.1}")).collect();
        println!("  {:<42}{v}", r.name);
    }
    println!(
        "{:<44}{head}",
        format!("end to end over veth (added to {:.0} ns)", e2e.baseline)
    );
    for (c, values) in &e2e.rows {
        let name = match c {
            Classifier::Ebpf => "vpn tc ingress (LPM trie)",
            Classifier::NftSet => "nftables: ip saddr @set mark set",
            Classifier::NftLinear => "nftables: one rule per source",
            Classifier::None => "none",
        };
        let v: String = values.iter().map(|v| format!("{v:>12.1}")).collect();
        println!("  {name:<42}{v}");
    }
    Ok(())
}
