//! The eBPF object, built from `vpn-ebpf` by build.rs and embedded here so a
//! single `vpn-ctl` binary carries its kernel programs.

/// ELF object with every vpn program and map (aligned for the ELF parser).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vpn-ebpf.o"));

/// What went wrong with vpn's eBPF object, its programs, maps, pins or
/// links: the part steering ([`crate::steer`]) and the guard
/// ([`crate::steer::guard`]) share.
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
