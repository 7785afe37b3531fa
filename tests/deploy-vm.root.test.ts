// scripts/examples/deploy-vm.js end to end, as root on real tools: signed and submitted over HTTP to a
// one-process stack whose runner offers the btrfs, net and VM SALs (a btrfs pool on a loop image, iproute2,
// qemu booting the test guest), the script clones a disk, puts a tap on a bridge, boots the VM and sees its
// serial marker; run again it creates nothing; a vm.delete job removes the VM.
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { thresholdFor } from '@writ/protocol';
import {
  btrfsConfig,
  createSubvolume,
  deleteBridge,
  deleteTap,
  formatPool,
  listLinks,
  mountPool,
  netConfig,
  unmountPool,
  VmManager,
  type BtrfsConfig,
  type VmConfig,
} from '@writ/sal';
// The test guest, loop cleanup and package checks are sal's test fixtures, not part of its API.
// eslint-disable-next-line no-restricted-imports
import { buildTestGuest, guestMarker } from '../sal/test/helpers/guest.ts';
// eslint-disable-next-line no-restricted-imports
import { loopDevicesUsable, releaseMountsAndLoops } from '../sal/test/helpers/loop.ts';
// eslint-disable-next-line no-restricted-imports
import { ensurePackages, isRoot } from '../sal/test/helpers/system.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

const SCRIPT = path.resolve(import.meta.dirname, '../scripts/examples/deploy-vm.js');
// Exactly what deploy-vm.js calls; anything it called beyond these would fail the job with HOST_CALL_DENIED.
const DEPLOY_CAPS = ['btrfs.disk.clone', 'net.bridge.ensure', 'net.tap.ensure', 'vm.create', 'vm.boot', 'vm.serial.wait', 'vm.info'];
const DELETE_VM = `export default async function (args, ctx) {
  return await ctx.sal.vm.delete({ name: args.name });
}`;

const hex = randomBytes(2).toString('hex');
const vmName = `deploy-${hex}`;
const bridge = `wrb${hex}`;
const tap = `wrt${hex}`;
const net = netConfig({ prefix: 'wr' });

let skipReason: string | null = null;
if (!isRoot) skipReason = 'needs root (loop devices, btrfs, taps, bridges, qemu)';
else if (!existsSync('/dev/net/tun')) skipReason = '/dev/net/tun is missing: no taps on this machine';
else if (!loopDevicesUsable()) skipReason = 'this machine refuses loop devices';
if (skipReason) console.warn(`skipping deploy-vm end to end: ${skipReason}`);

let tmp = '';
let pool: BtrfsConfig;
let vmConfig: VmConfig;
let s: TestStack | undefined;
let source = '';
const timings: Record<string, number> = {};
async function timed<T>(label: string, fn: () => Promise<T>): Promise<T> {
  const t = Date.now();
  try {
    return await fn();
  } finally {
    timings[label] = Date.now() - t;
  }
}

async function runJob(code: string, caps: string[], args: unknown, timeoutMs: number): Promise<{ id: string; job: any; logs: string[] }> {
  const { envelope, id } = s!.sign(code, { caps, args, timeoutMs });
  const posted = await s!.post(envelope);
  expect(posted.status).toBe(202);
  await s!.waitFor(id, ['succeeded', 'failed', 'refused'], timeoutMs + 15_000);
  const job = (await s!.get(`/v1/jobs/${id}`)).body;
  const events = (await s!.ledger.listJobEvents(id, 0, 200)) as { message: string }[];
  return { id, job, logs: events.map((e) => e.message) };
}

/** Whether `pid` is gone (or a zombie: qemu daemonises, so its parent is not us and may reap it late). */
async function exitsWithin(pid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    let state = '';
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    } catch {
      return true;
    }
    if (state === 'Z' || state === 'X') return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

const deployArgs = () => ({
  name: vmName,
  base: 'base',
  bridge,
  tap,
  mac: `52:54:00:42:${hex.slice(0, 2)}:${hex.slice(2)}`,
  kernel: 'vmlinuz',
  initramfs: 'initramfs.cpio.gz',
  cmdline: `console=ttyS0 panic=-1 writ.id=${hex}`,
  marker: guestMarker(hex),
  memoryMiB: 192,
  markerTimeoutMs: 60_000,
});

