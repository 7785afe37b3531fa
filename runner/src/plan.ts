// `writ plan`: a dry run of a script in the runner's own sandbox against a recording SAL. Every host call
// takes the path a real one takes (the guest prelude, the sandbox worker's capability and schema check, the
// bounded JSON boundary, the broker's second check on this thread) and then, instead of reaching a SAL, is
// recorded and answered: reads from this machine's host facts (or a fixture), effects with a planned,
// schema-shaped placeholder that later calls can use (docs/plan.md). Nothing on the node changes.
import { createHash } from 'node:crypto';
import { CAPABILITIES, WritError, isEffect, isErrorCode, parseStrictJson, toErrorJSON, type ErrorCode, type ErrorJSON, type JsonValue } from '@writ/protocol';
import {
  DEFAULT_CLONE_DIR,
  DEFAULT_DISK_FILE,
  checkLinkName,
  checkNetnsName,
  netConfig,
  normalizeVmSpec,
  type NetConfig,
  type NormalizedVmSpec,
  type VmManager,
  type addAddress,
  type addRoute,
  type cloneDisk,
  type createSubvolume,
  type deleteAddress,
  type deleteBridge,
  type deleteNetns,
  type deleteRoute,
  type deleteSubvolume,
  type deleteTap,
  type deleteVeth,
  type ensureBridge,
  type ensureNetns,
  type ensureTap,
  type ensureVeth,
  type execInNetns,
  type formatPool,
  type limitQgroup,
  type listLinks,
  type listNetns,
  type listRoutes,
  type listSubvolumes,
  type mountPool,
  type myceliumAddPeer,
  type myceliumInfo,
  type myceliumPeers,
  type myceliumRemovePeer,
  type myceliumRoutes,
  type myceliumStart,
  type myceliumStop,
  type myceliumWorkloadAddress,
  type nixBuild,
  type nixCopyIn,
  type nixCopyOut,
  type nixGenerations,
  type nixProfileRollback,
  type nixProfileSet,
  type nixSwitch,
  type poolUsage,
  type receiveSubvolume,
  type sendSubvolume,
  type setLink,
  type showQgroups,
  type showSubvolume,
  type snapshotSubvolume,
  type unmountPool,
} from '@writ/sal';
import { HostBroker, defaultHostTable, type HostFunction, type HostTable } from './broker.ts';
import type { SalHostConfig } from './sal-table.ts';
import { checkShape } from './sandbox/boundary.ts';
import { SandboxPool } from './sandbox/pool.ts';
import { DEFAULT_BOUNDARY_LIMITS, type HostCallJob, type LogLevel, type SandboxLimits } from './sandbox/types.ts';

/** Where a recorded call's answer came from: this machine (host facts, clock, randomness), the fixture, or a placeholder. */
export type PlanAnswerSource = 'host' | 'fixture' | 'planned';

/** One host call the script made, in the order calls reached the host side. */
export interface PlannedCall {
  /** 1, 2, 3 … in the order the calls arrived. */
  seq: number;
  /** How the script called it: `ctx.sal.vm.create`. */
  call: string;
  /** The capability the call needs (what `--caps` must list). */
  capability: string;
  /** The arguments as the SAL would receive them, after the sandbox's checks. */
  args: JsonValue;
  /** `effect` changes the node when it runs for real (journaled, fenced); `read` only looks. */
  kind: 'effect' | 'read';
  /** Dangerous capabilities may need k-of-n signers. */
  dangerous: boolean;
  /** What the script was given back; absent when the fixture made the call fail. */
  answer?: JsonValue;
  answerFrom: PlanAnswerSource;
  /** The failure the fixture gave this call, as the script saw it. */
  error?: ErrorJSON;
}

export interface PlanLogLine {
  level: LogLevel;
  message: string;
  /** Calls recorded before this line arrived: the line comes after call `afterCall` (0: before any call). */
  afterCall: number;
}

/**
 * Answers a fixture gives for a capability: one answer for every call, a list used one per call in order
 * (calls past its end are answered as if the fixture did not name the capability), or an error every call
 * fails with.
 */
export type PlanFixtureEntry =
  { answer: JsonValue } | { answers: JsonValue[] } | { error: { code: ErrorCode; message: string; details?: Record<string, unknown> } };
export type PlanFixture = Record<string, PlanFixtureEntry>;

