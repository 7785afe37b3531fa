// The qemu driver: one daemonised qemu-system-x86_64 per VM, driven through QMP on a Unix socket.
// "Shutdown" on qemu means no qemu process: a stopped VM is started again from its spec, which is also
// how cold changes (devices, size) take effect. Live resize is not supported (VM_OPERATION_UNSUPPORTED).
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { WritError } from '@writ/protocol';
import { run } from '../exec.ts';
import { ensureExited, findLivePid, sleep } from './process.ts';
import { withQmp, type QmpClient } from './qmp.ts';
import type { Hypervisor, ResolvedVmConfig, ResolvedVmSpec, VmHandle, VmPaths, VmRuntime, VmState } from './types.ts';

export interface QemuCommandOptions {
  binary?: string;
  accel: 'kvm' | 'tcg';
  /** Fork into the background once initialised (default true); the SAL always daemonises. */
  daemonize?: boolean;
  /** Start with the CPUs stopped (`-S`, default true): the SAL defines a VM first and boots it with `cont`. */
  startPaused?: boolean;
  /** Migration source to restore from (`-incoming`). */
  incoming?: string;
}

/** qemu's option syntax doubles commas inside a value. */
const optionValue = (s: string): string => s.replaceAll(',', ',,');

/**
 * The exact argv the SAL runs for a VM. Exported so a benchmark can boot the same command line directly.
 * Devices use qemu's JSON option syntax so paths and ids never need escaping.
 */
export function qemuCommandLine(spec: ResolvedVmSpec, paths: VmPaths, opts: QemuCommandOptions): string[] {
  const argv = [opts.binary ?? 'qemu-system-x86_64', '-name', spec.name, '-accel', opts.accel, '-smp', String(spec.vcpus), '-m', `${spec.memoryMiB}M`];
  argv.push('-nodefaults', '-no-user-config', '-display', 'none', '-no-shutdown');
  argv.push('-chardev', `file,id=serial0,path=${optionValue(paths.serialLog)},append=on`, '-serial', 'chardev:serial0');
  argv.push('-qmp', `unix:${paths.apiSocket},server=on,wait=off`);
  if (opts.daemonize ?? true) argv.push('-daemonize', '-pidfile', paths.pidFile);
  if (opts.startPaused ?? true) argv.push('-S');
  if (spec.firmware) argv.push('-bios', spec.firmware);
  if (spec.kernel) argv.push('-kernel', spec.kernel);
  if (spec.initramfs) argv.push('-initrd', spec.initramfs);
  if (spec.kernel && spec.cmdline !== null) argv.push('-append', spec.cmdline);
  for (const d of spec.disks) {
    argv.push('-blockdev', JSON.stringify(blockdev(d)));
    argv.push('-device', JSON.stringify({ driver: 'virtio-blk-pci', id: d.id, drive: nodeName(d.id) }));
  }
  for (const n of spec.nics) {
    argv.push('-netdev', JSON.stringify(netdev(n)));
    argv.push('-device', JSON.stringify({ driver: 'virtio-net-pci', id: n.id, netdev: netdevId(n.id), mac: n.mac }));
  }
  argv.push('-device', 'virtio-rng-pci');
  if (opts.incoming) argv.push('-incoming', opts.incoming);
  return argv;
}

const nodeName = (id: string): string => `${id}-blk`;
const netdevId = (id: string): string => `${id}-net`;

function blockdev(d: ResolvedVmSpec['disks'][number]): Record<string, unknown> {
  return { driver: 'raw', 'node-name': nodeName(d.id), 'read-only': d.readonly, file: { driver: 'file', filename: d.path } };
}

function netdev(n: ResolvedVmSpec['nics'][number]): Record<string, unknown> {
  return { type: 'tap', id: netdevId(n.id), ifname: n.tap, script: 'no', downscript: 'no' };
}

// ---- acceleration -------------------------------------------------------------------------------

export interface AccelChoice {
  accel: 'kvm' | 'tcg';
  /** config: fixed by configuration; probe: measured now; cache: measured earlier (memory or disk). */
  source: 'config' | 'probe' | 'cache';
  reason: string;
}

const probes = new Map<string, Promise<AccelChoice>>();

/** Forgets in-memory probe results (tests; the on-disk cache is removed with the state dir). */
export function forgetAccelProbes(): void {
  probes.clear();
}