describe.skipIf(skipReason !== null)('deploy-vm.js through the signed path on real btrfs, iproute2 and qemu', () => {
  beforeAll(async () => {
    const missing = ensurePackages(['btrfs-progs', 'util-linux', 'iproute2', 'qemu-system-x86', 'busybox-static', 'cpio']);
    if (missing) throw new Error(missing);
    source = await readFile(SCRIPT, 'utf8');
    const guest = await timed('guest build (cached)', () => buildTestGuest());
    // No commas or spaces: the VM state dir is spelled inside qemu's -qmp option.
    tmp = await mkdtemp('/tmp/writ-deploy-');
    pool = btrfsConfig({ mount: path.join(tmp, 'pool'), imageDir: path.join(tmp, 'images') });
    await timed('pool format+mount', async () => {
      await formatPool(pool, { image: 'pool.img', sizeBytes: 256 * 2 ** 20, label: `writ-deploy-${hex}` });
      await mountPool(pool, { image: 'pool.img' });
    });
    // The base image: a subvolume holding a sparse raw disk (the guest runs from its initramfs; the disk
    // shows up as /dev/vda).
    await createSubvolume(pool, { path: 'base' });
    const baseDisk = path.join(pool.mount, 'base', 'disk.raw');
    await writeFile(baseDisk, '');
    await truncate(baseDisk, 16 * 2 ** 20);
    vmConfig = { driver: 'qemu', stateDir: path.join(tmp, 'vms'), imagesRoot: pool.mount, bootRoot: guest.dir, accel: 'auto' };
    s = await timed('stack start', () => startTestStack({ sal: { btrfs: pool, net, vm: vmConfig } }));
  }, 180_000);

  afterAll(async () => {
    await s?.close();
    if (vmConfig) {
      // A VM a failed test left behind: stopped through its own state dir, then its qemu by pid if still alive.
      const pidFile = path.join(vmConfig.stateDir, vmName, 'vmm.pid');
      const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8')) : null;
      await new VmManager(vmConfig).delete({ name: vmName }).catch(() => undefined);
      if (pid) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    await deleteTap(net, { name: tap }).catch(() => undefined);
    await deleteBridge(net, { name: bridge }).catch(() => undefined);
    if (tmp) {
      await unmountPool(pool, { detach: true }).catch(() => undefined);
      releaseMountsAndLoops(tmp);
      await rm(tmp, { recursive: true, force: true });
    }
    console.log(`[deploy-vm] timings (ms): ${JSON.stringify(timings)}`);
  });

  let firstPid = 0;

  it('deploys: disk cloned, bridge and tap made, VM created, booted and its serial marker seen', async () => {
    const { job, logs } = await timed('first run', () => runJob(source, DEPLOY_CAPS, deployArgs(), 90_000));
    expect(job.error ?? null).toBeNull();
    expect(job.status).toBe('succeeded');
    const r = job.result;
    expect(r).toMatchObject({ name: vmName, nothingNew: false, markerSeen: true, created: { disk: true, bridge: true, tap: true, vm: true, booted: true } });
    expect(r.info).toMatchObject({ name: vmName, driver: 'qemu', state: 'running' });
    expect(r.info.spec.disks).toEqual([{ id: 'disk0', path: `disks/${vmName}/disk.raw`, readonly: false }]);
    expect(r.info.spec.nics).toEqual([{ id: 'net0', tap, mac: deployArgs().mac }]);
    firstPid = r.info.pid;
    expect(firstPid).toBeGreaterThan(0);
    // Checked on the host, not only on the script's word.
    expect(readFileSync(path.join(vmConfig.stateDir, vmName, 'serial.log'), 'utf8')).toContain(guestMarker(hex));
    expect(existsSync(path.join(pool.mount, 'disks', vmName, 'disk.raw'))).toBe(true);
    const { links } = await listLinks(net, {});
    expect(links.find((l) => l.name === tap)?.master).toBe(bridge);
    expect(logs.some((m) => m.includes(`vm ${vmName}: booted`))).toBe(true);
    expect(logs.some((m) => m.includes(`vm ${vmName} deployed`))).toBe(true);
  }, 120_000);

  it('run again with the same arguments (a new job): nothing new is created and the same VM keeps running', async () => {
    const { job, logs } = await timed('second run', () => runJob(source, DEPLOY_CAPS, deployArgs(), 60_000));
    expect(job.status).toBe('succeeded');
    expect(job.result).toMatchObject({ nothingNew: true, markerSeen: true, created: { disk: false, bridge: false, tap: false, vm: false, booted: false } });
    expect(job.result.info).toMatchObject({ state: 'running', pid: firstPid });
    expect((await new VmManager(vmConfig).list({})).vms.map((v) => v.name)).toEqual([vmName]);
    expect(logs.some((m) => m.includes('nothing new was created'))).toBe(true);
  }, 90_000);

  it('granted less than deploy-vm.js uses, it fails naming the missing capability and makes nothing', async () => {
    const other = `other-${hex}`;
    const { job } = await runJob(
      source,
      DEPLOY_CAPS.filter((c) => c !== 'btrfs.disk.clone'),
      { ...deployArgs(), name: other },
      30_000,
    );
    expect(job.status).toBe('failed');
    expect(JSON.stringify(job.error)).toContain('btrfs.disk.clone');
    expect(existsSync(path.join(pool.mount, 'disks', other))).toBe(false);
    expect(existsSync(path.join(vmConfig.stateDir, other))).toBe(false);
  }, 60_000);

  it('deletes the VM with a vm.delete job (dangerous; this key set needs one signer) and its qemu exits', async () => {
    expect(thresholdFor(s!.service.currentKeySet()!.keySet)('vm.delete')).toBe(1);
    const { job } = await timed('delete', () => runJob(DELETE_VM, ['vm.delete'], { name: vmName }, 30_000));
    expect(job.status).toBe('succeeded');
    expect(job.result).toEqual({ name: vmName, deleted: true });
    expect(existsSync(path.join(vmConfig.stateDir, vmName))).toBe(false);
    expect(await exitsWithin(firstPid, 5000)).toBe(true);
    // The disk clone belongs to the pool, not the VM: it stays.
    expect(existsSync(path.join(pool.mount, 'disks', vmName, 'disk.raw'))).toBe(true);
  }, 60_000);
});