export interface PlanOptions {
  /** The script: an ES module whose default export is `async function (args, ctx)`. */
  source: string;
  args?: JsonValue;
  /** Capabilities granted to the run; undefined grants every capability (the plan then says which were used). */
  caps?: readonly string[];
  fixture?: PlanFixture;
  /** `ctx.job.id` (default `plan`). */
  jobId?: string;
  limits?: Partial<SandboxLimits>;
  pins?: { nix?: string[] };
  /** The host functions that answer reads for real (default: this machine's host.facts, time.now, random.bytes). */
  hostTable?: HostTable;
  /**
   * The capabilities the node offers (the keys of its host table, e.g. from its `--config` file); a call of
   * any other fails with HOST_CALL_DENIED as on that node. Default: every capability.
   */
  available?: ReadonlySet<string>;
  /**
   * The node's SAL configuration (its config file's `sal`): with a net area, link and namespace names are
   * checked against its prefix by the net SAL's own checks, as on that node.
   */
  salConfig?: SalHostConfig;
  /** Host calls recorded before the plan stops the script (default 10 000): a loop that never ends here would flood the list. */
  maxCalls?: number;
}

export interface Plan {
  sha256: string;
  /** The granted list, or null when every capability was granted. */
  caps: string[] | null;
  /** Every call in arrival order, effects and reads. */
  calls: PlannedCall[];
  /** Capabilities the calls used, sorted: what `writ sign --caps` needs. */
  capabilitiesUsed: string[];
  logs: PlanLogLine[];
  outcome: { ok: true; result: JsonValue } | { ok: false; error: ErrorJSON };
  durationMs: number;
}

const DEFAULT_LIMITS: SandboxLimits = { timeoutMs: 30_000, memoryMiB: 64 };
const DEFAULT_MAX_CALLS = 10_000;
/** Reads that this machine answers for real when the fixture does not: they have no effect anywhere. */
const HOST_READS: ReadonlySet<string> = new Set(['host.facts', 'time.now', 'random.bytes']);

const ENTRY_FORMS = '{"answer": …}, {"answers": […]} or {"error": {"code", "message"}}';

/** The fixture document's error: `what` names the part that is wrong. */
function fixtureInvalid(what: string, message: string, details: Record<string, unknown> = {}): WritError {
  return new WritError('PLAN_FIXTURE_INVALID', `${what}: ${message}`, details);
}

/**
 * Checks a fixture document (already parsed JSON): an object mapping capability names to
 * `{answer}`, `{answers: [...]}` or `{error: {code, message}}`, every answer bounded JSON as the sandbox takes it.
 */
export function parsePlanFixture(value: unknown, what = 'the fixture'): PlanFixture {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw fixtureInvalid(what, `must be a JSON object mapping capability names (e.g. "host.facts") to ${ENTRY_FORMS}`);
  }
  const out: PlanFixture = {};
  for (const [name, entry] of Object.entries(value as Record<string, unknown>)) {
    if (!CAPABILITIES.has(name)) throw fixtureInvalid(what, `${JSON.stringify(name)} is not a capability`, { capability: name });
    const at = `${what}, ${name}`;
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry))
      throw fixtureInvalid(at, `must be an object: ${ENTRY_FORMS}`, { capability: name });
    const keys = Object.keys(entry);
    if (keys.length !== 1 || !['answer', 'answers', 'error'].includes(keys[0]!)) {
      throw fixtureInvalid(
        at,
        `must have exactly one of "answer", "answers" or "error"; it has ${keys.length ? keys.map((k) => JSON.stringify(k)).join(', ') : 'none'}`,
        { capability: name },
      );
    }
    const e = entry as Record<string, unknown>;
    const bounded = (v: unknown, where: string) => {
      try {
        checkShape(v, DEFAULT_BOUNDARY_LIMITS, where);
      } catch (err) {
        throw fixtureInvalid(at, (err as Error).message, { capability: name });
      }
    };
    if ('answer' in e) {
      bounded(e.answer, 'the answer');
      out[name] = { answer: e.answer as JsonValue };
    } else if ('answers' in e) {
      if (!Array.isArray(e.answers) || e.answers.length === 0)
        throw fixtureInvalid(at, '"answers" must be a non-empty array (one answer per call, in order)', { capability: name });
      e.answers.forEach((a, i) => bounded(a, `answer ${i + 1}`));
      out[name] = { answers: e.answers as JsonValue[] };
    } else {
      const err = e.error as Record<string, unknown> | null;
      if (typeof err !== 'object' || err === null || Array.isArray(err))
        throw fixtureInvalid(at, '"error" must be an object {"code", "message"}', { capability: name });
      if (!isErrorCode(err.code))
        throw fixtureInvalid(at, `"error.code" must be a Writ error code (docs/errors.md); got ${JSON.stringify(err.code)}`, { capability: name });
      if (typeof err.message !== 'string') throw fixtureInvalid(at, '"error.message" must be a string', { capability: name });
      const extra = Object.keys(err).filter((k) => !['code', 'message', 'details'].includes(k));
      if (extra.length) throw fixtureInvalid(at, `"error" has unknown field(s) ${extra.join(', ')}`, { capability: name });
      const details = err.details;
      if (details !== undefined && (typeof details !== 'object' || details === null || Array.isArray(details)))
        throw fixtureInvalid(at, '"error.details" must be an object', { capability: name });
      bounded(err, 'the error');
      out[name] = { error: { code: err.code, message: err.message, ...(details ? { details: details as Record<string, unknown> } : {}) } };
    }
  }
  return out;
}

