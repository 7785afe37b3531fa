# Writ's cluster schema: static cluster intent (pools, node classes, install profiles, disk policies,
# enrollment rules, fixed nodes, host deployments) checked and normalised with builtins only, so that
# `nix-instantiate --eval --strict --json` works offline, without nixpkgs. Every refusal is a `throw` whose
# message starts with `cluster-schema: <field path>:` naming the bad field.
#
# Usage: (import ./cluster-schema.nix) { name = "lab"; pools = { ... }; classes = { ... }; ... }
# The result is what `writ cluster apply` loads: lists sorted by name, every default filled in.
cluster:
let
  inherit (builtins)
    all any attrNames concatMap concatStringsSep deepSeq elem elemAt filter foldl' genList head isAttrs isBool
    isInt isList isString length mapAttrs match removeAttrs sort split toJSON typeOf;

  schemaVersion = 1;

  fail = path: msg: throw "cluster-schema: ${path}: ${msg}";
  show = v: if isAttrs v || isList v || isString v || isInt v || isBool v || v == null then toJSON v else "a ${typeOf v}";
  indexed = list: genList (i: { inherit i; v = elemAt list i; }) (length list);

  # ---- field checkers: each takes the field's path and value and returns the value (or throws) ----
  attrs = path: v: if isAttrs v then v else fail path "must be an attribute set, got ${typeOf v}";
  # An attribute set with exactly the known fields; returns it.
  record = known: path: v:
    let
      a = attrs path v;
      unknown = filter (n: !(elem n known)) (attrNames a);
    in
    if unknown != [ ] then fail "${path}.${head unknown}" "unknown field (known: ${concatStringsSep ", " known})" else a;
  req = path: a: name: check: if a ? ${name} then check "${path}.${name}" a.${name} else fail "${path}.${name}" "is required";
  opt = path: a: name: default: check: if a ? ${name} && a.${name} != null then check "${path}.${name}" a.${name} else default;

  str = path: v: if isString v then v else fail path "must be a string, got ${typeOf v}";
  strRe = re: what: path: v: if isString v && match re v != null then v else fail path "must be ${what}, got ${show v}";
  bool = path: v: if isBool v then v else fail path "must be a boolean, got ${typeOf v}";
  intIn = lo: hi: path: v:
    if isInt v && v >= lo && v <= hi then v else fail path "must be an integer from ${toString lo} to ${toString hi}, got ${show v}";
  listOf = check: path: v: if isList v then map (e: check "${path}[${toString e.i}]" e.v) (indexed v) else fail path "must be a list, got ${typeOf v}";
  nonEmptyList = check: path: v: let l = listOf check path v; in if l == [ ] then fail path "must not be empty" else l;
  attrsOf = check: path: v: mapAttrs (n: x: check "${path}.${n}" x) (attrs path v);
  enum = values: path: v: if elem v values then v else fail path "must be one of ${concatStringsSep ", " values}, got ${show v}";

  namePattern = "[a-z0-9][a-z0-9-]{0,62}";
  nodeIdPattern = "[a-z0-9][a-z0-9.-]{0,62}";
  labelKeyPattern = "[a-z0-9][a-z0-9./_-]{0,62}";
  storePathPattern = "/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]{1,211}";
  macPattern = "[0-9a-f]{2}(:[0-9a-f]{2}){5}";
  name' = strRe namePattern "a name (lower-case letters, digits and '-', at most 63 characters)";
  checkNameKeys = path: a: map (n: name' path n) (attrNames a);

  labels = path: v:
    let a = attrs path v;
    in mapAttrs
      (k: x:
        if match labelKeyPattern k == null then fail "${path}.${k}" "is not a valid label key (${labelKeyPattern})"
        else if !(isString x) || match ".{0,63}" x == null then fail "${path}.${k}" "must be a string of at most 63 characters, got ${show x}"
        else x)
      a;

  # A system to activate: a store path already built, or a flake reference the operator builds first.
  systemFields = path: a:
    let
      system = opt path a "system" null (strRe storePathPattern "a store path (/nix/store/<hash>-<name>)");
      flake = opt path a "flake" null (strRe "[^ \t\n]+#[^ \t\n]+" "a flake reference with an attribute (e.g. .#nixosConfigurations.node)");
    in
    if system == null && flake == null then fail "${path}.system" "one of system (a store path) or flake (a flake reference) is required"
    else if system != null && flake != null then fail "${path}.flake" "give either system or flake, not both"
    else { inherit system flake; };

  # ---- pools ----
  pools = attrsOf
    (path: v:
      let a = record [ "description" "supervisors" ] path v;
      in {
        description = opt path a "description" "" str;
        supervisors = opt path a "supervisors" [ ] (listOf (strRe namePattern "a supervisor id"));
      })
    "pools"
    (req "cluster" cluster "pools" attrs);
  poolNames = attrNames pools;

  # ---- disk policies: the target disk is chosen by stable hints, never by /dev/sdX ----
  # The hints are those of an install plan (issue 11's DiskHints): every hint given must hold and exactly
  # one disk must match. Sizes are written in GiB here and become bytes in the plan.
  gib = 1073741824;
  diskPolicies = attrsOf
    (path: v:
      let
        a = record [ "hints" ] path v;
        hp = "${path}.hints";
        h = record [ "serial" "wwn" "byId" "model" "minSizeGiB" "maxSizeGiB" ] hp (req path a "hints" attrs);
        byId = opt hp h "byId" null (strRe "[A-Za-z0-9][A-Za-z0-9:._-]{0,200}" "a /dev/disk/by-id name without the directory (never /dev/sdX)");
        hints = {
          serial = opt hp h "serial" null (strRe "[^\n]{1,128}" "a disk serial");
          wwn = opt hp h "wwn" null (strRe "(0x|eui\\.|naa\\.)?[0-9a-fA-F]{8,40}" "a WWN (e.g. 0x5000c500a1b2c3d4)");
          inherit byId;
          model = opt hp h "model" null (strRe "[^\n]{1,128}" "a disk model");
          minSizeGiB = opt hp h "minSizeGiB" null (intIn 1 1048576);
          maxSizeGiB = opt hp h "maxSizeGiB" null (intIn 1 1048576);
        };
      in
      if all (k: hints.${k} == null) (attrNames hints) then fail hp "has no stable hint: give serial, wwn, byId, model or a size range (/dev/sdX names change between boots and are never used)"
      else if hints.minSizeGiB != null && hints.maxSizeGiB != null && hints.minSizeGiB > hints.maxSizeGiB then fail "${hp}.minSizeGiB" "is larger than maxSizeGiB (${toString hints.maxSizeGiB}): no disk can match"
      else { inherit hints; })
    "diskPolicies"
    (opt "cluster" cluster "diskPolicies" { } attrs);
  # A disk policy as an install plan's `disk` (bytes, unset hints left out).
  planDisk = hints:
    nonNull {
      inherit (hints) serial wwn byId model;
      minBytes = if hints.minSizeGiB == null then null else hints.minSizeGiB * gib;
      maxBytes = if hints.maxSizeGiB == null then null else hints.maxSizeGiB * gib;
    };
  nonNull = set: removeAttrs set (filter (k: set.${k} == null) (attrNames set));

  # ---- install profiles: what an installed node boots ----
  installProfiles = attrsOf
    (path: v:
      let a = record [ "system" "flake" "subvolumes" "kernelParams" ] path v;
      in systemFields path a // {
        subvolumes = opt path a "subvolumes" [ "@root" "@nix" "@var" ] (nonEmptyList (strRe "@?[A-Za-z0-9._-]{1,63}" "a subvolume name (e.g. @root)"));
        kernelParams = opt path a "kernelParams" [ ] (listOf (strRe "[^ \t\n]+" "one kernel parameter without spaces"));
      })
    "installProfiles"
    (opt "cluster" cluster "installProfiles" { } attrs);

  refTo = kind: known: path: v:
    let s = str path v;
    in if elem s known then s else fail path "unknown ${kind} ${show s} (known: ${if known == [ ] then "none" else concatStringsSep ", " known})";

  # ---- node classes ----
  classes = attrsOf
    (path: v:
      let
        a = record [ "pool" "labels" "installProfile" "diskPolicy" "description" ] path v;
        installProfile = opt path a "installProfile" null (refTo "install profile" (attrNames installProfiles));
        diskPolicy = opt path a "diskPolicy" null (refTo "disk policy" (attrNames diskPolicies));
      in
      if installProfile != null && diskPolicy == null then fail "${path}.diskPolicy" "is required when installProfile is set (the installer must know which disk to use)"
      else {
        pool = req path a "pool" (refTo "pool" poolNames);
        labels = opt path a "labels" { } labels;
        description = opt path a "description" "" str;
        inherit installProfile diskPolicy;
      })
    "classes"
    (req "cluster" cluster "classes" attrs);
  classNames = attrNames classes;
  classLabels = c: { class = c; pool = classes.${c}.pool; } // classes.${c}.labels;

  # ---- enrollment rules: inventory → class, pool, labels, hostname (issue 11's rules, as the ledger keeps them) ----
  # Tried by priority, lowest first, ties by name. Fixed nodes become rules of priority 0, so user rules
  # start at 1.
  globFields = [ "dmiSerial" "dmiProduct" "diskSerial" "diskModel" "nicDriver" ];
  matchFields = [ "macs" "diskMinBytes" "diskMaxBytes" "nicMinSpeedMbps" "diskless" "requireToken" ] ++ globFields;
  glob = strRe "[^\n]{1,128}" "a glob (at most 128 characters)";
  hostnamePlaceholders = [ "class" "mac" "serial" "id" ];
  # {class} is known here and filled in; {serial}, {mac} and {id} are filled in when a node enrolls.
  hostnamePattern = class: path: v:
    let
      s = strRe "[a-z0-9{][a-z0-9{}.-]{0,62}" "a hostname pattern (lower-case letters, digits, '.', '-', and {class}, {mac}, {serial} or {id})" path v;
      used = concatMap (p: if isList p then p else [ ]) (split "\\{([^}]*)}" s);
      bad = filter (p: !(elem p hostnamePlaceholders)) used;
    in
    if bad != [ ] then fail path "unknown placeholder {${head bad}} (known: {class}, {mac}, {serial}, {id})"
    else builtins.replaceStrings [ "{class}" ] [ class ] s;
  tokenSha256 = strRe "[0-9a-f]{64}" "the sha256 (hex) of the enrollment token, never the token itself (printf %s TOKEN | sha256sum)";
  checkRuleTokens = path: r:
    if r.autoAccept && r.tokenSha256 == null then fail "${path}.autoAccept" "needs tokenSha256: a node is accepted without an operator only for presenting the rule's token"
    else if (r.match.requireToken or false) && r.tokenSha256 == null then fail "${path}.match.requireToken" "needs tokenSha256"
    else if r.match == { } && r.tokenSha256 == null then fail "${path}.match" "matches nothing in particular: give a criterion or a token"
    else r;
  ruleEntry = path: a: { name, priority, match, class, defaultHostname }:
    checkRuleTokens path {
      inherit name priority match;
      assign = {
        inherit class;
        pool = classes.${class}.pool;
        labels = classLabels class // opt path a "labels" { } labels;
        hostname = opt path a "hostname" defaultHostname (hostnamePattern class);
      };
      tokenSha256 = opt path a "tokenSha256" null tokenSha256;
      autoAccept = opt path a "autoAccept" false bool;
      maxUses = opt path a "maxUses" null (intIn 1 1000000);
    };
  rulesIn = opt "cluster" cluster "enrollmentRules" [ ] (listOf (path: v: v));
  userRules = map
    (e:
      let
        path = "enrollmentRules[${toString e.i}]";
        a = record [ "name" "priority" "match" "class" "labels" "hostname" "tokenSha256" "autoAccept" "maxUses" ] path e.v;
        mp = "${path}.match";
        m = record matchFields mp (req path a "match" attrs);
        class = req path a "class" (refTo "class" classNames);
      in
      { where = path; } // ruleEntry path a {
        name = req path a "name" (strRe "[a-z0-9][a-z0-9._-]{0,62}" "a rule name");
        priority = opt path a "priority" 100 (intIn 1 1000000);
        match = nonNull ({
          macs = opt mp m "macs" null (nonEmptyList (strRe macPattern "a lower-case MAC address (aa:bb:cc:dd:ee:ff)"));
          diskMinBytes = opt mp m "diskMinBytes" null (intIn 0 9007199254740991);
          diskMaxBytes = opt mp m "diskMaxBytes" null (intIn 0 9007199254740991);
          nicMinSpeedMbps = opt mp m "nicMinSpeedMbps" null (intIn 0 1000000);
          diskless = opt mp m "diskless" null bool;
          requireToken = opt mp m "requireToken" null bool;
        } // builtins.listToAttrs (map (k: { name = k; value = opt mp m k null glob; }) globFields));
        inherit class;
        defaultHostname = null;
      })
    (indexed rulesIn);

  # ---- fixed nodes: machines known by MAC ahead of time; each becomes a rule of priority 0 ----
  nodes = mapAttrs
    (n: v:
      let
        path = "nodes.${n}";
        a = record [ "mac" "class" "labels" "hostname" "serial" "tokenSha256" "autoAccept" ] path v;
        class = req path a "class" (refTo "class" classNames);
        mac = req path a "mac" (strRe macPattern "a lower-case MAC address (aa:bb:cc:dd:ee:ff)");
        serial = opt path a "serial" null glob;
      in
      if match "[a-z0-9][a-z0-9.-]{0,57}" n == null then fail path "is not a valid node name (lower-case letters, digits, '.', '-', at most 58 characters)"
      else { inherit mac serial; } // removeAttrs (ruleEntry path a { name = "node-${n}"; priority = 0; match = nonNull { macs = [ mac ]; dmiSerial = serial; }; inherit class; defaultHostname = n; }) [ "name" "priority" "match" ])
    (opt "cluster" cluster "nodes" { } attrs);
  nodeRules = map (n: { where = "nodes.${n}"; name = "node-${n}"; priority = 0; match = nonNull { macs = [ nodes.${n}.mac ]; dmiSerial = nodes.${n}.serial; }; inherit (nodes.${n}) assign tokenSha256 autoAccept maxUses; }) (attrNames nodes);
  rules = nodeRules ++ userRules;
  ruleNames = map (r: r.name) rules;

  # `a` covers `b` when every machine matching b also matches a: each constraint of a is also in b, as
  # narrow or narrower. Globs are compared as strings ("*" covers anything).
  constraintCovers = k: x: y:
    if x == null then true
    else if k == "macs" then y != null && all (mac: elem mac x) y
    else if k == "diskMinBytes" || k == "nicMinSpeedMbps" then y != null && y >= x
    else if k == "diskMaxBytes" then y != null && y <= x
    else if k == "requireToken" then x == false || y == true
    else if elem k globFields then x == "*" || x == y
    else x == y;
  covers = a: b: all (k: constraintCovers k (a.match.${k} or null) (b.match.${k} or null)) matchFields
    && (!(a.match.requireToken or false) || a.tokenSha256 == b.tokenSha256);
  ordered = sort (a: b: if a.priority != b.priority then a.priority < b.priority else a.name < b.name) rules;
  shadowCheck = foldl'
    (earlier: r:
      let shadowing = filter (e: covers e r) earlier;
      in if shadowing != [ ] then
        let s = head shadowing;
        in fail r.where "rule ${show r.name} can never match: ${s.where} (${show s.name}, priority ${toString s.priority}) is tried first and matches every machine it matches"
      else earlier ++ [ r ])
    [ ]
    ordered;
  duplicateRule = foldl' (seen: n: if elem n seen then fail "enrollmentRules" "two rules are named ${show n} (fixed nodes take the names node-<name>)" else seen ++ [ n ]) [ ] ruleNames;
  duplicateMac = foldl'
    (seen: n: let mac = nodes.${n}.mac; in if seen ? ${mac} then fail "nodes.${n}.mac" "${mac} is also nodes.${seen.${mac}}.mac" else seen // { ${mac} = n; })
    { }
    (attrNames nodes);

  # ---- host deployments: desired system per selector, rollout budget, health gate ----
  knownLabelSets = map (r: r.assign.labels) rules;
  selects = sel: ls: all (k: ls ? ${k} && ls.${k} == sel.${k}) (attrNames sel);
  deployments = attrsOf
    (path: v:
      let
        a = record [ "system" "flake" "selector" "maxUnavailable" "batchSize" "drain" "healthCheck" "timeoutS" "profile" ] path v;
        selector = req path a "selector" labels;
        hp = "${path}.healthCheck";
        h = record [ "argv" "timeoutMs" ] hp (req path a "healthCheck" attrs);
        batchSize = opt path a "batchSize" 1 (intIn 1 1000);
        maxUnavailable = opt path a "maxUnavailable" 1 (intIn 1 1000);
      in
      if selector == { } then fail "${path}.selector" "must not be empty (select nodes by label, e.g. { class = \"compute\"; })"
      else if !(any (selects selector) knownLabelSets) then fail "${path}.selector" "${show selector} matches nothing known: no fixed node and no enrollment rule assigns these labels"
      else systemFields path a // {
        inherit selector batchSize maxUnavailable;
        drain = opt path a "drain" false bool;
        healthCheck = {
          argv = req hp h "argv" (nonEmptyList (path: v: if isString v && v != "" then v else fail path "must be a non-empty string"));
          timeoutMs = opt hp h "timeoutMs" 30000 (intIn 100 3600000);
        };
        timeoutS = opt path a "timeoutS" 600 (intIn 10 604800);
        profile = opt path a "profile" "system" name';
      })
    "deployments"
    (opt "cluster" cluster "deployments" { } attrs);

  top = record [ "name" "pools" "classes" "installProfiles" "diskPolicies" "enrollmentRules" "nodes" "deployments" ] "cluster" cluster;
  clusterName = req "cluster" top "name" name';
  named = set: map (n: { name = n; } // set.${n}) (attrNames set);

  # Install plans as the ledger keeps them (issue 11's InstallPlan): one per class that installs, the disk
  # chosen by its policy's hints, the profile's subvolumes. Its first jobs are signed envelopes, which a Nix
  # file cannot hold (signatures expire): they are added with writ enroll, so `jobs` is empty here.
  installPlans = concatMap
    (c:
      let k = classes.${c};
      in if k.installProfile == null then [ ] else [{
        type = "application/vnd.writ.install-plan.v1+json";
        class = c;
        disk = planDisk diskPolicies.${k.diskPolicy}.hints;
        subvolumes = installProfiles.${k.installProfile}.subvolumes;
        jobs = [ ];
      }])
    classNames;

  checks = [
    (checkNameKeys "pools" pools)
    (checkNameKeys "classes" classes)
    (checkNameKeys "installProfiles" installProfiles)
    (checkNameKeys "diskPolicies" diskPolicies)
    (checkNameKeys "deployments" deployments)
    (if poolNames == [ ] then fail "pools" "at least one pool is required" else true)
    (if classNames == [ ] then fail "classes" "at least one class is required" else true)
    duplicateMac
    duplicateRule
    shadowCheck
  ];
  # Everything is forced before anything is returned, so a refusal never follows half-printed JSON.
  result = {
    inherit schemaVersion;
    name = clusterName;
    pools = named pools;
    classes = named classes;
    installProfiles = named installProfiles;
    diskPolicies = named diskPolicies;
    enrollmentRules = map (r: removeAttrs r [ "where" ]) ordered;
    nodes = named nodes;
    installPlans = installPlans;
    deployments = named deployments;
  };
in
deepSeq checks (deepSeq result result)
