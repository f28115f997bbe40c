//! Network namespaces (`netlink/netns.rs`) for `vpn-ctl up --netns TARGET`
//! (WireGuard's "netns" recipe): the TUN link lives inside TARGET while the
//! UDP sockets stay in the namespace vpn-ctl runs in.
//!
//! - [`Target::parse`]: a name (`ip netns` style, `/run/netns/NAME`), a
//!   path to a namespace file (`/proc/PID/ns/net`), or `pid:PID`.
//! - [`Target::open`]: the namespace's file descriptor; a missing named
//!   namespace is created (with `lo` up) the way `ip netns add` does it.
//! - [`Netns::run`]: runs a closure on a short-lived thread that has
//!   entered the namespace (`setns` changes only the calling thread), so
//!   sockets made there belong to it (and keep it alive while open).
//! - [`Changes`]: what `up` did to the system (a namespace it created, a
//!   resolv.conf it wrote), saved so `down` undoes it even after a SIGKILL.

use std::{
    fs::{self, File},
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

/// Where `ip netns` keeps named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";
/// Where `ip netns exec` looks for a namespace's own resolv.conf.
pub const NETNS_ETC_DIR: &str = "/etc/netns";

/// What `--netns` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `ip netns` name: `/run/netns/NAME`, created when missing.
    Named(String),
    /// A namespace file, such as `/proc/PID/ns/net` of a running container.
    Path(PathBuf),
}

/// Why a namespace cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("--netns {0:?}: expected a namespace name (as in `ip netns`), a path such as /proc/PID/ns/net, or pid:PID")]
    Invalid(String),
    #[error("--netns {target}: {source} (is the process still running, and is the path a network namespace?)")]
    Open {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("--netns {target}: {path} is not a network namespace")]
    NotNetns { target: String, path: String },
    #[error("creating network namespace {name}: {op}: {source}")]
    Create {
        name: String,
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("entering network namespace {target}: {source}")]
    Enter {
        target: String,
        #[source]
        source: io::Error,
    },
}

impl Target {
    /// Parses `--netns`'s argument.
    ///
    /// # Errors
    /// [`NetnsError::Invalid`] for an empty name, a bad pid or a name that
    /// `ip netns` would not accept.
    pub fn parse(s: &str) -> Result<Self, NetnsError> {
        let invalid = || NetnsError::Invalid(s.to_owned());
        if let Some(pid) = s.strip_prefix("pid:") {
            let pid: u32 = pid.parse().map_err(|_| invalid())?;
            if pid == 0 {
                return Err(invalid());
            }
            return Ok(Self::Path(PathBuf::from(format!("/proc/{pid}/ns/net"))));
        }
        if s.contains('/') {
            return Ok(Self::Path(PathBuf::from(s)));
        }
        let ok = !s.is_empty()
            && s != "."
            && s != ".."
            && s.len() <= 255
            && s.chars().all(|c| !c.is_control() && !c.is_whitespace());
        if ok {
            Ok(Self::Named(s.to_owned()))
        } else {
            Err(invalid())
        }
    }

    /// The named namespace's name, if it is one.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Named(n) => Some(n),
            Self::Path(_) => None,
        }
    }

    /// The namespace file.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        match self {
            Self::Named(n) => Path::new(NETNS_RUN_DIR).join(n),
            Self::Path(p) => p.clone(),
        }
    }

    /// Opens the namespace; a missing named one is created first. Returns
    /// the namespace and whether it was created here.
    ///
    /// # Errors
    /// [`NetnsError`] when it cannot be opened, is not a network namespace,
    /// or cannot be created.
    pub fn open(&self) -> Result<(Netns, bool), NetnsError> {
        let path = self.path();
        let created = match self {
            Self::Named(n) if !path.exists() => {
                create_named(n)?;
                true
            }
            _ => false,
        };
        let shown = self.to_string();
        let r = open_netns_file(&path, &shown);
        if r.is_err() && created {
            let _ = delete_named(self.name().unwrap_or_default());
        }
        let ns = r?;
        if created {
            let up = ns.run(set_loopback_up).and_then(|r| {
                r.map_err(|e| NetnsError::Enter {
                    target: shown.clone(),
                    source: e,
                })
            });
            if let Err(e) = up {
                let _ = delete_named(self.name().unwrap_or_default());
                return Err(e);
            }
        }
        Ok((ns, created))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Named(n) => f.write_str(n),
            Self::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

fn open_netns_file(path: &Path, shown: &str) -> Result<Netns, NetnsError> {
    let file = File::open(path).map_err(|source| NetnsError::Open {
        target: shown.to_owned(),
        source,
    })?;
    // NS_GET_NSTYPE (_IO(0xb7, 0x3), Linux >= 4.11) says which kind of
    // namespace this is; on a file that is no namespace it fails (ENOTTY).
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl without arguments on a descriptor we own.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if kind != libc::CLONE_NEWNET {
        return Err(NetnsError::NotNetns {
            target: shown.to_owned(),
            path: path.display().to_string(),
        });
    }
    Ok(Netns {
        file,
        shown: shown.to_owned(),
    })
}

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    file: File,
    shown: String,
}