/** Parses fixture text (strict JSON: no duplicate keys, no lone surrogates …) and checks it. */
export function parsePlanFixtureText(text: string, what = 'the fixture'): PlanFixture {
  let value: JsonValue;
  try {
    value = parseStrictJson(text, { maxBytes: 4 * 1024 * 1024 });
  } catch (e) {
    throw fixtureInvalid(what, `is not valid JSON: ${(e as Error).message}`, { reason: (e as { code?: unknown }).code ?? null });
  }
  return parsePlanFixture(value, what);
}

// ---------------------------------------------------------------------------------------------------------
// Planned answers. A placeholder has the type the real SAL call returns (each entry is checked against the SAL
// function's own return type, below), with the values a first run on a clean node would give (`created: true`,
// `changed: true`), so that a script reading a field gets one. Strings only the node can know (uuids, absolute
// paths) are marked as planned. The world below remembers what earlier planned effects made, so that, e.g.,
// vm.info after vm.create and vm.boot describes that VM, running. vm.create checks its spec with the VM SAL's
// own normalizeVmSpec (what a schema cannot say: kernel or firmware, maxima, duplicate devices), as the node will.

const PLANNED = 'planned';

type Out<F extends (...args: any[]) => Promise<unknown>> = Awaited<ReturnType<F>>;

