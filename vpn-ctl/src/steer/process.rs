//! Steering processes: `steer add pid` and `exec`.
//!
//! A process is steered by moving it into vpn's own cgroup for the tunnel,
//! `<attach cgroup>/vpn-<tunnel>`, which is itself a steered cgroup. Moving
//! rather than steering the process's current cgroup is deliberate: that
//! cgroup is often shared (a login session scope, a whole service), and
//! steering it would pull every sibling into the tunnel. Moving is precise
//! (the process and the children it starts afterwards), and reversible:
//! the original cgroup is recorded under /run/vpn/<tunnel>/ and
//! `steer del pid` moves the process back.
//!
//! Sockets the process opened before it was moved keep their old mark (the
//! mark is given at socket creation); they are listed, not closed, so that a
//! user can restart the connection knowingly.
use std::{
    collections::HashSet,
    fs, io,
    path::{Path, PathBuf},
};

use vpn_common::SteerAction;

use crate::{
    io_error,
    steer::{
        cgroup::{self, CgroupError},
        Options, SteerError, Steering,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("process {0} does not exist")]
    NoSuchProcess(u32),
    #[error("process {0} is not steered by tunnel {1}")]
    NotSteered(u32, String),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Steer(#[from] SteerError),
    #[error(transparent)]
    Io(#[from] io_error::PathError),
}

/// vpn's own cgroup for a tunnel's steered (or, for exclude mode, direct)
/// processes.
#[must_use]
pub fn managed_cgroup(opts: &Options, action: SteerAction) -> PathBuf {
    match action {
        SteerAction::Include => opts.attach_cgroup.join(format!("vpn-{}", opts.tunnel)),
        SteerAction::Exclude => opts
            .attach_cgroup
            .join(format!("vpn-{}-direct", opts.tunnel)),
    }
}

fn state_file(opts: &Options) -> PathBuf {
    Path::new("/run/vpn").join(&opts.tunnel).join("moved-pids")
}

/// Creates vpn's cgroup for the tunnel if needed and gives it its rule.
pub fn ensure_managed(
    opts: &Options,
    steering: &mut Steering,
    action: SteerAction,
) -> Result<PathBuf, ProcessError> {
    let dir = managed_cgroup(opts, action);
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error::at("creating cgroup", &dir)(e).into()),
    }
    steering.add_cgroup(cgroup::cgroup_id(&dir)?, action)?;
    Ok(dir)
}

fn read_moved(opts: &Options) -> Vec<(u32, PathBuf)> {
    fs::read_to_string(state_file(opts))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (pid, path) = l.split_once(' ')?;
            Some((pid.parse().ok()?, PathBuf::from(path)))
        })
        .collect()
}

fn write_moved(opts: &Options, moved: &[(u32, PathBuf)]) -> Result<(), ProcessError> {
    let file = state_file(opts);
    if let Some(dir) = file.parent() {
        fs::create_dir_all(dir).map_err(io_error::at("creating", dir))?;
    }
    let text: String = moved
        .iter()
        .map(|(pid, p)| format!("{pid} {}\n", p.display()))
        .collect();
    fs::write(&file, text).map_err(io_error::at("writing", &file))?;
    Ok(())
}

/// Moves a running process into the tunnel's cgroup; returns its sockets
/// that were opened before and so still take their old route.
pub fn steer_pid(
    opts: &Options,
    steering: &mut Steering,
    pid: u32,
    action: SteerAction,
) -> Result<Vec<SocketInfo>, ProcessError> {
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(ProcessError::NoSuchProcess(pid));
    }
    let mount = cgroup::cgroup2_mount()?;
    let original = cgroup::cgroup_of_pid(&mount, pid)?;
    let dir = ensure_managed(opts, steering, action)?;
    if original != dir {
        let mut moved = read_moved(opts);
        moved.retain(|(p, _)| *p != pid);
        moved.push((pid, original));
        cgroup::move_pid(&dir, pid)?;
        write_moved(opts, &moved)?;
    }
    Ok(sockets_of(pid))
}

