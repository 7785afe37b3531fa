# services.writ.supervisor: admission, per-node queues in Redis, signed reports to the coord.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.writ.supervisor;
  common = import ./common.nix { inherit lib; };
in
{
  options.services.writ.supervisor = common.adminKeyOptions // {
    enable = lib.mkEnableOption "a Writ supervisor";
    package = lib.mkOption { type = lib.types.package; default = pkgs.writ; defaultText = lib.literalExpression "pkgs.writ"; description = "The writ package."; };
    id = lib.mkOption { type = lib.types.str; default = "sup-1"; description = "This supervisor's id (as listed in the key set)."; };
    listen = lib.mkOption { type = lib.types.str; default = "127.0.0.1:7341"; description = "HOST:PORT for the coord's calls."; };
    clusterId = lib.mkOption { type = lib.types.str; default = "writ"; description = "The cluster id."; };
    coordUrl = lib.mkOption { type = lib.types.str; example = "http://10.0.0.1:7340"; description = "The coord's URL."; };
    redisUrl = lib.mkOption { type = lib.types.nullOr lib.types.str; default = null; description = "Redis URL without a password (put a URL with one in environmentFile as REDIS_URL)."; };
    production = lib.mkOption { type = lib.types.bool; default = true; description = "Refuse a Redis that evicts keys or is reached as another ACL user than writ-supervisor."; };
    environmentFile = lib.mkOption { type = lib.types.path; description = "File with WRIT_SUPERVISOR_TOKEN (and REDIS_URL when it carries a password)."; };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.writ-supervisor = {
      description = "Writ supervisor";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" "redis-writ.service" ];
      wants = [ "network-online.target" ];
      environment.WRIT_HOME = "/var/lib/writ-supervisor";
      serviceConfig = common.hardening // {
        ExecStart = lib.escapeShellArgs ([
          (lib.getExe cfg.package) "supervisor"
          "--id" cfg.id "--listen" cfg.listen "--cluster" cfg.clusterId "--coord" cfg.coordUrl
          "--state" "/var/lib/writ-supervisor"
          "--admin-threshold" (toString cfg.adminThreshold)
        ] ++ lib.optionals (cfg.redisUrl != null) [ "--redis" cfg.redisUrl ]
          ++ lib.optional cfg.production "--production"
          ++ common.adminKeyFlags cfg.adminKeys);
        EnvironmentFile = cfg.environmentFile;
        DynamicUser = true;
        StateDirectory = "writ-supervisor";
        # The signing key stays private; its .pub file is what the coord's supervisorKey points at.
        StateDirectoryMode = "0755";
        Restart = "on-failure";
        TimeoutStopSec = 30;
      };
    };
  };
}