/** What each SAL operation returns: the SAL functions' own types, so a placeholder that drifts fails the type-check. */
interface SalResults {
  'time.sleep': null;
  'btrfs.pool.format': Out<typeof formatPool>;
  'btrfs.pool.mount': Out<typeof mountPool>;
  'btrfs.pool.unmount': Out<typeof unmountPool>;
  'btrfs.usage': Out<typeof poolUsage>;
  'btrfs.subvolume.create': Out<typeof createSubvolume>;
  'btrfs.subvolume.delete': Out<typeof deleteSubvolume>;
  'btrfs.subvolume.list': Out<typeof listSubvolumes>;
  'btrfs.subvolume.show': Out<typeof showSubvolume>;
  'btrfs.snapshot': Out<typeof snapshotSubvolume>;
  'btrfs.qgroup.limit': Out<typeof limitQgroup>;
  'btrfs.qgroup.show': Out<typeof showQgroups>;
  'btrfs.send': Out<typeof sendSubvolume>;
  'btrfs.receive': Out<typeof receiveSubvolume>;
  'btrfs.disk.clone': Out<typeof cloneDisk>;
  'net.bridge.ensure': Out<typeof ensureBridge>;
  'net.bridge.delete': Out<typeof deleteBridge>;
  'net.tap.ensure': Out<typeof ensureTap>;
  'net.tap.delete': Out<typeof deleteTap>;
  'net.veth.ensure': Out<typeof ensureVeth>;
  'net.veth.delete': Out<typeof deleteVeth>;
  'net.netns.ensure': Out<typeof ensureNetns>;
  'net.netns.delete': Out<typeof deleteNetns>;
  'net.netns.list': Out<typeof listNetns>;
  'net.netns.exec': Out<typeof execInNetns>;
  'net.addr.add': Out<typeof addAddress>;
  'net.addr.delete': Out<typeof deleteAddress>;
  'net.route.add': Out<typeof addRoute>;
  'net.route.delete': Out<typeof deleteRoute>;
  'net.route.list': Out<typeof listRoutes>;
  'net.link.set': Out<typeof setLink>;
  'net.link.list': Out<typeof listLinks>;
  'vm.create': Out<VmManager['create']>;
  'vm.boot': Out<VmManager['boot']>;
  'vm.shutdown': Out<VmManager['shutdown']>;
  'vm.reboot': Out<VmManager['reboot']>;
  'vm.pause': Out<VmManager['pause']>;
  'vm.resume': Out<VmManager['resume']>;
  'vm.info': Out<VmManager['info']>;
  'vm.delete': Out<VmManager['delete']>;
  'vm.disk.add': Out<VmManager['addDisk']>;
  'vm.net.add': Out<VmManager['addNic']>;
  'vm.device.remove': Out<VmManager['removeDevice']>;
  'vm.resize': Out<VmManager['resize']>;
  'vm.snapshot': Out<VmManager['snapshot']>;
  'vm.restore': Out<VmManager['restore']>;
  'vm.list': Out<VmManager['list']>;
  'vm.serial.wait': Out<VmManager['waitSerial']>;
  'mycelium.start': Out<typeof myceliumStart>;
  'mycelium.stop': Out<typeof myceliumStop>;
  'mycelium.info': Out<typeof myceliumInfo>;
  'mycelium.peers': Out<typeof myceliumPeers>;
  'mycelium.peer-add': Out<typeof myceliumAddPeer>;
  'mycelium.peer-remove': Out<typeof myceliumRemovePeer>;
  'mycelium.routes': Out<typeof myceliumRoutes>;
  'mycelium.workload-address': Out<typeof myceliumWorkloadAddress>;
  'nix.build': Out<typeof nixBuild>;
  'nix.copy-out': Out<typeof nixCopyOut>;
  'nix.copy-in': Out<typeof nixCopyIn>;
  'nix.profile-set': Out<typeof nixProfileSet>;
  'nix.profile-rollback': Out<typeof nixProfileRollback>;
  'nix.generations': Out<typeof nixGenerations>;
  'nix.switch': Out<typeof nixSwitch>;
}

type VmState = SalResults['vm.info']['state'];

interface PlannedVm {
  spec: NormalizedVmSpec;
  state: VmState;
}

class PlannedWorld {
  readonly vms = new Map<string, PlannedVm>();
  private ids = 0;

  /** A uuid-shaped placeholder, distinct per call: 00000000-0000-4000-8000-00000000000N. */
  uuid(): string {
    return `00000000-0000-4000-8000-${String(++this.ids).padStart(12, '0')}`;
  }

  vmInfo(name: string): SalResults['vm.info'] {
    const vm = this.vms.get(name);
    const dir = `<${PLANNED}: vm dir>/${name}`;
    return {
      name,
      driver: 'cloud-hypervisor',
      state: vm?.state ?? 'running',
      pid: null,
      spec: vm?.spec ?? normalizeVmSpec({ name, vcpus: 1, memoryMiB: 256, kernel: `<${PLANNED}: kernel>` }),
      paths: { dir, serialLog: `${dir}/serial.log`, apiSocket: `${dir}/api.sock` },
    };
  }

  /** A planned VM moves to `to`; `changed` as the SAL would say it (a VM the plan did not create is assumed to move). */
  transition(name: string, to: VmState): { changed: boolean } {
    const vm = this.vms.get(name);
    if (!vm) return { changed: true };
    const changed = vm.state !== to;
    vm.state = to;
    return { changed };
  }
}

type Args = Record<string, JsonValue>;
type Answer = (args: Args, world: PlannedWorld) => JsonValue;
type Planned = { [K in keyof SalResults]: (args: Args, world: PlannedWorld) => SalResults[K] };

const MYCELIUM_INFO = { nodeSubnet: `<${PLANNED}: mycelium subnet>`, nodeIp: `<${PLANNED}: mycelium address>`, nodePubkey: `<${PLANNED}: mycelium key>` };
const str = (v: JsonValue | undefined, fallback = ''): string => (typeof v === 'string' ? v : fallback);
const strOrNull = (v: JsonValue | undefined): string | null => (typeof v === 'string' ? v : null);
const strings = (v: JsonValue | undefined): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
const netns = (a: Args): string | null => strOrNull(a.netns);
const numOrNull = (v: JsonValue | undefined): number | null => (typeof v === 'number' ? v : null);

