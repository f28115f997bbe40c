//! `vpn-ctl doctor` (`doctor/`): checks what vpn needs from the system and what could get
//! in its way, and explains each finding. The checks only look: nothing is
//! mounted, loaded (beyond a two-instruction probe program that is closed at
//! once), attached or changed.
//!
//! Each check gives a [`Check`]: ok, warn or fail, what was found, and what
//! to do about it. The rule classification is a pure function
//! ([`classify_rule`]) over [`Rule`] values, so it is unit-tested without a
//! kernel.
use std::{
    fs, io,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Command,
};

use serde::Serialize;

use crate::{
    netlink::{Family, Netlink, Rule},
    steer::policy::Policy,
    tunnel::daemon,
    uapi,
};

/// How a check came out. Ordered: the worst of several is their max.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable identifier: `root`, `kernel`, `btf`, `bpf`, `tun`, `cgroup2`,
    /// `bpffs`, `rules`, `pins`, `uapi`.
    pub id: &'static str,
    pub status: Status,
    /// One line: what was found.
    pub summary: String,
    /// Supporting lines (rules, paths, probe results).
    pub details: Vec<String>,
    /// What to do, when there is something to do.
    pub fix: Option<String>,
}

impl Check {
    fn new(id: &'static str, status: Status, summary: impl Into<String>) -> Self {
        Self {
            id,
            status,
            summary: summary.into(),
            details: Vec::new(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    fn details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }
}

/// What the checks compare against: vpn's routing settings (from the command
/// line) and where its pins live.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: Policy,
    /// `--pin-root`, or `<bpffs>/vpn` when `None`.
    pub pin_root: Option<PathBuf>,
}

/// Runs every check, in the order a user should read them.
#[must_use]
pub fn run_all(settings: &Settings) -> Vec<Check> {
    let mut checks = vec![
        check_root(),
        check_kernel(),
        check_btf(),
        check_bpf(),
        check_tun(),
    ];
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    checks.push(check_cgroup2(&mountinfo));
    let bpffs = mounts_of(&mountinfo, "bpf").into_iter().next();
    checks.push(check_bpffs(bpffs.as_deref()));
    checks.extend(check_rules(&settings.policy));
    let pin_root = settings
        .pin_root
        .clone()
        .or_else(|| bpffs.map(|b| b.join("vpn")));
    checks.push(check_pins(pin_root.as_deref()));
    checks.push(check_uapi());
    checks
}

/// The worst status among `checks` (ok when empty).
#[must_use]
pub fn worst(checks: &[Check]) -> Status {
    checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok)
}

// ---------------------------------------------------------------- root

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

fn effective_caps() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

