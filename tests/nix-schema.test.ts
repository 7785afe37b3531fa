// The Nix cluster schema on the real nix-bin (Debian's, offline, builtins only): the example cluster
// evaluates to the expected JSON, each assertion fires on a broken cluster with a message naming the bad
// field, and every .nix file in the repository parses.
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..');
const SCHEMA = path.join(ROOT, 'nix/lib/cluster-schema.nix');
const hasNix = spawnSync('nix-instantiate', ['--version'], { encoding: 'utf8' }).status === 0;
if (!hasNix) console.warn('skipping the Nix schema tests: nix-instantiate is not installed (apt-get install nix-bin)');

function nixInstantiate(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('nix-instantiate', ['--option', 'build-users-group', '', ...args], {
    encoding: 'utf8',
    env: { ...process.env, NIX_PATH: '', NIX_CONFIG: '' },
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

let tmp = '';
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'writ-nix-schema-'));
});
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

// A valid cluster as Nix source; each broken case replaces one part of it.
const parts: Record<string, string> = {
  name: '"t"',
  pools: '{ p = { }; }',
  classes: '{ web = { pool = "p"; labels = { role = "web"; }; installProfile = "base"; diskPolicy = "ssd"; }; db = { pool = "p"; }; }',
  diskPolicies: '{ ssd = { hints = { serial = "S123"; }; }; }',
  installProfiles: '{ base = { system = "/nix/store/00000000000000000000000000000000-sys"; }; }',
  enrollmentRules:
    '[ { name = "a"; match = { dmiProduct = "X*"; }; class = "web"; } { name = "b"; match = { requireToken = true; }; tokenSha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"; class = "db"; } ]',
  nodes: '{ n1 = { mac = "52:54:00:00:00:01"; class = "db"; }; }',
  deployments:
    '{ d = { system = "/nix/store/00000000000000000000000000000000-sys"; selector = { role = "web"; }; healthCheck = { argv = [ "/bin/true" ]; }; }; }',
};
async function evalCluster(edit: Record<string, string>): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const all = { ...parts, ...edit };
  const body = Object.entries(all)
    .map(([k, v]) => `  ${k} = ${v};`)
    .join('\n');
  const file = path.join(tmp, `c-${Math.random().toString(36).slice(2)}.nix`);
  await writeFile(file, `import ${SCHEMA} {\n${body}\n}\n`);
  return nixInstantiate(['--eval', '--strict', '--json', file]);
}

