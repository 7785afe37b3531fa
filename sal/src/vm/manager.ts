// VmManager owns what both drivers share: argument validation, names and state dirs, the spec record,
// idempotency (doing a thing twice leaves one thing and says so) and one-at-a-time access per VM.
// Drivers only move a VM between states.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { assertSchema, capability, compileSchema, WritError, type JsonSchema } from '@writ/protocol';
import { checkName, confine } from '../confine.ts';
import { CloudHypervisorDriver } from './cloud-hypervisor.ts';
import { QemuDriver } from './qemu.ts';
import { waitForSerialMarker, type SerialWaitResult } from './serial.ts';
import type {
  Hypervisor,
  NormalizedVmSpec,
  ResolvedVmConfig,
  ResolvedVmSpec,
  VmConfig,
  VmDiskSpec,
  VmHandle,
  VmNicSpec,
  VmPaths,
  VmSpec,
  VmState,
} from './types.ts';

// ---- configuration ------------------------------------------------------------------------------

/** Validates and defaults a VmConfig once; the result is frozen. */
const resolvedConfigs = new WeakSet<object>();

export function resolveVmConfig(config: VmConfig | ResolvedVmConfig): ResolvedVmConfig {
  if (resolvedConfigs.has(config)) return config as ResolvedVmConfig;
  const c = config as VmConfig;
  const bad = (msg: string): never => {
    throw new WritError('CONFIG_INVALID', `vm config: ${msg}`);
  };
  if (c.driver !== 'cloud-hypervisor' && c.driver !== 'qemu') bad(`driver must be cloud-hypervisor or qemu, got ${JSON.stringify(c.driver)}`);
  for (const key of ['stateDir', 'imagesRoot', 'bootRoot'] as const) {
    const v = c[key];
    if (v === undefined && key === 'bootRoot') continue;
    if (typeof v !== 'string' || !path.isAbsolute(v) || v.includes('\0')) bad(`${key} must be an absolute path`);
  }
  // The state dir is spelled inside qemu's -qmp option, where a comma would start a new option.
  if (/[,\s]/.test(c.stateDir)) bad('stateDir must not contain commas or whitespace');
  const accel = c.accel ?? 'auto';
  if (!['auto', 'kvm', 'tcg'].includes(accel)) bad('accel must be auto, kvm or tcg');
  const positive = (v: number | undefined, dflt: number, what: string): number => {
    if (v === undefined) return dflt;
    if (!Number.isSafeInteger(v) || v <= 0) bad(`${what} must be a positive integer`);
    return v;
  };
  const resolved: ResolvedVmConfig = Object.freeze({
    driver: c.driver,
    stateDir: path.resolve(c.stateDir),
    imagesRoot: path.resolve(c.imagesRoot),
    bootRoot: path.resolve(c.bootRoot ?? c.imagesRoot),
    cloudHypervisorBinary: c.cloudHypervisorBinary ?? 'cloud-hypervisor',
    qemuBinary: c.qemuBinary ?? 'qemu-system-x86_64',
    accel,
    kvmProbeKernel: c.kvmProbeKernel ?? null,
    kvmProbeTimeoutMs: positive(c.kvmProbeTimeoutMs, 8000, 'kvmProbeTimeoutMs'),
    apiTimeoutMs: positive(c.apiTimeoutMs, 30_000, 'apiTimeoutMs'),
  });
  resolvedConfigs.add(resolved);
  return resolved;
}

// ---- argument checking --------------------------------------------------------------------------

const validators = new Map<string, ReturnType<typeof compileSchema>>();

function argsSchema(name: string): JsonSchema {
  const spec = capability(name);
  if (!spec) throw new Error(`capability ${name} is not registered`);
  return spec.args;
}

/** Validates `args` against the capability's schema (the same one the sandbox host checks). */
export function checkVmArgs<T>(capabilityName: string, args: unknown): T {
  let v = validators.get(capabilityName);
  if (!v) {
    v = compileSchema(argsSchema(capabilityName));
    validators.set(capabilityName, v);
  }
  assertSchema(v, args, `${capabilityName} arguments`, 'SAL_INVALID_ARGUMENT');
  return args as T;
}

