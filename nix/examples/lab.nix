# A small lab: six machines in two classes (four compute nodes, two storage nodes), one pool each.
# Evaluate it offline with:
#   nix-instantiate --eval --strict --json nix/examples/lab.nix
# and load the result with `writ cluster apply nix/examples/lab.nix` (see docs/nix.md).
import ../lib/cluster-schema.nix {
  name = "lab";

  pools = {
    lab-a = { description = "rack A"; supervisors = [ "sup-1" ]; };
    lab-b = { description = "rack B"; };
  };

  diskPolicies = {
    # The OS disk is the NVMe drive: matched by its model and size, never by /dev/nvme0n1.
    nvme-os = { hints = { model = "Samsung SSD 980 PRO 1TB"; minSizeGiB = 400; maxSizeGiB = 1200; }; };
    # Storage nodes boot from a small SATA SSD, found by model and size; the big disks are left for data.
    sata-boot = { hints = { model = "INTEL SSDSC2KB240G8"; maxSizeGiB = 300; }; };
  };

  installProfiles = {
    compute = { flake = "git+https://git.example.org/lab/infra#nixosConfigurations.compute"; kernelParams = [ "console=ttyS0,115200" ]; };
    storage = { flake = "git+https://git.example.org/lab/infra#nixosConfigurations.storage"; subvolumes = [ "@root" "@nix" "@var" "@data" ]; };
  };

  classes = {
    compute = { pool = "lab-a"; labels = { role = "compute"; }; installProfile = "compute"; diskPolicy = "nvme-os"; };
    storage = { pool = "lab-b"; labels = { role = "storage"; "disk/tier" = "hdd"; }; installProfile = "storage"; diskPolicy = "sata-boot"; };
  };

  # Machines not listed under `nodes` enroll by rule: tried by priority, lowest first (the fixed nodes'
  # own rules have priority 0). A token is given as its sha256, never in clear: the Nix store is world-readable.
  enrollmentRules = [
    {
      name = "storage-chassis"; priority = 10; match = { dmiProduct = "SSG-6029P*"; diskModel = "ST16000*"; }; class = "storage";
      hostname = "{class}-{serial}";
    }
    {
      name = "compute-token"; priority = 20; match = { requireToken = true; nicMinSpeedMbps = 10000; }; class = "compute";
      hostname = "{class}-{mac}";
      # printf %s "$TOKEN" | sha256sum
      tokenSha256 = "5d41402abc4b2a76b9719d911017c592ae21ba5e2a6b0fa1d6e4d3d7f8f1e2c3";
      autoAccept = true; maxUses = 8;
    }
  ];

  # The six machines of the lab, known by MAC: each becomes a rule of priority 0 naming the node.
  nodes = {
    compute-1 = { mac = "52:54:00:10:00:01"; class = "compute"; };
    compute-2 = { mac = "52:54:00:10:00:02"; class = "compute"; };
    compute-3 = { mac = "52:54:00:10:00:03"; class = "compute"; };
    compute-4 = { mac = "52:54:00:10:00:04"; class = "compute"; labels = { canary = "yes"; }; };
    storage-1 = { mac = "52:54:00:20:00:01"; class = "storage"; serial = "S1LAB0001"; };
    storage-2 = { mac = "52:54:00:20:00:02"; class = "storage"; serial = "S1LAB0002"; };
  };

  # A host deployment: the compute nodes move to a new system two at a time, at most one down at once.
  deployments = {
    compute-base = {
      flake = "git+https://git.example.org/lab/infra#nixosConfigurations.compute.config.system.build.toplevel";
      selector = { class = "compute"; };
      batchSize = 2;
      maxUnavailable = 1;
      drain = false;
      healthCheck = { argv = [ "/run/current-system/sw/bin/systemctl" "is-system-running" "--wait" ]; timeoutMs = 120000; };
      timeoutS = 1800;
    };
  };
}
