//! vpn's eBPF object and its pins: the object (built from `vpn-ebpf` by
//! build.rs and embedded, so a single `vpn-ctl` binary carries its kernel
//! programs), loading it, the errors of its programs, maps, pins and links
//! ([`BpfError`]), and the pin layer every part of steering shares: maps,
//! programs and links pinned under a tunnel's directory
//! (`<bpffs>/vpn/<tunnel>/`), opened again by name, and removed (links
//! first) to detach everything.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Map, MapData, PerCpuArray},
    programs::links::{FdLink, PinnedLink},
    Ebpf, EbpfLoader,
};

use crate::io_error;

/// ELF object with every vpn program and map (aligned for the ELF parser).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vpn-ebpf.o"));

/// What went wrong with vpn's eBPF object, its programs, maps, pins or
/// links: the part steering ([`crate::steer`]) and the guard
/// ([`super::guard`]) share.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error(
        "the eBPF object has no {0}; the build is inconsistent, rebuild with `cargo xtask build`"
    )]
    Missing(&'static str),
    #[error("{what}")]
    Program {
        what: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("{what}")]
    Map {
        what: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("pinning {what} (is bpffs mounted and writable?)")]
    Pin {
        what: String,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("{what}")]
    Link {
        what: String,
        #[source]
        source: aya::programs::links::LinkError,
    },
}

/// For `map_err`: a program operation `what` failed.
pub fn prog_err(what: impl Into<String>) -> impl FnOnce(aya::programs::ProgramError) -> BpfError {
    let what = what.into();
    move |source| BpfError::Program { what, source }
}

/// For `map_err`: a map operation `what` failed.
pub fn map_err(what: impl Into<String>) -> impl FnOnce(aya::maps::MapError) -> BpfError {
    let what = what.into();
    move |source| BpfError::Map { what, source }
}

/// For `map_err`: pinning `what` failed.
pub fn pin_err(what: impl Into<String>) -> impl FnOnce(aya::pin::PinError) -> BpfError {
    let what = what.into();
    move |source| BpfError::Pin { what, source }
}

/// For `map_err`: a link operation `what` failed.
pub fn link_err(
    what: impl Into<String>,
) -> impl FnOnce(aya::programs::links::LinkError) -> BpfError {
    let what = what.into();
    move |source| BpfError::Link { what, source }
}

/// Loads a program, trying again while the kernel says `EAGAIN`: the
/// verifier gives up with it when a signal arrives for the loading thread
/// (a child exiting, a timer), as libbpf knows and retries up to 5 times.
///
/// # Errors
/// The load's own error, or `EAGAIN` after 5 attempts.
pub fn load_retrying(
    mut load: impl FnMut() -> Result<(), aya::programs::ProgramError>,
) -> Result<(), aya::programs::ProgramError> {
    let mut attempts = 5;
    loop {
        match load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempts > 1 =>
            {
                attempts -= 1;
                log::debug!("program load interrupted (EAGAIN); trying again");
            }
            r => return r,
        }
    }
}

/// Why loading the object failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Pins(#[from] io_error::PathError),
    #[error("the kernel refused to load vpn's eBPF object")]
    Kernel(#[source] Box<aya::EbpfError>),
}

/// Loads vpn's object. Without `reuse`, every map is created afresh; with
/// it, every map pinned under that directory (by an earlier load, see
/// [`pin_in_place`]) is reused instead of created, so the new programs share
/// the first load's state. Program and link pins (`prog_*`, `link_*`) are
/// skipped.
pub fn load(reuse: Option<&Path>) -> Result<Ebpf, LoadError> {
    let names: Vec<String> = match reuse {
        None => Vec::new(),
        Some(dir) => fs::read_dir(dir)
            .map_err(io_error::at("reading", dir))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("prog_") && !n.starts_with("link_"))
            .collect(),
    };
    let mut loader = EbpfLoader::new();
    for (name, dir) in names.iter().zip(reuse.into_iter().cycle()) {
        loader.map_pin_path(name.as_str(), dir.join(name));
    }
    loader
        .load(OBJECT)
        .map_err(|e| LoadError::Kernel(Box::new(e)))
}

