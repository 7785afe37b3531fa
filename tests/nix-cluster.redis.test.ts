// writ cluster diff|apply on a real stack (Redis, PGlite, coord): nix/examples/lab.nix evaluated by the real
// nix-instantiate, loaded into the ledger's enrollment tables (issue 11's), then diff shows nothing to change;
// the loaded rules drive the enrollment engine; an edited cluster shows exactly its changes; --prune removes
// what the file no longer lists; a broken cluster is refused with the schema's message.
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAYLOAD_TYPES } from '@writ/protocol';
import { runWrit } from './helpers/processes.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const LAB = path.join(ROOT, 'nix/examples/lab.nix');
const hasNix = spawnSync('nix-instantiate', ['--version'], { encoding: 'utf8' }).status === 0;
if (!hasNix) console.warn('skipping the cluster apply tests: nix-instantiate is not installed (apt-get install nix-bin)');

let s: TestStack;
let tmp = '';
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  if (!hasNix) return;
  tmp = await mkdtemp(path.join(os.tmpdir(), 'writ-cluster-'));
  s = await startTestStack({ nodes: [] });
  env = { WRIT_COORD: s.url, WRIT_TOKEN: s.token, WRIT_HOME: path.join(tmp, 'home') };
}, 120_000);

afterAll(async () => {
  await s?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe.skipIf(!hasNix)('writ cluster apply and diff', () => {
  it('loads the lab cluster into the ledger; then diff shows nothing to change', async () => {
    const before = await runWrit(['cluster', 'diff', LAB], env);
    expect(before.stderr).toBe('');
    expect(before.code).toBe(0);
    expect(before.stdout).toMatch(/cluster lab: 10 change\(s\) to apply/);
    expect(before.stdout).toMatch(/\+ rule {2}node-compute-1/);
    expect(before.stdout).toMatch(/\+ class compute/);
    // A diff writes nothing.
    expect((await s.get('/v1/enroll/rules')).body.rules).toEqual([]);

    const applied = await runWrit(['cluster', 'apply', LAB, '--json'], env);
    expect(applied.code).toBe(0);
    const answer = JSON.parse(applied.stdout);
    expect(answer).toMatchObject({ cluster: 'lab', applied: true, unmanaged: { rules: [], classes: [] } });
    expect(answer.changes).toHaveLength(10);

    const expected = JSON.parse(await readFile(path.join(ROOT, 'nix/examples/lab.expected.json'), 'utf8'));
    const rules = (await s.get('/v1/enroll/rules')).body.rules as { name: string; hasToken: boolean }[];
    expect(rules.map(({ hasToken: _, ...r }) => r)).toEqual(expected.enrollmentRules);
    expect(rules.find((r) => r.name === 'compute-token')!.hasToken).toBe(true);
    const classes = (await s.get('/v1/enroll/classes')).body.classes as { name: string; installPlan: unknown }[];
    expect(classes).toEqual([
      { name: 'compute', description: '', installPlan: expected.installPlans[0] },
      { name: 'storage', description: '', installPlan: expected.installPlans[1] },
    ]);
    expect(expected.installPlans[0].type).toBe(PAYLOAD_TYPES.installPlan);

    const after = await runWrit(['cluster', 'diff', LAB], env);
    expect(after.code).toBe(0);
    expect(after.stdout).toMatch(/^cluster lab: nothing to change/);
    const afterJson = JSON.parse((await runWrit(['cluster', 'diff', LAB, '--json'], env)).stdout);
    expect(afterJson).toEqual({ cluster: 'lab', applied: false, changes: [], unmanaged: { rules: [], classes: [] } });
    // Applying again changes nothing and writes no audit entry.
    const audits = (await s.get('/v1/audit?tail=1000')).body.entries.filter((e: { kind: string }) => e.kind === 'cluster.apply');
    expect(audits).toHaveLength(1);
    expect(JSON.parse((await runWrit(['cluster', 'apply', LAB, '--json'], env)).stdout)).toMatchObject({ applied: false, changes: [] });
    expect((await s.get('/v1/audit?tail=1000')).body.entries.filter((e: { kind: string }) => e.kind === 'cluster.apply')).toHaveLength(1);
  }, 120_000);

  it("the loaded rules drive enrollment: a machine with a fixed node's MAC gets that node's assignment", async () => {
    const inventory = {
      type: PAYLOAD_TYPES.nodeInventory,
      diskless: false,
      dmi: { vendor: 'QEMU', product: 'Standard PC', serial: 'X1', uuid: null },
      cpu: { model: 'qemu', threads: 2 },
      memoryBytes: 2 ** 31,
      nics: [{ name: 'eth0', mac: '52:54:00:10:00:04', driver: 'virtio_net', speedMbps: null, carrier: true }],
      disks: [],
    };
    const r = await fetch(`${s.url}/v1/enroll/test`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}` },
      body: JSON.stringify({ inventory }),
    });
    const body = (await r.json()) as { matched: string; assign: unknown };
    expect(body.matched).toBe('node-compute-4');
    expect(body.assign).toEqual({
      class: 'compute',
      pool: 'lab-a',
      labels: { canary: 'yes', class: 'compute', pool: 'lab-a', role: 'compute' },
      hostname: 'compute-4',
    });
  });

  it('shows exactly what an edited cluster changes, keeps unlisted rules unless --prune, and refuses a broken cluster', async () => {
    const edited = JSON.parse(await readFile(path.join(ROOT, 'nix/examples/lab.expected.json'), 'utf8'));
    edited.enrollmentRules = edited.enrollmentRules.filter((r: { name: string }) => r.name !== 'node-storage-2');
    edited.enrollmentRules.find((r: { name: string }) => r.name === 'storage-chassis').priority = 15;
    const file = path.join(tmp, 'lab-edited.json');
    await writeFile(file, JSON.stringify(edited));
    const diff = JSON.parse((await runWrit(['cluster', 'diff', file, '--json'], env)).stdout);
    expect(diff).toEqual({
      cluster: 'lab',
      applied: false,
      changes: [{ kind: 'rule', name: 'storage-chassis', action: 'change', fields: ['priority'] }],
      unmanaged: { rules: ['node-storage-2'], classes: [] },
    });
    const pruned = JSON.parse((await runWrit(['cluster', 'apply', file, '--prune', '--json'], env)).stdout);
    expect(pruned.changes).toEqual([
      { kind: 'rule', name: 'storage-chassis', action: 'change', fields: ['priority'] },
      { kind: 'rule', name: 'node-storage-2', action: 'remove' },
    ]);
    expect(pruned.applied).toBe(true);
    expect(((await s.get('/v1/enroll/rules')).body.rules as { name: string }[]).map((r) => r.name)).not.toContain('node-storage-2');
    expect(JSON.parse((await runWrit(['cluster', 'diff', file, '--prune', '--json'], env)).stdout).changes).toEqual([]);

    const broken = path.join(tmp, 'broken.nix');
    await writeFile(broken, `import ${path.join(ROOT, 'nix/lib/cluster-schema.nix')} { name = "b"; pools.p = { }; classes.c = { pool = "q"; }; }\n`);
    const refused = await runWrit(['cluster', 'diff', broken], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/SCHEMA_INVALID.*cluster-schema: classes\.c\.pool: unknown pool "q" \(known: p\)/);
  }, 120_000);
});
