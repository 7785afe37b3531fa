// Install plans, coord side (issue 11), with real registrations over HTTP (no VM): a node of a class with an
// install plan is held `installing` after its accept (it takes no work), and only its signed install report
// moves it on: a successful one to installed (then active on a healthy heartbeat), a failed one to failed with
// the reason. The report is refused when someone else signed it, when it is for another plan, or stale.
// The node side (disk choice, partitioning, btrfs, plan jobs through the runner) is install-plan.redis.root.test.ts;
// the whole thing booted under QEMU is boot-install.root.test.ts.
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  INSTALL_REPORT_PATH,
  PAYLOAD_TYPES,
  encodeEnvelope,
  generateKeyPair,
  installPlanSha256,
  signEnvelope,
  utf8,
  type InstallPlan,
  type NodeInventory,
  type RegistrationAnswer,
} from '@writ/protocol';
import {
  NodeAgent,
  excludedDisks,
  installPlanDue,
  installedPlanRecord,
  loadNodeIdentity,
  runInstallPlan,
  signInstallReport,
  type InstallReportBody,
  type NodeIdentity,
} from '@writ/runner';
import { runCli } from '@writ/cli';
import { startTestStack, type TestStack } from './helpers/stack.ts';

let s: TestStack;
let dir = '';
const GiB = 2 ** 30;

const inventory = (mac: string, serials: string[]): NodeInventory => ({
  type: PAYLOAD_TYPES.nodeInventory,
  diskless: false,
  dmi: { vendor: 'QEMU', product: 'Standard PC', serial: null, uuid: null },
  cpu: { model: 'QEMU', threads: 2 },
  memoryBytes: 2 * GiB,
  nics: [{ name: 'eth0', mac, driver: 'virtio_net', speedMbps: null, carrier: true }],
  disks: serials.map((serial, i) => ({
    name: `vd${'bcd'[i]}`,
    sizeBytes: 8 * GiB,
    model: null,
    serial,
    wwn: null,
    byId: [`virtio-${serial}`],
    rotational: false,
  })),
});

