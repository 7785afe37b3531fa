// The qemu driver on real qemu: a Debian cloud kernel with a busybox initramfs is created, booted (KVM when
// the probe says it works, TCG otherwise), reaches userspace (marker on the serial log), answers ping over a
// tap on a bridge from a network namespace, is paused, hot-plugged, snapshotted and restored, rebooted,
// resized cold, shut down through ACPI and deleted — all through VM_OPERATIONS.
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodeOf } from '@writ/protocol';
import { run } from '../src/exec.ts';
import { chooseAccel, forgetAccelProbes, resolveVmConfig, VM_OPERATIONS, vmManagerFor, type VmConfig } from '../src/vm/index.ts';
import { findLivePid } from '../src/vm/process.ts';
import { buildTestGuest, guestMarker, type TestGuest } from './helpers/guest.ts';
import { ensurePackages, isRoot } from './helpers/system.ts';

const hex = randomBytes(2).toString('hex');
const octet = Number.parseInt(hex.slice(0, 2), 16);
const subnet = `10.213.${octet}`;
const hostIp = `${subnet}.1`;
const guestIp = `${subnet}.2`;
const ns = `wvm-${hex}`;
const bridge = `wvb${hex}`;
const tap = `wvt${hex}`;
const vethHost = `wvh${hex}`;
const vethNs = `wvn${hex}`;
const vmName = `guest-${hex}`;
const marker = guestMarker(hex);

let skipReason: string | null = null;
if (!isRoot) skipReason = 'needs root (qemu, taps, bridges, network namespaces)';
else if (!existsSync('/dev/net/tun')) skipReason = '/dev/net/tun is missing: no taps on this machine';

let root = '';
let guest: TestGuest;
let config: VmConfig;
const call = async (capability: string, args: Record<string, unknown>): Promise<any> => {
  const op = VM_OPERATIONS.find((o) => o.capability === capability);
  if (!op) throw new Error(`no operation ${capability}`);
  return op.run(args, { config });
};
const codeOf = async (p: Promise<unknown>): Promise<string | undefined> =>
  p.then(
    () => undefined,
    (e: unknown) => errorCodeOf(e) ?? String(e),
  );
const ping = async (count = 1): Promise<boolean> =>
  (await run(['ip', 'netns', 'exec', ns, 'ping', '-c', String(count), '-W', '1', guestIp], { reject: false, timeoutMs: 10_000 })).exitCode === 0;
async function pingWithin(ms: number): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < ms) {
    if (await ping()) return Date.now() - started;
  }
  const log = await readFile(path.join(config.stateDir, vmName, 'serial.log'), 'utf8').catch(() => '');
  throw new Error(`${guestIp} did not answer ping within ${ms} ms; serial log ends:\n${log.slice(-1500)}`);
}
function processRuns(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}
const timings: Record<string, number> = {};
async function timed<T>(label: string, fn: () => Promise<T>): Promise<T> {
  const t = Date.now();
  try {
    return await fn();
  } finally {
    timings[label] = Date.now() - t;
  }
}

