// The production driver: one `cloud-hypervisor --api-socket path=…` process per VM, driven through its
// REST API (https://github.com/cloud-hypervisor/cloud-hypervisor, vmm/src/api/openapi/cloud-hypervisor.yaml).
// Tested only against a double of that API (sal/test/doubles/cloud-hypervisor-double.ts).
import { rm, writeFile } from 'node:fs/promises';
import { WritError } from '@writ/protocol';
import { spawnDetached } from '../exec.ts';
import { ensureExited, findLivePid, sleep } from './process.ts';
import { expectSuccess, unixRequest } from './unix-http.ts';
import type { Hypervisor, ResolvedVmSpec, VmHandle, VmPaths, VmRuntime, VmState } from './types.ts';

const MIB = 1024 * 1024;

/** The body of PUT /vm.create for a spec (schema `VmConfig`). */
export function cloudHypervisorVmConfig(spec: ResolvedVmSpec, paths: VmPaths): Record<string, unknown> {
  const payload: Record<string, string> = {};
  if (spec.firmware) payload.firmware = spec.firmware;
  if (spec.kernel) payload.kernel = spec.kernel;
  if (spec.initramfs) payload.initramfs = spec.initramfs;
  if (spec.cmdline !== null) payload.cmdline = spec.cmdline;
  const memory: Record<string, unknown> = { size: spec.memoryMiB * MIB };
  if (spec.maxMemoryMiB > spec.memoryMiB) memory.hotplug_size = (spec.maxMemoryMiB - spec.memoryMiB) * MIB;
  return {
    cpus: { boot_vcpus: spec.vcpus, max_vcpus: spec.maxVcpus },
    memory,
    payload,
    ...(spec.disks.length ? { disks: spec.disks.map(diskConfig) } : {}),
    ...(spec.nics.length ? { net: spec.nics.map(netConfig) } : {}),
    serial: { mode: 'File', file: paths.serialLog },
    console: { mode: 'Off' },
  };
}

function diskConfig(d: ResolvedVmSpec['disks'][number]): Record<string, unknown> {
  return { path: d.path, readonly: d.readonly, id: d.id };
}

function netConfig(n: ResolvedVmSpec['nics'][number]): Record<string, unknown> {
  return { tap: n.tap, mac: n.mac, id: n.id };
}

const STATES: Record<string, VmState> = { Created: 'created', Running: 'running', Paused: 'paused', Shutdown: 'shutdown', BreakPoint: 'paused' };

export class CloudHypervisorDriver implements Hypervisor {
  readonly driver = 'cloud-hypervisor' as const;

  private async api(vm: VmHandle, method: 'GET' | 'PUT', endpoint: string, body?: unknown): Promise<unknown> {
    const res = await unixRequest(vm.paths.apiSocket, method, `/api/v1/${endpoint}`, body, vm.config.apiTimeoutMs);
    return expectSuccess(res, endpoint);
  }

  private async vmmPid(vm: VmHandle): Promise<number | null> {
    return findLivePid(vm.paths.pidFile, vm.paths.apiSocket);
  }

  /** vm.info's state, or null when the VMM runs without a VM defined (after vm.delete, or before vm.create). */
  private async apiState(vm: VmHandle): Promise<VmState | null> {
    const res = await unixRequest(vm.paths.apiSocket, 'GET', '/api/v1/vm.info', undefined, vm.config.apiTimeoutMs);
    if (res.status === 404) return null;
    const info = expectSuccess(res, 'vm.info') as { state?: string };
    const state = STATES[info.state ?? ''];
    if (!state)
      throw new WritError('HYPERVISOR_API_ERROR', `vm.info reported an unknown state ${JSON.stringify(info.state)}`, { endpoint: 'vm.info', messages: [] });
    return state;
  }

  async state(vm: VmHandle): Promise<VmRuntime> {
    const pid = await this.vmmPid(vm);
    if (pid === null) return { state: 'shutdown', pid: null };
    return { state: (await this.apiState(vm)) ?? 'shutdown', pid };
  }

