# services.writ.runner: the node daemon. It runs as root because its SALs change the host (btrfs
# subvolumes, bridges and taps, VMs, Nix profiles), but its capability bounding set holds only what the
# enabled SAL areas need, and everything else is read-only to it.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.writ.runner;
  common = import ./common.nix { inherit lib; };
  # What each SAL area needs from the kernel (see docs/sal*.md for the tools each one runs).
  areaCaps = {
    btrfs = [ "CAP_SYS_ADMIN" "CAP_FOWNER" "CAP_DAC_OVERRIDE" "CAP_CHOWN" ];
    net = [ "CAP_NET_ADMIN" "CAP_NET_RAW" "CAP_SYS_ADMIN" ];
    vm = [ "CAP_NET_ADMIN" "CAP_SYS_ADMIN" "CAP_KILL" ];
    mycelium = [ "CAP_NET_ADMIN" "CAP_NET_RAW" "CAP_KILL" ];
    # Installing into the Nix store as root (single-user): ownership and permissions of store paths.
    nix = [ "CAP_CHOWN" "CAP_FOWNER" "CAP_DAC_OVERRIDE" ];
  };
  caps = lib.unique (lib.concatMap (a: areaCaps.${a}) cfg.salAreas);
in
{
  options.services.writ.runner = common.adminKeyOptions // {
    enable = lib.mkEnableOption "the Writ node runner";
    package = lib.mkOption { type = lib.types.package; default = pkgs.writ; defaultText = lib.literalExpression "pkgs.writ"; description = "The writ package."; };
    nodeId = lib.mkOption { type = lib.types.str; default = config.networking.hostName; defaultText = lib.literalExpression "config.networking.hostName"; description = "This node's id."; };
    labels = lib.mkOption { type = lib.types.attrsOf lib.types.str; default = { }; example = { rack = "r1"; }; description = "Labels jobs select this node by."; };
    clusterId = lib.mkOption { type = lib.types.str; default = "writ"; description = "The cluster id."; };
    coordUrl = lib.mkOption { type = lib.types.str; description = "The coord's URL."; };
    redisUrl = lib.mkOption { type = lib.types.nullOr lib.types.str; default = null; description = "Redis URL without a password (put one with a password in environmentFile as REDIS_URL)."; };
    production = lib.mkOption { type = lib.types.bool; default = true; description = "Refuse a Redis with eviction on or reached without this node's ACL user."; };
    environmentFile = lib.mkOption { type = lib.types.nullOr lib.types.path; default = null; description = "File with REDIS_URL when it carries this node's ACL password."; };
    salAreas = lib.mkOption {
      type = lib.types.listOf (lib.types.enum (lib.attrNames areaCaps));
      default = [ ];
      description = "SAL areas this node offers scripts; each adds the capabilities it needs to the service's bounding set. Host facts need none.";
    };
    hostSwitch = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Allow nix.switch of the host's own system (host deployments). Activating a NixOS system runs
        switch-to-configuration as root, which restarts units and writes /etc and /boot: it needs the full
        capability set and a writable root, so this lifts ProtectSystem and the bounding set for the runner.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.writ-runner = {
      description = "Writ node runner";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      path = [ config.nix.package ];
      environment.WRIT_HOME = "/var/lib/writ-runner";
      serviceConfig = common.hardening // {
        ExecStart = lib.escapeShellArgs ([
          (lib.getExe cfg.package) "runner"
          "--node" cfg.nodeId "--coord" cfg.coordUrl "--cluster" cfg.clusterId
          "--state" "/var/lib/writ-runner"
          "--admin-threshold" (toString cfg.adminThreshold)
        ] ++ lib.concatLists (lib.mapAttrsToList (k: v: [ "--label" "${k}=${v}" ]) cfg.labels)
          ++ lib.optionals (cfg.redisUrl != null) [ "--redis" cfg.redisUrl ]
          ++ lib.optional cfg.production "--production"
          ++ common.adminKeyFlags cfg.adminKeys);
        EnvironmentFile = lib.mkIf (cfg.environmentFile != null) cfg.environmentFile;
        User = "root";
        StateDirectory = "writ-runner";
        StateDirectoryMode = "0700";
        Restart = "always";
        # Running jobs get to finish: the runner takes no new work on SIGTERM and waits for them.
        TimeoutStopSec = 120;
        ReadWritePaths = lib.optionals (lib.elem "nix" cfg.salAreas) [ "/nix/store" "/nix/var" ]
          ++ lib.optionals (lib.elem "btrfs" cfg.salAreas) [ "/var/lib/writ" ];
        PrivateDevices = !(lib.elem "vm" cfg.salAreas);
        DeviceAllow = lib.optionals (lib.elem "vm" cfg.salAreas) [ "/dev/kvm rw" "/dev/net/tun rw" ];
        RestrictNamespaces = !(lib.elem "net" cfg.salAreas);
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ] ++ lib.optionals (caps != [ ]) [ "AF_NETLINK" ];
        SystemCallFilter = [ "@system-service" ] ++ lib.optionals (caps == [ ]) [ "~@privileged" ];
        CapabilityBoundingSet = if caps == [ ] then [ "" ] else caps;
        AmbientCapabilities = [ "" ];
      } // lib.optionalAttrs cfg.hostSwitch {
        ProtectSystem = false;
        ProtectHome = false;
        PrivateDevices = false;
        ProtectKernelModules = false;
        ProtectControlGroups = false;
        RestrictNamespaces = false;
        CapabilityBoundingSet = [ "~" ];
        SystemCallFilter = [ ];
        RestrictAddressFamilies = [ ];
      };
    };
  };
}