/// Opens the map pinned at `dir/name`.
pub fn open_pinned(dir: &Path, name: &str) -> Result<Map, BpfError> {
    let path = dir.join(name);
    let what = format!("opening {}", path.display());
    let data = MapData::from_pin(&path).map_err(map_err(what.clone()))?;
    Map::from_map_data(data).map_err(map_err(what))
}

/// Takes the object's map `name` out of it and pins it at `dir/name`.
pub fn take_pinned(bpf: &mut Ebpf, name: &'static str, dir: &Path) -> Result<Map, BpfError> {
    let map = bpf.take_map(name).ok_or(BpfError::Missing(name))?;
    let path = dir.join(name);
    map.pin(&path)
        .map_err(pin_err(path.display().to_string()))?;
    Ok(map)
}

/// Pins the object's map `name` at `dir/name`, leaving it in the object.
pub fn pin_in_place(bpf: &Ebpf, name: &'static str, dir: &Path) -> Result<(), BpfError> {
    let path = dir.join(name);
    bpf.map(name)
        .ok_or(BpfError::Missing(name))?
        .pin(&path)
        .map_err(pin_err(path.display().to_string()))?;
    Ok(())
}

/// Pins a program (`what` names it in an error).
pub fn pin_program(r: Result<(), aya::pin::PinError>, what: &str) -> Result<(), BpfError> {
    r.map_err(pin_err(format!("program {what}")))
}

/// Pins a program's link at `dir/name`; dropping our handle then leaves it
/// attached.
pub fn pin_link(
    link: Result<FdLink, aya::programs::links::LinkError>,
    dir: &Path,
    name: &str,
) -> Result<(), BpfError> {
    let link = link.map_err(link_err(
        "the link is not a bpf_link (vpn needs Linux >= 5.7)",
    ))?;
    let pinned: PinnedLink = link.pin(dir.join(name)).map_err(pin_err(name))?;
    drop(pinned);
    Ok(())
}

/// Each of `all` with its counter in `map` (at `index(stat)`) summed over
/// CPUs; `what` names the read in an error.
pub fn sum_counters<S: Copy>(
    map: &PerCpuArray<MapData, u64>,
    all: &[S],
    index: impl Fn(S) -> u32,
    what: &str,
) -> Result<Vec<(S, u64)>, BpfError> {
    all.iter()
        .map(|&s| {
            let v = map.get(&index(s), 0).map_err(map_err(what))?;
            Ok((s, v.iter().sum()))
        })
        .collect()
}

/// Removes a pin (a link: the program detaches); returns whether it was
/// there.
pub fn unpin(path: &Path) -> Result<bool, io_error::PathError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(io_error::at("removing", path)(source)),
    }
}

/// Removes every pin under `dir`, links first so that nothing runs while
/// maps go away, and then `dir`.
pub fn remove_pins(dir: &Path) -> io::Result<()> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort_by_key(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("link_"))
    });
    for p in entries {
        fs::remove_file(&p)?;
    }
    fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use aya::programs::ProgramError;

    fn load_error(errno: i32) -> ProgramError {
        ProgramError::LoadError {
            io_error: std::io::Error::from_raw_os_error(errno),
            verifier_log: aya_obj::VerifierLog::new(String::new()),
        }
    }

    #[test]
    fn an_interrupted_load_is_tried_again_up_to_five_times() {
        let mut n = 0;
        let r = super::load_retrying(|| {
            n += 1;
            if n < 3 {
                Err(load_error(libc::EAGAIN))
            } else {
                Ok(())
            }
        });
        assert!(r.is_ok());
        assert_eq!(n, 3);
        n = 0;
        assert!(super::load_retrying(|| {
            n += 1;
            Err(load_error(libc::EAGAIN))
        })
        .is_err());
        assert_eq!(n, 5);
        n = 0;
        // A verifier refusal is final.
        assert!(super::load_retrying(|| {
            n += 1;
            Err(load_error(libc::EACCES))
        })
        .is_err());
        assert_eq!(n, 1);
    }

    #[test]
    fn object_is_a_bpf_elf() {
        assert_eq!(&super::OBJECT[..4], b"\x7fELF");
        // e_machine (offset 18, little endian) is EM_BPF = 247.
        assert_eq!(
            u16::from_le_bytes([super::OBJECT[18], super::OBJECT[19]]),
            247
        );
    }
}
