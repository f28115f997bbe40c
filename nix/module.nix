# NixOS module for vpn: WireGuard-compatible userspace tunnels with
# per-source eBPF steering.
#
#   services.vpn.enable = true;
#   services.vpn.tunnels.wg0 = {
#     configFile = "/etc/secrets/provider.conf";   # a wg-quick file, or:
#     # privateKeyFile = "/etc/secrets/wg0.key"; address = [ "10.2.0.2/32" ];
#     # peers = [ { publicKey = "..."; endpoint = "198.51.100.1:51820";
#     #             allowedIPs = [ "0.0.0.0/0" "::/0" ]; } ];
#     steer.cgroups = [ "system.slice/transmission.service" ];
#     steer.interfaces = [ "ve-box" ];   # a NixOS container's veth
#   };
#
# Each tunnel becomes `vpn-<name>.service`: `vpn-ctl up FILE --foreground`,
# then one `vpn-ctl --tunnel <name> steer add ...` per steering entry
# (ExecStartPost). Steering is pinned in bpffs and stays in force when the
# service stops or crashes (fail-closed); `vpn-ctl --tunnel <name> steer
# clear` removes it. See nix/README.md.
{ config, lib, pkgs, ... }:
let
  inherit (lib)
    mkOption mkEnableOption mkIf types mapAttrs' nameValuePair
    concatStringsSep concatLists imap0 optional escapeShellArg
    attrNames;

  cfg = config.services.vpn;
  render = import ./render.nix lib;

  peerOptions = {
    options = {
      publicKey = mkOption {
        type = types.str;
        description = "The peer's public key (base64).";
      };
      presharedKeyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "File holding the preshared key (read at service start, never copied to the store).";
      };
      endpoint = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "198.51.100.1:51820";
        description = "host:port of the peer.";
      };
      allowedIPs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "0.0.0.0/0" "::/0" ];
        description = "Prefixes routed to, and accepted from, this peer.";
      };
      persistentKeepalive = mkOption {
        type = types.nullOr types.int;
        default = null;
        description = "Keepalive interval in seconds.";
      };
    };
  };

  tunnelOptions = { name, ... }: {
    options = {
      configFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = ''
          A wg-quick file for this tunnel (as a string path, so it is read at
          service start and not copied into the Nix store). When null, the
          file is rendered from the options below.
        '';
      };
      privateKeyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "File holding the interface's private key (base64).";
      };
      address = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "10.2.0.2/32" "fd00::2/128" ];
        description = "Addresses of the tunnel interface.";
      };
      listenPort = mkOption {
        type = types.nullOr types.port;
        default = null;
        description = "UDP port to listen on (random when null).";
      };
      dns = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Resolvers of the tunnel (steered DNS is redirected there).";
      };
      mtu = mkOption {
        type = types.nullOr types.int;
        default = null;
        description = "MTU of the tunnel interface.";
      };
      peers = mkOption {
        type = types.listOf (types.submodule peerOptions);
        default = [ ];
        description = "The tunnel's peers.";
      };
      steer = {
        cgroups = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "system.slice/transmission.service" "machine.slice" ];
          description = "cgroup v2 paths (relative to the cgroup mount) whose sockets use the tunnel.";
        };
        interfaces = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "ve-box" ];
          description = "Interfaces (a container's or VM's veth) whose forwarded traffic uses the tunnel.";
        };
        uids = mkOption {
          type = types.listOf types.int;
          default = [ ];
          description = "Users whose sockets use the tunnel.";
        };
        sources = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "192.168.100.0/24" ];
          description = "Source prefixes whose forwarded traffic uses the tunnel.";
        };
      };
      netns = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "box";
        description = ''
          Put the tunnel interface inside this network namespace (`ip netns`
          name, a /proc/PID/ns/net path, or pid:PID) while the encrypted UDP
          socket stays in the host's: the namespace's only way out is the
          tunnel (`vpn-ctl up FILE --netns NAME`).
        '';
      };
    };
  };

  # The wg-quick file vpn-ctl reads. The interface is named after the file,
  # so a given configFile is copied there too (and read at start, not at
  # build: it holds the private key).
  confPath = name: "/run/vpn-nix/${name}.conf";

  copyScript = name: t: pkgs.writeShellScript "vpn-${name}-config" ''
    set -eu
    umask 077
    mkdir -p /run/vpn-nix
    cp ${escapeShellArg t.configFile} /run/vpn-nix/${name}.conf.tmp
    mv /run/vpn-nix/${name}.conf.tmp /run/vpn-nix/${name}.conf
  '';

  # Fills the rendered template's secrets from the key files, at start.
  renderScript = name: t:
    let
      template = pkgs.writeText "vpn-${name}.conf.in" (render name t);
      psks = concatLists (imap0
        (i: p: optional (p.presharedKeyFile != null)
          "-e \"s|@PSK_${toString i}@|$(cat ${escapeShellArg p.presharedKeyFile})|\"")
        t.peers);
    in
    pkgs.writeShellScript "vpn-${name}-render" ''
      set -eu
      umask 077
      mkdir -p /run/vpn-nix
      sed -e "s|@PRIVATE_KEY@|$(cat ${escapeShellArg t.privateKeyFile})|" \
        ${concatStringsSep " " psks} \
        ${template} > /run/vpn-nix/${name}.conf.tmp
      mv /run/vpn-nix/${name}.conf.tmp /run/vpn-nix/${name}.conf
    '';

  vpnCtl = "${cfg.package}/bin/vpn-ctl";

  steerCommands = name: t:
    let add = what: "${vpnCtl} --tunnel ${name} steer add ${what}";
    in map (c: add "cgroup ${c}") t.steer.cgroups
      ++ map (i: add "iface ${i}") t.steer.interfaces
      ++ map (u: add "uid ${toString u}") t.steer.uids
      ++ map (s: add "src ${s}") t.steer.sources;

  service = name: t: nameValuePair "vpn-${name}" {
    description = "vpn tunnel ${name}";
    after = [ "network-pre.target" "sys-fs-bpf.mount" ];
    wants = [ "network-pre.target" ];
    before = [ "network-online.target" ];
    wantedBy = [ "multi-user.target" ];
    path = [ pkgs.iproute2 ];
    serviceConfig = {
      Type = "exec";
      ExecStartPre = if t.configFile == null then "${renderScript name t}" else "${copyScript name t}";
      ExecStart = "${vpnCtl} up ${confPath name} --foreground"
        + lib.optionalString (t.netns != null) " --netns ${t.netns}";
      ExecStartPost = steerCommands name t;
      ExecStop = "${vpnCtl} down --lockdown ${name}";
      Restart = "on-failure";
      RestartSec = "2s";
      AmbientCapabilities = [ "CAP_NET_ADMIN" "CAP_BPF" "CAP_SYS_ADMIN" "CAP_PERFMON" ];
      CapabilityBoundingSet = [ "CAP_NET_ADMIN" "CAP_BPF" "CAP_SYS_ADMIN" "CAP_PERFMON" "CAP_NET_RAW" ];
      LimitMEMLOCK = "infinity";
      NoNewPrivileges = true;
      ProtectHome = true;
    };
  };
in
{
  options.services.vpn = {
    enable = mkEnableOption "vpn tunnels with per-source eBPF steering";
    package = mkOption {
      type = types.package;
      description = "The vpn package (provides bin/vpn-ctl); the flake's packages.default.";
    };
    tunnels = mkOption {
      type = types.attrsOf (types.submodule tunnelOptions);
      default = { };
      description = "Tunnels, by interface name (at most 15 characters).";
    };
  };

  config = mkIf cfg.enable {
    assertions = map
      (name:
        let t = cfg.tunnels.${name}; in {
          assertion = t.configFile != null || t.privateKeyFile != null;
          message = "services.vpn.tunnels.${name}: set configFile, or privateKeyFile and the other keys";
        })
      (attrNames cfg.tunnels);
    environment.systemPackages = [ cfg.package ];
    systemd.services = mapAttrs' service cfg.tunnels;
  };
}