describe.skipIf(skipReason !== null)('vm SAL on real qemu', () => {
  beforeAll(async () => {
    const missing = ensurePackages(['qemu-system-x86', 'qemu-utils', 'busybox-static', 'cpio', 'iproute2', 'iputils-ping']);
    if (missing) throw new Error(missing);
    guest = await timed('guest build (cached after the first run)', () => buildTestGuest());
    root = await mkdtemp('/tmp/wvm-');
    await mkdir(path.join(root, 'images'));
    await run(['qemu-img', 'create', '-f', 'raw', path.join(root, 'images', 'root.img'), '16M']);
    await run(['qemu-img', 'create', '-f', 'raw', path.join(root, 'images', 'extra.img'), '8M']);
    config = { driver: 'qemu', stateDir: path.join(root, 'state'), imagesRoot: path.join(root, 'images'), bootRoot: guest.dir, accel: 'auto' };
    // The bridge carries the tap and one end of a veth pair whose other end, with the host address,
    // lives in a namespace of ours: the machine's own interfaces and routes stay untouched.
    await run(['ip', 'netns', 'add', ns]);
    await run(['ip', 'link', 'add', bridge, 'type', 'bridge']);
    await run(['ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
    await run(['ip', 'link', 'add', vethHost, 'type', 'veth', 'peer', 'name', vethNs]);
    await run(['ip', 'link', 'set', vethNs, 'netns', ns]);
    for (const dev of [tap, vethHost]) await run(['ip', 'link', 'set', dev, 'master', bridge, 'up']);
    await run(['ip', 'link', 'set', bridge, 'up']);
    await run(['ip', '-n', ns, 'addr', 'add', `${hostIp}/24`, 'dev', vethNs]);
    await run(['ip', '-n', ns, 'link', 'set', vethNs, 'up']);
    await run(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
  }, 300_000);

  afterAll(async () => {
    if (config) {
      // Stop the qemu this file started (found by its own pid file) even if a test failed midway.
      const pid = await findLivePid(path.join(config.stateDir, vmName, 'vmm.pid'), path.join(config.stateDir, vmName, 'api.sock')).catch(() => null);
      await vmManagerFor(config)
        .delete({ name: vmName })
        .catch(() => undefined);
      if (pid !== null) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    for (const dev of [tap, vethHost, bridge]) await run(['ip', 'link', 'del', dev], { reject: false });
    await run(['ip', 'netns', 'del', ns], { reject: false });
    if (root) await rm(root, { recursive: true, force: true });
    console.log(`[vm-qemu] timings (ms): ${JSON.stringify(timings)}`);
  });

  const spec = () => ({
    name: vmName,
    vcpus: 1,
    memoryMiB: 256,
    maxMemoryMiB: 384,
    kernel: 'vmlinuz',
    initramfs: 'initramfs.cpio.gz',
    cmdline: `console=ttyS0 panic=-1 writ.ip=${guestIp}/24 writ.id=${hex}`,
    disks: [{ id: 'root', path: 'root.img' }],
    nics: [{ id: 'net0', tap, mac: `52:54:00:12:${hex.slice(0, 2)}:${hex.slice(2)}` }],
  });

  it('chooses the accelerator by a timed KVM boot probe and caches the answer', async () => {
    forgetAccelProbes();
    const resolved = resolveVmConfig(config);
    const first = await timed('accel probe', () => chooseAccel(resolved, guest.kernel));
    console.log(`[vm-qemu] accel=${first.accel} (${first.source}): ${first.reason}`);
    expect(['kvm', 'tcg']).toContain(first.accel);
    expect(first.source).toBe('probe');
    const cacheFile = JSON.parse(await readFile(path.join(config.stateDir, 'accel-probe.json'), 'utf8')) as { accel: string };
    expect(cacheFile.accel).toBe(first.accel);
    const started = Date.now();
    const second = await chooseAccel(resolved, guest.kernel);
    expect(second).toMatchObject({ accel: first.accel, source: 'cache' });
    expect(Date.now() - started).toBeLessThan(200);
  }, 60_000);

  it('creates the VM once: same spec again is created:false, a different spec is RESOURCE_CONFLICT', async () => {
    const first = await timed('create', () => call('vm.create', spec()));
    expect(first).toEqual({ name: vmName, created: true, state: 'created' });
    expect(await call('vm.create', spec())).toEqual({ name: vmName, created: false, state: 'created' });
    expect(await codeOf(call('vm.create', { ...spec(), memoryMiB: 320 }))).toBe('RESOURCE_CONFLICT');
    const info = await call('vm.info', { name: vmName });
    expect(info.state).toBe('created');
    expect(info.pid).toBeGreaterThan(1);
    expect((await call('vm.list', {})).vms).toContainEqual({ name: vmName, driver: 'qemu', state: 'created' });
    const argv = JSON.parse(await readFile(path.join(config.stateDir, vmName, 'qemu-argv.json'), 'utf8')) as string[];
    expect(argv).toContain('-daemonize');
  }, 60_000);

  it('boots to userspace: the marker appears on the serial log, and boot again changes nothing', async () => {
    const t = Date.now();
    expect(await call('vm.boot', { name: vmName })).toEqual({ name: vmName, changed: true, state: 'running' });
    const seen = await call('vm.serial.wait', { name: vmName, marker, timeoutMs: 90_000 });
    timings['boot to userspace marker'] = Date.now() - t;
    expect(seen.found).toBe(true);
    expect(await call('vm.boot', { name: vmName })).toEqual({ name: vmName, changed: false, state: 'running' });
    expect(await codeOf(call('vm.serial.wait', { name: vmName, marker: `NEVER-PRINTED-${hex}`, timeoutMs: 300 }))).toBe('VM_SERIAL_TIMEOUT');
  }, 120_000);

  it('answers ping from the host side of the bridge', async () => {
    timings['first ping after marker'] = await pingWithin(20_000);
  }, 30_000);

  it('pause stops the guest (no ping) and resume brings it back', async () => {
    expect(await call('vm.pause', { name: vmName })).toEqual({ name: vmName, changed: true, state: 'paused' });
    expect(await call('vm.pause', { name: vmName })).toEqual({ name: vmName, changed: false, state: 'paused' });
    expect(await ping()).toBe(false);
    expect(await codeOf(call('vm.boot', { name: vmName }))).toBe('VM_STATE_INVALID');
    expect(await call('vm.resume', { name: vmName })).toEqual({ name: vmName, changed: true, state: 'running' });
    await pingWithin(10_000);
  }, 30_000);

  it('hot-plugs a disk the guest sees, and unplugs it again', async () => {
    const added = await timed('disk hot-add', () => call('vm.disk.add', { name: vmName, disk: { id: 'extra', path: 'extra.img' } }));
    expect(added).toEqual({ name: vmName, id: 'extra', added: true, hotplugged: true });
    expect(await call('vm.disk.add', { name: vmName, disk: { id: 'extra', path: 'extra.img' } })).toMatchObject({ added: false });
    await call('vm.serial.wait', { name: vmName, marker: 'WRIT-GUEST-BLOCK: [vda vdb ]', timeoutMs: 20_000 });
    const removed = await timed('disk hot-remove', () => call('vm.device.remove', { name: vmName, id: 'extra' }));
    expect(removed).toEqual({ name: vmName, id: 'extra', removed: true, hotplugged: true });
    expect(await call('vm.device.remove', { name: vmName, id: 'extra' })).toMatchObject({ removed: false });
    expect((await call('vm.info', { name: vmName })).spec.disks.map((d: { id: string }) => d.id)).toEqual(['root']);
  }, 60_000);

  it('refuses live resize on qemu with VM_OPERATION_UNSUPPORTED and paths outside the images root with PATH_ESCAPE', async () => {
    expect(await codeOf(call('vm.resize', { name: vmName, memoryMiB: 384 }))).toBe('VM_OPERATION_UNSUPPORTED');
    expect(await codeOf(call('vm.disk.add', { name: vmName, disk: { path: '../state/x.img' } }))).toBe('PATH_ESCAPE');
  });

  it('snapshots the running VM and restores it to a running guest that answers ping', async () => {
    const snap = await timed('snapshot', () => call('vm.snapshot', { name: vmName, snapshot: 'snap1' }));
    expect(snap).toMatchObject({ name: vmName, snapshot: 'snap1', created: true });
    expect(await call('vm.snapshot', { name: vmName, snapshot: 'snap1' })).toMatchObject({ created: false });
    expect((await call('vm.info', { name: vmName })).state).toBe('running');
    const pidBefore = (await call('vm.info', { name: vmName })).pid as number;
    const restored = await timed('restore', () => call('vm.restore', { name: vmName, snapshot: 'snap1', resume: true }));
    expect(restored).toEqual({ name: vmName, snapshot: 'snap1', state: 'running' });
    expect((await call('vm.info', { name: vmName })).pid).not.toBe(pidBefore);
    await pingWithin(15_000);
  }, 90_000);

  it('reboots: the marker appears again after the reset', async () => {
    const t = Date.now();
    expect(await call('vm.reboot', { name: vmName })).toEqual({ name: vmName, state: 'running' });
    await call('vm.serial.wait', { name: vmName, marker, timeoutMs: 90_000 });
    timings['reboot to marker'] = Date.now() - t;
  }, 120_000);

  it('shuts down through the ACPI power button, then resizes cold and boots with the new memory', async () => {
    const down = await timed('graceful shutdown', () => call('vm.shutdown', { name: vmName, timeoutMs: 30_000 }));
    expect(down).toEqual({ name: vmName, changed: true, graceful: true, state: 'shutdown' });
    await call('vm.serial.wait', { name: vmName, marker: 'WRIT-GUEST-POWEROFF', timeoutMs: 1000 });
    expect(await call('vm.shutdown', { name: vmName })).toMatchObject({ changed: false, state: 'shutdown' });
    expect((await call('vm.info', { name: vmName })).pid).toBeNull();
    expect(await call('vm.resize', { name: vmName, memoryMiB: 384 })).toEqual({ name: vmName, vcpus: 1, memoryMiB: 384, changed: true, live: false });
    await call('vm.boot', { name: vmName });
    await call('vm.serial.wait', { name: vmName, marker, timeoutMs: 90_000 });
    const log = await readFile(path.join(config.stateDir, vmName, 'serial.log'), 'utf8');
    const mem = [...log.matchAll(/WRIT-GUEST-MEM: (\d+)/g)].map((m) => Number(m[1]));
    // MemTotal is below the configured size (kernel reservations) but must have grown by ~128 MiB.
    expect(mem.length).toBeGreaterThanOrEqual(2);
    expect(mem[mem.length - 1]! - mem[0]!).toBeGreaterThan(100 * 1024);
  }, 150_000);

  it('deletes the VM: the qemu process and the state dir are gone, and a second delete is a no-op', async () => {
    const dir = path.join(config.stateDir, vmName);
    const pid = (await call('vm.info', { name: vmName })).pid as number;
    expect(await call('vm.delete', { name: vmName })).toEqual({ name: vmName, deleted: true });
    expect(existsSync(dir)).toBe(false);
    // Reaping by whoever adopted the daemon may lag a moment; a zombie runs nothing.
    expect(processRuns(pid)).toBe(false);
    expect(await call('vm.delete', { name: vmName })).toEqual({ name: vmName, deleted: false });
    expect((await call('vm.list', {})).vms).toEqual([]);
    expect(await codeOf(call('vm.info', { name: vmName }))).toBe('RESOURCE_NOT_FOUND');
  }, 30_000);
});

if (skipReason) console.log(`[vm-qemu] skipped: ${skipReason}`);
