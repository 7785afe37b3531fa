# `nix flake check` runs the parts of the test suite that a Nix build sandbox can host: type checks, lint,
# the plain unit tests and the Redis tests (redis-server from nixpkgs). Tests that need root, QEMU, a
# PostgreSQL server or a Nix store of their own (`*.root.test.ts`, `*.pg.test.ts`, the nix-* tests) run in
# the repository's CI instead, where they have those.
{ lib, stdenv, writ, nodejs_20, redis }:

stdenv.mkDerivation {
  name = "writ-tests";
  src = "${writ}/lib/writ";
  nativeBuildInputs = [ nodejs_20 redis ];
  dontConfigure = true;
  buildPhase = ''
    runHook preBuild
    export HOME=$TMPDIR
    cp -r $src $TMPDIR/writ && chmod -R u+w $TMPDIR/writ && cd $TMPDIR/writ
    node node_modules/typescript/bin/tsc -p tsconfig.json --noEmit
    node node_modules/vitest/vitest.mjs run --exclude '**/*.root.test.ts' --exclude '**/*.pg.test.ts' --exclude 'tests/nix-*.test.ts' --exclude 'tests/hosts*.test.ts'
    runHook postBuild
  '';
  installPhase = "touch $out";
}