fn check_root() -> Check {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let caps = effective_caps().unwrap_or(0);
    let has = |c: u32| caps & (1u64 << c) != 0;
    let net_admin = has(CAP_NET_ADMIN);
    let bpf = has(CAP_BPF) || has(CAP_SYS_ADMIN);
    let detail = vec![format!(
        "euid {euid}, CAP_NET_ADMIN {}, CAP_BPF {}, CAP_SYS_ADMIN {}",
        yes(net_admin),
        yes(has(CAP_BPF)),
        yes(has(CAP_SYS_ADMIN))
    )];
    if net_admin && bpf {
        let who = if euid == 0 {
            "running as root".to_owned()
        } else {
            format!("running as uid {euid} with CAP_NET_ADMIN and CAP_BPF/CAP_SYS_ADMIN")
        };
        return Check::new("root", Status::Ok, who).details(detail);
    }
    Check::new(
        "root",
        Status::Fail,
        "not privileged enough: vpn needs CAP_NET_ADMIN (interfaces, rules) and CAP_BPF or CAP_SYS_ADMIN (programs, pins)",
    )
    .details(detail)
    .fix("run vpn-ctl as root (sudo vpn-ctl ...), or from a service with AmbientCapabilities=CAP_NET_ADMIN CAP_BPF CAP_SYS_ADMIN")
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

// ---------------------------------------------------------------- kernel

/// `uname -r`.
fn kernel_release() -> String {
    // SAFETY: uname fills a zeroed utsname; fields are NUL-terminated.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::new();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// (major, minor) of a release string such as `6.1.0-18-amd64`.
#[must_use]
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// The kernel's build configuration, from /boot or /proc/config.gz.
fn kernel_config(release: &str) -> Option<(String, String)> {
    let boot = format!("/boot/config-{release}");
    if let Ok(text) = fs::read_to_string(&boot) {
        return Some((boot, text));
    }
    if Path::new("/proc/config.gz").exists() {
        let out = Command::new("gzip")
            .args(["-dc", "/proc/config.gz"])
            .output()
            .ok()?;
        if out.status.success() {
            return Some((
                "/proc/config.gz".to_owned(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            ));
        }
    }
    None
}

/// Options vpn relies on, and what for.
const CONFIG_NEEDED: [(&str, &str); 7] = [
    ("CONFIG_BPF_SYSCALL", "the bpf() syscall"),
    (
        "CONFIG_CGROUP_BPF",
        "cgroup sock/sock_addr hooks (steering)",
    ),
    (
        "CONFIG_NET_CLS_BPF",
        "TC programs (uplink guard, forwarded sources)",
    ),
    (
        "CONFIG_NET_SCH_INGRESS",
        "the clsact qdisc the TC programs hang on",
    ),
    ("CONFIG_TUN", "the tunnel interface"),
    ("CONFIG_DEBUG_INFO_BTF", "BTF at /sys/kernel/btf/vmlinux"),
    ("CONFIG_CGROUPS", "cgroups"),
];

/// Which of [`CONFIG_NEEDED`] a config text lacks (`=y` and `=m` count).
#[must_use]
pub fn missing_config(config: &str) -> Vec<&'static str> {
    CONFIG_NEEDED
        .iter()
        .filter(|(opt, _)| {
            !config.lines().any(|l| {
                l.strip_prefix(opt)
                    .is_some_and(|rest| rest == "=y" || rest == "=m")
            })
        })
        .map(|(opt, _)| *opt)
        .collect()
}

fn check_kernel() -> Check {
    let release = kernel_release();
    let version = parse_release(&release);
    let mut details = Vec::new();
    let mut status = Status::Ok;
    let mut fix = None;
    let summary = match version {
        Some(v) if v >= (5, 7) => format!("Linux {release} (>= 5.7)"),
        Some(_) => {
            status = Status::Fail;
            fix = Some("use a kernel >= 5.7 (cgroup BPF links, BPF_PROG_TYPE_CGROUP_SOCKOPT and the helpers vpn's programs use)".to_owned());
            format!("Linux {release} is older than 5.7")
        }
        None => {
            status = Status::Warn;
            format!("cannot parse the kernel release {release:?}")
        }
    };
    match kernel_config(&release) {
        Some((path, text)) => {
            let missing = missing_config(&text);
            if missing.is_empty() {
                details.push(format!(
                    "{path}: {} set",
                    CONFIG_NEEDED.map(|(o, _)| o).join(", ")
                ));
            } else {
                status = status.max(Status::Fail);
                for opt in &missing {
                    let what = CONFIG_NEEDED
                        .iter()
                        .find(|(o, _)| o == opt)
                        .map_or("", |(_, w)| *w);
                    details.push(format!("{path}: {opt} is not set ({what})"));
                }
                fix.get_or_insert_with(|| {
                    "use a kernel built with the options above (every mainstream distribution kernel has them)".to_owned()
                });
            }
        }
        None => details.push(
            "kernel config not readable (no /boot/config-*, no /proc/config.gz); relying on the probes below".to_owned(),
        ),
    }
    let mut c = Check::new("kernel", status, summary).details(details);
    c.fix = fix;
    c
}

fn check_btf() -> Check {
    let p = Path::new("/sys/kernel/btf/vmlinux");
    if p.exists() {
        Check::new("btf", Status::Ok, "kernel BTF at /sys/kernel/btf/vmlinux")
    } else {
        Check::new(
            "btf",
            Status::Fail,
            "no kernel BTF at /sys/kernel/btf/vmlinux: vpn's programs are CO-RE and need it",
        )
        .fix("use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian, Ubuntu, Fedora, Arch and NixOS kernels are)")
    }
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_CGROUP_SOCK: u32 = 9;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_INET_SOCK_CREATE: u32 = 2;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;

/// Loads `r0 = 1; exit` as `prog_type`; the program is closed at once.
fn probe_prog(prog_type: u32, attach: u32) -> Result<(), io::Error> {
    // mov64 r0, 1 ; exit
    let insns: [u64; 2] = [0x0000_0001_0000_00b7, 0x95];
    let license = c"GPL";
    let attr = ProgLoadAttr {
        prog_type,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: attach,
        ..Default::default()
    };
    // SAFETY: attr and what it points to outlive the call; the size is the
    // struct's, which the kernel accepts (unknown tail fields are zero).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is the program fd the kernel just returned.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

fn check_bpf() -> Check {
    let probes = [
        (
            "cgroup/sock_create",
            BPF_PROG_TYPE_CGROUP_SOCK,
            BPF_CGROUP_INET_SOCK_CREATE,
        ),
        (
            "cgroup/connect4 (sock_addr)",
            BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            BPF_CGROUP_INET4_CONNECT,
        ),
        ("tc classifier", BPF_PROG_TYPE_SCHED_CLS, 0),
    ];
    let mut details = Vec::new();
    let mut status = Status::Ok;
    let mut fix = None;
    for (name, ty, attach) in probes {
        match probe_prog(ty, attach) {
            Ok(()) => details.push(format!("{name}: a probe program loads")),
            Err(e) => {
                status = Status::Fail;
                let (why, what) = match e.raw_os_error() {
                    Some(libc::ENOSYS) => (
                        "no bpf() syscall",
                        "use a kernel with CONFIG_BPF_SYSCALL=y",
                    ),
                    Some(libc::EPERM) => (
                        "not permitted",
                        "run as root; also check kernel.unprivileged_bpf_disabled and lockdown (cat /sys/kernel/security/lockdown)",
                    ),
                    Some(libc::EINVAL) => (
                        "program type not supported",
                        "use a kernel with CONFIG_CGROUP_BPF=y and CONFIG_NET_CLS_BPF",
                    ),
                    _ => ("load failed", "see the error above"),
                };
                details.push(format!("{name}: {why} ({e})"));
                fix.get_or_insert(what);
            }
        }
    }
    let summary = if status == Status::Ok {
        "bpf() works: cgroup sock, sock_addr and TC programs load"
    } else {
        "the kernel refused a probe program: steering cannot load"
    };
    let mut c = Check::new("bpf", status, summary).details(details);
    c.fix = fix.map(str::to_owned);
    c
}

fn check_tun() -> Check {
    match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => Check::new("tun", Status::Ok, "/dev/net/tun opens"),
        Err(e) => Check::new(
            "tun",
            Status::Fail,
            format!("/dev/net/tun: {e}: `vpn-ctl up` cannot create the tunnel interface"),
        )
        .fix("modprobe tun; in a container, pass the device through (e.g. --device /dev/net/tun)"),
    }
}

// ---------------------------------------------------------------- mounts

/// Mount points of `fstype` from a mountinfo text.
#[must_use]
pub fn mounts_of(mountinfo: &str, fstype: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            (post.split_whitespace().next()? == fstype)
                .then(|| pre.split_whitespace().nth(4))
                .flatten()
                .map(|m| PathBuf::from(m.replace("\\040", " ")))
        })
        .collect()
}

/// The cgroup layout a mountinfo text shows.
#[must_use]
pub fn check_cgroup2(mountinfo: &str) -> Check {
    let v2 = mounts_of(mountinfo, "cgroup2");
    let v1 = mounts_of(mountinfo, "cgroup");
    match (v2.first(), v1.is_empty()) {
        (None, _) => Check::new(
            "cgroup2",
            Status::Fail,
            "no cgroup v2 filesystem is mounted: vpn steers per cgroup v2",
        )
        .fix("boot with systemd.unified_cgroup_hierarchy=1, or mount one: mount -t cgroup2 none /sys/fs/cgroup"),
        (Some(m), true) => Check::new(
            "cgroup2",
            Status::Ok,
            format!("unified cgroup v2 hierarchy at {}", m.display()),
        ),
        (Some(m), false) => Check::new(
            "cgroup2",
            Status::Warn,
            format!(
                "hybrid hierarchy: cgroup v2 at {}, v1 controllers beside it",
                m.display()
            ),
        )
        .details(vec![format!(
            "v1 mounts: {}",
            v1.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )])
        .fix(format!(
            "steering works: give cgroups as paths under {} (systemd mirrors services there); a unified hierarchy (systemd.unified_cgroup_hierarchy=1) is simpler",
            m.display()
        )),
    }
}

fn check_bpffs(bpffs: Option<&Path>) -> Check {
    match bpffs {
        Some(p) => Check::new("bpffs", Status::Ok, format!("bpffs mounted at {}", p.display())),
        None => Check::new(
            "bpffs",
            Status::Warn,
            "no bpffs is mounted: pins cannot outlive vpn-ctl until one is",
        )
        .fix("vpn-ctl mounts one at /sys/fs/bpf on first use; at boot systemd's sys-fs-bpf.mount does (or: mount -t bpf bpf /sys/fs/bpf)"),
    }
}

// ---------------------------------------------------------------- rules

/// Who a policy rule appears to belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    /// vpn's own rule, as it installs it.
    Vpn,
    WgQuick,
    Tailscale,
    Mullvad,
    /// Nobody known, but it collides with vpn's priority, mark bits or table.
    Unknown,
}