  /** Starts an empty VMM and waits until it answers vmm.ping. */
  private async startVmm(vm: VmHandle): Promise<number> {
    const existing = await this.vmmPid(vm);
    if (existing !== null) return existing;
    // A socket left by a dead VMM would make the new one fail to bind.
    await rm(vm.paths.apiSocket, { force: true });
    const { pid } = await spawnDetached([vm.config.cloudHypervisorBinary, '--api-socket', `path=${vm.paths.apiSocket}`], { logFile: vm.paths.vmmLog });
    await writeFile(vm.paths.pidFile, `${pid}\n`, { mode: 0o600 });
    const deadline = Date.now() + Math.max(5000, vm.config.apiTimeoutMs);
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        await this.api(vm, 'GET', 'vmm.ping');
        return pid;
      } catch (e) {
        last = e;
        if ((e as WritError).code !== 'HYPERVISOR_UNREACHABLE') throw e;
      }
      await sleep(50);
    }
    await ensureExited(pid, vm.paths.apiSocket, 0);
    throw new WritError('HYPERVISOR_UNREACHABLE', `cloud-hypervisor did not answer vmm.ping on ${vm.paths.apiSocket}`, {
      socket: vm.paths.apiSocket,
      cause: String((last as Error | undefined)?.message ?? ''),
    });
  }

  async define(vm: VmHandle): Promise<void> {
    await this.startVmm(vm);
    if ((await this.apiState(vm)) === null) await this.api(vm, 'PUT', 'vm.create', cloudHypervisorVmConfig(vm.spec, vm.paths));
  }

  async redefine(vm: VmHandle): Promise<void> {
    if ((await this.vmmPid(vm)) !== null && (await this.apiState(vm)) !== null) await this.api(vm, 'PUT', 'vm.delete');
    await this.define(vm);
  }

  async boot(vm: VmHandle): Promise<void> {
    await this.define(vm);
    await this.api(vm, 'PUT', 'vm.boot');
  }

  async shutdown(vm: VmHandle, opts: { graceful: boolean; timeoutMs: number }): Promise<{ graceful: boolean }> {
    if (opts.graceful && opts.timeoutMs > 0) {
      await this.api(vm, 'PUT', 'vm.power-button');
      const deadline = Date.now() + opts.timeoutMs;
      while (Date.now() < deadline) {
        if ((await this.apiState(vm)) === 'shutdown') return { graceful: true };
        await sleep(100);
      }
    }
    await this.api(vm, 'PUT', 'vm.shutdown');
    return { graceful: false };
  }

  async reboot(vm: VmHandle): Promise<void> {
    await this.api(vm, 'PUT', 'vm.reboot');
  }

  async pause(vm: VmHandle): Promise<void> {
    await this.api(vm, 'PUT', 'vm.pause');
  }

  async resume(vm: VmHandle): Promise<void> {
    await this.api(vm, 'PUT', 'vm.resume');
  }

  async hotAddDisk(vm: VmHandle, disk: ResolvedVmSpec['disks'][number]): Promise<void> {
    await this.api(vm, 'PUT', 'vm.add-disk', diskConfig(disk));
  }

  async hotAddNic(vm: VmHandle, nic: ResolvedVmSpec['nics'][number]): Promise<void> {
    await this.api(vm, 'PUT', 'vm.add-net', netConfig(nic));
  }

  async hotRemoveDevice(vm: VmHandle, id: string): Promise<void> {
    await this.api(vm, 'PUT', 'vm.remove-device', { id });
  }

  async hotResize(vm: VmHandle, to: { vcpus: number; memoryMiB: number }): Promise<void> {
    await this.api(vm, 'PUT', 'vm.resize', { desired_vcpus: to.vcpus, desired_ram: to.memoryMiB * MIB });
  }

  async snapshot(vm: VmHandle, dir: string): Promise<void> {
    // cloud-hypervisor snapshots only a paused VM.
    const wasRunning = (await this.apiState(vm)) === 'running';
    if (wasRunning) await this.api(vm, 'PUT', 'vm.pause');
    try {
      await this.api(vm, 'PUT', 'vm.snapshot', { destination_url: `file://${dir}` });
    } finally {
      if (wasRunning) await this.api(vm, 'PUT', 'vm.resume');
    }
  }

  async restore(vm: VmHandle, dir: string, resume: boolean): Promise<void> {
    // vm.restore needs a VMM without a VM.
    await this.startVmm(vm);
    if ((await this.apiState(vm)) !== null) await this.api(vm, 'PUT', 'vm.delete');
    await this.api(vm, 'PUT', 'vm.restore', { source_url: `file://${dir}`, resume });
  }

  async destroy(vm: VmHandle): Promise<void> {
    const pid = await this.vmmPid(vm);
    if (pid === null) return;
    try {
      if ((await this.apiState(vm)) !== null) await this.api(vm, 'PUT', 'vm.delete');
      await this.api(vm, 'PUT', 'vmm.shutdown');
    } catch (e) {
      // A VMM that cannot be asked to stop is killed below; any other answer is still an error worth seeing.
      if ((e as WritError).code !== 'HYPERVISOR_UNREACHABLE') throw e;
    }
    await ensureExited(pid, vm.paths.apiSocket, 5000);
    await rm(vm.paths.apiSocket, { force: true });
  }
}