const invalid = (msg: string, details?: Record<string, unknown>): WritError => new WritError('SAL_INVALID_ARGUMENT', msg, details);

function normalizeMac(mac: string): string {
  const lower = mac.toLowerCase();
  if ((Number.parseInt(lower.slice(0, 2), 16) & 1) === 1) throw invalid(`MAC ${mac} is a multicast address`);
  return lower;
}

function freeId(prefix: string, taken: Set<string>): string {
  for (let i = 0; ; i++) if (!taken.has(`${prefix}${i}`)) return `${prefix}${i}`;
}

/** Fills defaults so that two specs meaning the same VM compare equal, and checks what a schema cannot. */
export function normalizeVmSpec(input: unknown): NormalizedVmSpec {
  const spec = checkVmArgs<VmSpec>('vm.create', input);
  checkName(spec.name, 'VM name');
  if (!spec.kernel === !spec.firmware) throw invalid('a VM spec needs exactly one of kernel or firmware');
  if (!spec.kernel && (spec.initramfs !== undefined || spec.cmdline !== undefined)) throw invalid('initramfs and cmdline need a kernel');
  const maxVcpus = spec.maxVcpus ?? spec.vcpus;
  const maxMemoryMiB = spec.maxMemoryMiB ?? spec.memoryMiB;
  if (maxVcpus < spec.vcpus) throw invalid('maxVcpus is below vcpus');
  if (maxMemoryMiB < spec.memoryMiB) throw invalid('maxMemoryMiB is below memoryMiB');
  const explicit = new Set([...(spec.disks ?? []), ...(spec.nics ?? [])].flatMap((d) => (d.id ? [d.id] : [])));
  const taken = new Set<string>();
  const claim = (id: string | undefined, prefix: string): string => {
    const chosen = id ?? freeId(prefix, new Set([...taken, ...explicit]));
    if (taken.has(chosen)) throw invalid(`device id ${chosen} is used twice`);
    taken.add(chosen);
    return chosen;
  };
  const disks = (spec.disks ?? []).map((d) => ({ id: claim(d.id, 'disk'), path: d.path, readonly: d.readonly ?? false }));
  const nics = (spec.nics ?? []).map((n) => ({ id: claim(n.id, 'net'), tap: n.tap, mac: normalizeMac(n.mac) }));
  if (new Set(disks.map((d) => d.path)).size !== disks.length) throw invalid('a disk image is attached twice');
  if (new Set(nics.map((n) => n.tap)).size !== nics.length) throw invalid('a tap is attached twice');
  if (new Set(nics.map((n) => n.mac)).size !== nics.length) throw invalid('a MAC address is used twice');
  return {
    name: spec.name,
    vcpus: spec.vcpus,
    maxVcpus,
    memoryMiB: spec.memoryMiB,
    maxMemoryMiB,
    kernel: spec.kernel ?? null,
    initramfs: spec.initramfs ?? null,
    cmdline: spec.cmdline ?? null,
    firmware: spec.firmware ?? null,
    disks,
    nics,
  };
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

// ---- the record each VM keeps in its state dir --------------------------------------------------

interface VmRecord {
  version: 1;
  driver: ResolvedVmConfig['driver'];
  /** The spec vm.create was called with: a second create is compared with this. */
  created: NormalizedVmSpec;
  /** The spec as changed since (devices, size, a restored snapshot): what the next boot uses. */
  current: NormalizedVmSpec;
  /** Serial log size at the last boot/reboot/restore: vm.serial.wait looks from here. */
  serialOffset: number;
  createdAt: string;
}

const SOCKET_PATH_MAX = 107;

export function vmPaths(config: ResolvedVmConfig, name: string): VmPaths {
  checkName(name, 'VM name');
  const dir = path.join(config.stateDir, name);
  const apiSocket = path.join(dir, 'api.sock');
  if (Buffer.byteLength(apiSocket) > SOCKET_PATH_MAX)
    throw invalid(`VM name ${name} makes the API socket path longer than ${SOCKET_PATH_MAX} bytes under ${config.stateDir}`);
  return {
    dir,
    apiSocket,
    serialLog: path.join(dir, 'serial.log'),
    pidFile: path.join(dir, 'vmm.pid'),
    specFile: path.join(dir, 'spec.json'),
    vmmLog: path.join(dir, 'vmm.log'),
    snapshotsDir: path.join(dir, 'snapshots'),
  };
}

async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, JSON.stringify(value, null, 2) + '\n', { mode: 0o600 });
  await rename(tmp, file);
}