const PLANNED_TYPED: Planned = {
  'time.sleep': () => null,

  'btrfs.pool.format': (a, w) => ({ target: str(a.device ?? a.image), formatted: true, uuid: w.uuid(), label: strOrNull(a.label), sizeBytes: 0 }),
  'btrfs.pool.mount': (a) => ({
    mount: `<${PLANNED}: pool root>`,
    device: str(a.device, `<${PLANNED}: loop device>`),
    mounted: true,
    loopAttached: a.image !== undefined,
  }),
  'btrfs.pool.unmount': () => ({ mount: `<${PLANNED}: pool root>`, unmounted: true, detached: null }),
  'btrfs.usage': () => ({
    mount: `<${PLANNED}: pool root>`,
    deviceSizeBytes: 0,
    allocatedBytes: 0,
    unallocatedBytes: 0,
    usedBytes: 0,
    freeEstimatedBytes: 0,
    freeEstimatedMinBytes: null,
    dataRatio: 1,
    metadataRatio: 1,
    globalReserveBytes: 0,
    data: null,
    metadata: null,
    system: null,
  }),
  'btrfs.subvolume.create': (a) => ({ path: str(a.path), created: true }),
  'btrfs.subvolume.delete': (a) => ({ path: str(a.path), deleted: true, removed: [str(a.path)] }),
  'btrfs.subvolume.list': () => ({ subvolumes: [] }),
  'btrfs.subvolume.show': (a, w) => ({
    path: str(a.path),
    name: str(a.path).split('/').pop() ?? '',
    uuid: w.uuid(),
    parentUuid: null,
    receivedUuid: null,
    id: 256,
    generation: 1,
    parentId: 5,
    topLevelId: 5,
    readOnly: false,
    flags: [],
    createdAt: null,
    snapshots: [],
  }),
  'btrfs.snapshot': (a, w) => ({ source: str(a.source), path: str(a.dest), created: true, readOnly: a.readOnly === true, uuid: w.uuid() }),
  'btrfs.qgroup.limit': (a) => ({
    path: str(a.path),
    quotaEnabled: true,
    qgroup: {
      qgroupid: '0/256',
      referencedBytes: 0,
      exclusiveBytes: 0,
      path: str(a.path),
      maxReferencedBytes: numOrNull(a.maxReferencedBytes),
      maxExclusiveBytes: numOrNull(a.maxExclusiveBytes),
    },
  }),
  'btrfs.qgroup.show': () => ({ enabled: false, qgroups: [] }),
  'btrfs.send': (a) => ({ path: str(a.path), stream: str(a.stream), written: true, sizeBytes: 0 }),
  'btrfs.receive': (a, w) => ({
    stream: str(a.stream),
    path: `${str(a.dir)}/<${PLANNED}: received name>`,
    received: true,
    uuid: w.uuid(),
    receivedUuid: w.uuid(),
  }),
  // The clone lands in <dir>/<name> of the pool (sal/src/btrfs/subvolume.ts, default dir "disks").
  'btrfs.disk.clone': (a, w) => {
    const rel = `${str(a.dir, DEFAULT_CLONE_DIR)}/${str(a.name)}`;
    return { path: rel, diskPath: `<${PLANNED}: pool root>/${rel}/${str(a.file, DEFAULT_DISK_FILE)}`, created: true, baseUuid: w.uuid(), uuid: w.uuid() };
  },

  'net.bridge.ensure': (a) => ({ name: str(a.name), netns: netns(a), created: true, changed: true }),
  'net.bridge.delete': (a) => ({ name: str(a.name), netns: netns(a), deleted: true }),
  'net.tap.ensure': (a) => ({ name: str(a.name), netns: netns(a), created: true, changed: true, owner: null, bridge: strOrNull(a.bridge) }),
  'net.tap.delete': (a) => ({ name: str(a.name), netns: netns(a), deleted: true }),
  'net.veth.ensure': (a) => ({
    name: str(a.name),
    peer: str(a.peer),
    netns: netns(a),
    peerNetns: a.peerNetns === undefined ? netns(a) : strOrNull(a.peerNetns),
    created: true,
    changed: true,
  }),
  'net.veth.delete': (a) => ({ name: str(a.name), netns: netns(a), deleted: true }),
  'net.netns.ensure': (a) => ({ name: str(a.name), created: true }),
  'net.netns.delete': (a) => ({ name: str(a.name), deleted: true }),
  'net.netns.list': () => ({ namespaces: [] }),
  'net.netns.exec': (a) => ({ name: str(a.name), argv: strings(a.argv), exitCode: 0, ok: true, stdout: '', stderr: '' }),
  'net.addr.add': (a) => ({ dev: str(a.dev), address: str(a.address), netns: netns(a), added: true }),
  'net.addr.delete': (a) => ({ dev: str(a.dev), address: str(a.address), netns: netns(a), deleted: true }),
  'net.route.add': (a) => ({
    route: { destination: str(a.destination), via: strOrNull(a.via), dev: strOrNull(a.dev), metric: numOrNull(a.metric), protocol: 'static', scope: null },
    netns: netns(a),
    added: true,
  }),
  'net.route.delete': (a) => ({ destination: str(a.destination), netns: netns(a), deleted: true }),
  'net.route.list': (a) => ({ netns: netns(a), routes: [] }),
  'net.link.set': (a) => ({
    name: str(a.name),
    netns: netns(a),
    changed: true,
    link: {
      name: str(a.name),
      index: 0,
      kind: null,
      up: a.up !== false,
      operState: 'UNKNOWN',
      mtu: typeof a.mtu === 'number' ? a.mtu : 1500,
      mac: null,
      master: strOrNull(a.master),
      owner: null,
      addresses: [],
    },
  }),
  'net.link.list': (a) => ({ netns: netns(a), links: [] }),

  'vm.create': (a, w) => {
    // The VM SAL's own check and normal form: SAL_INVALID_ARGUMENT for what the schema lets through.
    const spec = normalizeVmSpec(a);
    const known = w.vms.get(spec.name);
    if (known && JSON.stringify(known.spec) !== JSON.stringify(spec)) {
      throw new WritError('RESOURCE_CONFLICT', `VM ${spec.name} exists with a different spec (created earlier in this plan)`, { name: spec.name });
    }
    if (!known) w.vms.set(spec.name, { spec, state: 'created' });
    return { name: spec.name, created: !known, state: known?.state ?? 'created' };
  },
  'vm.boot': (a, w) => ({ name: str(a.name), ...w.transition(str(a.name), 'running'), state: 'running' }),
  'vm.shutdown': (a, w) => ({ name: str(a.name), ...w.transition(str(a.name), 'shutdown'), graceful: a.graceful !== false, state: 'shutdown' }),
  'vm.reboot': (a) => ({ name: str(a.name), state: 'running' }),
  'vm.pause': (a, w) => ({ name: str(a.name), ...w.transition(str(a.name), 'paused'), state: 'paused' }),
  'vm.resume': (a, w) => ({ name: str(a.name), ...w.transition(str(a.name), 'running'), state: 'running' }),
  'vm.info': (a, w) => w.vmInfo(str(a.name)),
  'vm.delete': (a, w) => {
    w.vms.delete(str(a.name));
    return { name: str(a.name), deleted: true };
  },
  'vm.disk.add': (a) => ({ name: str(a.name), id: str((a.disk as Args | undefined)?.id, 'disk1'), added: true, hotplugged: false }),
  'vm.net.add': (a) => ({ name: str(a.name), id: str((a.nic as Args | undefined)?.id, 'net1'), added: true, hotplugged: false }),
  'vm.device.remove': (a) => ({ name: str(a.name), id: str(a.id), removed: true, hotplugged: false }),
  'vm.resize': (a, w) => {
    const spec = w.vms.get(str(a.name))?.spec;
    return {
      name: str(a.name),
      vcpus: numOrNull(a.vcpus) ?? spec?.vcpus ?? 1,
      memoryMiB: numOrNull(a.memoryMiB) ?? spec?.memoryMiB ?? 256,
      changed: true,
      live: false,
    };
  },
  'vm.snapshot': (a) => ({
    name: str(a.name),
    snapshot: str(a.snapshot),
    created: true,
    path: `<${PLANNED}: vm dir>/${str(a.name)}/snapshots/${str(a.snapshot)}`,
  }),
  'vm.restore': (a) => ({ name: str(a.name), snapshot: str(a.snapshot), state: 'paused' }),
  'vm.list': (_a, w) => ({ vms: [...w.vms].map(([name, vm]) => ({ name, driver: 'cloud-hypervisor' as const, state: vm.state })) }),
  'vm.serial.wait': (a) => ({ name: str(a.name), found: true, offset: 0, elapsedMs: 0 }),

  'mycelium.start': (a) => ({ started: true, pid: 0, keyCreated: true, info: MYCELIUM_INFO, peersAdded: strings(a.peers) }),
  'mycelium.stop': () => ({ stopped: true }),
  'mycelium.info': () => MYCELIUM_INFO,
  'mycelium.peers': () => [],
  'mycelium.peer-add': (a) => ({ endpoint: str(a.endpoint), added: true }),
  'mycelium.peer-remove': (a) => ({ endpoint: str(a.endpoint), removed: true }),
  'mycelium.routes': () => [],
  'mycelium.workload-address': (a) => ({
    name: str(a.name),
    address: `<${PLANNED}: workload address>`,
    subnet: `<${PLANNED}: mycelium subnet>`,
    prefixLength: 64,
  }),

  'nix.build': () => ({ outPaths: [] }),
  'nix.copy-out': (a) => ({ to: str(a.to), paths: strings(a.paths), signed: true }),
  'nix.copy-in': (a) => ({ copied: strings(a.paths), present: [] }),
  'nix.profile-set': (a) => ({ changed: true, generation: 1, path: str(a.path) }),
  'nix.profile-rollback': () => ({ from: 2, to: 1, path: null }),
  'nix.generations': (a) => ({ profile: str(a.profile), current: null, generations: [] }),
  'nix.switch': (a) => ({ changed: true, path: str(a.path), generation: 1, previous: null, activationMs: 0, healthMs: 0 }),
};