impl Netns {
    /// Runs `f` on a new thread that has entered this namespace.
    ///
    /// # Errors
    /// [`NetnsError::Enter`] if `setns` fails; otherwise `f`'s result.
    ///
    /// # Panics
    /// Re-raises a panic of `f`.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R, NetnsError> {
        let fd = self.file.as_raw_fd();
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                // SAFETY: setns on a namespace descriptor that outlives the
                // thread; it changes only this thread's namespace.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            });
            match h.join() {
                Ok(r) => r.map_err(|source| NetnsError::Enter {
                    target: self.shown.clone(),
                    source,
                }),
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }

    /// The namespace file's descriptor (for `ip link set netns`).
    #[must_use]
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.file.as_fd()
    }

    /// How the user named it.
    #[must_use]
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// `ip link set lo up` in the current thread's namespace (`SIOCSIFFLAGS`).
fn set_loopback_up() -> io::Result<()> {
    #[repr(C)]
    struct IfReqFlags {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is ours; req outlives both calls.
    let rc = unsafe {
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, std::ptr::from_mut(&mut req));
        if rc == 0 {
            #[allow(clippy::cast_possible_truncation, reason = "IFF_UP fits a short")]
            {
                req.flags |= libc::IFF_UP as libc::c_short;
            }
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, std::ptr::from_mut(&mut req));
        }
        rc
    };
    let err = io::Error::last_os_error();
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(fd) };
    if rc < 0 {
        Err(err)
    } else {
        Ok(())
    }
}

fn cstr(p: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn mount(src: &Path, dst: &Path, fstype: Option<&str>, flags: libc::c_ulong) -> io::Result<()> {
    let (s, d) = (cstr(src)?, cstr(dst)?);
    let t = fstype.map(|t| std::ffi::CString::new(t).unwrap_or_default());
    // SAFETY: valid NUL-terminated strings (or null) for mount(2).
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            t.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `ip netns add NAME`: a new namespace bind-mounted at
/// `/run/netns/NAME` (with `/run/netns` a shared mount point, as iproute2
/// makes it, so the mount shows in other mount namespaces).
///
/// # Errors
/// [`NetnsError::Create`] naming the step that failed.
pub fn create_named(name: &str) -> Result<(), NetnsError> {
    let err = |op: &str| {
        let op = op.to_owned();
        move |source| NetnsError::Create {
            name: name.to_owned(),
            op,
            source,
        }
    };
    let dir = Path::new(NETNS_RUN_DIR);
    fs::create_dir_all(dir).map_err(err("creating /run/netns"))?;
    // As iproute2: make the directory a shared mount point, binding it
    // onto itself the first time.
    let shared = libc::MS_SHARED | libc::MS_REC;
    if mount(Path::new("none"), dir, None, shared).is_err() {
        mount(dir, dir, Some("none"), libc::MS_BIND | libc::MS_REC)
            .map_err(err("bind-mounting /run/netns"))?;
        mount(Path::new("none"), dir, None, shared).map_err(err("sharing /run/netns"))?;
    }
    let path = dir.join(name);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(err(&format!("creating {}", path.display())))?;
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare(CLONE_NEWNET) moves only this thread, which
            // ends right after binding the new namespace to its file.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            mount(
                Path::new("/proc/thread-self/ns/net"),
                &path,
                Some("none"),
                libc::MS_BIND,
            )
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("thread panicked")))
    });
    if let Err(e) = r {
        let _ = fs::remove_file(&path);
        return Err(err("making the namespace")(e));
    }
    Ok(())
}