async function readRecord(paths: VmPaths): Promise<VmRecord | null> {
  let text: string;
  try {
    text = await readFile(paths.specFile, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  return JSON.parse(text) as VmRecord;
}

async function fileSize(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch {
    return 0;
  }
}

/** Confines every path of a spec under its root and checks that the files exist. */
export async function resolveVmSpec(config: ResolvedVmConfig, spec: NormalizedVmSpec): Promise<ResolvedVmSpec> {
  const boot = async (rel: string | null, what: string): Promise<string | null> =>
    rel === null ? null : mustExist(await confine(config.bootRoot, rel, what), what);
  return {
    ...spec,
    kernel: await boot(spec.kernel, 'kernel'),
    initramfs: await boot(spec.initramfs, 'initramfs'),
    firmware: await boot(spec.firmware, 'firmware'),
    disks: await Promise.all(
      spec.disks.map(async (d) => ({ ...d, path: mustExist(await confine(config.imagesRoot, d.path, `disk ${d.id}`), `disk ${d.id}`) })),
    ),
    nics: spec.nics.map((n) => ({ ...n, tap: checkName(n.tap, 'tap name') })),
  };
}

function mustExist(p: string, what: string): string {
  if (!existsSync(p)) throw new WritError('RESOURCE_NOT_FOUND', `${what} ${p} does not exist`);
  return p;
}

// ---- one-at-a-time per VM -----------------------------------------------------------------------

const locks = new Map<string, Promise<unknown>>();

async function exclusive<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const before = locks.get(key) ?? Promise.resolve();
  const mine = before.catch(() => undefined).then(fn);
  locks.set(key, mine);
  try {
    return await mine;
  } finally {
    if (locks.get(key) === mine) locks.delete(key);
  }
}

// ---- results ------------------------------------------------------------------------------------

export interface VmInfo {
  name: string;
  driver: ResolvedVmConfig['driver'];
  state: VmState;
  pid: number | null;
  spec: NormalizedVmSpec;
  paths: { dir: string; serialLog: string; apiSocket: string };
}

export interface VmListEntry {
  name: string;
  driver: ResolvedVmConfig['driver'];
  state: VmState | null;
  error?: string;
}

export function hypervisorFor(driver: ResolvedVmConfig['driver']): Hypervisor {
  return driver === 'qemu' ? new QemuDriver() : new CloudHypervisorDriver();
}

export class VmManager {
  readonly config: ResolvedVmConfig;
  private readonly hypervisor: Hypervisor;

  constructor(config: VmConfig | ResolvedVmConfig, hypervisor?: Hypervisor) {
    this.config = resolveVmConfig(config);
    this.hypervisor = hypervisor ?? hypervisorFor(this.config.driver);
  }

  private lock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return exclusive(path.join(this.config.stateDir, name), fn);
  }

  private async load(name: string): Promise<{ record: VmRecord; paths: VmPaths }> {
    const paths = vmPaths(this.config, name);
    const record = await readRecord(paths);
    if (!record) throw new WritError('RESOURCE_NOT_FOUND', `VM ${name} does not exist`, { name });
    if (record.driver !== this.config.driver)
      throw new WritError('RESOURCE_CONFLICT', `VM ${name} was created with the ${record.driver} driver, this node is configured for ${this.config.driver}`, {
        name,
      });
    return { record, paths };
  }

  private async handle(spec: NormalizedVmSpec, paths: VmPaths): Promise<VmHandle> {
    return { spec: await resolveVmSpec(this.config, spec), paths, config: this.config };
  }

  private save(paths: VmPaths, record: VmRecord): Promise<void> {
    return writeJsonAtomic(paths.specFile, record);
  }

  async create(args: unknown): Promise<{ name: string; created: boolean; state: VmState }> {
    const spec = normalizeVmSpec(args);
    return this.lock(spec.name, async () => {
      const paths = vmPaths(this.config, spec.name);
      const existing = await readRecord(paths);
      if (existing) {
        if (existing.driver !== this.config.driver || !sameJson(existing.created, spec)) {
          const differing = Object.keys(spec).filter(
            (k) => !sameJson((spec as unknown as Record<string, unknown>)[k], (existing.created as unknown as Record<string, unknown>)[k]),
          );
          throw new WritError('RESOURCE_CONFLICT', `VM ${spec.name} exists with a different spec`, { name: spec.name, differing, driver: existing.driver });
        }
        const { state } = await this.hypervisor.state(await this.handle(existing.current, paths));
        return { name: spec.name, created: false, state };
      }
      const vm = await this.handle(spec, paths);
      await mkdir(this.config.stateDir, { recursive: true, mode: 0o700 });
      await mkdir(paths.dir, { recursive: true, mode: 0o700 });
      await mkdir(paths.snapshotsDir, { recursive: true, mode: 0o700 });
      const record: VmRecord = { version: 1, driver: this.config.driver, created: spec, current: spec, serialOffset: 0, createdAt: new Date().toISOString() };
      try {
        await this.hypervisor.define(vm);
        await this.save(paths, record);
      } catch (e) {
        // Leave nothing half-made: a failed create can be retried from scratch.
        await this.hypervisor.destroy(vm).catch(() => undefined);
        await rm(paths.dir, { recursive: true, force: true });
        throw e;
      }
      const { state } = await this.hypervisor.state(vm);
      return { name: spec.name, created: true, state };
    });
  }

  async boot(args: unknown): Promise<{ name: string; changed: boolean; state: VmState }> {
    const { name } = checkVmArgs<{ name: string }>('vm.boot', args);
    return this.lock(name, async () => {
      const { record, paths } = await this.load(name);
      const vm = await this.handle(record.current, paths);
      const { state } = await this.hypervisor.state(vm);
      if (state === 'running') return { name, changed: false, state };
      if (state === 'paused') throw new WritError('VM_STATE_INVALID', `VM ${name} is paused; resume it instead`, { name, state });
      await this.save(paths, { ...record, serialOffset: await fileSize(paths.serialLog) });
      await this.hypervisor.boot(vm);
      return { name, changed: true, state: (await this.hypervisor.state(vm)).state };
    });
  }

  async shutdown(args: unknown): Promise<{ name: string; changed: boolean; graceful: boolean; state: VmState }> {
    const { name, graceful = true, timeoutMs = 30_000 } = checkVmArgs<{ name: string; graceful?: boolean; timeoutMs?: number }>('vm.shutdown', args);
    return this.lock(name, async () => {
      const { record, paths } = await this.load(name);
      const vm = await this.handle(record.current, paths);
      const { state } = await this.hypervisor.state(vm);
      if (state === 'shutdown' || state === 'created') return { name, changed: false, graceful: false, state };
      // A paused guest cannot act on the power button.
      const result = await this.hypervisor.shutdown(vm, { graceful: graceful && state === 'running', timeoutMs });
      return { name, changed: true, graceful: result.graceful, state: (await this.hypervisor.state(vm)).state };
    });
  }

  async reboot(args: unknown): Promise<{ name: string; state: VmState }> {
    const { name } = checkVmArgs<{ name: string }>('vm.reboot', args);
    return this.lock(name, async () => {
      const { record, paths } = await this.load(name);
      const vm = await this.handle(record.current, paths);
      const { state } = await this.hypervisor.state(vm);
      if (state !== 'running') throw new WritError('VM_STATE_INVALID', `VM ${name} is ${state}; only a running VM can be rebooted`, { name, state });
      await this.save(paths, { ...record, serialOffset: await fileSize(paths.serialLog) });
      await this.hypervisor.reboot(vm);
      return { name, state: (await this.hypervisor.state(vm)).state };
    });
  }

  async pause(args: unknown): Promise<{ name: string; changed: boolean; state: VmState }> {
    return this.transition('vm.pause', args, 'paused', 'running', (vm) => this.hypervisor.pause(vm));
  }

  async resume(args: unknown): Promise<{ name: string; changed: boolean; state: VmState }> {
    return this.transition('vm.resume', args, 'running', 'paused', (vm) => this.hypervisor.resume(vm));
  }

  private async transition(
    cap: string,
    args: unknown,
    target: VmState,
    from: VmState,
    act: (vm: VmHandle) => Promise<void>,
  ): Promise<{ name: string; changed: boolean; state: VmState }> {
    const { name } = checkVmArgs<{ name: string }>(cap, args);
    return this.lock(name, async () => {
      const { record, paths } = await this.load(name);
      const vm = await this.handle(record.current, paths);
      const { state } = await this.hypervisor.state(vm);
      if (state === target) return { name, changed: false, state };
      if (state !== from) throw new WritError('VM_STATE_INVALID', `VM ${name} is ${state}; ${cap} needs it ${from}`, { name, state });
      await act(vm);
      return { name, changed: true, state: (await this.hypervisor.state(vm)).state };
    });
  }

  async info(args: unknown): Promise<VmInfo> {
    const { name } = checkVmArgs<{ name: string }>('vm.info', args);
    const { record, paths } = await this.load(name);
    const vm = await this.handle(record.current, paths);
    const { state, pid } = await this.hypervisor.state(vm);
    return { name, driver: record.driver, state, pid, spec: record.current, paths: { dir: paths.dir, serialLog: paths.serialLog, apiSocket: paths.apiSocket } };
  }

  async delete(args: unknown): Promise<{ name: string; deleted: boolean }> {
    const { name } = checkVmArgs<{ name: string }>('vm.delete', args);
    return this.lock(name, async () => {
      const paths = vmPaths(this.config, name);
      if (!existsSync(paths.dir)) return { name, deleted: false };
      const record = await readRecord(paths);
      // Only paths matter for stopping the VMM, so a spec whose images vanished does not block deletion.
      const spec = record?.current ?? null;
      const vm: VmHandle = { spec: spec ?? ({ name } as ResolvedVmSpec), paths, config: this.config };
      await this.hypervisor.destroy(vm);
      await rm(paths.dir, { recursive: true, force: true });
      return { name, deleted: true };
    });
  }

  async addDisk(args: unknown): Promise<{ name: string; id: string; added: boolean; hotplugged: boolean }> {
    const { name, disk } = checkVmArgs<{ name: string; disk: VmDiskSpec }>('vm.disk.add', args);
    return this.lock(name, async () => {
      const { record, paths } = await this.load(name);
      const cur = record.current;
      const readonly = disk.readonly ?? false;
      const samePath = cur.disks.find((d) => d.path === disk.path);
      if (samePath && (disk.id === undefined || disk.id === samePath.id)) {
        if (samePath.readonly !== readonly)
          throw new WritError('RESOURCE_CONFLICT', `disk ${samePath.id} is attached with readonly=${samePath.readonly}`, { name, id: samePath.id });
        return { name, id: samePath.id, added: false, hotplugged: false };
      }
      const taken = new Set([...cur.disks.map((d) => d.id), ...cur.nics.map((n) => n.id)]);
      const id = disk.id ?? freeId('disk', taken);
      if (taken.has(id) || samePath)
        throw new WritError('RESOURCE_CONFLICT', `VM ${name} already has a device ${samePath ? `using ${disk.path}` : `with id ${id}`}`, { name, id });
      const next = { ...cur, disks: [...cur.disks, { id, path: disk.path, readonly }] };
      const hotplugged = await this.applyDeviceChange(record, paths, next, (vm) =>
        this.hypervisor.hotAddDisk(
          vm,
          vm.spec.disks.find((d) => d.id === id)!,
        ),
      );
      return { name, id, added: true, hotplugged };
    });
  }

  async addNic(args: unknown): Promise<{ name: string; id: string; added: boolean; hotplugged: boolean }> {
    const { name, nic } = checkVmArgs<{ name: string; nic: VmNicSpec }>('vm.net.add', args);
    return this.lock(name, async () => {
      const { record, paths } = await this.load(name);
      const cur = record.current;
      const mac = normalizeMac(nic.mac);
      const sameTap = cur.nics.find((n) => n.tap === nic.tap);
      if (sameTap && (nic.id === undefined || nic.id === sameTap.id)) {
        if (sameTap.mac !== mac)
          throw new WritError('RESOURCE_CONFLICT', `tap ${nic.tap} is attached as ${sameTap.id} with MAC ${sameTap.mac}`, { name, id: sameTap.id });
        return { name, id: sameTap.id, added: false, hotplugged: false };
      }
      const taken = new Set([...cur.disks.map((d) => d.id), ...cur.nics.map((n) => n.id)]);
      const id = nic.id ?? freeId('net', taken);
      if (taken.has(id) || sameTap || cur.nics.some((n) => n.mac === mac))
        throw new WritError('RESOURCE_CONFLICT', `VM ${name} already has a NIC with that id, tap or MAC`, { name, id });
      const next = { ...cur, nics: [...cur.nics, { id, tap: nic.tap, mac }] };
      const hotplugged = await this.applyDeviceChange(record, paths, next, (vm) =>
        this.hypervisor.hotAddNic(
          vm,
          vm.spec.nics.find((n) => n.id === id)!,
        ),
      );
      return { name, id, added: true, hotplugged };
    });
  }

  async removeDevice(args: unknown): Promise<{ name: string; id: string; removed: boolean; hotplugged: boolean }> {
    const { name, id } = checkVmArgs<{ name: string; id: string }>('vm.device.remove', args);
    return this.lock(name, async () => {
      const { record, paths } = await this.load(name);
      const cur = record.current;
      const kind = cur.disks.some((d) => d.id === id) ? 'disk' : cur.nics.some((n) => n.id === id) ? 'nic' : null;
      if (!kind) return { name, id, removed: false, hotplugged: false };
      const next = { ...cur, disks: cur.disks.filter((d) => d.id !== id), nics: cur.nics.filter((n) => n.id !== id) };
      const hotplugged = await this.applyDeviceChange(record, paths, next, (vm) => this.hypervisor.hotRemoveDevice(vm, id, kind));
      return { name, id, removed: true, hotplugged };
    });
  }

  /**
   * Running or paused: change the live VM first, then record it. Otherwise record it and redefine the
   * VM if a VMM holds the old definition. Returns whether the change was hot.
   */
  private async applyDeviceChange(record: VmRecord, paths: VmPaths, next: NormalizedVmSpec, hot: (vm: VmHandle) => Promise<void>): Promise<boolean> {
    const before = await this.handle(record.current, paths);
    const vm = await this.handle(next, paths);
    const { state, pid } = await this.hypervisor.state(before);
    if (state === 'running' || state === 'paused') {
      await hot(vm);
      await this.save(paths, { ...record, current: next });
      return true;
    }
    if (state === 'crashed') throw new WritError('VM_STATE_INVALID', `VM ${next.name} has crashed; shut it down first`, { name: next.name, state });
    await this.save(paths, { ...record, current: next });
    if (pid !== null) await this.hypervisor.redefine(vm);
    return false;
  }

  async resize(args: unknown): Promise<{ name: string; vcpus: number; memoryMiB: number; changed: boolean; live: boolean }> {
    const a = checkVmArgs<{ name: string; vcpus?: number; memoryMiB?: number }>('vm.resize', args);
    return this.lock(a.name, async () => {
      const { record, paths } = await this.load(a.name);
      const cur = record.current;
      const vcpus = a.vcpus ?? cur.vcpus;
      const memoryMiB = a.memoryMiB ?? cur.memoryMiB;
      if (vcpus > cur.maxVcpus) throw invalid(`vcpus ${vcpus} is above the VM's maxVcpus ${cur.maxVcpus}`);
      if (memoryMiB > cur.maxMemoryMiB) throw invalid(`memoryMiB ${memoryMiB} is above the VM's maxMemoryMiB ${cur.maxMemoryMiB}`);
      if (vcpus === cur.vcpus && memoryMiB === cur.memoryMiB) return { name: a.name, vcpus, memoryMiB, changed: false, live: false };
      const next = { ...cur, vcpus, memoryMiB };
      const live = await this.applyDeviceChange(record, paths, next, (vm) => this.hypervisor.hotResize(vm, { vcpus, memoryMiB }));
      return { name: a.name, vcpus, memoryMiB, changed: true, live };
    });
  }

  async snapshot(args: unknown): Promise<{ name: string; snapshot: string; created: boolean; path: string }> {
    const { name, snapshot } = checkVmArgs<{ name: string; snapshot: string }>('vm.snapshot', args);
    checkName(snapshot, 'snapshot name');
    return this.lock(name, async () => {
      const { record, paths } = await this.load(name);
      const dir = path.join(paths.snapshotsDir, snapshot);
      if (existsSync(path.join(dir, 'writ-spec.json'))) return { name, snapshot, created: false, path: dir };
      const vm = await this.handle(record.current, paths);
      const { state } = await this.hypervisor.state(vm);
      if (state !== 'running' && state !== 'paused')
        throw new WritError('VM_STATE_INVALID', `VM ${name} is ${state}; only a running or paused VM can be snapshotted`, { name, state });
      // Written under a temporary name and renamed, so a half-written snapshot is never mistaken for one.
      const partial = path.join(paths.snapshotsDir, `.${snapshot}.partial`);
      await rm(partial, { recursive: true, force: true });
      await mkdir(partial, { recursive: true, mode: 0o700 });
      try {
        await this.hypervisor.snapshot(vm, partial);
        await writeJsonAtomic(path.join(partial, 'writ-spec.json'), record.current);
        await rm(dir, { recursive: true, force: true });
        await rename(partial, dir);
      } catch (e) {
        await rm(partial, { recursive: true, force: true });
        throw e;
      }
      return { name, snapshot, created: true, path: dir };
    });
  }

  async restore(args: unknown): Promise<{ name: string; snapshot: string; state: VmState }> {
    const { name, snapshot, resume = false } = checkVmArgs<{ name: string; snapshot: string; resume?: boolean }>('vm.restore', args);
    checkName(snapshot, 'snapshot name');
    return this.lock(name, async () => {
      const { record, paths } = await this.load(name);
      const dir = path.join(paths.snapshotsDir, snapshot);
      let saved: NormalizedVmSpec;
      try {
        saved = JSON.parse(await readFile(path.join(dir, 'writ-spec.json'), 'utf8')) as NormalizedVmSpec;
      } catch {
        throw new WritError('RESOURCE_NOT_FOUND', `VM ${name} has no snapshot ${snapshot}`, { name, snapshot });
      }
      const vm = await this.handle(saved, paths);
      await this.save(paths, { ...record, current: saved, serialOffset: await fileSize(paths.serialLog) });
      await this.hypervisor.restore(vm, dir, resume);
      return { name, snapshot, state: (await this.hypervisor.state(vm)).state };
    });
  }

  async list(args: unknown = {}): Promise<{ vms: VmListEntry[] }> {
    checkVmArgs('vm.list', args);
    let names: string[];
    try {
      names = (await readdir(this.config.stateDir, { withFileTypes: true }))
        .filter((d) => d.isDirectory())
        .map((d) => d.name)
        .sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { vms: [] };
      throw e;
    }
    const vms: VmListEntry[] = [];
    for (const name of names) {
      let paths: VmPaths;
      try {
        paths = vmPaths(this.config, name);
      } catch {
        continue;
      }
      const record = await readRecord(paths);
      if (!record) continue;
      try {
        const { state } = await this.hypervisor.state({ spec: record.current, paths, config: this.config });
        vms.push({ name, driver: record.driver, state });
      } catch (e) {
        vms.push({ name, driver: record.driver, state: null, error: (e as WritError).code ?? 'INTERNAL' });
      }
    }
    return { vms };
  }

  async waitSerial(args: unknown): Promise<SerialWaitResult & { name: string }> {
    const {
      name,
      marker,
      timeoutMs,
      fromStart = false,
    } = checkVmArgs<{ name: string; marker: string; timeoutMs: number; fromStart?: boolean }>('vm.serial.wait', args);
    const { record, paths } = await this.load(name);
    const r = await waitForSerialMarker(paths.serialLog, marker, { fromOffset: fromStart ? 0 : record.serialOffset, timeoutMs });
    return { name, ...r };
  }
}
