//! The daemon's status socket, `/run/vpn/<iface>.ctl`: a client connects
//! and reads one JSON [`Status`] (settings the `wg` UAPI does not carry —
//! addresses, MTU, table, DNS — and the drop counters). `vpn-ctl show`
//! combines it with the UAPI `get`, which alone also works against other
//! WireGuard implementations.

use std::{
    collections::BTreeMap,
    io::{self, Read},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{io::AsyncWriteExt, net::UnixListener};

use crate::device::{lock, Shared};

/// What the daemon reports about itself: its fixed settings and what
/// changes while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The settings known at start (flattened: the JSON has one level).
    #[serde(flatten)]
    pub info: StaticInfo,
    /// Daemon process id.
    pub pid: u32,
    /// UDP listen port.
    pub listen_port: u16,
    /// Whether handshakes currently need cookies.
    pub under_load: bool,
    /// Dropped packets by reason (engine and device counters).
    pub drops: BTreeMap<String, u64>,
}

/// The fixed part of [`Status`], known at start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticInfo {
    /// Interface name.
    pub interface: String,
    /// The config file it was started from (empty for `vpn-wg`).
    pub config: String,
    /// Where the daemon logs (background mode).
    pub log_file: Option<String>,
    /// `Address =` entries.
    pub addresses: Vec<String>,
    /// Link MTU.
    pub mtu: u16,
    /// Table the peer routes are in; `None` for `Table = off`.
    pub table: Option<u32>,
    /// `DNS =` servers, stored for the steering side (not applied here).
    pub dns: Vec<String>,
    /// `DNS =` search domains.
    pub dns_search: Vec<String>,
    /// The network namespace the interface was put in (`up --netns`).
    #[serde(default)]
    pub netns: Option<String>,
}

/// The current status.
pub fn status(device: &Shared, info: &StaticInfo) -> Status {
    let d = lock(device);
    Status {
        info: info.clone(),
        pid: std::process::id(),
        listen_port: d.listen_port(),
        under_load: d.engine.under_load(),
        drops: d.drop_counters().into_iter().collect(),
    }
}

/// The bound status socket; removed on drop.
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Binds `path` (0600), replacing a stale socket. Needs a tokio runtime.
    ///
    /// # Errors
    /// If the socket cannot be created.
    pub fn bind(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by another daemon", path.display()),
            ));
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    /// Serves status requests until the future is dropped.
    pub async fn run(&self, device: Shared, info: StaticInfo) {
        loop {
            let Ok((mut stream, _)) = self.listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let s = status(&device, &info);
            let mut body = serde_json::to_vec(&s).unwrap_or_default();
            body.push(b'\n');
            tokio::spawn(async move {
                let _ = stream.write_all(&body).await;
                let _ = stream.shutdown().await;
            });
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads the status of the daemon serving `path` (blocking, 2 s timeout).
///
/// # Errors
/// If nobody serves it or the reply is not a status.
pub fn query(path: &Path) -> io::Result<Status> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