async function api(method: string, route: string, body?: unknown): Promise<{ status: number; body: any }> {
  const r = await fetch(new URL(route, s.url), {
    method,
    headers: { authorization: `Bearer ${s.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

const agents: NodeAgent[] = [];
async function register(
  id: string,
  inv: NodeInventory,
  token: string | null,
): Promise<{ answer: RegistrationAnswer; identity: NodeIdentity; agent: NodeAgent }> {
  const identity = await loadNodeIdentity(path.join(dir, id), id);
  const agent = new NodeAgent({
    coordUrl: s.url,
    identity,
    labels: {},
    version: '0.1.0',
    enrollmentToken: token,
    inventory: async () => inv as never,
    health: async () => ({ healthy: true, problems: [], load1: 0, memAvailableBytes: GiB, diskFreeBytes: 10 * GiB, runningJobs: 0 }),
  });
  agents.push(agent);
  return { answer: await agent.register(), identity, agent };
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

const report = (identity: NodeIdentity, body: InstallReportBody, nowMs?: number) =>
  api('POST', INSTALL_REPORT_PATH, signInstallReport(identity.nodeId, identity.key, body, nowMs));

const plans: Record<string, InstallPlan> = {};
const tokens: Record<string, string> = {};

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-instplan-'));
  s = await startTestStack({ nodes: [] });
  const hello = s.sign('export default async () => "installed"', { target: { selector: { role: 'red' } } }).envelope;
  for (const [cls, serial, mac] of [
    ['red', 'DISK-RED', '52:54:00:ee:00:01'],
    ['blue', 'DISK-BLUE', '52:54:00:ee:00:02'],
  ] as const) {
    plans[cls] = { type: PAYLOAD_TYPES.installPlan, class: cls, disk: { serial }, subvolumes: ['@root', `@${cls}`], jobs: cls === 'red' ? [hello] : [] };
    expect((await api('POST', '/v1/enroll/classes', { name: cls, description: '', installPlan: plans[cls] })).status).toBe(201);
    const r = await api('POST', '/v1/enroll/rules', {
      name: `rule-${cls}`,
      match: { macs: [mac], diskSerial: serial },
      assign: { class: cls, pool: null, labels: { role: cls }, hostname: null },
      autoAccept: true,
      token: true,
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    tokens[cls] = r.body.token;
  }
  expect((await api('POST', '/v1/enroll/classes', { name: 'plain', description: '', installPlan: null })).status).toBe(201);
  const r = await api('POST', '/v1/enroll/rules', {
    name: 'rule-plain',
    match: { macs: ['52:54:00:ee:00:09'] },
    assign: { class: 'plain', pool: null, labels: {}, hostname: null },
    autoAccept: true,
    token: true,
  });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  tokens.plain = r.body.token;
}, 120_000);

afterAll(async () => {
  for (const a of agents) await a.stop().catch(() => {});
  await s?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const okBody = (cls: string, serial: string, jobs = [{ id: 'job-x', ok: true }]): InstallReportBody => ({
  class: cls,
  planSha256: installPlanSha256(plans[cls]!),
  ok: true,
  disk: { name: 'vdc', serial, wwn: null, byId: [`virtio-${serial}`], sizeBytes: 8 * GiB },
  subvolumes: plans[cls]!.subvolumes,
  jobs,
});

describe('install plans at the coord', () => {
  it('two machines with different disks match different rules and get different plans; each is held installing until it reports', async () => {
    const red = await register('inst-red', inventory('52:54:00:ee:00:01', ['DISK-BLUE', 'DISK-RED']), tokens.red!);
    const blue = await register('inst-blue', inventory('52:54:00:ee:00:02', ['DISK-RED', 'DISK-BLUE']), tokens.blue!);
    expect(red.answer.assignment?.class).toBe('red');
    expect(blue.answer.assignment?.class).toBe('blue');
    expect(red.answer.installPlan?.disk).toEqual({ serial: 'DISK-RED' });
    expect(blue.answer.installPlan?.disk).toEqual({ serial: 'DISK-BLUE' });
    expect(red.answer.state).toBe('installing');
    const n = (await api('GET', '/v1/nodes/inst-red')).body;
    expect(n.transitions.slice(-3).map((t: { event: string; actor: string }) => [t.event, t.actor])).toEqual([
      ['accept', 'rule:rule-red'],
      ['install', 'class:red'],
      ['install-started', 'node:inst-red'],
    ]);
    expect(n.install).toBeNull();
    // Healthy heartbeats do not make it active (it must not take work before its plan ran).
    await red.agent.heartbeat();
    await red.agent.heartbeat();
    expect((await api('GET', '/v1/nodes/inst-red')).body.state).toBe('installing');
  });

  it('a class without a plan behaves as before: commissioned, then active', async () => {
    const p = await register('inst-plain', inventory('52:54:00:ee:00:09', ['X']), tokens.plain!);
    expect(p.answer.installPlan).toBeNull();
    expect(p.answer.state).toBe('commissioned');
    await p.agent.heartbeat();
    expect((await api('GET', '/v1/nodes/inst-plain')).body.state).toBe('active');
    // Nor does it take an install report.
    const r = await report(p.identity, { ...okBody('red', 'X'), class: 'plain' });
    expect(r.body.error?.code).toBe('INSTALL_PLAN_MISMATCH');
  });

  it('refuses reports signed by another node, for another plan, or stale', async () => {
    const red = await loadNodeIdentity(path.join(dir, 'inst-red'), 'inst-red');
    const blue = await loadNodeIdentity(path.join(dir, 'inst-blue'), 'inst-blue');
    // Blue signs a report that names red.
    const forged = await api('POST', INSTALL_REPORT_PATH, signInstallReport('inst-red', blue.key, okBody('red', 'DISK-RED')));
    expect(forged.status).toBe(401);
    expect(forged.body.error.code).toBe('SIGNATURE_INVALID');
    // An unknown key.
    const stranger = { nodeId: 'inst-red', key: generateKeyPair(), created: true };
    expect((await report(stranger, okBody('red', 'DISK-RED'))).body.error.code).toBe('NODE_NOT_FOUND');
    // Blue's plan, reported by red.
    const other = await report(red, okBody('blue', 'DISK-BLUE'));
    expect(other.status).toBe(409);
    expect(other.body.error.code).toBe('INSTALL_PLAN_MISMATCH');
    // An old report (replayed later).
    expect((await report(red, okBody('red', 'DISK-RED'), Date.now() - 3_600_000)).body.error.code).toBe('ENVELOPE_EXPIRED');
    // A heartbeat envelope is no report.
    const hb = encodeEnvelope(signEnvelope(PAYLOAD_TYPES.heartbeat, utf8.encode('{}'), [red.key]));
    expect((await api('POST', INSTALL_REPORT_PATH, hb)).body.error.code).toBe('PAYLOAD_TYPE_MISMATCH');
    // An inconsistent one.
    const bad = await report(red, { ...okBody('red', 'DISK-RED'), jobs: [{ id: 'j', ok: false, code: 'X' }] });
    expect(bad.body.error.code).toBe('SCHEMA_INVALID');
    // A payload with a key twice (JSON.parse would take the last): the strict parser refuses it (T2).
    const twice = JSON.stringify({ nodeId: 'inst-red', method: 'POST', path: INSTALL_REPORT_PATH, ts: Date.now(), ...okBody('red', 'DISK-RED') }).replace(
      '{"nodeId":"inst-red",',
      '{"nodeId":"inst-red","nodeId":"inst-red",',
    );
    expect(twice).toContain('"nodeId":"inst-red","nodeId"');
    const dup = await api('POST', INSTALL_REPORT_PATH, encodeEnvelope(signEnvelope(PAYLOAD_TYPES.installReport, utf8.encode(twice), [red.key])));
    expect(dup.status).toBe(400);
    expect(dup.body.error.code).toBe('JSON_DUPLICATE_KEY');
    // Its own plan, but naming another class (the class is not inside the plan's sha256 as the report carries it).
    const misnamed = await report(red, { ...okBody('red', 'DISK-RED'), class: 'blue' });
    expect(misnamed.status).toBe(409);
    expect(misnamed.body.error.code).toBe('INSTALL_PLAN_MISMATCH');
    expect((await api('GET', '/v1/nodes/inst-red')).body.state).toBe('installing');
  });

  it('a successful report installs the node (shown by GET /v1/nodes/:id and writ nodes show), then a healthy heartbeat activates it', async () => {
    const red = await loadNodeIdentity(path.join(dir, 'inst-red'), 'inst-red');
    const r = await report(red, okBody('red', 'DISK-RED', [{ id: 'job-hello', ok: true }]));
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toEqual({ state: 'installed', accepted: true });
    const n = (await api('GET', '/v1/nodes/inst-red')).body;
    expect(n.transitions.at(-1)).toMatchObject({ event: 'install-done', actor: 'node:inst-red' });
    expect(n.transitions.at(-1).reason).toContain('disk vdc (serial DISK-RED)');
    expect(n.install).toMatchObject({
      ok: true,
      class: 'red',
      planSha256: installPlanSha256(plans.red!),
      disk: { serial: 'DISK-RED' },
      jobs: [{ id: 'job-hello', ok: true }],
    });
    // The report was on record before the node became installed: a reader never finds it installed without one.
    const audit = await s.ledger.tailAudit(50);
    const reportAt = audit.findLast((a) => a.kind === 'node.install' && a.subject === 'inst-red')?.seq;
    const installedAt = audit.findLast(
      (a) => a.kind === 'node.transition' && a.subject === 'inst-red' && (a.data as { event?: string }).event === 'install-done',
    )?.seq;
    expect(reportAt).toBeLessThan(installedAt!);
    // The same report again (the node missed our answer) changes nothing and is not an error.
    expect((await report(red, okBody('red', 'DISK-RED'))).body).toEqual({ state: 'installed', accepted: false });
    const shown = await cli('nodes', 'show', 'inst-red');
    expect(shown.code, shown.err).toBe(0);
    expect(shown.out).toMatch(/install: ok: plan [0-9a-f]{12} \(class red\) on vdc \(serial DISK-RED/);
    expect(shown.out).toContain('job-hello: ok');
    const agent = agents.find((a) => (a as unknown as { opts: { identity: NodeIdentity } }).opts.identity.nodeId === 'inst-red')!;
    await agent.heartbeat();
    expect((await api('GET', '/v1/nodes/inst-red')).body.state).toBe('active');
    // Registering again (the agent restarted) does not install it again.
    const again = await register('inst-red', inventory('52:54:00:ee:00:01', ['DISK-BLUE', 'DISK-RED']), tokens.red!);
    expect(again.answer.state).toBe('active');
  });

  it('a reinstall through iPXE: the answer goes back to local when the node registers, but it is installed only by its report', async () => {
    const image = path.join(dir, 'image');
    await mkdir(image);
    const kernel = Buffer.from('not a kernel');
    const initramfs = Buffer.from('not an initramfs');
    await writeFile(path.join(image, 'vmlinuz'), kernel);
    await writeFile(path.join(image, 'initramfs.img'), initramfs);
    const art = (file: string, b: Buffer) => ({ file, bytes: b.length, sha256: createHash('sha256').update(b).digest('hex') });
    await writeFile(
      path.join(image, 'manifest.json'),
      JSON.stringify({
        image: 'writ-node',
        sourceDateEpoch: 1_704_067_200,
        cmdline: 'console=ttyS0',
        artifacts: { kernel: art('vmlinuz', kernel), initramfs: art('initramfs.img', initramfs) },
      }),
    );
    const saved = process.env.WRIT_BOOT_IMAGE;
    process.env.WRIT_BOOT_IMAGE = image;
    try {
      expect((await api('POST', '/v1/nodes/inst-red/reprovision', {})).body.state).toBe('reprovisioning');
      const script = await fetch(new URL('/boot/ipxe?mac=52:54:00:ee:00:01', s.url));
      expect(await script.text()).toContain('writ.boot=install');
      expect((await api('GET', '/v1/nodes/inst-red')).body.state).toBe('installing');
      const again = await register('inst-red', inventory('52:54:00:ee:00:01', ['DISK-BLUE', 'DISK-RED']), tokens.red!);
      expect(again.answer.state).toBe('installing');
      expect(again.answer.installPlan).toEqual(plans.red);
      expect((await api('GET', '/v1/enroll/nodes/inst-red')).body.boot).toEqual([expect.objectContaining({ answer: 'local' })]);
      await again.agent.heartbeat();
      expect((await api('GET', '/v1/nodes/inst-red')).body.state).toBe('installing');
      const red = await loadNodeIdentity(path.join(dir, 'inst-red'), 'inst-red');
      expect((await report(red, okBody('red', 'DISK-RED'))).body).toEqual({ state: 'installed', accepted: true });
    } finally {
      if (saved === undefined) delete process.env.WRIT_BOOT_IMAGE;
      else process.env.WRIT_BOOT_IMAGE = saved;
    }
  });

  it('a failed report fails the node with the reason', async () => {
    const blue = await loadNodeIdentity(path.join(dir, 'inst-blue'), 'inst-blue');
    const body: InstallReportBody = {
      class: 'blue',
      planSha256: installPlanSha256(plans.blue!),
      ok: false,
      disk: null,
      subvolumes: [],
      jobs: [],
      error: { code: 'INSTALL_DISK_NOT_FOUND', message: 'no disk matches serial=DISK-BLUE: vdb (serial DISK-RED …): serial DISK-RED is not DISK-BLUE' },
    };
    const failedRaw = signInstallReport(blue.nodeId, blue.key, body);
    const r = await api('POST', INSTALL_REPORT_PATH, failedRaw);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.state).toBe('failed');
    const n = (await api('GET', '/v1/nodes/inst-blue')).body;
    expect(n.state).toBe('failed');
    expect(n.transitions.at(-1)).toMatchObject({ event: 'install-failed', actor: 'node:inst-blue' });
    expect(n.transitions.at(-1).reason).toContain('INSTALL_DISK_NOT_FOUND');
    expect(n.install).toMatchObject({ ok: false, error: { code: 'INSTALL_DISK_NOT_FOUND' } });
    const shown = await cli('nodes', 'show', 'inst-blue');
    expect(shown.out).toContain('install: FAILED');
    expect(shown.out).toContain('INSTALL_DISK_NOT_FOUND');
    // To try again: accept it (back to commissioned); registering again holds it installing for its plan.
    expect((await cli('nodes', 'accept', 'inst-blue')).code).toBe(0);
    const again = await register('inst-blue', inventory('52:54:00:ee:00:02', ['DISK-RED', 'DISK-BLUE']), tokens.blue!);
    expect(again.answer.state).toBe('installing');
    // A copy of the failed report (still within its time window) does not fail this new install.
    const copy = await api('POST', INSTALL_REPORT_PATH, failedRaw);
    expect(copy.status).toBe(409);
    expect(copy.body.error.code).toBe('INSTALL_REPORT_REPLAYED');
    expect((await api('GET', '/v1/nodes/inst-blue')).body.state).toBe('installing');
    expect((await report(blue, okBody('blue', 'DISK-BLUE', []))).body).toEqual({ state: 'installed', accepted: true });
  });

  it('a copy of an earlier successful report neither skips a reinstall ordered later nor finishes it', async () => {
    const red = await loadNodeIdentity(path.join(dir, 'inst-red'), 'inst-red');
    const saved = process.env.WRIT_BOOT_IMAGE;
    process.env.WRIT_BOOT_IMAGE = path.join(dir, 'image');
    try {
      const installBoot = async () => {
        expect((await api('POST', '/v1/nodes/inst-red/reprovision', {})).body.state).toBe('reprovisioning');
        expect(await (await fetch(new URL('/boot/ipxe?mac=52:54:00:ee:00:01', s.url))).text()).toContain('writ.boot=install');
        expect((await api('GET', '/v1/nodes/inst-red')).body.state).toBe('installing');
      };
      expect((await api('GET', '/v1/nodes/inst-red')).body.state).toBe('installed');
      await installBoot();
      const taken = signInstallReport(red.nodeId, red.key, okBody('red', 'DISK-RED'));
      expect((await api('POST', INSTALL_REPORT_PATH, taken)).body).toEqual({ state: 'installed', accepted: true });
      // Reinstall ordered: the machine has not fetched its install boot yet, so no report finishes it, the copy
      // of the last one least of all.
      expect((await api('POST', '/v1/nodes/inst-red/reprovision', {})).body.state).toBe('reprovisioning');
      const copy = await api('POST', INSTALL_REPORT_PATH, taken);
      expect(copy.status).toBe(409);
      expect(copy.body.error.code).toBe('INSTALL_REPORT_REPLAYED');
      // A new signature of the same report: answered as a repeat, nothing moves.
      expect((await report(red, okBody('red', 'DISK-RED'))).body).toEqual({ state: 'reprovisioning', accepted: false });
      expect((await api('GET', '/v1/nodes/inst-red')).body.state).toBe('reprovisioning');
      // The install boot: the copy still does not finish it; the node's own new report does.
      expect(await (await fetch(new URL('/boot/ipxe?mac=52:54:00:ee:00:01', s.url))).text()).toContain('writ.boot=install');
      expect((await api('GET', '/v1/nodes/inst-red')).body.state).toBe('installing');
      expect((await api('POST', INSTALL_REPORT_PATH, taken)).body.error.code).toBe('INSTALL_REPORT_REPLAYED');
      expect((await api('GET', '/v1/nodes/inst-red')).body.state).toBe('installing');
      expect((await report(red, okBody('red', 'DISK-RED'))).body).toEqual({ state: 'installed', accepted: true });
    } finally {
      if (saved === undefined) delete process.env.WRIT_BOOT_IMAGE;
      else process.env.WRIT_BOOT_IMAGE = saved;
    }
  });

  it('a run of the plan drops the installed record first: one that stops is not followed by the earlier success on the next boot', async () => {
    // The node as a successful install left it: install.json on its state partition records this plan.
    const base = path.join(dir, 'node-record');
    const stateDir = path.join(base, 'state');
    await mkdir(stateDir, { recursive: true });
    const earlier = { ...okBody('red', 'DISK-RED'), at: '2026-12-01T00:00:00.000Z' };
    await writeFile(path.join(stateDir, 'install.json'), JSON.stringify(earlier));
    expect((await installedPlanRecord(stateDir))?.planSha256).toBe(installPlanSha256(plans.red!));
    expect(await installPlanDue(plans.red!, { mode: 'normal', stateDir, bootDir: path.join(base, 'run-1') })).toMatchObject({ due: false });
    // A reinstall boot runs it again, and it stops (here: the hinted disk is gone).
    const r = await runInstallPlan({
      plan: plans.red!,
      mode: 'install',
      stateDir,
      runner: { runEnvelope: () => Promise.reject(new Error('no plan job runs without a disk')) },
      disks: async () => [],
      sysRoot: base,
      mountDir: path.join(base, 'mnt'),
      bootDir: path.join(base, 'run-1'),
    });
    expect(r).toMatchObject({ ok: false, error: { code: 'INSTALL_DISK_NOT_FOUND' } });
    // The next boot (a normal one) must run the plan again, not resend the earlier success as this install's report.
    expect(await installedPlanRecord(stateDir)).toBeNull();
    expect(await installPlanDue(plans.red!, { mode: 'normal', stateDir, bootDir: path.join(base, 'run-2') })).toMatchObject({ due: true });
  });

  it('never installs to the disk holding the state partition or a mounted filesystem, even when the hints name it', async () => {
    // A machine's /sys and /proc as the node reads them: vda is the USB image (ESP + writ-state), vdb has a
    // mounted partition, vdc is free.
    const root = path.join(dir, 'sysroot');
    const put = async (rel: string, text: string) => {
      await mkdir(path.dirname(path.join(root, rel)), { recursive: true });
      await writeFile(path.join(root, rel), text);
    };
    await put('sys/block/vda/uevent', 'MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n');
    await put('sys/block/vda/vda1/uevent', 'MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=ESP\n');
    await put('sys/block/vda/vda2/uevent', 'MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=writ-state\n');
    await put('sys/block/vdb/uevent', 'MAJOR=254\nMINOR=16\nDEVNAME=vdb\nDEVTYPE=disk\n');
    await put('sys/block/vdb/vdb1/uevent', 'MAJOR=254\nMINOR=17\nDEVNAME=vdb1\nDEVTYPE=partition\nPARTN=1\n');
    await put('sys/block/vdc/uevent', 'MAJOR=254\nMINOR=32\nDEVNAME=vdc\nDEVTYPE=disk\n');
    await put('proc/self/mounts', 'rootfs / rootfs rw 0 0\n/dev/vda2 /var/lib/writ ext4 rw 0 0\n/dev/vdb1 /srv ext4 rw 0 0\n');
    const mountDir = path.join(root, 'mnt');
    const ex = await excludedDisks(root, mountDir);
    expect(ex.map((e) => e.name).sort()).toEqual(['vda', 'vdb']);
    expect(ex.find((e) => e.name === 'vda')?.why).toContain('state partition vda2');
    expect(ex.find((e) => e.name === 'vdb')?.why).toContain('vdb1 is mounted at /srv');
    const disk = (name: string, serial: string) => ({ name, sizeBytes: 8 * GiB, model: null, serial, wwn: null, byId: [], rotational: false });
    const run = (hints: InstallPlan['disk']) =>
      runInstallPlan({
        plan: { ...plans.red!, disk: hints },
        // Not an install boot, and device nodes under an empty folder: nothing on this host is ever touched.
        mode: 'normal',
        devDir: path.join(root, 'dev'),
        stateDir: null,
        runner: { runEnvelope: () => Promise.reject(new Error('no plan job runs without a disk')) },
        disks: async () => [disk('vda', 'USB'), disk('vdb', 'BUSY'), disk('vdc', 'FREE')],
        sysRoot: root,
        mountDir,
        bootDir: path.join(root, 'run'),
      });
    for (const serial of ['USB', 'BUSY']) {
      const r = await run({ serial });
      expect(r.error?.code).toBe('INSTALL_DISK_NOT_FOUND');
      expect(r.error?.message).toContain('never installed to');
      expect(r.disk).toBeNull();
    }
    // A size range all three disks fit: only the free one is a candidate.
    const sized = await run({ minBytes: GiB });
    expect(sized.disk?.name).toBe('vdc');
    // (It stops after the choice: the SAL takes device nodes only under /dev.)
    expect(['INSTALL_DISK_NOT_FOUND', 'INSTALL_DISK_AMBIGUOUS']).not.toContain(sized.error?.code);
  });
});
