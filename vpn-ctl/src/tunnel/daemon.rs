//! `vpn-ctl up` / `down`: the daemon's lifecycle.
//!
//! `up FILE` (background): the command re-executes itself as
//! `up FILE --foreground` in a new session with stdout/stderr appended to
//! `/run/vpn/<iface>.log` and a pipe on [`READY_FD_ENV`]; the daemon writes
//! `ok` to the pipe once the interface, UAPI socket and pidfile exist, or
//! its error. The parent exits 0 only on `ok`, else with the error.
//!
//! Bring-up order, each step undone if a later one fails: root check,
//! config, "interface exists" check, endpoint resolution, TUN, UDP sockets,
//! peers (the UAPI `set` path), MTU/addresses/link up/routes, UAPI socket,
//! status socket, pidfile, data path threads, timers.
//!
//! The daemon stops on SIGTERM/SIGINT or when its link is deleted, and
//! then removes routes, sockets, pidfile and the TUN (closing it deletes
//! the link, and its addresses with it).
//!
//! Two variants share this lifecycle:
//! - `up FILE --netns TARGET` ([`Mode::Config`] with a [`Target`]): the
//!   TUN is created here and moved into TARGET under its name, then
//!   configured there (addresses, MTU, routes in TARGET's main table for
//!   `Table = auto`, and `DNS=` in `/etc/netns/NAME/resolv.conf`); the UDP
//!   sockets stay here. A named namespace that `up` created is deleted
//!   again at shutdown, or by a later `down` after a SIGKILL (the changes
//!   are recorded in `/run/vpn/<iface>.netns.json`).
//! - [`Mode::Bare`] (`vpn-wg IFACE`, the wireguard-go drop-in): only the
//!   TUN, the UDP sockets and the UAPI socket; whoever drives the UAPI
//!   (`wg`, `wg-quick`) sets keys, peers, addresses and routes.

