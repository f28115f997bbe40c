# vpn as a Nix flake: the package (bin/vpn-ctl, and bin/vpn-wg, the wireguard-go drop-in) and the NixOS module.
#
#   nixosModules.default  ->  services.vpn.* (see nix/module.nix, nix/README.md)
#   packages.<system>.default
#
# Honest status: building through Nix was NOT tried (no Nix store or
# nixpkgs could be fetched where this was written); the module was only
# parsed and evaluated against a stand-in lib (tests/nix). Expect to adjust
# the build below on first use.
#
# The eBPF object: vpn-ctl/build.rs compiles vpn-ebpf/ for
# bpfel-unknown-none and embeds it in the binary. That needs a Rust with a
# `core` for bpfel-unknown-none and bpf-linker (LLVM). On Debian that is
# rustc-web + libstd-rust-web-dev-bpf + bpf-linker (cargo xtask setup). In
# nixpkgs the usual route is a nightly Rust with `-Z build-std=core` (e.g.
# from rust-overlay or fenix) plus `pkgs.bpf-linker`; neither is wired in
# here. build.rs defaults to Debian's paths (/usr/bin/cargo, /usr/bin/rustc,
# /usr/local/bin/bpf-linker); point it elsewhere with VPN_BPF_CARGO,
# VPN_BPF_RUSTC and VPN_BPF_LINKER_DIR, or hand it a prebuilt object with
# VPN_EBPF_OBJ (the simplest route: build the object once, elsewhere).
{
  description = "vpn: per-source VPN steering with eBPF and a WireGuard-compatible userspace tunnel";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: {
        default = pkgs.rustPlatform.buildRustPackage {
          pname = "vpn";
          version = "0.1.0";
          src = self;
          cargoLock.lockFile = ./Cargo.lock;
          cargoBuildFlags = [ "-p" "vpn-ctl" ];
          # The eBPF build (vpn-ctl/build.rs) needs these on PATH; see above.
          nativeBuildInputs = [ pkgs.bpf-linker pkgs.llvmPackages.llvm ];
          # env.VPN_EBPF_OBJ = ./vpn-ebpf.o;   # a prebuilt eBPF object, see above
          # The end-to-end suite needs root and network namespaces.
          doCheck = false;
          meta = {
            description = "Per-source VPN steering with eBPF and a WireGuard-compatible tunnel";
            platforms = pkgs.lib.platforms.linux;
            mainProgram = "vpn-ctl";
          };
        };
      });

      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./nix/module.nix ];
        services.vpn.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      };
    };
}
