//! `vpn-ctl doctor [--json]`: prints the library's checks, one per line with
//! its details and what to do; exits non-zero when any check fails.
use std::{path::PathBuf, process::ExitCode};

use serde_json::json;
use vpn_ctl::{
    doctor::{self, Check, Settings, Status},
    steer::{policy::Policy, DEFAULT_DIRECT_MARK},
};

/// Runs every check and prints them; the exit code says whether any failed.
pub fn run(
    json: bool,
    table: u32,
    priority: u32,
    mark: u32,
    pin_root: Option<PathBuf>,
) -> ExitCode {
    let settings = Settings {
        policy: Policy {
            table,
            priority,
            mark,
            mask: mark,
            direct_mark: DEFAULT_DIRECT_MARK,
            full: false,
        },
        pin_root,
    };
    let checks = doctor::run_all(&settings);
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    let (ok, warn, fail) = (count(Status::Ok), count(Status::Warn), count(Status::Fail));
    if json {
        let doc = json!({
            "status": doctor::worst(&checks),
            "ok": ok,
            "warn": warn,
            "fail": fail,
            "checks": checks,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("checks serialize")
        );
    } else {
        for c in &checks {
            print_check(c);
        }
        println!();
        println!("{ok} ok, {warn} warning(s), {fail} failure(s)");
    }
    if fail > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_check(c: &Check) {
    println!("[{:<4}] {:<8} {}", c.status.as_str(), c.id, c.summary);
    for d in &c.details {
        println!("                {d}");
    }
    if let Some(fix) = &c.fix {
        println!("         -> {fix}");
    }
}