use std::{
    fs,
    io::{self, Read, Write},
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::signal::unix::{signal, SignalKind};

use super::{
    control::{ControlServer, StaticInfo},
    netcfg::{self, Applied},
};
use crate::{
    config::{self, Config, ConfigError},
    device::{
        bind_sockets,
        datapath::{DataPath, Signals},
        timers,
        tun::{Tun, TunError, TunOptions},
        Device, SocketSettings, DEFAULT_MTU,
    },
    netlink::{
        self,
        netns::{self, Netns, NetnsError, ResolvConf, Target},
        Netlink, NetlinkError,
    },
    uapi::{self, SetRequest, UapiDevice, UapiError, UapiServer},
};

/// Where pidfiles, logs and status sockets live.
pub const RUN_DIR: &str = "/run/vpn";
/// The environment variable carrying the readiness pipe's fd.
pub const READY_FD_ENV: &str = "VPN_CTL_READY_FD";

/// `/run/vpn/<iface>.pid`
pub fn pid_path(iface: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{iface}.pid"))
}

/// `/run/vpn/<iface>.log`
pub fn log_path(iface: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{iface}.log"))
}

/// `/run/vpn/<iface>.netns.json`: what `up --netns` changed (see
/// [`netns::Changes`]).
pub fn netns_state_path(iface: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{iface}.netns.json"))
}

/// `/run/vpn/<iface>.ctl`
pub fn ctl_path(iface: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{iface}.ctl"))
}

/// Why `up` failed.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("vpn-ctl up needs root (CAP_NET_ADMIN) to create the TUN device, addresses and routes; run it with sudo")]
    NotRoot,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("interface {0} already exists")]
    InterfaceExists(String),
    #[error("interface {iface} already exists in network namespace {netns}")]
    InterfaceExistsIn { iface: String, netns: String },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{iface} is already up (daemon pid {pid})")]
    AlreadyUp { iface: String, pid: u32 },
    #[error("cannot resolve endpoint {endpoint}")]
    Resolve {
        endpoint: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Tun(#[from] TunError),
    #[error("{0}")]
    Uapi(#[from] UapiError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("{op}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("the daemon failed: {0}")]
    Daemon(String),
}

fn io_err(op: impl Into<String>) -> impl FnOnce(io::Error) -> UpError {
    let op = op.into();
    move |source| UpError::Io { op, source }
}

/// Refuses to go on without root.
///
/// # Errors
/// [`UpError::NotRoot`] when `euid` is not 0.
pub fn check_root(euid: u32) -> Result<(), UpError> {
    if euid == 0 {
        Ok(())
    } else {
        Err(UpError::NotRoot)
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// A live process with this id (zombies count as dead).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// The pid in a pidfile, if the process still runs.
pub fn running_pid(iface: &str) -> Option<u32> {
    let pid: u32 = fs::read_to_string(pid_path(iface))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    alive(pid).then_some(pid)
}

/// What a daemon serves.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `vpn-ctl up FILE`: the tunnel a wg-quick file describes, with its
    /// addresses, MTU, routes and DNS, optionally inside another namespace.
    Config {
        /// The wg-quick file.
        path: PathBuf,
        /// Where the tunnel interface lives (`--netns`).
        netns: Option<Target>,
    },
    /// `vpn-wg IFACE`: a bare interface configured over the UAPI only.
    Bare {
        /// The interface name.
        iface: String,
    },
}

impl Mode {
    /// The interface this mode's daemon serves.
    ///
    /// # Errors
    /// A bad file name or interface name.
    pub fn interface(&self) -> Result<String, ConfigError> {
        match self {
            Self::Config { path, .. } => config::interface_name_from_path(path),
            Self::Bare { iface } => {
                config::validate_interface_name(iface).map_err(|kind| ConfigError {
                    file: iface.clone(),
                    line: None,
                    kind,
                })?;
                Ok(iface.clone())
            }
        }
    }

    /// The arguments that run this mode's daemon in the foreground
    /// (`up FILE [--netns T] --foreground`, or `-f IFACE`).
    fn foreground_args(&self) -> Vec<std::ffi::OsString> {
        match self {
            Self::Config { path, netns } => {
                let mut v = vec!["up".into(), path.clone().into_os_string()];
                if let Some(t) = netns {
                    v.push("--netns".into());
                    v.push(match t {
                        Target::Named(n) => n.into(),
                        Target::Path(p) => p.clone().into_os_string(),
                    });
                }
                v.push("--foreground".into());
                v
            }
            Self::Bare { iface } => vec!["-f".into(), iface.into()],
        }
    }
}

/// Checks what can be checked before forking: root, the config, the name.
/// Returns the config (`None` in bare mode) and the interface name.
///
/// # Errors
/// The first problem found.
pub fn preflight(mode: &Mode) -> Result<(Option<Config>, String), UpError> {
    check_root(euid())?;
    let config = match mode {
        Mode::Config { path, .. } => Some(Config::load(path)?),
        Mode::Bare { .. } => None,
    };
    let iface = mode.interface()?;
    if let Some(pid) = running_pid(&iface) {
        return Err(UpError::AlreadyUp { iface, pid });
    }
    // With --netns the name only has to be free inside the target, which
    // bring-up checks once the namespace is open.
    let here = !matches!(mode, Mode::Config { netns: Some(_), .. });
    if here && netlink::ifindex(&iface).is_some() {
        return Err(UpError::InterfaceExists(iface));
    }
    Ok((config, iface))
}

/// How the background daemon's output is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonOutput {
    /// Appended to `/run/vpn/<iface>.log`.
    LogFile,
    /// This process's stdout and stderr (wireguard-go with `LOG_LEVEL`).
    Inherit,
}

/// Starts the daemon in the background and waits until it is ready.
/// Returns the daemon's pid and log file.
///
/// # Errors
/// The preflight error, or the daemon's own error message.
pub fn up_background(mode: &Mode, output: DaemonOutput) -> Result<(u32, PathBuf), UpError> {
    let (_, iface) = preflight(mode)?;
    let mode = match mode {
        Mode::Config { path, netns } => Mode::Config {
            path: fs::canonicalize(path)
                .map_err(io_err(format!("resolving {}", path.display())))?,
            netns: netns.clone(),
        },
        m @ Mode::Bare { .. } => m.clone(),
    };
    fs::create_dir_all(RUN_DIR).map_err(io_err(format!("creating {RUN_DIR}")))?;
    let log = log_path(&iface);
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io_err("pipe")(io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptors we own.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let exe = std::env::current_exe().map_err(io_err("finding our own binary"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(mode.foreground_args())
        .env(READY_FD_ENV, fds[1].to_string())
        .stdin(std::process::Stdio::null());
    if output == DaemonOutput::LogFile {
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err(format!("opening {}", log.display())))?;
        cmd.stdout(log_file.try_clone().map_err(io_err("log file"))?)
            .stderr(log_file);
    }
    let w = fds[1];
    // SAFETY: only async-signal-safe calls (setsid, fcntl) in the child.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if libc::fcntl(w, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(io_err("starting the daemon"))?;
    drop(write_end);
    let mut msg = String::new();
    let _ = fs::File::from(read_end).read_to_string(&mut msg);
    let msg = msg.trim();
    if msg == "ok" {
        return Ok((child.id(), log));
    }
    let _ = child.wait();
    Err(UpError::Daemon(if msg.is_empty() {
        match output {
            DaemonOutput::LogFile => format!(
                "it exited before the interface was ready; see {}",
                log.display()
            ),
            DaemonOutput::Inherit => "it exited before the interface was ready".to_owned(),
        }
    } else {
        msg.to_owned()
    }))
}

/// Runs the daemon in this process until it is stopped. If `ready` (the
/// env var [`READY_FD_ENV`]) names a pipe, the result of bring-up is
/// written to it.
///
/// # Errors
/// Bring-up failures (after undoing what was done).
pub fn run_foreground(mode: &Mode) -> Result<(), UpError> {
    let mut ready = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        // SAFETY: the parent passed us this descriptor for our exclusive use.
        .map(|fd| unsafe { fs::File::from_raw_fd(fd) });
    std::env::remove_var(READY_FD_ENV);
    let result = (|| {
        let (config, iface) = preflight(mode)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_err("starting the tokio runtime"))?;
        rt.block_on(daemon(mode, config, iface, &mut ready))
    })();
    if let (Err(e), Some(mut r)) = (&result, ready.take()) {
        let _ = writeln!(r, "{e}");
    }
    result
}

/// Everything the daemon set up, undone in reverse by [`Stack::teardown`].
#[derive(Default)]
struct Stack {
    netlink: Option<Netlink>,
    applied: Applied,
    tun: Option<Arc<Tun>>,
    uapi: Option<tokio::task::JoinHandle<()>>,
    control: Option<tokio::task::JoinHandle<()>>,
    timers: Option<tokio::task::JoinHandle<()>>,
    datapath: Option<DataPath>,
    pidfile: Option<PathBuf>,
    /// Namespace changes, mirrored in `netns_state` for a later `down`.
    netns: netns::Changes,
    netns_state: Option<PathBuf>,
}

impl Stack {
    /// Records a namespace change before going on.
    fn record(&mut self, iface: &str) -> Result<(), UpError> {
        let path = netns_state_path(iface);
        fs::create_dir_all(RUN_DIR).map_err(io_err(format!("creating {RUN_DIR}")))?;
        self.netns
            .save(&path)
            .map_err(io_err(format!("writing {}", path.display())))?;
        self.netns_state = Some(path);
        Ok(())
    }

    async fn teardown(mut self) {
        if let Some(dp) = self.datapath.take() {
            dp.stop();
        }
        for t in [self.timers.take(), self.control.take(), self.uapi.take()]
            .into_iter()
            .flatten()
        {
            t.abort();
            let _ = t.await;
        }
        if let Some(nl) = &self.netlink {
            netcfg::undo(nl, &mut self.applied).await;
        }
        drop(self.netlink.take());
        // Closing the last TUN fd deletes the link and its addresses.
        drop(self.tun.take());
        for done in self.netns.undo() {
            log::info!("{done}");
        }
        if let Some(p) = self.netns_state.take() {
            let _ = fs::remove_file(p);
        }
        if let Some(p) = self.pidfile.take() {
            let _ = fs::remove_file(p);
        }
    }
}

async fn daemon(
    mode: &Mode,
    config: Option<Config>,
    iface: String,
    ready: &mut Option<fs::File>,
) -> Result<(), UpError> {
    let background = ready.is_some();
    let mut stack = Stack::default();
    let signals = Arc::new(Signals::default());
    let mut sigterm = signal(SignalKind::terminate()).map_err(io_err("SIGTERM handler"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(io_err("SIGINT handler"))?;
    let up = match (mode, &config) {
        (Mode::Config { path, netns }, Some(config)) => {
            bring_up(
                config,
                &iface,
                path,
                netns.as_ref(),
                background,
                &mut stack,
                &signals,
            )
            .await
        }
        _ => bring_up_bare(&iface, &mut stack, &signals).await,
    };
    let index = match up {
        Ok(i) => i,
        Err(e) => {
            stack.teardown().await;
            return Err(e);
        }
    };
    log::info!(
        "{iface} is up (ifindex {index}, pid {})",
        std::process::id()
    );
    if let Some(mut r) = ready.take() {
        let _ = r.write_all(b"ok\n");
    }
    // Steering rules live in this namespace: repaired only when the tunnel
    // table is here too.
    let repair_table = match (mode, &config) {
        (Mode::Config { netns: None, .. }, Some(c)) => netcfg::table_id(c.interface.table),
        _ => None,
    };
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = sigterm.recv() => { log::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { log::info!("SIGINT: shutting down"); break; }
            () = signals.notify.notified() => {
                log::info!("{iface} was deleted: shutting down");
                break;
            }
            _ = check.tick() => {
                // Asked of the TUN itself: the link may have been moved to
                // another namespace, where its name is not visible here.
                if !stack.tun.as_ref().is_some_and(|t| t.attached()) {
                    log::info!("{iface} was deleted: shutting down");
                    break;
                }
                if let (Some(nl), Some(table)) = (stack.netlink.as_ref(), repair_table) {
                    crate::steer::policy::repair(nl, table).await;
                }
            }
        }
    }
    stack.teardown().await;
    log::info!("{iface} is down");
    Ok(())
}

/// Opens the TUN here and, with `ns`, moves it into that namespace under
/// its name. The TUN's file stays bound to this namespace, so the target
/// is not kept alive by vpn: when the container goes, its namespace and
/// the link go with it, and the daemon exits. Returns the TUN and its
/// index where it lives.
async fn open_tun(iface: &str, ns: Option<&Netns>) -> Result<(Tun, u32), UpError> {
    let Some(ns) = ns else {
        let tun = Tun::open(&TunOptions {
            name: Some(iface.to_owned()),
            multi_queue: false,
            vnet_hdr: true,
        })?;
        let index = tun.ifindex();
        return Ok((tun, index));
    };
    if ns.run(|| netlink::ifindex(iface))?.is_some() {
        return Err(UpError::InterfaceExistsIn {
            iface: iface.to_owned(),
            netns: ns.shown().to_owned(),
        });
    }
    // A kernel-chosen name here (tunN), renamed as it moves; `Tun::name`
    // keeps the first name, nothing after this point uses it.
    let tun = Tun::open(&TunOptions {
        name: None,
        multi_queue: false,
        vnet_hdr: true,
    })?;
    Netlink::new()?
        .move_link_to_netns_fd(tun.ifindex(), ns.fd(), Some(iface))
        .await?;
    let Some(index) = ns.run(|| netlink::ifindex(iface))? else {
        return Err(UpError::Daemon(format!(
            "{iface} vanished from {} right after it was moved there",
            ns.shown()
        )));
    };
    Ok((tun, index))
}

/// The UDP sockets, the device, its UAPI and status sockets, the pidfile,
/// the data path and the timers: what every mode runs once the TUN exists.
async fn start_device(
    device: Device,
    tun: &Arc<Tun>,
    iface: &str,
    info: StaticInfo,
    mtu: u16,
    stack: &mut Stack,
    signals: &Arc<Signals>,
) -> Result<(), UpError> {
    let device = Arc::new(Mutex::new(device));
    let uapi_path = uapi::socket_path(iface);
    let server = UapiServer::bind(&uapi_path)
        .map_err(io_err(format!("UAPI socket {}", uapi_path.display())))?;
    {
        let device = Arc::clone(&device);
        stack.uapi = Some(tokio::spawn(async move {
            if let Err(e) = server.run(device).await {
                log::error!("UAPI server: {e}");
            }
        }));
    }
    let ctl = ControlServer::bind(&ctl_path(iface)).map_err(io_err(format!(
        "status socket {}",
        ctl_path(iface).display()
    )))?;
    {
        let device = Arc::clone(&device);
        stack.control = Some(tokio::spawn(async move { ctl.run(device, info).await }));
    }

    fs::create_dir_all(RUN_DIR).map_err(io_err(format!("creating {RUN_DIR}")))?;
    let pidfile = pid_path(iface);
    fs::write(&pidfile, format!("{}\n", std::process::id()))
        .map_err(io_err(format!("writing {}", pidfile.display())))?;
    stack.pidfile = Some(pidfile);

    stack.datapath = Some(
        DataPath::start(&device, tun, usize::from(mtu), signals)
            .map_err(io_err("starting the data path threads"))?,
    );
    stack.timers = Some(tokio::spawn(timers::run(device)));
    Ok(())
}

/// The config with `Table = auto` read as the main table when the tunnel
/// lives in a namespace of its own (vpn's table 30318 serves steering,
/// which happens in the namespace vpn-ctl runs in).
fn netns_table(config: &Config, in_netns: bool) -> Config {
    let mut c = config.clone();
    if in_netns && c.interface.table == config::Table::Auto {
        c.interface.table = config::Table::Id(MAIN_TABLE);
    }
    c
}

/// The kernel's main routing table.
const MAIN_TABLE: u32 = 254;

/// `vpn-wg IFACE`: the TUN and sockets only, as wireguard-go starts.
async fn bring_up_bare(
    iface: &str,
    stack: &mut Stack,
    signals: &Arc<Signals>,
) -> Result<u32, UpError> {
    let (tun, index) = open_tun(iface, None).await?;
    let tun = Arc::new(tun);
    stack.tun = Some(Arc::clone(&tun));
    let nl = Netlink::new()?;
    // As wireguard-go: the link starts with MTU 1420; `ip link set mtu`
    // later is followed by the data path.
    nl.set_mtu(index, u32::from(DEFAULT_MTU)).await?;
    if let Err(e) = nl.set_tx_queue_len(index, netcfg::TX_QUEUE_LEN).await {
        log::warn!("cannot set txqueuelen on {iface}: {e}");
    }
    drop(nl);
    let settings = SocketSettings::default();
    let sockets = bind_sockets(0, 0, &settings)?;
    log::info!("listening on UDP port {}", sockets.port());
    let device = Device::unconfigured(sockets, settings);
    let info = StaticInfo {
        interface: iface.to_owned(),
        config: String::new(),
        log_file: None,
        addresses: Vec::new(),
        mtu: DEFAULT_MTU,
        table: None,
        dns: Vec::new(),
        dns_search: Vec::new(),
        netns: None,
    };
    start_device(device, &tun, iface, info, DEFAULT_MTU, stack, signals).await?;
    Ok(index)
}

async fn bring_up(
    config: &Config,
    iface: &str,
    path: &Path,
    netns: Option<&Target>,
    background: bool,
    stack: &mut Stack,
    signals: &Arc<Signals>,
) -> Result<u32, UpError> {
    // Resolve host names first: nothing exists yet if that fails.
    let request = SetRequest::from_config(config, |e| {
        e.resolve().map_err(|source| UpError::Resolve {
            endpoint: e.to_string(),
            source,
        })
    })?;
    let ns = match netns {
        None => None,
        Some(target) => {
            // What a killed daemon of this interface recorded stays ours
            // to undo (preflight made sure none runs now).
            stack.netns = netns::Changes::load(&netns_state_path(iface));
            if stack.netns.created.as_deref() != target.name() {
                stack.netns.created = None;
            }
            let (ns, created) = target.open()?;
            if created {
                log::info!("created network namespace {target}");
                stack.netns.created = target.name().map(str::to_owned);
                stack.record(iface)?;
            }
            Some(ns)
        }
    };
    let (tun, index) = open_tun(iface, ns.as_ref()).await?;
    let tun = Arc::new(tun);
    stack.tun = Some(Arc::clone(&tun));

    // The UDP sockets stay in this namespace, whatever --netns says.
    let settings = SocketSettings::default();
    let fwmark = config.interface.fwmark.unwrap_or(0);
    let sockets = bind_sockets(config.interface.listen_port.unwrap_or(0), fwmark, &settings)?;
    log::info!("listening on UDP port {}", sockets.port());
    let mut device = Device::new(config.interface.private_key.clone(), sockets, settings);
    device.apply(request)?;

    let nl = match &ns {
        Some(ns) => Netlink::new_in(ns)?,
        None => Netlink::new()?,
    };
    // Inside its own namespace the tunnel is the way out: `Table = auto`
    // means that namespace's main table, as in WireGuard's netns recipe.
    let config = &netns_table(config, netns.is_some());
    let mtu = config.interface.mtu.unwrap_or(DEFAULT_MTU);
    let r = netcfg::apply(&nl, iface, index, config, mtu, &mut stack.applied).await;
    if ns.is_some() {
        // A socket opened in the target would keep it alive after its
        // container exits; the routes go with the link anyway.
        stack.applied = Applied::default();
        drop(nl);
    } else {
        stack.netlink = Some(nl);
    }
    r?;
    drop(ns);

    let i = &config.interface;
    if let (Some(target), false) = (netns, i.dns.is_empty() && i.dns_search.is_empty()) {
        match target.name() {
            Some(name) => {
                let text = netns::resolv_conf(&i.dns, &i.dns_search);
                let written = ResolvConf::write(name, &text).map_err(io_err(format!(
                    "writing {}",
                    netns::resolv_conf_path(name).display()
                )))?;
                // An older record knows the file from before vpn.
                stack.netns.resolv_conf.get_or_insert(written);
                stack.record(iface)?;
            }
            None => log::warn!(
                "DNS= is not applied: {target} has no name, so there is no \
                 /etc/netns/NAME/resolv.conf; set the container's resolver itself"
            ),
        }
    }
    let info = StaticInfo {
        interface: iface.to_owned(),
        config: path.display().to_string(),
        log_file: background.then(|| log_path(iface).display().to_string()),
        addresses: i.addresses.iter().map(ToString::to_string).collect(),
        mtu,
        table: netcfg::table_id(i.table),
        dns: i.dns.iter().map(ToString::to_string).collect(),
        dns_search: i.dns_search.clone(),
        netns: netns.map(ToString::to_string),
    };
    start_device(device, &tun, iface, info, mtu, stack, signals).await?;
    Ok(index)
}

/// Why `down` failed.
#[derive(Debug, thiserror::Error)]
pub enum DownError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0} is not up (no daemon in {RUN_DIR} and no such interface)")]
    NotUp(String),
    #[error("the daemon (pid {pid}) did not stop within {secs} s")]
    Stuck { pid: u32, secs: u64 },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The interface a `down` argument names: a config path (`.conf` or an
/// existing file) or an interface name.
///
/// # Errors
/// If neither gives a valid interface name.
pub fn target_interface(target: &str) -> Result<String, ConfigError> {
    let p = Path::new(target);
    if target.contains('/') || target.ends_with(".conf") || p.is_file() {
        config::interface_name_from_path(p)
    } else {
        config::validate_interface_name(target).map_err(|kind| ConfigError {
            file: target.to_owned(),
            line: None,
            kind,
        })?;
        Ok(target.to_owned())
    }
}

/// Stops the tunnel `target` names; returns a message for the user.
///
/// # Errors
/// [`DownError::NotUp`] when there is nothing to stop.
pub fn down(target: &str) -> Result<String, DownError> {
    let iface = target_interface(target)?;
    if let Some(pid) = running_pid(&iface) {
        // SAFETY: plain signal to the daemon's pid.
        unsafe { libc::kill(pid.cast_signed(), libc::SIGTERM) };
        let start = Instant::now();
        let limit = Duration::from_secs(10);
        while alive(pid) {
            if start.elapsed() > limit {
                return Err(DownError::Stuck {
                    pid,
                    secs: limit.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cleanup_files(&iface);
        return Ok(format!("{iface} is down (daemon pid {pid} stopped)"));
    }
    // A daemon that died (SIGKILL) left its namespace changes behind.
    let state = netns_state_path(&iface);
    let mut changes = netns::Changes::load(&state);
    if !changes.is_empty() {
        let done = changes.undo();
        let _ = fs::remove_file(&state);
        cleanup_files(&iface);
        return Ok(format!(
            "{iface} is down (its daemon had died; {})",
            done.join(", ")
        ));
    }
    let Some(index) = netlink::ifindex(&iface) else {
        // A pidfile without its process: a daemon that was killed (with
        // --netns its link went with it, out of sight from here).
        let stale = pid_path(&iface).exists();
        cleanup_files(&iface);
        if stale {
            return Ok(format!(
                "{iface} is down (its daemon had died; removed its pidfile and sockets)"
            ));
        }
        return Err(DownError::NotUp(iface));
    };
    // No daemon of ours: delete the link; whoever serves it exits.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let nl = Netlink::new()?;
        nl.del_link(index).await
    })?;
    let start = Instant::now();
    while uapi::socket_path(&iface).exists() && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    cleanup_files(&iface);
    Ok(format!("{iface} is down (interface deleted)"))
}

/// Removes a dead daemon's pidfile and status socket, and the UAPI socket
/// if nobody answers on it.
fn cleanup_files(iface: &str) {
    let _ = fs::remove_file(pid_path(iface));
    let _ = fs::remove_file(ctl_path(iface));
    let sock = uapi::socket_path(iface);
    if sock.exists() && std::os::unix::net::UnixStream::connect(&sock).is_err() {
        let _ = fs::remove_file(sock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_root_is_refused_with_a_clear_message() {
        assert!(check_root(0).is_ok());
        let e = check_root(1000).unwrap_err();
        assert!(e.to_string().contains("needs root"), "{e}");
    }

    #[test]
    fn down_targets() {
        assert_eq!(target_interface("wg0").unwrap(), "wg0");
        assert_eq!(target_interface("/etc/wireguard/wg1.conf").unwrap(), "wg1");
        assert_eq!(target_interface("x/provider.conf").unwrap(), "provider");
        assert!(target_interface("this-name-is-far-too-long").is_err());
    }

    #[test]
    fn zombies_and_missing_processes_are_dead() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX - 1));
    }
}