impl Owner {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Owner::Vpn => "vpn",
            Owner::WgQuick => "wg-quick",
            Owner::Tailscale => "Tailscale",
            Owner::Mullvad => "Mullvad",
            Owner::Unknown => "another tool",
        }
    }
}

/// What [`classify_rule`] makes of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFinding {
    pub owner: Owner,
    pub status: Status,
    /// Why it matters.
    pub reason: String,
}

const WG_QUICK: u32 = 51820;
const TAILSCALE_TABLE: u32 = 52;
const TAILSCALE_PRIORITIES: std::ops::RangeInclusive<u32> = 5210..=5270;
const TAILSCALE_MASK: u32 = 0xff_0000;
const MULLVAD_TABLE: u32 = 1_836_018_789;
const MULLVAD_MARK: u32 = 0x6d6f_6c65;
/// Tables vpn must not use: unspec, default, main, local, and the tools' above.
const FOREIGN_TABLES: [u32; 7] = [0, 253, 254, 255, WG_QUICK, TAILSCALE_TABLE, MULLVAD_TABLE];

fn owner_of(rule: &Rule) -> Option<Owner> {
    let mark = rule.fwmark.map(|(m, _)| m);
    let mask = rule.fwmark.map(|(_, m)| m);
    if rule.table == WG_QUICK || mark == Some(WG_QUICK) {
        Some(Owner::WgQuick)
    } else if rule.table == TAILSCALE_TABLE
        || TAILSCALE_PRIORITIES.contains(&rule.priority)
        || mask == Some(TAILSCALE_MASK)
    {
        Some(Owner::Tailscale)
    } else if rule.table == MULLVAD_TABLE || mark == Some(MULLVAD_MARK) {
        Some(Owner::Mullvad)
    } else {
        None
    }
}

