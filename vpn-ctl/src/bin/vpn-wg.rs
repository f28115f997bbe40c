//! `vpn-wg`: a drop-in for wireguard-go, so wg-quick, NixOS and the other
//! tools built around it run vpn's tunnel unchanged:
//!
//! ```text
//! WG_QUICK_USERSPACE_IMPLEMENTATION=vpn-wg wg-quick up wg0
//! ```
//!
//! Same command line (`vpn-wg [-f|--foreground] INTERFACE`), same
//! environment (`WG_PROCESS_FOREGROUND=1`, `LOG_LEVEL=verbose|error|silent`),
//! same UAPI socket (`/var/run/wireguard/INTERFACE.sock`). It creates the
//! TUN link and goes to the background once the link and the socket exist;
//! it exits, removing the socket, when the link is deleted. Everything else
//! (keys, peers, addresses, routes) comes over the UAPI, as for
//! wireguard-go. The protocol core, the data path ([`vpn_ctl::device`]) and
//! the lifecycle ([`vpn_ctl::tunnel::daemon`]) are vpn-ctl's; this is only a
//! second front door.

use std::process::ExitCode;

use vpn_ctl::tunnel::daemon::{self, DaemonOutput, Mode};

const USAGE: &str = "Usage: vpn-wg [-f/--foreground] INTERFACE-NAME";

/// wireguard-go's exit code for a failed setup.
const EXIT_SETUP_FAILED: u8 = 1;

/// What the command line and environment ask for.
#[derive(Debug, PartialEq, Eq)]
enum Args {
    Version,
    Help,
    Run { foreground: bool, iface: String },
}

fn parse(args: &[String], env_foreground: bool) -> Result<Args, String> {
    match args {
        [v] if v == "--version" || v == "-v" => Ok(Args::Version),
        [h] if h == "--help" || h == "-h" => Ok(Args::Help),
        [f, iface] if f == "-f" || f == "--foreground" => Ok(Args::Run {
            foreground: true,
            iface: iface.clone(),
        }),
        [iface] if !iface.starts_with('-') => Ok(Args::Run {
            foreground: env_foreground,
            iface: iface.clone(),
        }),
        _ => Err(USAGE.to_owned()),
    }
}

/// wireguard-go's `LOG_LEVEL` as a log filter: `verbose`/`debug` show
/// everything, `error` (the default) errors only, `silent` nothing.
fn log_filter(level: Option<&str>) -> log::LevelFilter {
    match level {
        Some("verbose" | "debug") => log::LevelFilter::Debug,
        Some("silent") => log::LevelFilter::Off,
        _ => log::LevelFilter::Error,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env_foreground = std::env::var("WG_PROCESS_FOREGROUND").as_deref() == Ok("1");
    let level = std::env::var("LOG_LEVEL").ok();
    env_logger::Builder::new()
        .filter_level(log_filter(level.as_deref()))
        .format_timestamp_millis()
        .init();
    let (foreground, iface) = match parse(&args, env_foreground) {
        Ok(Args::Version) => {
            println!(
                "vpn-wg v{} (wireguard-go compatible drop-in of vpn)",
                env!("CARGO_PKG_VERSION")
            );
            return ExitCode::SUCCESS;
        }
        Ok(Args::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Args::Run { foreground, iface }) => (foreground, iface),
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
    };
    let mode = Mode::Bare {
        iface: iface.clone(),
    };
    let result = if foreground {
        daemon::run_foreground(&mode)
    } else {
        // As wireguard-go: the background process keeps our output only
        // when LOG_LEVEL asks for logs; otherwise it goes to vpn's log file.
        let output = match log_filter(level.as_deref()) {
            log::LevelFilter::Off => DaemonOutput::LogFile,
            _ if level.is_some() => DaemonOutput::Inherit,
            _ => DaemonOutput::LogFile,
        };
        daemon::up_background(&mode, output).map(drop)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Most errors name the interface already.
            let e = e.to_string();
            if e.contains(&iface) {
                eprintln!("vpn-wg: {e}");
            } else {
                eprintln!("vpn-wg: {iface}: {e}");
            }
            ExitCode::from(EXIT_SETUP_FAILED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn wireguard_go_command_lines() {
        let run = |foreground, iface: &str| Args::Run {
            foreground,
            iface: iface.into(),
        };
        assert_eq!(parse(&v(&["wg0"]), false), Ok(run(false, "wg0")));
        assert_eq!(parse(&v(&["wg0"]), true), Ok(run(true, "wg0")));
        assert_eq!(parse(&v(&["-f", "wg0"]), false), Ok(run(true, "wg0")));
        assert_eq!(
            parse(&v(&["--foreground", "wg0"]), false),
            Ok(run(true, "wg0"))
        );
        assert_eq!(parse(&v(&["--version"]), false), Ok(Args::Version));
        for bad in [&[][..], &["-x", "wg0"], &["--help2"], &["a", "b", "c"]] {
            assert_eq!(parse(&v(bad), false), Err(USAGE.to_owned()), "{bad:?}");
        }
    }

    #[test]
    fn log_levels() {
        assert_eq!(log_filter(None), log::LevelFilter::Error);
        assert_eq!(log_filter(Some("verbose")), log::LevelFilter::Debug);
        assert_eq!(log_filter(Some("silent")), log::LevelFilter::Off);
        assert_eq!(log_filter(Some("error")), log::LevelFilter::Error);
    }
}
