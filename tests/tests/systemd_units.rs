//! The example units in contrib/systemd: `systemd-analyze verify` accepts
//! them (as instances, with the binary under test in place of
//! /usr/local/bin/vpn-ctl), and they run the commands the docs promise.
use std::{fs, path::Path, process::Command};

use netns_harness as h;

fn contrib() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd")
}

/// `key=value` lines of `[section]`, in order (no line continuations are used).
fn keys(unit: &str, section: &str) -> Vec<(String, String)> {
    let mut current = String::new();
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line:?}"));
        if current == section {
            out.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

fn values(unit: &str, section: &str, key: &str) -> Vec<String> {
    keys(unit, section)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn units_say_what_the_docs_say() {
    let tunnel = fs::read_to_string(contrib().join("vpn@.service")).unwrap();
    assert_eq!(
        values(&tunnel, "Service", "ExecStart"),
        ["/usr/local/bin/vpn-ctl up /etc/vpn/%i.conf --foreground"]
    );
    assert_eq!(
        values(&tunnel, "Service", "ExecStop"),
        ["/usr/local/bin/vpn-ctl down --lockdown %i"]
    );
    assert_eq!(values(&tunnel, "Unit", "Before"), ["network-online.target"]);
    let caps = values(&tunnel, "Service", "AmbientCapabilities").join(" ");
    for cap in ["CAP_NET_ADMIN", "CAP_BPF", "CAP_SYS_ADMIN"] {
        assert!(caps.contains(cap), "{cap} missing from {caps}");
    }
    assert!(values(&tunnel, "Service", "DeviceAllow")
        .iter()
        .any(|v| v.starts_with("/dev/net/tun")));

    let guard = fs::read_to_string(contrib().join("vpn-guard@.service")).unwrap();
    assert_eq!(values(&guard, "Unit", "DefaultDependencies"), ["no"]);
    let after = values(&guard, "Unit", "After").join(" ");
    assert!(after.contains("sys-fs-bpf.mount"), "{after}");
    let before = values(&guard, "Unit", "Before").join(" ");
    assert!(before.contains("network-pre.target"), "{before}");
    assert!(before.contains("vpn@%i.service"), "{before}");
    assert_eq!(
        values(&guard, "Service", "ExecStart"),
        ["/usr/local/bin/vpn-ctl --tunnel %i steer mode split"]
    );
    assert_eq!(values(&guard, "Service", "RemainAfterExit"), ["yes"]);
}

#[test]
fn systemd_analyze_verifies_the_units() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        // No systemd tools: the key checks above are all there is.
        eprintln!("systemd-analyze not found; only the key checks ran");
        return;
    };
    assert!(out.status.success());
    let bin = h::vpn_ctl_bin();
    assert!(bin.exists(), "{} not built", bin.display());
    let dir = std::env::temp_dir().join(format!("vpn-units-{}", h::unique()));
    fs::create_dir_all(&dir).unwrap();
    let mut paths = Vec::new();
    for (template, instance) in [
        ("vpn@.service", "vpn@wg0.service"),
        ("vpn-guard@.service", "vpn-guard@wg0.service"),
    ] {
        let text = fs::read_to_string(contrib().join(template))
            .unwrap()
            .replace("/usr/local/bin/vpn-ctl", bin.to_str().unwrap());
        let path = dir.join(instance);
        fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    // Lines about units of this host (not ours) are not our business.
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("vpn@") || l.starts_with("vpn-guard@"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{err}",
        out.status
    );
}