/// Classifies one policy rule against vpn's policy: vpn's own, another
/// tool's (wg-quick, Tailscale, Mullvad), a collision, or nothing to say
/// (`None`: the kernel's default rules and unrelated ones).
///
/// Collisions are judged exactly as `vpn-ctl` judges them before it
/// installs its rules: a foreign rule at vpn's priorities (P..=P+2), or
/// matching a fwmark that uses vpn's steer or direct bit, makes vpn refuse
/// (fail). A foreign rule that looks up vpn's table is a warning.
#[must_use]
pub fn classify_rule(rule: &Rule, policy: &Policy) -> Option<RuleFinding> {
    let all = Policy {
        full: true,
        ..*policy
    };
    if all.rules(rule.family).contains(rule) {
        return Some(RuleFinding {
            owner: Owner::Vpn,
            status: Status::Ok,
            reason: "vpn's own rule".to_owned(),
        });
    }
    let ours_bits = policy.mask | policy.direct_mark;
    let mut problems = Vec::new();
    let mut status = Status::Ok;
    if (policy.priority..=policy.priority + 2).contains(&rule.priority) {
        status = Status::Fail;
        problems.push(format!(
            "it sits at vpn's priorities {}-{}: vpn refuses to install its rules (pick others with --priority)",
            policy.priority,
            policy.priority + 2
        ));
    }
    if let Some((mark, mask)) = rule.fwmark {
        if mark & mask & ours_bits != 0 {
            status = Status::Fail;
            problems.push(format!(
                "its fwmark {mark:#x}/{mask:#x} uses vpn's mark bits {:#x} (steer) / {:#x} (direct): vpn refuses to install its rules (pick another bit with --mark)",
                policy.mask, policy.direct_mark
            ));
        }
    }
    if rule.table == policy.table {
        status = status.max(Status::Warn);
        problems.push(format!(
            "it looks up vpn's table {}: pick another with --table",
            policy.table
        ));
    }
    let owner = owner_of(rule);
    let note = match owner {
        Some(Owner::WgQuick) => Some(format!(
            "a wg-quick tunnel (table/fwmark {WG_QUICK}); vpn's rule at {} comes first, so steered traffic still takes vpn's tunnel, while unsteered traffic and vpn's own encrypted UDP follow wg-quick's rules (vpn's packets then travel inside wg-quick's tunnel)",
            policy.priority
        )),
        Some(Owner::Tailscale) => Some(format!(
            "Tailscale (table {TAILSCALE_TABLE}, rules {}-{}, mark bits {TAILSCALE_MASK:#x}); its rules come before vpn's at {}: its mark bits do not overlap vpn's, but with a Tailscale exit node table 52 holds a default route and takes steered traffic before vpn's rule does",
            TAILSCALE_PRIORITIES.start(),
            TAILSCALE_PRIORITIES.end(),
            policy.priority
        )),
        Some(Owner::Mullvad) => Some(format!(
            "Mullvad (table {MULLVAD_TABLE}, mark {MULLVAD_MARK:#x}); Mullvad's firewall also blocks traffic that bypasses its tunnel, vpn's encrypted UDP included, unless it is allowed (split tunneling or local network sharing)"
        )),
        _ => None,
    };
    if owner.is_none() && problems.is_empty() {
        return None;
    }
    if owner.is_some() {
        status = status.max(Status::Warn);
    }
    let reason = note
        .into_iter()
        .chain(problems)
        .collect::<Vec<_>>()
        .join("; ");
    Some(RuleFinding {
        owner: owner.unwrap_or(Owner::Unknown),
        status,
        reason,
    })
}