/// Moves a steered process back where it came from.
pub fn unsteer_pid(opts: &Options, pid: u32) -> Result<PathBuf, ProcessError> {
    let mut moved = read_moved(opts);
    let Some(i) = moved.iter().position(|(p, _)| *p == pid) else {
        return Err(ProcessError::NotSteered(pid, opts.tunnel.clone()));
    };
    let (_, original) = moved.remove(i);
    if Path::new(&format!("/proc/{pid}")).exists() {
        // The original cgroup may be gone; fall back to the attach point.
        let target = if original.join("cgroup.procs").exists() {
            original
        } else {
            opts.attach_cgroup.clone()
        };
        cgroup::move_pid(&target, pid)?;
        write_moved(opts, &moved)?;
        return Ok(target);
    }
    write_moved(opts, &moved)?;
    Ok(original)
}

/// Puts every process left in the tunnel's cgroups back and removes them
/// (for `clear`/`down`).
pub fn remove_managed(opts: &Options) -> Result<(), ProcessError> {
    let moved = read_moved(opts);
    for action in [SteerAction::Include, SteerAction::Exclude] {
        let dir = managed_cgroup(opts, action);
        if dir.exists() {
            empty_and_remove(opts, &dir, &moved)?;
        }
    }
    let _ = fs::remove_file(state_file(opts));
    let _ = fs::remove_dir(Path::new("/run/vpn").join(&opts.tunnel));
    Ok(())
}

fn empty_and_remove(
    opts: &Options,
    dir: &Path,
    moved: &[(u32, PathBuf)],
) -> Result<(), ProcessError> {
    let procs = dir.join("cgroup.procs");
    let pids: Vec<u32> = fs::read_to_string(&procs)
        .map_err(io_error::at("reading", &procs))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for pid in pids {
        let back = moved
            .iter()
            .find(|(p, path)| *p == pid && path.join("cgroup.procs").exists())
            .map_or_else(|| opts.attach_cgroup.clone(), |(_, path)| path.clone());
        // A process that exited meanwhile is fine.
        let _ = cgroup::move_pid(&back, pid);
    }
    fs::remove_dir(dir).map_err(io_error::at("removing cgroup", dir))?;
    Ok(())
}

/// One socket of a process, from /proc.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SocketInfo {
    pub proto: &'static str,
    pub local: String,
    pub remote: String,
}

/// The TCP and UDP sockets a process holds (IPv4 and IPv6).
#[must_use]
pub fn sockets_of(pid: u32) -> Vec<SocketInfo> {
    let inodes: HashSet<u64> = fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let target = fs::read_link(e.path()).ok()?;
            let s = target.to_str()?;
            s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    let mut out = Vec::new();
    for (proto, file) in [
        ("tcp", "tcp"),
        ("tcp6", "tcp6"),
        ("udp", "udp"),
        ("udp6", "udp6"),
    ] {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{file}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[9].parse::<u64>().is_ok_and(|i| inodes.contains(&i)) {
                out.push(SocketInfo {
                    proto,
                    local: proc_addr(f[1]),
                    remote: proc_addr(f[2]),
                });
            }
        }
    }
    out
}

/// `0100007F:0035` (little-endian words) → `127.0.0.1:53`.
fn proc_addr(s: &str) -> String {
    let Some((addr, port)) = s.split_once(':') else {
        return s.to_owned();
    };
    let port = u16::from_str_radix(port, 16).unwrap_or(0);
    let words: Vec<u32> = (0..addr.len() / 8)
        .filter_map(|i| u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok())
        .collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    match bytes.len() {
        4 => format!(
            "{}:{port}",
            std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
        ),
        16 => {
            let a: [u8; 16] = bytes.try_into().unwrap_or([0; 16]);
            format!("[{}]:{port}", std::net::Ipv6Addr::from(a))
        }
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_addresses_decode() {
        assert_eq!(proc_addr("0100007F:0035"), "127.0.0.1:53");
        assert_eq!(
            proc_addr("00000000000000000000000001000000:01BB"),
            "[::1]:443"
        );
    }

    #[test]
    fn own_sockets_are_listed() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        let mine = sockets_of(std::process::id());
        assert!(
            mine.iter()
                .any(|x| x.proto == "udp" && x.local == format!("127.0.0.1:{port}")),
            "{mine:?}"
        );
    }
}
