//! cgroup v2 and bpffs discovery, cgroup ids, and moving processes.
//!
//! The cgroup v2 mount is found from /proc/self/mountinfo, never assumed:
//! it is /sys/fs/cgroup on most systems and /sys/fs/cgroup/unified on hybrid
//! ones.
use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::io_error;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v2 filesystem is mounted; mount one with `mount -t cgroup2 none /sys/fs/cgroup` (vpn steers per cgroup v2)")]
    NoCgroup2,
    #[error("cgroup {path} does not exist (give a path under {mount}, e.g. system.slice/foo.service, or an absolute path inside it)")]
    NotFound { path: PathBuf, mount: PathBuf },
    #[error("{path} is not inside the cgroup v2 mount {mount}")]
    OutsideMount { path: PathBuf, mount: PathBuf },
    #[error("no bpffs is mounted and mounting one at /sys/fs/bpf failed (mount it with `mount -t bpf bpf /sys/fs/bpf`)")]
    NoBpffs(#[source] io::Error),
    #[error(transparent)]
    Io(#[from] io_error::PathError),
}

/// Mount points of `fstype` from a mountinfo text (fields: id parent maj:min
/// root mountpoint options... - fstype source superopts).
fn mount_points<'a>(mountinfo: &'a str, fstype: &'a str) -> impl Iterator<Item = PathBuf> + 'a {
    mountinfo.lines().filter_map(move |line| {
        let (pre, post) = line.split_once(" - ")?;
        let fs = post.split_whitespace().next()?;
        if fs != fstype {
            return None;
        }
        let mountpoint = pre.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mount(mountpoint)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal `\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (b[i], octal) {
            (b'\\', Some(v)) => {
                out.push(v);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mountinfo() -> Result<String, CgroupError> {
    let p = Path::new("/proc/self/mountinfo");
    Ok(fs::read_to_string(p).map_err(io_error::at("reading", p))?)
}

/// The cgroup v2 mount point of this mount namespace.
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    mount_points(&mountinfo()?, "cgroup2")
        .next()
        .ok_or(CgroupError::NoCgroup2)
}

/// The bpffs mount point; mounts one at /sys/fs/bpf when there is none, as
/// systemd does at boot and bpftool does on demand.
pub fn bpffs_mount() -> Result<PathBuf, CgroupError> {
    if let Some(p) = mount_points(&mountinfo()?, "bpf").next() {
        return Ok(p);
    }
    let target = Path::new("/sys/fs/bpf");
    fs::create_dir_all(target).map_err(CgroupError::NoBpffs)?;
    let rc = unsafe {
        // SAFETY: all pointers are NUL-terminated static strings.
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(CgroupError::NoBpffs(io::Error::last_os_error()));
    }
    log::info!("mounted bpffs at /sys/fs/bpf");
    Ok(target.to_owned())
}

/// Resolves a user-given cgroup: absolute inside the mount, or relative to it
/// (`system.slice/nginx.service`). The cgroup must exist.
pub fn resolve(mount: &Path, given: &Path) -> Result<PathBuf, CgroupError> {
    let path = if given.is_absolute() {
        given.to_owned()
    } else {
        mount.join(given)
    };
    let canon = fs::canonicalize(&path).map_err(|_| CgroupError::NotFound {
        path: path.clone(),
        mount: mount.to_owned(),
    })?;
    if !canon.starts_with(mount) {
        return Err(CgroupError::OutsideMount {
            path: canon,
            mount: mount.to_owned(),
        });
    }
    if !canon.join("cgroup.procs").exists() {
        return Err(CgroupError::NotFound {
            path: canon,
            mount: mount.to_owned(),
        });
    }
    Ok(canon)
}

/// The cgroup id the kernel reports from `bpf_get_current_cgroup_id()`: on
/// cgroup v2 this is the inode number of the cgroup's directory.
pub fn cgroup_id(path: &Path) -> Result<u64, CgroupError> {
    Ok(fs::metadata(path)
        .map_err(io_error::at("reading", path))?
        .ino())
}

/// Moves a process (all its threads) into a cgroup.
pub fn move_pid(cgroup: &Path, pid: u32) -> Result<(), CgroupError> {
    let procs = cgroup.join("cgroup.procs");
    fs::write(&procs, pid.to_string()).map_err(io_error::at("writing", &procs))?;
    Ok(())
}

/// The cgroup v2 path of a process, from /proc/PID/cgroup (`0::/path`).
pub fn cgroup_of_pid(mount: &Path, pid: u32) -> Result<PathBuf, CgroupError> {
    let p = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let text = fs::read_to_string(&p).map_err(io_error::at("reading", &p))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| CgroupError::NotFound {
            path: p.clone(),
            mount: mount.to_owned(),
        })?;
    Ok(mount.join(rel.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / /sys rw,nosuid shared:7 - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup rw shared:9 - tmpfs tmpfs ro,mode=755
35 30 0:30 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw
40 22 0:33 / /sys/fs/bpf rw shared:12 - bpf bpf rw,mode=700
41 22 0:34 / /mnt/with\\040space rw - cgroup2 none rw
";

    #[test]
    fn finds_cgroup2_and_bpffs_mounts() {
        let cg: Vec<_> = mount_points(MOUNTINFO, "cgroup2").collect();
        assert_eq!(
            cg,
            [
                PathBuf::from("/sys/fs/cgroup/unified"),
                PathBuf::from("/mnt/with space")
            ]
        );
        assert_eq!(
            mount_points(MOUNTINFO, "bpf").next(),
            Some(PathBuf::from("/sys/fs/bpf"))
        );
        assert_eq!(mount_points(MOUNTINFO, "xfs").next(), None);
    }

    #[test]
    fn this_machine_has_a_cgroup2_mount_with_an_id() {
        let mount = cgroup2_mount().expect("cgroup v2 mount");
        assert!(mount.join("cgroup.procs").exists());
        let me = cgroup_of_pid(&mount, std::process::id()).unwrap();
        assert!(cgroup_id(&me).unwrap() > 0);
    }

    #[test]
    fn resolve_rejects_missing_and_outside() {
        let mount = cgroup2_mount().unwrap();
        assert!(matches!(
            resolve(&mount, Path::new("no-such-cgroup-vpn-test")),
            Err(CgroupError::NotFound { .. })
        ));
        assert!(matches!(
            resolve(&mount, Path::new("/tmp")),
            Err(CgroupError::OutsideMount { .. })
        ));
        assert_eq!(
            resolve(&mount, Path::new(".")).unwrap(),
            fs::canonicalize(&mount).unwrap()
        );
    }
}
