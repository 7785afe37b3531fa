# nixosConfigurations.node: a Writ node as a NixOS system. It boots the way efi-image/ boots a node (one
# UKI from the ESP or over iPXE, the coord URL on the kernel command line as writ.coord=URL) and runs the same
# agent, the Writ runner, which makes its own identity on first boot and registers with the coord.
# efi-image/ builds that image from Debian packages; this is the NixOS way to the same node.
{ config, lib, pkgs, modulesPath, ... }:
{
  imports = [ (modulesPath + "/profiles/minimal.nix") ];

  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = false;
  boot.initrd.availableKernelModules = [ "virtio_pci" "virtio_blk" "virtio_net" "virtio_scsi" "nvme" "ahci" "xhci_pci" "usb_storage" ];
  boot.supportedFilesystems = [ "btrfs" "vfat" ];

  # The layout an install plan creates (docs/nix.md): an ESP and one btrfs filesystem with subvolumes.
  fileSystems."/" = { device = "/dev/disk/by-label/writ-root"; fsType = "btrfs"; options = [ "subvol=@root" "compress=zstd" ]; };
  fileSystems."/nix" = { device = "/dev/disk/by-label/writ-root"; fsType = "btrfs"; options = [ "subvol=@nix" "compress=zstd" "noatime" ]; };
  fileSystems."/var" = { device = "/dev/disk/by-label/writ-root"; fsType = "btrfs"; options = [ "subvol=@var" ]; };
  fileSystems."/boot" = { device = "/dev/disk/by-label/WRIT-ESP"; fsType = "vfat"; };

  networking.hostName = lib.mkDefault "writ-node";
  networking.useDHCP = true;

  services.writ.runner = {
    enable = true;
    # Overridden per node (or by a host deployment's system); the key file is installed by the plan.
    coordUrl = lib.mkDefault "http://writ-coord:7340";
    adminKeys = lib.mkDefault [ "/etc/writ/admin.key.pub" ];
    salAreas = [ "btrfs" "net" "vm" "nix" ];
    hostSwitch = true;
  };

  # The host's own system is switched by host deployments (writ deploy): profiles live where Nix's GC
  # sees them.
  systemd.tmpfiles.rules = [ "d /nix/var/nix/profiles/writ 0755 root root -" ];

  system.stateVersion = "24.11";
}
