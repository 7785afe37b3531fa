// host.facts: what the machine is, read from /proc and /sys (no commands spawned). The runner's
// inventory and node registration use it.
import { access, readFile, readdir, readlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { assertSchema, capability, compileSchema } from '@writ/protocol';
import type { SalOperation } from '../operation.ts';

const validateNoArgs = compileSchema<Record<string, never>>(capability('host.facts')?.args ?? { type: 'object', additionalProperties: false });

export interface HostFacts {
  hostname: string;
  kernel: { release: string; version: string; arch: string };
  cpu: { model: string; cores: number; threads: number; flags: string[] };
  memory: { totalBytes: number; availableBytes: number };
  disks: { name: string; sizeBytes: number; rotational: boolean; model: string | null; serial: string | null; byId: string[] }[];
  nics: { name: string; mac: string | null; state: string; mtu: number | null; speedMbps: number | null; virtual: boolean }[];
  dmi: { vendor: string | null; product: string | null; serial: string | null; biosVersion: string | null; boardName: string | null };
  /** `hypervisor`: what this machine runs under, if virtual; `container`: the container runtime around us, if any. */
  virtualization: { kvm: boolean; hypervisor: string | null; container: string | null };
  loadAvg: number[];
  uptimeS: number;
}

async function text(p: string): Promise<string | null> {
  try {
    return (await readFile(p, 'utf8')).trim();
  } catch {
    return null;
  }
}
/** A directory's entries, sorted; none when it cannot be read (a /sys or /proc path this machine lacks). */
export async function listSorted(p: string): Promise<string[]> {
  try {
    return (await readdir(p)).sort();
  } catch {
    return [];
  }
}

async function cpuFacts(): Promise<HostFacts['cpu']> {
  const info = (await text('/proc/cpuinfo')) ?? '';
  const model = /^model name\s*:\s*(.*)$/m.exec(info)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  const flags = (/^flags\s*:\s*(.*)$/m.exec(info)?.[1] ?? '').split(/\s+/).filter(Boolean);
  const coreIds = new Set<string>();
  for (const block of info.split('\n\n')) {
    const phys = /^physical id\s*:\s*(\d+)/m.exec(block)?.[1] ?? '0';
    const core = /^core id\s*:\s*(\d+)/m.exec(block)?.[1];
    if (core !== undefined) coreIds.add(`${phys}:${core}`);
  }
  const threads = os.cpus().length;
  const wanted = ['vmx', 'svm', 'hypervisor', 'avx2', 'aes', 'sse4_2'];
  return { model, cores: coreIds.size || threads, threads, flags: flags.filter((f) => wanted.includes(f)) };
}

async function memoryFacts(): Promise<HostFacts['memory']> {
  const mem = (await text('/proc/meminfo')) ?? '';
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(mem)?.[1] ?? 0) * 1024;
  return { totalBytes: kb('MemTotal') || os.totalmem(), availableBytes: kb('MemAvailable') || os.freemem() };
}

async function diskFacts(): Promise<HostFacts['disks']> {
  const byIdDir = '/dev/disk/by-id';
  const byId = new Map<string, string[]>();
  for (const link of await listSorted(byIdDir)) {
    try {
      const target = path.basename(await readlink(path.join(byIdDir, link)));
      byId.set(target, [...(byId.get(target) ?? []), link]);
    } catch {
      /* vanished */
    }
  }
  const out: HostFacts['disks'] = [];
  for (const name of await listSorted('/sys/block')) {
    if (/^(loop|ram|zram|dm-|sr|md)/.test(name)) continue;
    const base = `/sys/block/${name}`;
    const sectors = Number((await text(`${base}/size`)) ?? 0);
    out.push({
      name,
      sizeBytes: sectors * 512,
      rotational: (await text(`${base}/queue/rotational`)) === '1',
      model: await text(`${base}/device/model`),
      serial: (await text(`${base}/device/serial`)) ?? (await text(`${base}/serial`)),
      byId: byId.get(name) ?? [],
    });
  }
  return out;
}

