// Enrollment rules against real registrations (no VM): node agents with made-up inventories register with a
// coord over HTTP, signed with their own keys, and the ledger's rules decide what each becomes. The QEMU
// test (boot.root.test.ts) does the same with a booted image; this one covers the rule semantics.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAYLOAD_TYPES, type NodeInventory, type RegistrationAnswer } from '@writ/protocol';
import { NodeAgent, loadNodeIdentity } from '@writ/runner';
import { runCli } from '@writ/cli';
import { startTestStack, type TestStack } from './helpers/stack.ts';

let s: TestStack;
let dir = '';
const GiB = 2 ** 30;

function inventory(o: {
  mac: string;
  serial: string;
  disks: { serial: string; sizeBytes: number; model?: string }[];
  diskless?: boolean;
  driver?: string;
}): NodeInventory {
  return {
    type: PAYLOAD_TYPES.nodeInventory,
    diskless: o.diskless ?? false,
    dmi: { vendor: 'QEMU', product: 'Standard PC (Q35 + ICH9, 2009)', serial: o.serial, uuid: null },
    cpu: { model: 'QEMU Virtual CPU', threads: 2 },
    memoryBytes: 2 * GiB,
    nics: [{ name: 'eth0', mac: o.mac, driver: o.driver ?? 'virtio_net', speedMbps: 10_000, carrier: true }],
    disks: o.disks.map((d, i) => ({
      name: `vd${'abc'[i]}`,
      sizeBytes: d.sizeBytes,
      model: d.model ?? null,
      serial: d.serial,
      wwn: null,
      byId: [`virtio-${d.serial}`],
      rotational: false,
    })),
  };
}

/** Registers a new node (fresh key) with this inventory and token; returns the coord's answer. */
async function register(id: string, inv: NodeInventory, token: string | null): Promise<RegistrationAnswer> {
  const identity = await loadNodeIdentity(path.join(dir, id), id);
  const agent = new NodeAgent({
    coordUrl: s.url,
    identity,
    labels: { own: 'yes' },
    version: '0.1.0',
    enrollmentToken: token,
    inventory: async () => inv as never,
    health: async () => ({ healthy: true, problems: [], load1: 0, memAvailableBytes: GiB, diskFreeBytes: 10 * GiB, runningJobs: 0 }),
  });
  return agent.register();
}

const cli = async (...argv: string[]) => {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(
    argv,
    { out: (l) => out.push(l), err: (l) => err.push(l) },
    { env: { ...process.env, WRIT_COORD: s.url, WRIT_TOKEN: s.token }, now: () => Math.floor(Date.now() / 1000) },
  );
  return { code, out: out.join('\n'), err: err.join('\n') };
};

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-enroll-'));
  s = await startTestStack({ nodes: [] });
}, 120_000);