/// Checks from a list of rules (both families): one per owner found, or a
/// single ok.
#[must_use]
pub fn rule_checks(rules: &[Rule], policy: &Policy) -> Vec<Check> {
    let mut by_owner: Vec<(Owner, Status, Vec<String>, Vec<String>)> = Vec::new();
    for rule in rules {
        let Some(f) = classify_rule(rule, policy) else {
            continue;
        };
        let idx = match by_owner.iter().position(|(o, ..)| *o == f.owner) {
            Some(i) => i,
            None => {
                by_owner.push((f.owner, Status::Ok, Vec::new(), Vec::new()));
                by_owner.len() - 1
            }
        };
        let entry = &mut by_owner[idx];
        entry.1 = entry.1.max(f.status);
        entry.2.push(rule.to_string());
        if !entry.3.contains(&f.reason) {
            entry.3.push(f.reason);
        }
    }
    by_owner.sort_by_key(|(o, ..)| *o);
    let mut checks: Vec<Check> = by_owner
        .into_iter()
        .map(|(owner, status, rules, reasons)| {
            let summary = match owner {
                Owner::Vpn => format!("vpn's own rules are installed ({})", rules.len()),
                Owner::Unknown => format!(
                    "{} rule(s) collide with vpn's priority {}, mark bits or table {}",
                    rules.len(),
                    policy.priority,
                    policy.table
                ),
                o => format!("{} rules found ({})", o.name(), rules.len()),
            };
            let fix = match (owner, status) {
                (Owner::Vpn, _) | (_, Status::Ok) => None,
                (_, Status::Fail) => Some(format!(
                    "remove the colliding rules, or run vpn with other settings (--priority, --mark, --table); vpn uses priority {}-{}, mark {:#x}, direct {:#x}, table {}",
                    policy.priority, policy.priority + 2, policy.mask, policy.direct_mark, policy.table
                )),
                (Owner::Unknown, _) => Some(format!("pick another vpn table with --table (now {})", policy.table)),
                (o, _) => Some(format!(
                    "{} and vpn can run together; read the notes above for where traffic goes",
                    o.name()
                )),
            };
            let mut details: Vec<String> = rules.iter().map(|r| format!("rule: {r}")).collect();
            if owner != Owner::Vpn {
                details.extend(reasons);
            }
            let mut c = Check::new("rules", status, summary).details(details);
            c.fix = fix;
            c
        })
        .collect();
    if checks.iter().all(|c| c.status == Status::Ok) && checks.len() <= 1 {
        let mut c = Check::new(
            "rules",
            Status::Ok,
            format!(
                "no rule collides with vpn's priority {}, mark {:#x}/direct {:#x} or table {}, and no wg-quick, Tailscale or Mullvad rules",
                policy.priority, policy.mask, policy.direct_mark, policy.table
            ),
        );
        if let Some(own) = checks.pop() {
            c.details = own.details;
            c.details.insert(0, own.summary);
        }
        checks.push(c);
    }
    checks
}