/**
 * Boots `kernel` without a root filesystem under KVM: a kernel that works panics on the missing root
 * within a second or two; on machines where KVM hangs guests it prints nothing and the timeout decides.
 */
export async function probeKvm(binary: string, kernel: string, timeoutMs: number): Promise<{ usable: boolean; reason: string; elapsedMs: number }> {
  if (!existsSync('/dev/kvm')) return { usable: false, reason: '/dev/kvm does not exist', elapsedMs: 0 };
  const dir = await mkdtemp(path.join(os.tmpdir(), 'writ-kvm-probe-'));
  const log = path.join(dir, 'serial.log');
  const started = Date.now();
  try {
    const argv = [binary, '-accel', 'kvm', '-m', '128M', '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot'];
    argv.push('-chardev', `file,id=s0,path=${optionValue(log)}`, '-serial', 'chardev:s0', '-kernel', kernel, '-append', 'console=ttyS0 panic=-1');
    const res = await run(argv, { timeoutMs, reject: false });
    const elapsedMs = Date.now() - started;
    const serial = existsSync(log) ? await readFile(log, 'utf8') : '';
    if (serial.includes('Kernel panic')) return { usable: true, reason: `a KVM guest reached the kernel's root mount in ${elapsedMs} ms`, elapsedMs };
    const why =
      res.failed && elapsedMs >= timeoutMs
        ? `no kernel panic within ${timeoutMs} ms (the guest hung)`
        : `qemu exited ${res.exitCode} without reaching the root mount: ${res.stderr.trim().split('\n').slice(-1)[0] ?? ''}`;
    return { usable: false, reason: why, elapsedMs };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The accelerator to use: configured, or probed once per qemu binary (cached in memory and under stateDir). */
export async function chooseAccel(config: ResolvedVmConfig, kernel: string | null): Promise<AccelChoice> {
  if (config.accel !== 'auto') return { accel: config.accel, source: 'config', reason: `configured accel=${config.accel}` };
  const key = config.qemuBinary;
  const known = probes.get(key);
  if (known) return { ...(await known), source: 'cache' };
  const cacheFile = path.join(config.stateDir, 'accel-probe.json');
  const probe = (async (): Promise<AccelChoice> => {
    try {
      const cached = JSON.parse(await readFile(cacheFile, 'utf8')) as { qemuBinary?: string; accel?: string; reason?: string };
      if (cached.qemuBinary === key && (cached.accel === 'kvm' || cached.accel === 'tcg'))
        return { accel: cached.accel, source: 'cache', reason: cached.reason ?? '' };
    } catch {
      // no cache yet
    }
    const probeKernel = config.kvmProbeKernel ?? kernel;
    if (!probeKernel) return { accel: 'tcg', source: 'probe', reason: 'no kernel to probe KVM with (set kvmProbeKernel); using TCG' };
    const r = await probeKvm(config.qemuBinary, probeKernel, config.kvmProbeTimeoutMs);
    const choice: AccelChoice = { accel: r.usable ? 'kvm' : 'tcg', source: 'probe', reason: r.reason };
    await mkdir(config.stateDir, { recursive: true, mode: 0o700 });
    await writeFile(cacheFile, JSON.stringify({ qemuBinary: key, accel: choice.accel, reason: choice.reason, probedAt: new Date().toISOString() }) + '\n', {
      mode: 0o600,
    });
    return choice;
  })();
  probes.set(key, probe);
  try {
    return await probe;
  } catch (e) {
    probes.delete(key);
    throw e;
  }
}

// ---- the driver ---------------------------------------------------------------------------------

const STATUS: Record<string, VmState> = {
  prelaunch: 'created',
  running: 'running',
  paused: 'paused',
  suspended: 'paused',
  postmigrate: 'paused',
  'finish-migrate': 'paused',
  'save-vm': 'paused',
  'restore-vm': 'paused',
  inmigrate: 'paused',
  debug: 'paused',
  shutdown: 'shutdown',
  'internal-error': 'crashed',
  'io-error': 'crashed',
  'guest-panicked': 'crashed',
  watchdog: 'crashed',
};

/** Migration through `exec:` runs /bin/sh; only plain path characters are allowed into that string. */
function shellSafePath(p: string): string {
  if (!/^[A-Za-z0-9._/-]+$/.test(p))
    throw new WritError('VM_OPERATION_UNSUPPORTED', `qemu snapshots need a state path of plain characters, got ${JSON.stringify(p)}`);
  return p;
}

export const QEMU_SNAPSHOT_FILE = 'memory.qemu';

export class QemuDriver implements Hypervisor {
  readonly driver = 'qemu' as const;

  private pid(vm: VmHandle): Promise<number | null> {
    return findLivePid(vm.paths.pidFile, vm.paths.apiSocket);
  }

  private qmp<T>(vm: VmHandle, fn: (q: QmpClient) => Promise<T>): Promise<T> {
    return withQmp(vm.paths.apiSocket, vm.config.apiTimeoutMs, fn);
  }

  private async status(vm: VmHandle): Promise<string> {
    const r = await this.qmp(vm, (q) => q.execute<{ status: string }>('query-status'));
    return r.status;
  }

  async state(vm: VmHandle): Promise<VmRuntime> {
    const pid = await this.pid(vm);
    if (pid === null) return { state: 'shutdown', pid: null };
    const status = await this.status(vm);
    return { state: STATUS[status] ?? 'crashed', pid };
  }

  private async launch(vm: VmHandle, incoming?: string): Promise<void> {
    const { accel } = await chooseAccel(vm.config, vm.spec.kernel);
    await rm(vm.paths.apiSocket, { force: true });
    await rm(vm.paths.pidFile, { force: true });
    const argv = qemuCommandLine(vm.spec, vm.paths, { binary: vm.config.qemuBinary, accel, ...(incoming ? { incoming } : {}) });
    await writeFile(path.join(vm.paths.dir, 'qemu-argv.json'), JSON.stringify(argv) + '\n', { mode: 0o600 });
    // -daemonize: qemu returns once initialised, so a bad tap or image fails here with qemu's own message.
    await run(argv, { timeoutMs: 30_000 });
  }

  private async quit(vm: VmHandle): Promise<void> {
    const pid = await this.pid(vm);
    if (pid === null) return;
    try {
      await this.qmp(vm, (q) => q.execute('quit'));
    } catch (e) {
      // The answer to `quit` may be lost when qemu closes the socket first.
      if ((e as WritError).code !== 'HYPERVISOR_UNREACHABLE') throw e;
    }
    await ensureExited(pid, vm.paths.apiSocket, 5000);
  }

  async define(vm: VmHandle): Promise<void> {
    if ((await this.pid(vm)) === null) await this.launch(vm);
  }

  async redefine(vm: VmHandle): Promise<void> {
    await this.quit(vm);
    await this.define(vm);
  }

  async boot(vm: VmHandle): Promise<void> {
    const pid = await this.pid(vm);
    // A guest that powered itself off leaves qemu in `shutdown`; a fresh process is a clean power-on.
    if (pid !== null && (await this.status(vm)) !== 'prelaunch') await this.quit(vm);
    await this.define(vm);
    await this.qmp(vm, (q) => q.execute('cont'));
  }

  async shutdown(vm: VmHandle, opts: { graceful: boolean; timeoutMs: number }): Promise<{ graceful: boolean }> {
    let graceful = false;
    if (opts.graceful && opts.timeoutMs > 0 && (await this.status(vm)) === 'running') {
      await this.qmp(vm, (q) => q.execute('system_powerdown'));
      const deadline = Date.now() + opts.timeoutMs;
      while (Date.now() < deadline) {
        if ((await this.pid(vm)) === null || (await this.status(vm)) === 'shutdown') {
          graceful = true;
          break;
        }
        await sleep(100);
      }
    }
    await this.quit(vm);
    return { graceful };
  }

  async reboot(vm: VmHandle): Promise<void> {
    await this.qmp(vm, (q) => q.execute('system_reset'));
  }

  async pause(vm: VmHandle): Promise<void> {
    await this.qmp(vm, (q) => q.execute('stop'));
  }

  async resume(vm: VmHandle): Promise<void> {
    await this.qmp(vm, (q) => q.execute('cont'));
  }

  async hotAddDisk(vm: VmHandle, disk: ResolvedVmSpec['disks'][number]): Promise<void> {
    await this.qmp(vm, async (q) => {
      await q.execute('blockdev-add', blockdev(disk));
      try {
        await q.execute('device_add', { driver: 'virtio-blk-pci', id: disk.id, drive: nodeName(disk.id) });
      } catch (e) {
        await q.execute('blockdev-del', { 'node-name': nodeName(disk.id) }).catch(() => undefined);
        throw e;
      }
    });
  }

  async hotAddNic(vm: VmHandle, nic: ResolvedVmSpec['nics'][number]): Promise<void> {
    await this.qmp(vm, async (q) => {
      await q.execute('netdev_add', netdev(nic));
      try {
        await q.execute('device_add', { driver: 'virtio-net-pci', id: nic.id, netdev: netdevId(nic.id), mac: nic.mac });
      } catch (e) {
        await q.execute('netdev_del', { id: netdevId(nic.id) }).catch(() => undefined);
        throw e;
      }
    });
  }

  async hotRemoveDevice(vm: VmHandle, id: string, kind: 'disk' | 'nic'): Promise<void> {
    await this.qmp(vm, async (q) => {
      await q.execute('device_del', { id });
      // PCI unplug needs the guest's cooperation (ACPI); the backend can only go once the device is gone.
      const deadline = Date.now() + 15_000;
      const present = async (): Promise<boolean> =>
        (await q.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' })).some((p) => p.name === id);
      while (await present()) {
        if (Date.now() > deadline)
          throw new WritError('HYPERVISOR_API_ERROR', `the guest did not release device ${id} within 15 s`, {
            command: 'device_del',
            messages: [`device ${id} still present`],
          });
        await sleep(100);
      }
      // The device leaves /machine/peripheral a moment before it lets go of its backend: QEMU answers "is in
      // use" until then (seen on a loaded machine), so that one answer is waited out within the same deadline.
      for (;;) {
        try {
          if (kind === 'disk') await q.execute('blockdev-del', { 'node-name': nodeName(id) });
          else await q.execute('netdev_del', { id: netdevId(id) });
          return;
        } catch (e) {
          if (!/in use/i.test((e as Error).message) || Date.now() > deadline) throw e;
          await sleep(100);
        }
      }
    });
  }

  async hotResize(): Promise<void> {
    throw new WritError('VM_OPERATION_UNSUPPORTED', 'the qemu driver resizes only a VM that is not running (the new size applies at the next boot)');
  }

  async snapshot(vm: VmHandle, dir: string): Promise<void> {
    const file = shellSafePath(path.join(dir, QEMU_SNAPSHOT_FILE));
    await this.qmp(vm, async (q) => {
      const { status } = await q.execute<{ status: string }>('query-status');
      const wasRunning = status === 'running';
      if (wasRunning) await q.execute('stop');
      try {
        await q.execute('migrate', { uri: `exec:cat > '${file}'` });
        const deadline = Date.now() + 120_000;
        for (;;) {
          const m = await q.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
          if (m.status === 'completed') break;
          if (m.status === 'failed' || m.status === 'cancelled')
            throw new WritError('HYPERVISOR_API_ERROR', `qemu could not save the VM state: ${m['error-desc'] ?? m.status}`, {
              command: 'migrate',
              messages: [m['error-desc'] ?? m.status],
            });
          if (Date.now() > deadline)
            throw new WritError('HYPERVISOR_API_ERROR', 'qemu did not finish saving the VM state within 120 s', { command: 'migrate', messages: [] });
          await sleep(50);
        }
      } finally {
        if (wasRunning) await q.execute('cont');
      }
    });
  }

  async restore(vm: VmHandle, dir: string, resume: boolean): Promise<void> {
    const file = shellSafePath(path.join(dir, QEMU_SNAPSHOT_FILE));
    if (!existsSync(file)) throw new WritError('RESOURCE_NOT_FOUND', `snapshot state ${file} does not exist`);
    await this.quit(vm);
    await this.launch(vm, `exec:cat '${file}'`);
    const deadline = Date.now() + 120_000;
    for (;;) {
      const status = await this.status(vm);
      if (status !== 'inmigrate') break;
      if (Date.now() > deadline)
        throw new WritError('HYPERVISOR_API_ERROR', 'qemu did not finish loading the VM state within 120 s', { command: 'incoming', messages: [] });
      await sleep(50);
    }
    const m = await this.qmp(vm, (q) => q.execute<{ status?: string; 'error-desc'?: string }>('query-migrate'));
    if (m.status === 'failed')
      throw new WritError('HYPERVISOR_API_ERROR', `qemu could not load the VM state: ${m['error-desc'] ?? 'failed'}`, {
        command: 'incoming',
        messages: [m['error-desc'] ?? 'failed'],
      });
    if (resume) await this.qmp(vm, (q) => q.execute('cont'));
  }

  async destroy(vm: VmHandle): Promise<void> {
    await this.quit(vm);
    await rm(vm.paths.apiSocket, { force: true });
  }
}