/**
 * The net SAL's name checks (sal/src/net: checkLinkName, checkNetnsName), made as its operations make them
 * before running `ip`: a host link outside the node's prefix is PATH_ESCAPE there, and here with --config.
 */
const NET_CHECKS: Readonly<Record<string, (config: NetConfig, a: Args) => void>> = (() => {
  const ns = (c: NetConfig, v: JsonValue | undefined): string | undefined => (v === undefined ? undefined : checkNetnsName(c, v));
  const link = (c: NetConfig, a: Args): void => void checkLinkName(c, a.name, ns(c, a.netns));
  const dev = (c: NetConfig, a: Args): void => void checkLinkName(c, a.dev, ns(c, a.netns), 'dev');
  const namespace = (c: NetConfig, a: Args): void => void checkNetnsName(c, a.name, 'name');
  const listIn = (c: NetConfig, a: Args): void => void ns(c, a.netns);
  return {
    'net.bridge.ensure': link,
    'net.bridge.delete': link,
    'net.tap.delete': link,
    'net.veth.delete': link,
    'net.tap.ensure': (c, a) => {
      const n = ns(c, a.netns);
      checkLinkName(c, a.name, n);
      if (a.bridge !== undefined) checkLinkName(c, a.bridge, n, 'bridge');
    },
    'net.veth.ensure': (c, a) => {
      const n = ns(c, a.netns);
      const peerNs = a.peerNetns === undefined ? n : ns(c, a.peerNetns);
      checkLinkName(c, a.name, n);
      checkLinkName(c, a.peer, peerNs, 'peer');
    },
    'net.link.set': (c, a) => {
      const n = ns(c, a.netns);
      checkLinkName(c, a.name, n);
      if (a.master !== undefined && a.master !== null) checkLinkName(c, a.master, n, 'master');
    },
    'net.netns.ensure': namespace,
    'net.netns.delete': namespace,
    'net.netns.exec': namespace,
    'net.addr.add': dev,
    'net.addr.delete': dev,
    'net.route.add': dev,
    'net.route.delete': dev,
    'net.route.list': listIn,
    'net.link.list': listIn,
  };
})();