fn check_rules(policy: &Policy) -> Vec<Check> {
    let listed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                let nl = Netlink::new().map_err(|e| e.to_string())?;
                let mut all = Vec::new();
                for family in [Family::V4, Family::V6] {
                    all.extend(nl.list_rules(family).await.map_err(|e| e.to_string())?);
                }
                Ok::<_, String>(all)
            })
        });
    let mut checks = Vec::new();
    if FOREIGN_TABLES.contains(&policy.table) {
        checks.push(
            Check::new(
                "rules",
                Status::Fail,
                format!(
                    "vpn's table {} belongs to the system or another VPN tool",
                    policy.table
                ),
            )
            .fix("choose another with --table (default 30318)"),
        );
    }
    match listed {
        Ok(rules) => checks.extend(rule_checks(&rules, policy)),
        Err(e) => checks.push(
            Check::new(
                "rules",
                Status::Warn,
                format!("cannot list policy rules: {e}"),
            )
            .fix("run as root; `ip rule` and `ip -6 rule` show them too"),
        ),
    }
    checks
}

// ---------------------------------------------------------------- pins

fn check_pins(pin_root: Option<&Path>) -> Check {
    let Some(root) = pin_root else {
        return Check::new("pins", Status::Ok, "no bpffs, so no pinned steering");
    };
    let mut tunnels: Vec<String> = match fs::read_dir(root) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Check::new(
                "pins",
                Status::Warn,
                format!("cannot read {}: {e}", root.display()),
            )
        }
    };
    tunnels.sort();
    if tunnels.is_empty() {
        return Check::new(
            "pins",
            Status::Ok,
            format!("no pinned steering under {}", root.display()),
        );
    }
    let mut details = Vec::new();
    let mut stale = Vec::new();
    for t in &tunnels {
        match daemon::running_pid(t) {
            Some(pid) => details.push(format!(
                "{t}: steering pinned at {}, tunnel daemon pid {pid}",
                root.join(t).display()
            )),
            None => {
                details.push(format!(
                    "{t}: steering pinned at {} with no daemon: still enforcing (by design, fail-closed): its sources reach nothing; clear it with `vpn-ctl --tunnel {t} steer clear`",
                    root.join(t).display()
                ));
                stale.push(t.clone());
            }
        }
    }
    if stale.is_empty() {
        Check::new(
            "pins",
            Status::Ok,
            format!("{} tunnel(s) pinned, each with a daemon", tunnels.len()),
        )
        .details(details)
    } else {
        Check::new(
            "pins",
            Status::Warn,
            format!(
                "steering pinned with no daemon for {}: still enforcing (by design, fail-closed)",
                stale.join(", ")
            ),
        )
        .details(details)
        .fix(format!(
            "bring the tunnel up again (vpn-ctl up /etc/vpn/{}.conf), or clear it with {}",
            stale[0],
            stale
                .iter()
                .map(|t| format!("`vpn-ctl --tunnel {t} steer clear`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

// ---------------------------------------------------------------- sockets

fn entries_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == ext))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn check_uapi() -> Check {
    let mut details = Vec::new();
    let mut stale = Vec::new();
    for sock in entries_with(Path::new(uapi::SOCKET_DIR), "sock") {
        match UnixStream::connect(&sock) {
            Ok(_) => details.push(format!("{}: listening", sock.display())),
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                details.push(format!("{}: no listener (stale)", sock.display()));
                stale.push(sock);
            }
            Err(e) => details.push(format!("{}: {e}", sock.display())),
        }
    }
    for pid in entries_with(Path::new(daemon::RUN_DIR), "pid") {
        let iface = pid
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if daemon::running_pid(&iface).is_none() {
            details.push(format!("{}: its daemon is gone (stale)", pid.display()));
            stale.push(pid);
        }
    }
    if stale.is_empty() {
        let summary = if details.is_empty() {
            format!("no UAPI sockets in {}", uapi::SOCKET_DIR)
        } else {
            "every UAPI socket has a listener".to_owned()
        };
        return Check::new("uapi", Status::Ok, summary).details(details);
    }
    Check::new(
        "uapi",
        Status::Warn,
        format!(
            "{} stale socket(s)/pidfile(s) from a daemon that died",
            stale.len()
        ),
    )
    .details(details)
    .fix(format!(
        "`wg show` and `vpn-ctl show` trip over them; remove them: rm {}",
        stale
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steer::policy::{DEFAULT_PRIORITY, DEFAULT_TABLE};

    fn policy() -> Policy {
        Policy {
            table: DEFAULT_TABLE,
            priority: DEFAULT_PRIORITY,
            mark: 0x1000_0000,
            mask: 0x1000_0000,
            direct_mark: 0x2000_0000,
            full: false,
        }
    }

    fn rule(priority: u32, table: u32, fwmark: Option<(u32, u32)>) -> Rule {
        Rule {
            fwmark,
            ..Rule::lookup(Family::V4, priority, table)
        }
    }

    #[test]
    fn own_rules_of_both_modes_are_vpns() {
        let p = policy();
        for family in [Family::V4, Family::V6] {
            for r in (Policy { full: true, ..p }).rules(family) {
                let f = classify_rule(&r, &p).unwrap();
                assert_eq!((f.owner, f.status), (Owner::Vpn, Status::Ok), "{r}");
            }
        }
    }

    #[test]
    fn kernel_defaults_and_unrelated_rules_say_nothing() {
        let p = policy();
        for r in [
            rule(0, 255, None),
            rule(32766, 254, None),
            rule(32767, 253, None),
            rule(100, 100, Some((0x1, 0x1))),
        ] {
            assert_eq!(classify_rule(&r, &p), None, "{r}");
        }
    }

    #[test]
    fn tailscale_is_recognised_and_does_not_collide() {
        let p = policy();
        for r in [
            rule(5210, 254, Some((0x80000, 0xff0000))),
            rule(5230, 254, None),
            rule(5270, 52, None),
        ] {
            let f = classify_rule(&r, &p).unwrap();
            assert_eq!((f.owner, f.status), (Owner::Tailscale, Status::Warn), "{r}");
            assert!(f.reason.contains("exit node"), "{}", f.reason);
        }
    }

    #[test]
    fn wg_quick_is_recognised() {
        let p = policy();
        let r = Rule {
            invert: true,
            ..rule(32765, 51820, Some((51820, u32::MAX)))
        };
        let f = classify_rule(&r, &p).unwrap();
        assert_eq!((f.owner, f.status), (Owner::WgQuick, Status::Warn));
    }

    #[test]
    fn mullvad_mark_shares_the_direct_bit() {
        // 0x6d6f6c65 has bit 0x20000000 set: vpn's conflict check refuses it.
        let p = policy();
        let r = Rule {
            invert: true,
            ..rule(32764, MULLVAD_TABLE, Some((MULLVAD_MARK, u32::MAX)))
        };
        let f = classify_rule(&r, &p).unwrap();
        assert_eq!((f.owner, f.status), (Owner::Mullvad, Status::Fail));
        assert!(f.reason.contains("--mark"), "{}", f.reason);
        // The table alone is only a warning.
        let f = classify_rule(&rule(32000, MULLVAD_TABLE, None), &p).unwrap();
        assert_eq!((f.owner, f.status), (Owner::Mullvad, Status::Warn));
    }

    #[test]
    fn foreign_rules_at_vpns_priorities_or_bits_fail() {
        let p = policy();
        for r in [
            rule(10318, 100, None),
            rule(10320, 30318, Some((0x2000_0000, 0x2000_0000))),
            rule(20000, 100, Some((0x1000_0000, 0xf000_0000))),
        ] {
            let f = classify_rule(&r, &p).unwrap();
            assert_eq!((f.owner, f.status), (Owner::Unknown, Status::Fail), "{r}");
        }
        // A mark whose value misses vpn's bits does not collide (as in
        // vpn's own check), nor does a rule with a different table.
        assert_eq!(
            classify_rule(&rule(20000, 100, Some((0x1, 0xf000_0001))), &p),
            None
        );
        let f = classify_rule(&rule(20000, DEFAULT_TABLE, None), &p).unwrap();
        assert_eq!((f.owner, f.status), (Owner::Unknown, Status::Warn));
    }

    #[test]
    fn a_moved_policy_owns_other_rules() {
        let p = Policy {
            priority: 20000,
            ..policy()
        };
        assert_eq!(classify_rule(&rule(10318, 100, None), &p), None);
        let f = classify_rule(&rule(20001, 100, None), &p).unwrap();
        assert_eq!(f.status, Status::Fail);
    }

    #[test]
    fn rule_checks_group_by_owner() {
        let p = policy();
        let mut rules = p.rules(Family::V4);
        rules.extend([
            rule(5210, 254, Some((0x80000, 0xff0000))),
            rule(5270, 52, None),
            rule(10319, 7, None),
        ]);
        let checks = rule_checks(&rules, &p);
        let summaries: Vec<_> = checks
            .iter()
            .map(|c| (c.status, c.summary.clone()))
            .collect();
        assert_eq!(checks.len(), 3, "{summaries:?}");
        assert_eq!(checks[0].status, Status::Ok);
        assert_eq!(checks[1].status, Status::Warn);
        assert!(checks[1].summary.contains("Tailscale"));
        assert_eq!(checks[1].details.len(), 3);
        assert_eq!(checks[2].status, Status::Fail);
        assert_eq!(worst(&checks), Status::Fail);
        // Only vpn's own: one ok line.
        let checks = rule_checks(&p.rules(Family::V4), &p);
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].status, Status::Ok);
        assert!(checks[0].summary.starts_with("no rule collides"));
    }

    #[test]
    fn kernel_release_and_config() {
        assert_eq!(parse_release("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_release("5.15.0"), Some((5, 15)));
        assert_eq!(parse_release("x"), None);
        let cfg = CONFIG_NEEDED
            .iter()
            .map(|(o, _)| format!("{o}=y\n"))
            .collect::<String>();
        assert!(missing_config(&cfg).is_empty());
        let cfg = cfg.replace("CONFIG_CGROUP_BPF=y", "# CONFIG_CGROUP_BPF is not set");
        assert_eq!(missing_config(&cfg), vec!["CONFIG_CGROUP_BPF"]);
    }

    #[test]
    fn cgroup_layouts() {
        let unified = "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(check_cgroup2(unified).status, Status::Ok);
        let hybrid = "30 1 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                      31 1 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let c = check_cgroup2(hybrid);
        assert_eq!(c.status, Status::Warn);
        assert!(c.summary.contains("/sys/fs/cgroup/unified"));
        assert_eq!(check_cgroup2("").status, Status::Fail);
    }
}
