// nix/flake.nix evaluated as far as builtins allow: there is no nixpkgs on these machines, so nixpkgs is
// replaced by a stub that only records calls. What this proves: the flake's outputs have the promised
// shape (packages.writ, the three NixOS modules, nixosConfigurations.node, checks), its lib.clusterSchema is
// the schema, and its cluster-schema check holds (the lab example equals the JSON the tests expect). What it
// does not: that the package, modules or node build (docs/nix.md says so).
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..');
const hasNix = spawnSync('nix-instantiate', ['--version'], { encoding: 'utf8' }).status === 0;
if (!hasNix) console.warn('skipping the flake evaluation test: nix-instantiate is not installed (apt-get install nix-bin)');

let tmp = '';
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'writ-nix-flake-'));
});
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

function evalJson(file: string): { status: number | null; value: unknown; stderr: string } {
  const r = spawnSync('nix-instantiate', ['--option', 'build-users-group', '', '--eval', '--strict', '--json', file], {
    encoding: 'utf8',
    env: { ...process.env, NIX_PATH: '', NIX_CONFIG: '' },
    timeout: 60_000,
  });
  return { status: r.status, value: r.status === 0 ? JSON.parse(r.stdout) : null, stderr: r.stderr };
}

const stub = (flake: string) => `let
  flake = import ${flake};
  stubPkgs = system: { inherit system; callPackage = fn: args: { stub = "callPackage \${baseNameOf (toString fn)}"; }; runCommand = name: env: script: { inherit name; }; };
  nixpkgs = {
    lib = {
      genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
      nixosSystem = args: { stub = "nixosSystem"; inherit (args) system; modules = builtins.length args.modules; };
    };
    legacyPackages = { x86_64-linux = stubPkgs "x86_64-linux"; aarch64-linux = stubPkgs "aarch64-linux"; };
  };
  outputs = flake.outputs { self = outputs; inherit nixpkgs; };
in {
  inputs = flake.inputs;
  outputs = builtins.attrNames outputs;
  modules = builtins.mapAttrs (n: m: if builtins.isPath m then baseNameOf m else builtins.map baseNameOf m.imports) outputs.nixosModules;
  packages = builtins.mapAttrs (n: p: p.stub) outputs.packages.x86_64-linux;
  node = outputs.nixosConfigurations.node;
  checks = builtins.attrNames outputs.checks.aarch64-linux;
  schemaCheck = outputs.checks.x86_64-linux.cluster-schema.name;
  lab = (outputs.lib.clusterSchema { name = "t"; pools.p = { }; classes.c.pool = "p"; }).classes;
}`;

describe.skipIf(!hasNix)('nix/flake.nix, evaluated with a stub nixpkgs', () => {
  it('has packages.writ, the three NixOS modules, nixosConfigurations.node and checks, and its schema check holds', async () => {
    const file = path.join(tmp, 'eval.nix');
    await writeFile(file, stub(path.join(ROOT, 'nix/flake.nix')));
    const r = evalJson(file);
    expect(r.stderr.replace(/^warning:.*\n/gm, '')).toBe('');
    expect(r.value).toEqual({
      inputs: { nixpkgs: { url: 'github:NixOS/nixpkgs/nixos-24.11' } },
      outputs: ['checks', 'lib', 'nixosConfigurations', 'nixosModules', 'overlays', 'packages'],
      modules: { coord: 'coord.nix', supervisor: 'supervisor.nix', runner: 'runner.nix', default: ['coord.nix', 'supervisor.nix', 'runner.nix'] },
      packages: { writ: 'callPackage package.nix', default: 'callPackage package.nix' },
      node: { stub: 'nixosSystem', system: 'x86_64-linux', modules: 3 },
      checks: ['cluster-schema', 'node', 'tests'],
      schemaCheck: 'writ-cluster-schema-check',
      lab: [{ name: 'c', pool: 'p', labels: {}, description: '', installProfile: null, diskPolicy: null }],
    });
  });

  it('fails its cluster-schema check when the lab example and the expected JSON disagree', async () => {
    // A copy of the flake whose expected JSON is edited: the check's assertion must fire.
    const dir = path.join(tmp, 'copy');
    spawnSync('cp', ['-r', path.join(ROOT, 'nix'), dir]);
    const expected = path.join(dir, 'examples/lab.expected.json');
    const edited = JSON.parse(await readFile(expected, 'utf8'));
    edited.nodes[0].mac = '52:54:00:99:99:99';
    await writeFile(expected, JSON.stringify(edited));
    const file = path.join(tmp, 'eval-copy.nix');
    await writeFile(file, stub(path.join(dir, 'flake.nix')));
    const r = evalJson(file);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/assertion .*failed/);
  });
});