/** Placeholder answers by capability. Every capability the registry has is here (a test holds it to that). */
export const PLANNED_ANSWERS: Readonly<Record<string, Answer>> = Object.freeze(PLANNED_TYPED as unknown as Record<string, Answer>);

function salName(capability: string): string {
  return `ctx.sal.${capability}`;
}

/**
 * The recording SAL: a host table with an entry for every capability in the registry. Each entry records the
 * call and answers it from the fixture, this machine (HOST_READS) or a planned placeholder; none has an effect.
 */
function recordingTable(
  calls: PlannedCall[],
  fixture: PlanFixture,
  real: HostTable,
  available: ReadonlySet<string> | undefined,
  sal: SalHostConfig | undefined,
): HostTable {
  const world = new PlannedWorld();
  const net = sal?.net ? netConfig(sal.net) : undefined;
  const used = new Map<string, number>();
  const table: HostTable = new Map();
  for (const [name, spec] of CAPABILITIES) {
    if (available && !available.has(name)) continue;
    const fn: HostFunction = {
      async run(args: JsonValue, job: HostCallJob) {
        const record: PlannedCall = {
          seq: calls.length + 1,
          call: salName(name),
          capability: name,
          args,
          kind: isEffect(name) ? 'effect' : 'read',
          dangerous: spec.dangerous,
          answerFrom: 'planned',
        };
        calls.push(record);
        const n = used.get(name) ?? 0;
        used.set(name, n + 1);
        const given = fixture[name];
        let answer: JsonValue | undefined;
        try {
          // The SAL's own argument checks that need no node state come first, whatever then answers the call.
          if (name === 'vm.create') normalizeVmSpec(args);
          if (net) NET_CHECKS[name]?.(net, args as Args);
          if (given && 'error' in given) {
            record.answerFrom = 'fixture';
            throw new WritError(given.error.code, given.error.message, given.error.details);
          }
          if (given && 'answer' in given) answer = given.answer;
          else if (given && 'answers' in given && n < given.answers.length) answer = given.answers[n];
          if (answer !== undefined) {
            record.answerFrom = 'fixture';
          } else if (HOST_READS.has(name) && real.has(name)) {
            record.answerFrom = 'host';
            answer = await real.get(name)!.run(args, job);
          } else {
            const planned = PLANNED_ANSWERS[name];
            answer = planned ? planned(args as Args, world) : null;
          }
        } catch (e) {
          // A refusal by the SAL's checks, the fixture's error, or this host's failure: listed, and the script sees it.
          record.error = toErrorJSON(e, true);
          throw e;
        }
        record.answer = answer;
        return answer;
      },
    };
    table.set(name, fn);
  }
  return table;
}

