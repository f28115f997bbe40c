//! The NixOS module without NixOS: `nix-instantiate --parse` on the module,
//! its renderer and the flake, and an evaluation of the module against the
//! stand-in lib in tests/nix (nixpkgs cannot be fetched here). Debian's
//! `nix-bin` provides nix-instantiate (`cargo xtask setup` installs it).
use std::{fs, path::PathBuf, process::Command};

use netns_harness as h;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// nix-instantiate with its state and home in a throwaway directory: no
/// daemon, no store writes.
fn nix_instantiate(args: &[&str]) -> (bool, String, String) {
    let tmp = std::env::temp_dir().join(format!("vpn-nix-{}", h::unique()));
    fs::create_dir_all(tmp.join("state")).unwrap();
    let out = Command::new("nix-instantiate")
        .args(args)
        .env("NIX_STATE_DIR", tmp.join("state"))
        .env("HOME", &tmp)
        .env("NIX_PATH", "")
        .current_dir(&tmp)
        .output()
        .unwrap_or_else(|e| {
            panic!("nix-instantiate not found ({e}): install Debian's nix-bin (`cargo xtask setup` does)")
        });
    let _ = fs::remove_dir_all(&tmp);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn module_renderer_and_flake_parse() {
    for f in [
        "nix/module.nix",
        "nix/render.nix",
        "flake.nix",
        "tests/nix/stub-lib.nix",
        "tests/nix/eval.nix",
    ] {
        let path = repo().join(f);
        let (ok, _, err) = nix_instantiate(&["--parse", path.to_str().unwrap()]);
        assert!(ok, "{f} does not parse: {err}");
    }
}

fn evaluate() -> Value {
    let eval = repo().join("tests/nix/eval.nix");
    let (ok, out, err) = nix_instantiate(&["--eval", "--strict", "--json", eval.to_str().unwrap()]);
    assert!(ok, "evaluating the module failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn module_generates_tunnel_services_with_steering() {
    let v = evaluate();
    let vpn_ctl = "/nix/store/00000000000000000000000000000000-vpn/bin/vpn-ctl";

    // Keys in Nix, two steered cgroups, an interface, a uid, a prefix.
    let wg0 = &v["services"]["vpn-wg0"]["serviceConfig"];
    assert_eq!(
        wg0["ExecStart"],
        format!("{vpn_ctl} up /run/vpn-nix/wg0.conf --foreground"),
        "{wg0:#}"
    );
    assert!(
        wg0["ExecStartPre"]
            .as_str()
            .unwrap()
            .ends_with("-vpn-wg0-render"),
        "{wg0:#}"
    );
    let post: Vec<&str> = wg0["ExecStartPost"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(
        post,
        [
            format!("{vpn_ctl} --tunnel wg0 steer add cgroup system.slice/transmission.service"),
            format!("{vpn_ctl} --tunnel wg0 steer add cgroup machine.slice/container@box.service"),
            format!("{vpn_ctl} --tunnel wg0 steer add iface ve-box"),
            format!("{vpn_ctl} --tunnel wg0 steer add uid 1001"),
            format!("{vpn_ctl} --tunnel wg0 steer add src 192.168.100.0/24"),
        ]
    );
    assert_eq!(wg0["ExecStop"], format!("{vpn_ctl} down --lockdown wg0"));
    assert!(wg0["AmbientCapabilities"].to_string().contains("CAP_BPF"));
    let unit = &v["services"]["vpn-wg0"];
    assert!(
        unit["before"].to_string().contains("network-online.target"),
        "{unit:#}"
    );

    // A wg-quick file in netns mode: copied so the interface is named
    // after the tunnel, no steering.
    let boxed = &v["services"]["vpn-box"]["serviceConfig"];
    assert_eq!(
        boxed["ExecStart"],
        format!("{vpn_ctl} up /run/vpn-nix/box.conf --foreground --netns box"),
        "{boxed:#}"
    );
    assert!(boxed["ExecStartPre"]
        .as_str()
        .unwrap()
        .ends_with("-vpn-box-config"));
    assert_eq!(boxed["ExecStartPost"], serde_json::json!([]));
    assert_eq!(boxed["ExecStop"], format!("{vpn_ctl} down --lockdown box"));

    // Defaults filled, assertions hold, nothing when disabled.
    let opts = &v["options"]["tunnels"]["box"];
    assert_eq!(opts["steer"]["cgroups"], serde_json::json!([]));
    assert_eq!(opts["privateKeyFile"], Value::Null);
    assert!(v["assertions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["assertion"] == true));
    assert_eq!(v["offHasServices"], false);
}

#[test]
fn rendered_wg_quick_file_has_no_secrets() {
    let v = evaluate();
    let text = v["rendered"].as_str().unwrap();
    for line in [
        "[Interface]",
        "PrivateKey = @PRIVATE_KEY@",
        "Address = 10.2.0.2/32, fd00::2/128",
        "DNS = 10.2.0.1",
        "MTU = 1420",
        "[Peer]",
        "PublicKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "PresharedKey = @PSK_0@",
        "Endpoint = 198.51.100.1:51820",
        "AllowedIPs = 0.0.0.0/0, ::/0",
        "PersistentKeepalive = 25",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
    assert!(!text.contains("ListenPort"), "{text}");
    // The template must parse as a wg-quick file once the keys are filled in.
    let filled = text
        .replace(
            "@PRIVATE_KEY@",
            "EH3hjXdW2ZtcuSSPqvCv5n3YNZJVsq8Tb3Dy+5d8AFg=",
        )
        .replace("@PSK_0@", "EH3hjXdW2ZtcuSSPqvCv5n3YNZJVsq8Tb3Dy+5d8AFg=");
    assert!(filled.contains("PrivateKey = EH3h"));
}

#[test]
fn stand_in_lib_rejects_unknown_and_mistyped_options() {
    let lib = repo().join("tests/nix/stub-lib.nix");
    let module = repo().join("nix/module.nix");
    let expr = |cfg: &str| {
        format!(
            "let lib = import {}; in (lib.evalModule (import {}) {{ services.vpn = {{ enable = true; package = \"/p\"; tunnels.t = {cfg}; }}; }} {{ writeText = n: _: n; writeShellScript = n: _: n; iproute2 = \"/i\"; }})",
            lib.display(),
            module.display()
        )
    };
    let (ok, _, err) = nix_instantiate(&[
        "--eval",
        "--strict",
        "--expr",
        &expr("{ configFile = \"/c\"; steer.cgroup = [ ]; }"),
    ]);
    assert!(!ok && err.contains("no such option cgroup"), "{err}");
    let (ok, _, err) = nix_instantiate(&[
        "--eval",
        "--strict",
        "--expr",
        &expr("{ configFile = \"/c\"; mtu = \"big\"; }"),
    ]);
    assert!(!ok && err.contains("is not a null or int"), "{err}");
    let (ok, out, err) = nix_instantiate(&[
        "--eval",
        "--strict",
        "--expr",
        &expr("{ configFile = \"/c\"; }"),
    ]);
    assert!(ok && out.contains("vpn-t"), "{out}{err}");
}