afterAll(async () => {
  await s?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('enrollment rules', () => {
  let fastToken = '';
  let bigToken = '';

  it('rules are added, listed in priority order and refused when they make no sense', async () => {
    const fast = await cli(
      'enroll',
      'rules',
      'add',
      'fast-disks',
      '--disk-serial',
      'NVME-*',
      '--disk-max-gib',
      '500',
      '--class',
      'compute',
      '--pool',
      'lab',
      '--label',
      'role=compute',
      '--hostname',
      'c-{serial}',
      '--priority',
      '10',
      '--token',
      '--auto-accept',
      '--max-uses',
      '2',
      '--json',
    );
    expect(fast.code, fast.err).toBe(0);
    fastToken = JSON.parse(fast.out).token;
    expect(fastToken).toMatch(/^wet_[A-Za-z0-9_-]{43}$/); // never a leading '-', which a command line takes for an option
    const big = await cli(
      'enroll',
      'rules',
      'add',
      'big-disks',
      '--disk-min-gib',
      '1000',
      '--class',
      'storage',
      '--pool',
      'archive',
      '--label',
      'role=storage',
      '--priority',
      '20',
      '--token',
      '--json',
    );
    expect(big.code, big.err).toBe(0);
    bigToken = JSON.parse(big.out).token;
    expect(bigToken).not.toBe(fastToken);
    const listed = JSON.parse((await cli('enroll', 'rules', 'list', '--json')).out).rules;
    expect(listed.map((r: { name: string }) => r.name)).toEqual(['fast-disks', 'big-disks']);
    expect(listed[0]).not.toHaveProperty('token');
    const noToken = await cli('enroll', 'rules', 'add', 'sloppy', '--mac', '52:54:00:00:00:01', '--auto-accept');
    expect(noToken.code).toBe(1);
    expect(noToken.err).toContain('CONFIG_INVALID');
    const nothing = await cli('enroll', 'rules', 'add', 'everything');
    expect(nothing.code).toBe(1);
    expect(nothing.err).toMatch(/matches nothing in particular/);
  });

  it('a node presenting the rule token is accepted and gets class, pool, labels and hostname; the answer carries the assignment', async () => {
    const a = await register(
      'enr-a',
      inventory({ mac: '52:54:00:aa:00:01', serial: 'SN-A', disks: [{ serial: 'NVME-111', sizeBytes: 400 * GiB }] }),
      fastToken,
    );
    expect(a.state).toBe('commissioned');
    expect(a.pool).toBe('lab');
    expect(a.labels).toEqual({ own: 'yes', role: 'compute' });
    expect(a.assignment).toMatchObject({
      type: PAYLOAD_TYPES.nodeAssignment,
      nodeId: 'enr-a',
      class: 'compute',
      pool: 'lab',
      hostname: 'c-sn-a',
      rule: 'fast-disks',
    });
    const n = (await s.get('/v1/nodes/enr-a')).body;
    expect(n.transitions.at(-1)).toMatchObject({ event: 'accept', actor: 'rule:fast-disks' });
  });

  it('two machines with different disks match different rules; without the token a matched node waits for an operator', async () => {
    const b = await register('enr-b', inventory({ mac: '52:54:00:aa:00:02', serial: 'SN-B', disks: [{ serial: 'HDD-9', sizeBytes: 4000 * GiB }] }), null);
    expect(b.assignment).toMatchObject({ class: 'storage', pool: 'archive', rule: 'big-disks' });
    expect(b.state).toBe('inspected');
    expect(b.pool).toBe('archive');
    // The token of another rule does not accept it either.
    const c = await register('enr-c', inventory({ mac: '52:54:00:aa:00:03', serial: 'SN-C', disks: [{ serial: 'HDD-10', sizeBytes: 2000 * GiB }] }), fastToken);
    expect(c.assignment?.rule).toBe('big-disks');
    expect(c.state).toBe('inspected');
  });

  it('an unmatched node stays pending with its inventory visible and no assignment', async () => {
    const d = await register('enr-d', inventory({ mac: '52:54:00:aa:00:04', serial: 'SN-D', disks: [{ serial: 'SATA-1', sizeBytes: 600 * GiB }] }), fastToken);
    expect(d.assignment).toBeNull();
    expect(d.state).toBe('inspected');
    const n = (await s.get('/v1/nodes/enr-d')).body;
    expect(n.inventory.disks[0].serial).toBe('SATA-1');
    expect(n.pool).toBe('default');
  });

  it('a token with a use limit accepts no more node keys than that', async () => {
    const e = await register(
      'enr-e',
      inventory({ mac: '52:54:00:aa:00:05', serial: 'SN-E', disks: [{ serial: 'NVME-222', sizeBytes: 100 * GiB }] }),
      fastToken,
    );
    expect(e.state).toBe('commissioned');
    const f = await register(
      'enr-f',
      inventory({ mac: '52:54:00:aa:00:06', serial: 'SN-F', disks: [{ serial: 'NVME-333', sizeBytes: 100 * GiB }] }),
      fastToken,
    );
    expect(f.assignment?.rule).toBe('fast-disks');
    expect(f.state).toBe('inspected');
  });

  it('writ enroll rules test explains which rule an inventory matches and why', async () => {
    const file = path.join(dir, 'inv.json');
    await writeFile(file, JSON.stringify(inventory({ mac: '52:54:00:aa:00:07', serial: 'SN-G', disks: [{ serial: 'NVME-9', sizeBytes: 900 * GiB }] })));
    const r = await cli('enroll', 'rules', 'test', file, '--token', fastToken);
    expect(r.code, r.err).toBe(0);
    // 900 GiB is over fast-disks' 500 GiB cap and under big-disks' 1000 GiB floor.
    expect(r.out).toMatch(/no +fast-disks/);
    expect(r.out).toMatch(/NO {2}disk: no disk has serial NVME-\*, <= 536870912000 B/);
    expect(r.out).toContain('no rule matches');
    const j = JSON.parse((await cli('enroll', 'rules', 'test', file, '--json')).out);
    expect(j.matched).toBeNull();
    expect(j.verdicts).toHaveLength(2);
    const bad = await cli('enroll', 'rules', 'test', path.join(dir, 'missing.json'));
    expect(bad.code).toBe(2);
  });

  it('writ enroll rules rm deletes a rule; later nodes no longer match it', async () => {
    expect((await cli('enroll', 'rules', 'rm', 'big-disks')).code).toBe(0);
    expect((await cli('enroll', 'rules', 'rm', 'big-disks')).code).toBe(1);
    const h = await register('enr-h', inventory({ mac: '52:54:00:aa:00:08', serial: 'SN-H', disks: [{ serial: 'HDD-11', sizeBytes: 4000 * GiB }] }), null);
    expect(h.assignment).toBeNull();
  });

  it('an assigned node keeps its assignment when it registers again (a reboot)', async () => {
    const identity = await loadNodeIdentity(path.join(dir, 'enr-a'), 'enr-a');
    expect(identity.created).toBe(false);
    const agent = new NodeAgent({
      coordUrl: s.url,
      identity,
      labels: {},
      version: '0.1.0',
      inventory: async () => inventory({ mac: '52:54:00:aa:00:01', serial: 'SN-A', disks: [] }) as never,
      health: async () => ({ healthy: true, problems: [], load1: 0, memAvailableBytes: GiB, diskFreeBytes: GiB, runningJobs: 0 }),
    });
    const again = await agent.register();
    expect(again.assignment).toMatchObject({ rule: 'fast-disks', class: 'compute' });
    expect(again.labels).toMatchObject({ role: 'compute' });
    expect(again.pool).toBe('lab');
  });
});
