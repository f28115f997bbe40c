//! `vpn-ctl doctor --json` inside a fresh namespace: a Tailscale-like rule
//! there is reported, vpn's own priority taken by a stranger fails, and the
//! exit code follows the worst check.
use netns_harness as h;
use serde_json::Value;

fn doctor(ns: &h::Netns) -> (bool, Value) {
    let out = ns
        .command(h::vpn_ctl_bin())
        .args(["doctor", "--json"])
        .output()
        .expect("running vpn-ctl doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "doctor --json is not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), doc)
}

fn checks<'a>(doc: &'a Value, id: &str) -> Vec<&'a Value> {
    doc["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .filter(|c| c["id"] == id)
        .collect()
}

#[test]
fn doctor_reports_tailscale_rules_and_collisions_in_a_namespace() {
    h::require_root();
    let ns = h::Netns::new().unwrap();

    // A fresh namespace has only the kernel's default rules.
    let (ok, doc) = doctor(&ns);
    let fails = doc["fail"].as_u64().unwrap();
    assert_eq!(
        ok,
        fails == 0,
        "exit code must follow the failures: {doc:#}"
    );
    for id in [
        "root", "kernel", "btf", "bpf", "tun", "cgroup2", "bpffs", "pins", "uapi",
    ] {
        assert_eq!(checks(&doc, id).len(), 1, "{id} missing: {doc:#}");
    }
    let rules = checks(&doc, "rules");
    assert_eq!(rules.len(), 1, "{doc:#}");
    assert_eq!(rules[0]["status"], "ok", "{doc:#}");
    assert_eq!(checks(&doc, "root")[0]["status"], "ok");

    // Tailscale's rule: reported as Tailscale's, a warning, not a failure.
    ns.ip(&[
        "rule",
        "add",
        "priority",
        "5270",
        "fwmark",
        "0x80000/0xff0000",
        "lookup",
        "52",
    ])
    .unwrap();
    let (_, doc) = doctor(&ns);
    let rules = checks(&doc, "rules");
    let ts = rules
        .iter()
        .find(|c| c["summary"].as_str().unwrap().contains("Tailscale"))
        .unwrap_or_else(|| panic!("Tailscale rule not reported: {doc:#}"));
    assert_eq!(ts["status"], "warn", "{ts:#}");
    let details = ts["details"].to_string();
    assert!(details.contains("priority 5270"), "{details}");
    assert!(details.contains("0x80000/0xff0000"), "{details}");
    assert!(details.contains("lookup 52"), "{details}");
    assert_eq!(doc["fail"].as_u64().unwrap(), fails, "{doc:#}");

    // A stranger at vpn's priority: a failure, and a non-zero exit.
    ns.ip(&["rule", "add", "priority", "10319", "lookup", "100"])
        .unwrap();
    let (ok, doc) = doctor(&ns);
    assert!(!ok, "a colliding rule must fail: {doc:#}");
    let rules = checks(&doc, "rules");
    let clash = rules
        .iter()
        .find(|c| c["status"] == "fail")
        .unwrap_or_else(|| panic!("collision not reported: {doc:#}"));
    assert!(
        clash["details"].to_string().contains("priority 10319"),
        "{clash:#}"
    );
    assert!(
        clash["fix"].as_str().unwrap().contains("--priority"),
        "{clash:#}"
    );

    // The plain-text form says the same.
    let out = ns.command(h::vpn_ctl_bin()).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("Tailscale rules found"), "{text}");
    assert!(text.contains("[fail] rules"), "{text}");
}
