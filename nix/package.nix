# The `writ` command (coord, supervisor, runner and CLI in one package). Writ runs its TypeScript sources
# with tsx (bin/writ.mjs registers it), so there is no build step: the package is the workspace sources plus
# node_modules, and a wrapper that starts Node on bin/writ.mjs.
{ lib, buildNpmPackage, nodejs_20, makeWrapper, nix, btrfs-progs, iproute2, util-linux, procps }:

buildNpmPackage {
  pname = "writ";
  version = "0.1.0";

  src = lib.cleanSourceWith {
    src = ../.;
    filter = path: type:
      let base = baseNameOf path;
      in !(builtins.elem base [ "node_modules" ".git" "result" ".writ" ]);
  };

  nodejs = nodejs_20;
  # Set from `prefetch-npm-deps package-lock.json` (not computed on the machines this was written on:
  # they have no nixpkgs). A wrong hash fails the build with the right one in its message.
  npmDepsHash = lib.fakeHash;
  dontNpmBuild = true;
  # Optional native packages of other platforms may be missing from the lock file (see ARCHITECTURE.md).
  npmFlags = [ "--ignore-scripts" ];

  nativeBuildInputs = [ makeWrapper ];

  installPhase = ''
    runHook preInstall
    mkdir -p $out/lib/writ $out/bin
    cp -r package.json package-lock.json tsconfig.json vitest.config.ts bin protocol sal supervisor runner coord cli scripts tests bench node_modules $out/lib/writ/
    # The runner's SALs run system tools by name: put the ones Writ uses on its PATH.
    makeWrapper ${nodejs_20}/bin/node $out/bin/writ \
      --add-flags $out/lib/writ/bin/writ.mjs \
      --suffix PATH : ${lib.makeBinPath [ nix btrfs-progs iproute2 util-linux procps ]}
    runHook postInstall
  '';

  meta = {
    description = "Signed, sandboxed scripts on a fleet of bare-metal nodes";
    mainProgram = "writ";
    platforms = lib.platforms.linux;
  };
}