/// `ip netns delete NAME`: unmounts and removes `/run/netns/NAME` (the
/// namespace goes once nothing else holds it).
///
/// # Errors
/// The unlink error (a missing file is not one).
pub fn delete_named(name: &str) -> io::Result<()> {
    let path = Path::new(NETNS_RUN_DIR).join(name);
    let c = cstr(&path)?;
    // SAFETY: valid path; a failed detach (not mounted) is harmless.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `/etc/netns/NAME/resolv.conf`
#[must_use]
pub fn resolv_conf_path(name: &str) -> PathBuf {
    Path::new(NETNS_ETC_DIR).join(name).join("resolv.conf")
}

/// The resolv.conf text for a tunnel's `DNS=` servers and search domains.
#[must_use]
pub fn resolv_conf(servers: &[std::net::IpAddr], search: &[String]) -> String {
    let mut s = String::from("# written by vpn-ctl up --netns; removed by vpn-ctl down\n");
    for ip in servers {
        s.push_str(&format!("nameserver {ip}\n"));
    }
    if !search.is_empty() {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    s
}

/// A resolv.conf written for a named namespace. [`ResolvConf::restore`]
/// puts back the previous file, or removes the file and the directory vpn
/// made. Serializable, so `down` can undo it after the daemon was killed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ResolvConf {
    path: PathBuf,
    previous: Option<String>,
    made_dir: bool,
}

impl ResolvConf {
    /// Writes `text` to `/etc/netns/NAME/resolv.conf`, keeping what was
    /// there.
    ///
    /// # Errors
    /// The I/O error.
    pub fn write(name: &str, text: &str) -> io::Result<Self> {
        let path = resolv_conf_path(name);
        let dir = path.parent().unwrap_or(Path::new(NETNS_ETC_DIR));
        let made_dir = !dir.exists();
        fs::create_dir_all(dir)?;
        let previous = fs::read_to_string(&path).ok();
        fs::write(&path, text)?;
        Ok(Self {
            path,
            previous,
            made_dir,
        })
    }

    /// Puts back what was there before.
    pub fn restore(&self) {
        match &self.previous {
            Some(old) => {
                let _ = fs::write(&self.path, old);
            }
            None => {
                let _ = fs::remove_file(&self.path);
                if self.made_dir {
                    if let Some(d) = self.path.parent() {
                        let _ = fs::remove_dir(d);
                    }
                }
            }
        }
    }
}

/// What `up --netns` changed outside its own process, recorded in
/// `/run/vpn/<iface>.netns.json` so `down` can undo it even after the
/// daemon was killed.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Changes {
    /// A named namespace `up` created (deleted by `down`).
    pub created: Option<String>,
    /// The resolv.conf `up` wrote.
    pub resolv_conf: Option<ResolvConf>,
}

impl Changes {
    /// Whether there is nothing to undo.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.created.is_none() && self.resolv_conf.is_none()
    }

    /// Saves the record to `path` (removes it when empty).
    ///
    /// # Errors
    /// The I/O error.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        if self.is_empty() {
            return match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let text = serde_json::to_string_pretty(self).map_err(io::Error::other)?;
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text)?;
        fs::rename(tmp, path)
    }

    /// Loads a record (empty when there is none or it cannot be read).
    #[must_use]
    pub fn load(path: &Path) -> Self {
        fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Undoes everything recorded: resolv.conf put back, the namespace
    /// `up` created deleted. Returns what was done, for the user.
    pub fn undo(&mut self) -> Vec<String> {
        let mut done = Vec::new();
        if let Some(r) = self.resolv_conf.take() {
            r.restore();
            done.push(format!("restored {}", r.path.display()));
        }
        if let Some(name) = self.created.take() {
            match delete_named(&name) {
                Ok(()) => done.push(format!("deleted network namespace {name}")),
                Err(e) => log::warn!("deleting network namespace {name}: {e}"),
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("vpn").unwrap(), Target::Named("vpn".into()));
        assert_eq!(
            Target::parse("pid:42").unwrap(),
            Target::Path("/proc/42/ns/net".into())
        );
        assert_eq!(
            Target::parse("/proc/7/ns/net").unwrap(),
            Target::Path("/proc/7/ns/net".into())
        );
        for bad in ["", "pid:", "pid:x", "pid:0", "a b", "..", "x\ny"] {
            let e = Target::parse(bad).unwrap_err().to_string();
            assert!(e.contains("pid:PID"), "{bad:?}: {e}");
        }
        assert_eq!(
            Target::parse("c1").unwrap().path(),
            Path::new("/run/netns/c1")
        );
    }

    #[test]
    fn resolv_conf_lists_servers_and_search() {
        let t = resolv_conf(&["100.64.0.1".parse().unwrap()], &["corp".into()]);
        assert!(t.contains("nameserver 100.64.0.1\n"), "{t}");
        assert!(t.contains("search corp\n"), "{t}");
    }

    #[test]
    fn a_missing_process_is_a_clear_error() {
        let e = Target::parse("pid:4294967294")
            .unwrap()
            .open()
            .unwrap_err()
            .to_string();
        assert!(e.contains("still running"), "{e}");
    }

    #[test]
    fn a_file_that_is_no_namespace_is_refused() {
        let e = Target::Path("/proc/self/status".into())
            .open()
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a network namespace"), "{e}");
        if unsafe { libc::geteuid() } == 0 {
            let e = Target::Path("/proc/self/ns/mnt".into())
                .open()
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a network namespace"), "{e}");
        }
    }
}
