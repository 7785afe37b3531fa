# A small lab: six machines in two classes (four compute nodes, two storage nodes), one pool each.
# Evaluate it offline with:
#   nix-instantiate --eval --strict --json nix/examples/lab.nix
# and load the result with `writ cluster apply`.
import ../lib/cluster-schema.nix {
  name = "lab";

  pools = {
    lab-a = { description = "rack A"; supervisors = [ "sup-1" ]; };
    lab-b = { description = "rack B"; };
  };

  diskPolicies = {
    # The OS disk is the NVMe drive: matched by its by-id name and size, never by /dev/nvme0n1.
    nvme-os = { hints = { byId = [ "nvme-Samsung_SSD_980_*" ]; minSizeGiB = 400; maxSizeGiB = 1200; }; wipe = true; };
    # Storage nodes boot from a small SATA SSD; the big disks are left for data.
    sata-boot = { hints = { model = "INTEL SSDSC2KB24*"; rotational = false; maxSizeGiB = 300; }; wipe = true; };
  };

  installProfiles = {
    compute = { flake = "git+https://git.example.org/lab/infra#nixosConfigurations.compute"; kernelParams = [ "console=ttyS0,115200" ]; };
    storage = { flake = "git+https://git.example.org/lab/infra#nixosConfigurations.storage"; subvolumes = [ "@" "@nix" "@var" "@data" ]; };
  };

  classes = {
    compute = { pool = "lab-a"; labels = { role = "compute"; }; installProfile = "compute"; diskPolicy = "nvme-os"; };
    storage = { pool = "lab-b"; labels = { role = "storage"; "disk/tier" = "hdd"; }; installProfile = "storage"; diskPolicy = "sata-boot"; };
  };

  # Machines that are not listed under `nodes` enroll by rule: tried by priority, highest first.
  enrollmentRules = [
    { name = "storage-chassis"; priority = 20; match = { product = "SSG-6029P*"; }; class = "storage"; autoAccept = true; }
    { name = "compute-token"; priority = 10; match = { token = "lab-compute"; minMemoryGiB = 64; }; class = "compute"; hostname = "{class}-{mac}"; }
  ];

  # The six machines of the lab, known by MAC.
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
