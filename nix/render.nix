# Renders one tunnel's Nix options into a wg-quick file *template*: every
# secret is a placeholder (@PRIVATE_KEY@, @PSK_<n>@) that the service fills in
# at start from the key files, so no key ever lands in the world-readable
# Nix store. Pure: `lib` and the tunnel's options in, text out.
lib: name: t:
let
  inherit (lib) concatStringsSep concatMapStringsSep optionalString imap0;
  line = key: value: "${key} = ${toString value}\n";
  optLine = key: value: optionalString (value != null && value != [ ]) (
    line key (if builtins.isList value then concatStringsSep ", " value else value)
  );
  peer = i: p: ''

    [Peer]
    PublicKey = ${p.publicKey}
  ''
  + optionalString (p.presharedKeyFile != null) "PresharedKey = @PSK_${toString i}@\n"
  + optLine "Endpoint" p.endpoint
  + optLine "AllowedIPs" p.allowedIPs
  + optLine "PersistentKeepalive" p.persistentKeepalive;
in
''
  # vpn tunnel ${name}, rendered by nix/module.nix
  [Interface]
  PrivateKey = @PRIVATE_KEY@
''
+ optLine "Address" t.address
+ optLine "ListenPort" t.listenPort
+ optLine "DNS" t.dns
+ optLine "MTU" t.mtu
+ concatStringsSep "" (imap0 peer t.peers)
