# Writ's flake: the `writ` package, NixOS modules for its three services, a node configuration and checks.
# It lives in nix/ (use it as `git+file:///path/to/writ?dir=nix` or `github:OWNER/writ?dir=nix`); its
# source is the whole repository one level up. Needs nixpkgs: on the build machines of this repository it
# is only parse-checked (see docs/nix.md for what was evaluated and built here and what was not).
{
  description = "Writ: signed, sandboxed scripts on a fleet of bare-metal nodes";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      clusterSchema = import ./lib/cluster-schema.nix;
    in
    {
      # Builtins only: usable without nixpkgs, e.g. `writ.lib.clusterSchema { name = "lab"; ... }`.
      lib = { inherit clusterSchema; };

      packages = forAllSystems (pkgs: rec {
        writ = pkgs.callPackage ./package.nix { };
        default = writ;
      });

      overlays.default = final: prev: { writ = final.callPackage ./package.nix { }; };

      nixosModules = {
        coord = ./modules/coord.nix;
        supervisor = ./modules/supervisor.nix;
        runner = ./modules/runner.nix;
        default = { imports = [ ./modules/coord.nix ./modules/supervisor.nix ./modules/runner.nix ]; };
      };

      # A node: NixOS with the Writ runner as its agent, booted the way efi-image/ boots a node.
      nixosConfigurations.node = nixpkgs.lib.nixosSystem {
        system = "x86_64-linux";
        modules = [
          { nixpkgs.overlays = [ self.overlays.default ]; }
          self.nixosModules.runner
          ./node/configuration.nix
        ];
      };

      checks = forAllSystems (pkgs: {
        # The test suite's tests that need no root, qemu or nix store of their own (see checks.nix).
        tests = pkgs.callPackage ./checks.nix { writ = self.packages.${pkgs.system}.writ; };
        # The example cluster evaluates to the JSON the repository's tests expect.
        cluster-schema =
          let
            got = import ./examples/lab.nix;
            want = builtins.fromJSON (builtins.readFile ./examples/lab.expected.json);
          in
          assert got == want; pkgs.runCommand "writ-cluster-schema-check" { } "echo ok > $out";
        node = self.nixosConfigurations.node.config.system.build.toplevel;
      });
    };
}