describe.skipIf(!hasNix)('the cluster schema, evaluated by nix-instantiate', () => {
  it('evaluates nix/examples/lab.nix to the expected JSON: six machines in two classes', async () => {
    const r = nixInstantiate(['--eval', '--strict', '--json', path.join(ROOT, 'nix/examples/lab.nix')]);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.status).toBe(0);
    const got = JSON.parse(r.stdout);
    expect(got).toEqual(JSON.parse(await readFile(path.join(ROOT, 'nix/examples/lab.expected.json'), 'utf8')));
    expect(got.nodes).toHaveLength(6);
    expect(got.classes.map((c: { name: string }) => c.name)).toEqual(['compute', 'storage']);
    // Rules come out in the order they are tried: by priority, lowest first; the fixed nodes' rules first.
    expect(got.enrollmentRules.map((r: { name: string; priority: number }) => `${r.priority}:${r.name}`)).toEqual([
      '0:node-compute-1',
      '0:node-compute-2',
      '0:node-compute-3',
      '0:node-compute-4',
      '0:node-storage-1',
      '0:node-storage-2',
      '10:storage-chassis',
      '20:compute-token',
    ]);
    expect(got.installPlans.map((p: { class: string; disk: object }) => [p.class, p.disk])).toEqual([
      ['compute', { model: 'Samsung SSD 980 PRO 1TB', minBytes: 400 * 2 ** 30, maxBytes: 1200 * 2 ** 30 }],
      ['storage', { model: 'INTEL SSDSC2KB240G8', maxBytes: 300 * 2 ** 30 }],
    ]);
  });

  it('accepts the valid base cluster the broken cases start from, with defaults filled in', async () => {
    const r = await evalCluster({});
    expect(r.stderr).not.toMatch(/error/);
    const got = JSON.parse(r.stdout);
    expect(got.deployments[0]).toMatchObject({
      name: 'd',
      batchSize: 1,
      maxUnavailable: 1,
      drain: false,
      timeoutS: 600,
      profile: 'system',
      healthCheck: { argv: ['/bin/true'], timeoutMs: 30000 },
    });
    expect(got.nodes[0].assign).toEqual({ class: 'db', pool: 'p', labels: { class: 'db', pool: 'p' }, hostname: 'n1' });
  });

  const broken: [string, Record<string, string>, RegExp][] = [
    [
      'a node of an unknown class',
      { nodes: '{ n1 = { mac = "52:54:00:00:00:01"; class = "gpu"; }; }' },
      /cluster-schema: nodes\.n1\.class: unknown class "gpu" \(known: db, web\)/,
    ],
    [
      'a rule assigning an unknown class',
      { enrollmentRules: '[ { name = "a"; match = { dmiProduct = "X*"; }; class = "gpu"; } ]' },
      /cluster-schema: enrollmentRules\[0\]\.class: unknown class "gpu"/,
    ],
    [
      'a class in an unknown pool',
      { classes: '{ web = { pool = "q"; }; db = { pool = "p"; }; }' },
      /cluster-schema: classes\.web\.pool: unknown pool "q" \(known: p\)/,
    ],
    ['a disk policy with no stable hint', { diskPolicies: '{ ssd = { hints = { }; }; }' }, /cluster-schema: diskPolicies\.ssd\.hints: has no stable hint/],
    [
      'a disk policy naming /dev/sdX',
      { diskPolicies: '{ ssd = { hints = { byId = "/dev/sda"; }; }; }' },
      /cluster-schema: diskPolicies\.ssd\.hints\.byId: must be a \/dev\/disk\/by-id name/,
    ],
    [
      'a disk size range no disk can meet',
      { diskPolicies: '{ ssd = { hints = { minSizeGiB = 500; maxSizeGiB = 100; }; }; }' },
      /cluster-schema: diskPolicies\.ssd\.hints\.minSizeGiB: is larger than maxSizeGiB/,
    ],
    [
      'an install profile without a disk policy',
      { classes: '{ web = { pool = "p"; labels = { role = "web"; }; installProfile = "base"; }; db = { pool = "p"; }; }' },
      /cluster-schema: classes\.web\.diskPolicy: is required when installProfile is set/,
    ],
    [
      'a rule that can never match (a broader rule of the same priority comes first)',
      {
        enrollmentRules:
          '[ { name = "x-on-nvme"; match = { dmiProduct = "X*"; diskModel = "NVMe*"; }; class = "db"; } { name = "any-x"; match = { dmiProduct = "X*"; }; class = "web"; } ]',
      },
      /cluster-schema: enrollmentRules\[0\]: rule "x-on-nvme" can never match: enrollmentRules\[1\] \("any-x", priority 100\) is tried first/,
    ],
    [
      'a rule that can never match (an earlier catch-all)',
      {
        enrollmentRules:
          '[ { name = "specific"; match = { macs = [ "52:54:00:00:00:09" ]; nicMinSpeedMbps = 25000; }; class = "web"; } { name = "all"; priority = 5; match = { dmiProduct = "*"; }; class = "db"; } ]',
      },
      /cluster-schema: enrollmentRules\[0\]: rule "specific" can never match: enrollmentRules\[1\] \("all", priority 5\)/,
    ],
    [
      'a deployment selector matching nothing known',
      {
        deployments:
          '{ d = { system = "/nix/store/00000000000000000000000000000000-sys"; selector = { role = "gpu"; }; healthCheck = { argv = [ "/bin/true" ]; }; }; }',
      },
      /cluster-schema: deployments\.d\.selector: \{"role":"gpu"\} matches nothing known/,
    ],
    [
      'a deployment without a system',
      { deployments: '{ d = { selector = { role = "web"; }; healthCheck = { argv = [ "/bin/true" ]; }; }; }' },
      /cluster-schema: deployments\.d\.system: one of system/,
    ],
    [
      'a deployment whose system is not a store path',
      { deployments: '{ d = { system = "/tmp/sys"; selector = { role = "web"; }; healthCheck = { argv = [ "/bin/true" ]; }; }; }' },
      /cluster-schema: deployments\.d\.system: must be a store path/,
    ],
    ['an unknown field', { nodes: '{ n1 = { mac = "52:54:00:00:00:01"; class = "db"; rack = 3; }; }' }, /cluster-schema: nodes\.n1\.rack: unknown field/],
    [
      'two nodes with one MAC',
      { nodes: '{ n1 = { mac = "52:54:00:00:00:01"; class = "db"; }; n2 = { mac = "52:54:00:00:00:01"; class = "db"; }; }' },
      /cluster-schema: nodes\.n2\.mac: 52:54:00:00:00:01 is also nodes\.n1\.mac/,
    ],
    [
      'a hostname pattern with an unknown placeholder',
      { enrollmentRules: '[ { name = "a"; match = { dmiProduct = "X*"; }; class = "web"; hostname = "{rack}-1"; } ]' },
      /cluster-schema: enrollmentRules\[0\]\.hostname: unknown placeholder \{rack\}/,
    ],
    [
      'a rule that auto-accepts without a token',
      { enrollmentRules: '[ { name = "a"; match = { dmiProduct = "X*"; }; class = "web"; autoAccept = true; } ]' },
      /cluster-schema: enrollmentRules\[0\]\.autoAccept: needs tokenSha256/,
    ],
    [
      'a rule that matches nothing in particular',
      { enrollmentRules: '[ { name = "a"; match = { }; class = "web"; } ]' },
      /cluster-schema: enrollmentRules\[0\]\.match: matches nothing in particular/,
    ],
    [
      'a token given in clear',
      { enrollmentRules: '[ { name = "a"; match = { requireToken = true; }; tokenSha256 = "hunter2"; class = "web"; } ]' },
      /cluster-schema: enrollmentRules\[0\]\.tokenSha256: must be the sha256/,
    ],
    [
      'a bad label key',
      { classes: '{ web = { pool = "p"; labels = { "Role" = "web"; }; }; db = { pool = "p"; }; }' },
      /cluster-schema: classes\.web\.labels\.Role: is not a valid label key/,
    ],
  ];
  for (const [what, edit, message] of broken) {
    it(`refuses ${what}, naming the field`, async () => {
      const r = await evalCluster(edit);
      expect(r.status).not.toBe(0);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(message);
    });
  }

  it('parses every .nix file in the repository', async () => {
    const files: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        if (e.name === 'node_modules' || e.name === '.git') continue;
        const p = path.join(dir, e.name);
        if (e.isDirectory()) await walk(p);
        else if (e.name.endsWith('.nix')) files.push(p);
      }
    };
    await walk(ROOT);
    expect(files.map((f) => path.relative(ROOT, f))).toEqual(expect.arrayContaining(['nix/lib/cluster-schema.nix', 'nix/examples/lab.nix']));
    for (const f of files) {
      const r = nixInstantiate(['--parse', f]);
      expect({ file: path.relative(ROOT, f), status: r.status, stderr: r.stderr.replace(/^warning:.*\n/gm, '') }).toEqual({
        file: path.relative(ROOT, f),
        status: 0,
        stderr: '',
      });
    }
  });
});
