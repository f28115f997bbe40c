# A small stand-in for nixpkgs' `lib`, enough to evaluate nix/module.nix
# without nixpkgs (which cannot be fetched here): option declarations, a few
# types with checks, mkIf/mkMerge, the list and string helpers the module
# uses, and `evalModule`, a tiny module system (declared options filled from
# the given config and their defaults, submodules by fixpoint, unknown
# options rejected, values type-checked).
let
  b = builtins;
  isOption = v: b.isAttrs v && (v._type or null) == "option";
  mkType = name: check: { _type = "type"; inherit name check; };
in
rec {
  mkOption = args: args // { _type = "option"; };
  mkEnableOption = what: mkOption {
    type = types.bool;
    default = false;
    description = "Whether to enable ${what}.";
  };
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };

  types = {
    bool = mkType "bool" b.isBool;
    str = mkType "str" b.isString;
    int = mkType "int" b.isInt;
    port = mkType "port" (v: b.isInt v && v >= 0 && v <= 65535);
    path = mkType "path" (v: b.isPath v || b.isString v);
    package = mkType "package" (v: b.isAttrs v || b.isString v);
    nullOr = t: (mkType "null or ${t.name}" (v: v == null || t.check v)) // { elem = t; nullable = true; };
    listOf = t: (mkType "list of ${t.name}" (v: b.isList v && b.all t.check v)) // { list = t; };
    attrsOf = t: (mkType "attrs of ${t.name}" (v: b.isAttrs v && b.all t.check (b.attrValues v))) // { attrs = t; };
    enum = vs: mkType "one of ${b.toJSON vs}" (v: b.elem v vs);
    submodule = m: (mkType "submodule" b.isAttrs) // { submodule = m; };
  };

  # list / attrset / string helpers (same semantics as nixpkgs' for the
  # arguments the module passes)
  mapAttrs' = f: set: b.listToAttrs (map (n: f n set.${n}) (b.attrNames set));
  nameValuePair = name: value: { inherit name value; };
  attrNames = b.attrNames;
  concatStringsSep = b.concatStringsSep;
  concatMapStringsSep = sep: f: l: b.concatStringsSep sep (map f l);
  concatLists = b.concatLists;
  imap0 = f: l: b.genList (i: f i (b.elemAt l i)) (b.length l);
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  optionalString = cond: s: if cond then s else "";
  escapeShellArg = s: "'${b.replaceStrings [ "'" ] [ "'\\''" ] (toString s)}'";

  # Pushes mkIf/mkMerge down and drops what is off.
  resolve = v:
    if b.isAttrs v && (v._type or null) == "if" then
      (if v.condition then resolve v.content else { })
    else if b.isAttrs v && (v._type or null) == "merge" then
      b.foldl' (acc: x: recursiveMerge acc (resolve x)) { } v.contents
    else if b.isAttrs v && !(v ? outPath) then
      b.mapAttrs (_: resolve) v
    else v;

  recursiveMerge = l: r:
    l // b.mapAttrs
      (n: rv: if b.isAttrs rv && b.isAttrs (l.${n} or null) then recursiveMerge l.${n} rv else rv)
      r;

  # Fills declared options `decl` from `given`, at `loc` (for messages).
  fill = loc: decl: given:
    let
      unknown = b.filter (n: !(decl ? ${n})) (b.attrNames given);
    in
    if unknown != [ ] then
      throw "${loc}: no such option ${b.head unknown}"
    else
      b.mapAttrs
        (n: d:
          let l = "${loc}.${n}"; in
          if isOption d then
            value l d.type
              (if given ? ${n} then given.${n}
               else if d ? default then d.default
               else throw "${l} is used but not defined")
          else fill l d (given.${n} or { }))
        decl;

  value = loc: type: v:
    if type ? submodule then evalSubmodule loc type.submodule v
    else if type ? list && type.list ? submodule then
      b.genList (i: evalSubmodule "${loc}.[${toString i}]" type.list.submodule (b.elemAt v i)) (b.length v)
    else if type ? attrs && type.attrs ? submodule then
      b.mapAttrs (n: x: evalSubmodule "${loc}.${n}" type.attrs.submodule x) v
    else if type.check v then v
    else throw "${loc}: ${b.toJSON v} is not a ${type.name}";

  evalSubmodule = loc: m: given:
    let
      name = let parts = b.split "\\." loc; in b.elemAt parts (b.length parts - 1);
      mod = if b.isFunction m then m { inherit name config; lib = stub; } else m;
      config = fill loc (mod.options or { }) given;
      stub = { inherit mkOption types; };
    in
    config;

  # Evaluates one module: its options filled from `given`; the module sees
  # those as `config` (it reads only its own options; the real module system
  # would also show it what other modules set), and the result is its config
  # section resolved, plus the options.
  evalModule = module: given: pkgs:
    let
      lib = import ./stub-lib.nix;
      out = module { config = options; inherit lib pkgs; };
      options = fill "config" out.options (b.intersectAttrs out.options given);
    in
    recursiveMerge (resolve (out.config or { })) options;
}
