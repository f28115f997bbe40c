# Evaluates nix/module.nix with the stand-in lib for the suite: a tunnel
# with keys in Nix and two steered cgroups, one from a wg-quick file in
# netns mode, and the module disabled. `nix-instantiate --eval --strict
# --json` prints what the test asserts on.
let
  module = ../../nix/module.nix;
  lib = import ./stub-lib.nix;
  pkgs = {
    writeText = name: _: "/nix/store/00000000000000000000000000000000-${name}";
    writeShellScript = name: _: "/nix/store/00000000000000000000000000000000-${name}";
    iproute2 = "/nix/store/00000000000000000000000000000000-iproute2";
  };
  package = "/nix/store/00000000000000000000000000000000-vpn";
  tunnels = {
    wg0 = {
      privateKeyFile = "/etc/secrets/wg0.key";
      address = [ "10.2.0.2/32" "fd00::2/128" ];
      dns = [ "10.2.0.1" ];
      mtu = 1420;
      peers = [
        {
          publicKey = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
          presharedKeyFile = "/etc/secrets/wg0.psk";
          endpoint = "198.51.100.1:51820";
          allowedIPs = [ "0.0.0.0/0" "::/0" ];
          persistentKeepalive = 25;
        }
      ];
      steer.cgroups = [ "system.slice/transmission.service" "machine.slice/container@box.service" ];
      steer.interfaces = [ "ve-box" ];
      steer.uids = [ 1001 ];
      steer.sources = [ "192.168.100.0/24" ];
    };
    box = {
      configFile = "/etc/secrets/provider.conf";
      netns = "box";
    };
  };
  on = lib.evalModule (import module) {
    services.vpn = { enable = true; inherit package tunnels; };
  } pkgs;
  off = lib.evalModule (import module) {
    services.vpn = { inherit package tunnels; };
  } pkgs;
  render = import ../../nix/render.nix lib;
in
{
  services = on.systemd.services;
  assertions = on.assertions;
  offHasServices = off ? systemd;
  options = on.services.vpn;
  rendered = render "wg0" on.services.vpn.tunnels.wg0;
}