async function nicFacts(): Promise<HostFacts['nics']> {
  const out: HostFacts['nics'] = [];
  for (const name of await listSorted('/sys/class/net')) {
    const base = `/sys/class/net/${name}`;
    let virtual = false;
    try {
      virtual = (await readlink(base)).includes('/virtual/');
    } catch {
      /* not a link */
    }
    const speed = Number(await text(`${base}/speed`));
    const mtu = Number(await text(`${base}/mtu`));
    out.push({
      name,
      mac: await text(`${base}/address`),
      state: (await text(`${base}/operstate`)) ?? 'unknown',
      mtu: Number.isFinite(mtu) && mtu > 0 ? mtu : null,
      speedMbps: Number.isFinite(speed) && speed > 0 ? speed : null,
      virtual,
    });
  }
  return out;
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

// Container runtimes leave these marks; the order follows systemd-detect-virt's.
async function containerFact(): Promise<string | null> {
  const declared = ((await text('/proc/1/environ')) ?? '').split('\0').find((e) => e.startsWith('container='));
  if (declared) return declared.slice('container='.length) || null;
  if (await exists('/run/.containerenv')) return 'podman';
  if (await exists('/.dockerenv')) return 'docker';
  const cgroup = (await text('/proc/1/cgroup')) ?? '';
  if (/\/(docker|kubepods|lxc)\b/.test(cgroup)) return /kubepods/.test(cgroup) ? 'kubernetes' : /lxc/.test(cgroup) ? 'lxc' : 'docker';
  return null;
}

async function virtFacts(flags: string[]): Promise<HostFacts['virtualization']> {
  const kvm = (await listSorted('/dev')).includes('kvm');
  const vendor = (await text('/sys/class/dmi/id/sys_vendor')) ?? '';
  const product = (await text('/sys/class/dmi/id/product_name')) ?? '';
  let hypervisor: string | null = null;
  if (flags.includes('hypervisor')) {
    const hint = `${vendor} ${product} ${(await text('/sys/hypervisor/type')) ?? ''}`.toLowerCase();
    hypervisor = /qemu|kvm/.test(hint)
      ? 'kvm'
      : /vmware/.test(hint)
        ? 'vmware'
        : /microsoft/.test(hint)
          ? 'hyperv'
          : /xen/.test(hint)
            ? 'xen'
            : /cloud hypervisor|cloud-hypervisor/.test(hint)
              ? 'cloud-hypervisor'
              : 'unknown';
  }
  return { kvm, hypervisor, container: await containerFact() };
}

export async function hostFacts(): Promise<HostFacts> {
  const cpu = await cpuFacts();
  const [memory, disks, nics, virtualization] = await Promise.all([memoryFacts(), diskFacts(), nicFacts(), virtFacts(cpu.flags)]);
  const dmi = '/sys/class/dmi/id';
  return {
    hostname: os.hostname(),
    kernel: { release: os.release(), version: os.version(), arch: os.arch() },
    cpu,
    memory,
    disks,
    nics,
    dmi: {
      vendor: await text(`${dmi}/sys_vendor`),
      product: await text(`${dmi}/product_name`),
      serial: await text(`${dmi}/product_serial`),
      biosVersion: await text(`${dmi}/bios_version`),
      boardName: await text(`${dmi}/board_name`),
    },
    virtualization,
    loadAvg: os.loadavg(),
    uptimeS: Math.round(os.uptime()),
  };
}

/** host.facts for the runner's host table: no arguments, JSON out. */
export const HOST_OPERATIONS: readonly SalOperation<unknown, Record<string, never>, HostFacts>[] = Object.freeze([
  {
    capability: 'host.facts',
    async run(args: Record<string, never>) {
      assertSchema(validateNoArgs, args, 'host.facts arguments', 'SAL_INVALID_ARGUMENT');
      return hostFacts();
    },
  },
]);
