# Shared by the three service modules: the hardening every Writ service gets, and the admin-key flags.
{ lib }:
{
  # systemd hardening for a service that needs no privilege beyond its state directory.
  hardening = {
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    # Node's JIT needs writable+executable memory, so MemoryDenyWriteExecute stays off.
    MemoryDenyWriteExecute = false;
    RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
    SystemCallArchitectures = "native";
    SystemCallFilter = [ "@system-service" "~@privileged" ];
    CapabilityBoundingSet = [ "" ];
    AmbientCapabilities = [ "" ];
    UMask = "0077";
  };

  adminKeyFlags = keys: lib.concatMap (k: [ "--admin-key" (toString k) ]) keys;

  adminKeyOptions = {
    adminKeys = lib.mkOption {
      type = lib.types.nonEmptyListOf lib.types.path;
      description = "Public key files (writ keys export) of the pinned admins: the first key set must carry adminThreshold of their signatures.";
    };
    adminThreshold = lib.mkOption {
      type = lib.types.ints.positive;
      default = 1;
      description = "How many distinct pinned admins must sign the first key set.";
    };
  };
}