/**
 * Runs `source` once in a one-thread sandbox pool against the recording SAL and returns what it did. Never
 * throws for anything the script does: a script failure is the plan's outcome, with the calls made before it.
 */
export async function planScript(opts: PlanOptions): Promise<Plan> {
  const calls: PlannedCall[] = [];
  const logs: PlanLogLine[] = [];
  const caps = opts.caps ? [...opts.caps] : [...CAPABILITIES.keys()];
  const recording = recordingTable(calls, opts.fixture ?? {}, opts.hostTable ?? defaultHostTable(), opts.available, opts.salConfig);
  const broker = new HostBroker(recording);
  const maxCalls = opts.maxCalls ?? DEFAULT_MAX_CALLS;
  const jobId = opts.jobId ?? 'plan';
  let stopped = false;
  const limits = { ...DEFAULT_LIMITS, ...opts.limits };
  const pool = new SandboxPool({
    size: 1,
    recycleAfterJobs: 1,
    warmMemoryMiB: limits.memoryMiB,
    // The broker's own check (capability granted, arguments match the registry's schema) runs here too, as on a node.
    hostCall: async (job, name, args) => {
      // A script that polls (`while (state !== 'running')`) against answers that never change would loop
      // until its deadline: stop it at the cap, with the calls so far, instead of listing thousands.
      if (calls.length >= maxCalls) {
        const why = `writ plan stopped the script after ${maxCalls} host calls (a loop waiting for an answer the plan does not change? give one with --fixture)`;
        if (!stopped) stopped = pool.cancel(job.jobId, job.attempt, why);
        return null;
      }
      return broker.call(job, name, args);
    },
    onLog: (_job, level, message) => logs.push({ level, message, afterCall: calls.length }),
  });
  try {
    const outcome = await pool.run({
      jobId,
      attempt: 1,
      source: opts.source,
      args: opts.args ?? null,
      caps,
      limits,
      ...(opts.pins ? { pins: opts.pins } : {}),
    });
    return {
      sha256: createHash('sha256').update(opts.source, 'utf8').digest('hex'),
      caps: opts.caps ? [...opts.caps] : null,
      calls,
      capabilitiesUsed: [...new Set(calls.map((c) => c.capability))].sort(),
      logs,
      outcome: outcome.ok ? { ok: true, result: outcome.value } : { ok: false, error: outcome.error },
      durationMs: outcome.durationMs,
    };
  } finally {
    await pool.close();
  }
}
