# services.writ.coord: the coordinator (HTTP API, ledger, reconciler, host rollout controller).
{ config, lib, pkgs, ... }:
let
  cfg = config.services.writ.coord;
  common = import ./common.nix { inherit lib; };
in
{
  options.services.writ.coord = common.adminKeyOptions // {
    enable = lib.mkEnableOption "the Writ coordinator";
    package = lib.mkOption { type = lib.types.package; default = pkgs.writ; defaultText = lib.literalExpression "pkgs.writ"; description = "The writ package."; };
    listen = lib.mkOption { type = lib.types.str; default = "127.0.0.1:7340"; description = "HOST:PORT the API listens on."; };
    clusterId = lib.mkOption { type = lib.types.str; default = "writ"; description = "The cluster id every envelope's audience must name."; };
    supervisorUrl = lib.mkOption { type = lib.types.str; example = "http://10.0.0.2:7341"; description = "The supervisor's URL."; };
    supervisorKey = lib.mkOption { type = lib.types.path; description = "The supervisor's public key file (supervisor.key.pub in its state directory)."; };
    environmentFile = lib.mkOption {
      type = lib.types.path;
      description = "File with WRIT_TOKEN (API clients' bearer token), WRIT_SUPERVISOR_TOKEN and optionally DATABASE_URL (PostgreSQL; without it the ledger is PGlite in the state directory). Kept out of the Nix store.";
    };
    openFirewall = lib.mkOption { type = lib.types.bool; default = false; description = "Open the API port."; };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.writ-coord = {
      description = "Writ coordinator";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" "postgresql.service" ];
      wants = [ "network-online.target" ];
      environment.WRIT_HOME = "/var/lib/writ-coord";
      serviceConfig = common.hardening // {
        ExecStart = lib.escapeShellArgs ([
          (lib.getExe cfg.package) "coord"
          "--listen" cfg.listen "--cluster" cfg.clusterId
          "--supervisor" cfg.supervisorUrl "--supervisor-key" (toString cfg.supervisorKey)
          "--state" "/var/lib/writ-coord"
          "--admin-threshold" (toString cfg.adminThreshold)
        ] ++ common.adminKeyFlags cfg.adminKeys);
        EnvironmentFile = cfg.environmentFile;
        DynamicUser = true;
        StateDirectory = "writ-coord";
        StateDirectoryMode = "0700";
        Restart = "on-failure";
        # The coord stops within its shutdown grace on SIGTERM.
        TimeoutStopSec = 30;
      };
    };
    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ (lib.toInt (lib.last (lib.splitString ":" cfg.listen))) ];
  };
}
