// Node registration, heartbeats and lifecycle. Registration proves possession of the node key by signing a
// fresh single-use challenge, bound to method, path and a hash of the inventory (T13). Heartbeats are signed,
// strictly increasing and time-checked; a sick node still reports, with health inside. Liveness lives in
// memory and reaches the ledger in one batched statement every few seconds (issue 8): see docs/operations.md.
import { randomBytes } from 'node:crypto';
import {
  DEFAULT_POOL,
  HEARTBEAT_PATH,
  KeyRing,
  PAYLOAD_TYPES,
  REGISTER_PATH,
  WritError,
  canonicalJson,
  keyIdOf,
  parseEnvelope,
  parseHeartbeat,
  parseNodeRegistration,
  sha256Hex,
  trustKeyB64url,
  verifyEnvelope,
  type NodeHealth,
  type NodeView,
  type JsonValue,
  type TrustedKey,
  type PayloadType,
} from '@writ/protocol';
import type { Queryable } from '../ledger/db.ts';
import { DEFAULT_DEADLINES_MS, IN_PROGRESS, takesWork, transition, type NodeEvent, type NodeState } from './lifecycle.ts';

export interface NodeRecord {
  id: string;
  keyid: string;
  publicKey: string;
  state: NodeState;
  rescuedFrom: NodeState | null;
  labels: Record<string, string>;
  /** The node pool (enrollment assigns it; 'default' until then): the supervisors serving it get its jobs. */
  pool: string;
  inventory: JsonValue;
  version: string;
  registeredAt: number;
  stateSince: number;
  deadlineAt: number | null;
  reason: string | null;
  lastHeartbeatAt: number | null;
  lastSeq: number;
  health: NodeHealth | null;
}

/** What the registry keeps in memory per node: the ledger's row without the inventory (it can be large). */
export type NodeSummary = Omit<NodeRecord, 'inventory'>;

export interface HeartbeatRecord {
  id: string;
  keyid: string;
  seq: number;
  at: number;
  health: NodeHealth;
}

export interface NodeTransitionRecord {
  nodeId: string;
  from: NodeState | null;
  to: NodeState;
  event: string;
  actor: string;
  reason: string;
  at: number;
}

/** Persistence for nodes (the ledger implements it). Every method is atomic. */
export interface NodeStore {
  putChallenge(c: { challenge: string; nodeId: string; keyid: string; publicKey: string; expiresAt: number }): Promise<void>;
  /** Forgets challenges that expired before `at` (anyone may ask for one, so they must not pile up). */
  purgeChallenges(at: number): Promise<number>;
  /** Deletes and returns the pending challenge for this key id (single use), or null. */
  takeChallenge(keyid: string): Promise<{ challenge: string; nodeId: string; publicKey: string; expiresAt: number } | null>;
  getNode(id: string): Promise<NodeRecord | null>;
  getNodeByKeyid(keyid: string): Promise<NodeRecord | null>;
  /** Every node; `via`: read through that connection (a transaction the caller holds) instead of the store's own. */
  listNodes(via?: Queryable): Promise<NodeRecord[]>;
  /** Inserts the node (or, when it exists, sets its key) and records the transitions, in order, in one transaction. */
  insertNode(n: NodeRecord, t: NodeTransitionRecord | readonly NodeTransitionRecord[]): Promise<void>;
  updateRegistration(id: string, patch: { labels: Record<string, string>; inventory: JsonValue; version: string }): Promise<void>;
  /** Records a heartbeat only when `seq` is above the stored one; false otherwise. */
  recordHeartbeat(id: string, seq: number, at: number, health: NodeHealth): Promise<boolean>;
  /**
   * Records many nodes' latest heartbeats in one statement. A row is written only while the node still has
   * `keyid` and `seq` is above the stored one (a rekey in between wins). Returns how many rows it wrote.
   */
  recordHeartbeats(beats: readonly HeartbeatRecord[]): Promise<number>;
  /** Compare-and-set of the state; records the transition. False when the node was not in `from`. */
  setState(
    id: string,
    from: NodeState,
    to: NodeState,
    patch: { rescuedFrom: NodeState | null; deadlineAt: number | null; reason: string | null; at: number },
    t: NodeTransitionRecord,
  ): Promise<boolean>;
  /** Forgets the node's key so that it can register again with a new one (the node's history stays). */
  clearKey(id: string): Promise<void>;
  /** Enrollment: sets the labels and pool the node's assignment gives it. */
  assign(id: string, patch: { labels: Record<string, string>; pool: string }): Promise<void>;
  listTransitions(id: string): Promise<NodeTransitionRecord[]>;
}

export interface NodeRegistryOptions {
  store: NodeStore;
  clock?: () => number;
  heartbeatMs?: number;
  /** A node is unreachable after this long without a heartbeat (default 3 heartbeats). */
  unreachableAfterMs?: number;
  /** Heartbeats stamped further than this from our clock are refused (default 60 s). */
  maxSkewMs?: number;
  /**
   * How often the sweep writes the liveness held in memory to the ledger (default 2 s). After a restart the
   * ledger's sequence numbers may be this far behind; `maxSkewMs` still bounds a replay (docs/operations.md).
   */
  flushEveryMs?: number;
  /**
   * Most rows one flush statement writes (default 150); more are split evenly, with the event loop let go in
   * between. With PGlite on the coord's thread (`pgliteInProcess`), 333 rows held it ~14 ms in the nodes
   * bench and set the heartbeat p99; on its own thread the split keeps other writes from queueing behind it.
   */
  flushMaxRows?: number;
  challengeTtlMs?: number;
  deadlinesMs?: Record<string, number>;
  onTransition?: (t: NodeTransitionRecord) => Promise<void> | void;
}

/** A node as held in memory: its row (liveness ahead of the ledger) and its key, parsed once. */
interface LiveNode {
  node: NodeSummary;
  /** Built on first use per public key; dropped whenever the key changes. */
  ring: KeyRing | null;
  /** Whether a healthy heartbeat should activate it (an operator accepted it, or it finished installing); null until read. */
  awaitsActivation: boolean | null;
}

const MAX_CHALLENGED_KEYS = 10_000;

function summaryOf(n: NodeRecord): NodeSummary {
  const { inventory: _, ...rest } = n;
  return rest;
}

export class NodeRegistry {
  private readonly now: () => number;
  private readonly live = new Map<string, LiveNode>();
  private readonly idByKeyid = new Map<string, string>();
  /** Node ids by state: the sweep looks only at in-progress nodes and workable() only at active ones. */
  private readonly idsByState = new Map<NodeState, Set<string>>();
  /** Nodes whose liveness is newer in memory than in the ledger. */
  private readonly unflushed = new Set<string>();
  private loading: Promise<void> | null = null;
  private flushing: Promise<number> | null = null;
  private sweeping: Promise<NodeTransitionRecord[]> | null = null;
  private lastFlushAt: number;
  private stopped = false;
  /**
   * Keys parsed when their challenge was issued, so the registration that answers it does not parse the key
   * again (~0.4–1 ms each here). Bounded: anyone may ask for a challenge.
   */
  private readonly challengedKeys = new Map<string, { publicKey: string; key: TrustedKey; expiresAt: number }>();

  constructor(readonly opts: NodeRegistryOptions) {
    this.now = opts.clock ?? Date.now;
    this.lastFlushAt = this.now();
  }

  private get store(): NodeStore {
    return this.opts.store;
  }

  get unreachableAfterMs(): number {
    return this.opts.unreachableAfterMs ?? 3 * (this.opts.heartbeatMs ?? 30_000);
  }

  get flushEveryMs(): number {
    return this.opts.flushEveryMs ?? 2000;
  }

  /** Loads every node from the ledger, once; every other method waits for it, so calling it is optional. */
  start(): Promise<void> {
    this.loading ??= this.load().catch((e: unknown) => {
      this.loading = null; // a ledger that was not ready yet: the next call tries again
      throw e;
    });
    return this.loading;
  }

  private async load(): Promise<void> {
    for (const n of await this.store.listNodes()) this.remember(summaryOf(n));
  }

  /** Writes the liveness not yet in the ledger, then refuses nothing but flushes no more on its own. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.sweeping?.catch(() => {});
    if (this.loading) await this.flush();
  }

  private remember(n: NodeSummary): LiveNode {
    const prev = this.live.get(n.id);
    if (prev && prev.node.keyid && prev.node.keyid !== n.keyid) this.idByKeyid.delete(prev.node.keyid);
    const entry: LiveNode = { node: n, ring: prev && prev.node.publicKey === n.publicKey ? prev.ring : null, awaitsActivation: prev?.awaitsActivation ?? null };
    this.live.set(n.id, entry);
    if (n.keyid) this.idByKeyid.set(n.keyid, n.id);
    this.setState(n, prev?.node.state ?? null, n.state);
    return entry;
  }

  private setState(n: NodeSummary, from: NodeState | null, to: NodeState): void {
    if (from !== null) this.idsByState.get(from)?.delete(n.id);
    n.state = to;
    let ids = this.idsByState.get(to);
    if (!ids) this.idsByState.set(to, (ids = new Set()));
    ids.add(n.id);
  }

  private *nodesIn(states: Iterable<NodeState>): Generator<NodeSummary> {
    for (const s of states) for (const id of this.idsByState.get(s) ?? []) yield this.live.get(id)!.node;
  }

  /** Takes a row read from the ledger, keeping the liveness memory holds (it is ahead of the ledger). */
  private refresh(row: NodeRecord): LiveNode {
    const n = summaryOf(row);
    const prev = this.live.get(n.id);
    if (prev && prev.node.keyid === n.keyid && prev.node.lastSeq > n.lastSeq) {
      n.lastSeq = prev.node.lastSeq;
      n.lastHeartbeatAt = prev.node.lastHeartbeatAt;
      n.health = prev.node.health;
    }
    return this.remember(n);
  }

  private ringOf(entry: LiveNode): KeyRing {
    entry.ring ??= new KeyRing([trustKeyB64url(entry.node.publicKey)]);
    return entry.ring;
  }

  /**
   * Verifies an envelope a registered node signed with its node key (as heartbeats are): the node is found by
   * the signing key id, and the payload must be of `payloadType`. Returns the node and the verified payload.
   */
  async verifyNodeSigned(raw: string, payloadType: PayloadType): Promise<{ node: NodeSummary; payload: Uint8Array }> {
    const { entry, payload } = await this.signedByNode(raw, payloadType);
    return { node: { ...entry.node }, payload };
  }

  /** The live node whose key signed `raw`, and the verified payload of that type (heartbeats, install reports). */
  private async signedByNode(raw: string, payloadType: PayloadType): Promise<{ entry: LiveNode; payload: Uint8Array }> {
    const env = parseEnvelope(raw, 128 * 1024);
    await this.start();
    const keyid = env.signatures[0]?.keyid ?? '';
    // A node that registered through another coord on the same ledger is read from there.
    if (keyid && !this.idByKeyid.has(keyid)) {
      const row = await this.store.getNodeByKeyid(keyid);
      if (row) this.refresh(row);
    }
    const id = this.idByKeyid.get(keyid);
    const entry = id === undefined ? undefined : this.live.get(id);
    if (!entry) throw new WritError('NODE_NOT_FOUND', 'no node is registered with the signing key; register first');
    return { entry, payload: verifyEnvelope(raw, { payloadType, keys: this.ringOf(entry) }).payload };
  }

  reachable(n: Pick<NodeRecord, 'id' | 'lastHeartbeatAt'>, at = this.now()): boolean {
    // The caller may hold a row read from the ledger, which lags memory by up to a flush interval.
    const last = this.live.get(n.id)?.node.lastHeartbeatAt ?? n.lastHeartbeatAt;
    return last !== null && at - last <= this.unreachableAfterMs;
  }

  /** A node as the ledger has it, with the liveness held in memory; null when unknown. */
  async getNode(id: string): Promise<NodeRecord | null> {
    await this.start();
    const row = await this.store.getNode(id);
    return row && this.withLiveness(row);
  }

  /** Every node as the ledger has it, with the liveness held in memory. */
  async listNodes(): Promise<NodeRecord[]> {
    await this.start();
    return (await this.store.listNodes()).map((row) => this.withLiveness(row));
  }

  private withLiveness(row: NodeRecord): NodeRecord {
    const n = this.live.get(row.id)?.node;
    if (!n || n.keyid !== row.keyid || n.lastSeq <= row.lastSeq) return row;
    return { ...row, lastSeq: n.lastSeq, lastHeartbeatAt: n.lastHeartbeatAt, health: n.health };
  }

  async challenge(nodeId: string, publicKey: string): Promise<{ challenge: string; expiresAt: number }> {
    const key = trustKeyB64url(publicKey);
    await this.start();
    const existing = this.live.get(nodeId)?.node;
    if (existing && existing.keyid && existing.keyid !== key.keyid) {
      throw new WritError(
        'NODE_KEY_MISMATCH',
        `node ${nodeId} is registered with key ${existing.keyid}; an operator must run \`writ nodes rekey ${nodeId}\` before it can enrol ${key.keyid}`,
      );
    }
    const challenge = randomBytes(32).toString('base64url');
    const expiresAt = this.now() + (this.opts.challengeTtlMs ?? 60_000);
    await this.store.putChallenge({ challenge, nodeId, keyid: key.keyid, publicKey, expiresAt });
    if (this.challengedKeys.size < MAX_CHALLENGED_KEYS) this.challengedKeys.set(key.keyid, { publicKey, key, expiresAt });
    return { challenge, expiresAt };
  }

  /** Verifies a signed registration against the challenge issued for its key, then records or refreshes the node. */
  async register(raw: string): Promise<NodeRecord> {
    const env = parseEnvelope(raw, 2 * 1024 * 1024);
    await this.start();
    const hint = env.signatures[0]?.keyid ?? '';
    const pending = await this.store.takeChallenge(hint); // single use, whatever happens next
    if (!pending) throw new WritError('CHALLENGE_INVALID', 'no pending challenge for this key: ask for one first (POST /v1/nodes/challenge)');
    const parsed = this.challengedKeys.get(hint);
    this.challengedKeys.delete(hint);
    if (pending.expiresAt < this.now()) throw new WritError('CHALLENGE_INVALID', 'the challenge expired; ask for a new one');
    // The ledger's challenge row is the authority; the parsed key is used only when it is that row's key.
    const key = parsed && parsed.publicKey === pending.publicKey ? parsed.key : trustKeyB64url(pending.publicKey);
    const v = verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.nodeRegistration, keys: new KeyRing([key]), maxBytes: 2 * 1024 * 1024 });
    const reg = parseNodeRegistration(v.payload);
    if (reg.challenge !== pending.challenge) throw new WritError('CHALLENGE_INVALID', 'the registration signs another challenge');
    if (reg.nodeId !== pending.nodeId || reg.publicKey !== pending.publicKey)
      throw new WritError('CHALLENGE_INVALID', 'the registration names another node or key than the challenge was issued for');
    if (reg.method !== 'POST' || reg.path !== REGISTER_PATH) throw new WritError('CHALLENGE_INVALID', 'the registration is bound to another method or path');
    if (sha256Hex(canonicalJson(reg.inventory)) !== reg.inventorySha256)
      throw new WritError('CHALLENGE_INVALID', 'the inventory does not match its signed hash');
    const at = this.now();
    const existing = this.live.get(reg.nodeId)?.node;
    if (existing) {
      if (existing.keyid && existing.keyid !== key.keyid) throw new WritError('NODE_KEY_MISMATCH', `node ${reg.nodeId} is registered with another key`);
      await this.store.updateRegistration(reg.nodeId, { labels: reg.labels, inventory: reg.inventory, version: reg.version });
      if (!existing.keyid)
        await this.store.insertNode(
          { ...existing, inventory: reg.inventory, keyid: key.keyid, publicKey: reg.publicKey },
          {
            nodeId: reg.nodeId,
            from: existing.state,
            to: existing.state,
            event: 'rekeyed',
            actor: `node:${reg.nodeId}`,
            reason: `enrolled key ${key.keyid}`,
            at,
          },
        );
      // Re-read: the ledger is the judge of what was written when two registrations race.
      const row = (await this.store.getNode(reg.nodeId))!;
      return { ...this.refresh(row).node, inventory: row.inventory };
    }
    // It came with its inventory, so it is inspected at once: both steps recorded in one transaction.
    const inspected = transition('discovered', 'inspect', { byOperator: false }).to;
    const node: NodeRecord = {
      id: reg.nodeId,
      keyid: keyIdOf(key.publicKey),
      publicKey: reg.publicKey,
      state: inspected,
      rescuedFrom: null,
      labels: reg.labels,
      pool: DEFAULT_POOL,
      inventory: reg.inventory,
      version: reg.version,
      registeredAt: at,
      stateSince: at,
      deadlineAt: null,
      reason: 'inventory received',
      lastHeartbeatAt: null,
      lastSeq: 0,
      health: null,
    };
    const ts: NodeTransitionRecord[] = [
      { nodeId: node.id, from: null, to: 'discovered', event: 'register', actor: `node:${node.id}`, reason: 'registered with a signed challenge', at },
      { nodeId: node.id, from: 'discovered', to: inspected, event: 'inspect', actor: `node:${node.id}`, reason: 'inventory received', at },
    ];
    await this.store.insertNode(node, ts);
    const entry = this.remember(summaryOf(node));
    entry.ring = new KeyRing([key]);
    entry.awaitsActivation = false;
    for (const t of ts) await this.opts.onTransition?.(t);
    return { ...node };
  }

  /**
   * Verifies a signed heartbeat against the node's cached key; refuses replays and stale ones; moves nodes
   * along when their health says so. Touches the ledger only when it moves a node.
   */
  async heartbeat(raw: string): Promise<{ node: NodeSummary; reachable: boolean }> {
    const { entry, payload } = await this.signedByNode(raw, PAYLOAD_TYPES.heartbeat);
    const hb = parseHeartbeat(payload);
    const node = entry.node;
    if (hb.nodeId !== node.id) throw new WritError('HEARTBEAT_STALE', 'the heartbeat names another node');
    if (hb.path !== HEARTBEAT_PATH) throw new WritError('HEARTBEAT_STALE', 'the heartbeat is bound to another path');
    const at = this.now();
    const skew = this.opts.maxSkewMs ?? 60_000;
    if (Math.abs(at - hb.ts) > skew)
      throw new WritError('HEARTBEAT_STALE', `the heartbeat is ${Math.round((at - hb.ts) / 1000)} s off our clock (at most ${skew / 1000} s)`);
    // No await since the node was looked up: the check and the update below cannot interleave with another heartbeat.
    if (hb.seq <= node.lastSeq) throw new WritError('HEARTBEAT_REPLAYED', `heartbeat sequence ${hb.seq} is not above the last one seen (${node.lastSeq})`);
    node.lastSeq = hb.seq;
    node.lastHeartbeatAt = at;
    node.health = hb.health;
    this.unflushed.add(node.id);
    if (hb.health.healthy && (node.state === 'commissioned' || node.state === 'installed') && (await this.wantsActivation(entry))) {
      await this.transitionNode(node.id, 'activate', {
        actor: `node:${node.id}`,
        reason: 'healthy heartbeat after an operator accept',
        byOperator: false,
      }).catch(() => {});
    }
    if (node.state === 'draining' && hb.health.runningJobs === 0) {
      await this.transitionNode(node.id, 'drained', { actor: `node:${node.id}`, reason: 'no running jobs left', byOperator: false }).catch(() => {});
    }
    return { node: { ...(this.live.get(node.id)?.node ?? node) }, reachable: true };
  }

  /** A commissioned node becomes active only when an operator accepted it (not when it was drained into commissioned). */
  private async wantsActivation(entry: LiveNode): Promise<boolean> {
    if (entry.awaitsActivation === null) {
      const last = (await this.store.listTransitions(entry.node.id)).filter((t) => t.from !== t.to || t.event === 'accept').at(-1);
      // A transition recorded while we read sets it first, and is newer than what we read.
      entry.awaitsActivation ??= last?.event === 'accept' || last?.event === 'install-done';
    }
    return entry.awaitsActivation;
  }

  /**
   * Applies a lifecycle event; throws TRANSITION_NOT_ALLOWED or NODE_NOT_FOUND. Returns the node as this
   * event left it: a heartbeat right after may move it on (an accepted node activates itself), and the
   * operator who accepted should hear what the accept did.
   */
  async apply(id: string, event: NodeEvent, ctx: { actor: string; reason: string; byOperator: boolean }): Promise<NodeRecord> {
    const after = await this.transitionNode(id, event, ctx);
    const row = (await this.getNode(id))!;
    return { ...row, state: after.state, rescuedFrom: after.rescuedFrom, deadlineAt: after.deadlineAt, reason: after.reason, stateSince: after.stateSince };
  }

  /** The state change itself: a compare-and-set in the ledger, then memory follows what was written. */
  private async transitionNode(id: string, event: NodeEvent, ctx: { actor: string; reason: string; byOperator: boolean }): Promise<NodeSummary> {
    await this.start();
    // An operator's action is judged on the ledger's state, not on this coord's copy: another coord sharing the
    // ledger may have moved the node since this one last followed it (a drain it finished, say).
    if (ctx.byOperator) {
      const row = await this.store.getNode(id);
      if (row) this.refresh(row);
    }
    const entry = this.live.get(id);
    if (!entry) throw new WritError('NODE_NOT_FOUND', `no node ${id}`);
    const r = transition(entry.node.state, event, { byOperator: ctx.byOperator, rescuedFrom: entry.node.rescuedFrom });
    const at = this.now();
    const deadline = IN_PROGRESS.has(r.to) ? at + (this.opts.deadlinesMs?.[r.to] ?? DEFAULT_DEADLINES_MS[r.to] ?? 3_600_000) : null;
    const t: NodeTransitionRecord = { nodeId: id, from: r.from, to: r.to, event, actor: ctx.actor, reason: ctx.reason, at };
    const rescuedFrom = r.to === 'rescue' ? (r.rescuedFrom ?? null) : null;
    const ok = await this.store.setState(id, r.from, r.to, { rescuedFrom, deadlineAt: deadline, reason: ctx.reason, at }, t);
    if (!ok) {
      // Someone else moved it (a concurrent apply, or another writer): take the ledger's word for its state.
      const row = await this.store.getNode(id);
      if (row) this.refresh(row).awaitsActivation = null;
      throw new WritError('TRANSITION_NOT_ALLOWED', `node ${id} changed state meanwhile; try again`);
    }
    const n = this.live.get(id)!.node;
    this.setState(n, n.state, r.to);
    Object.assign(n, { rescuedFrom, deadlineAt: deadline, reason: ctx.reason, stateSince: at });
    // The same rule wantsActivation reads from the transition history, kept up as transitions happen.
    if (r.from !== r.to || event === 'accept') this.live.get(id)!.awaitsActivation = event === 'accept' || event === 'install-done';
    await this.opts.onTransition?.(t);
    return { ...n };
  }

  /**
   * Writes the liveness to the ledger and follows what other coords wrote there every `flushEveryMs`, then
   * fails in-progress nodes past their deadline or whose runner went silent, from memory. Run it on a timer;
   * overlapping calls share one sweep.
   */
  sweep(): Promise<NodeTransitionRecord[]> {
    this.sweeping ??= this.sweepOnce().finally(() => {
      this.sweeping = null;
    });
    return this.sweeping;
  }

  private async sweepOnce(): Promise<NodeTransitionRecord[]> {
    await this.start();
    const at = this.now();
    const done: NodeTransitionRecord[] = [];
    // The ledger is followed before anything is judged: with several coords, a node's latest heartbeats may
    // have come through another one, and a node is never failed as silent on a copy older than the ledger.
    if (!this.stopped && at - this.lastFlushAt >= this.flushEveryMs) {
      await this.flush();
      await this.store.purgeChallenges(at);
      for (const [keyid, c] of this.challengedKeys) if (c.expiresAt < at) this.challengedKeys.delete(keyid);
      await this.followLedger();
    }
    const due: { id: string; state: NodeState; event: NodeEvent; reason: string }[] = [];
    for (const n of this.nodesIn(IN_PROGRESS)) {
      if (n.deadlineAt !== null && at > n.deadlineAt) {
        due.push({ id: n.id, state: n.state, event: 'deadline', reason: `${n.state} ran past its deadline (${new Date(n.deadlineAt).toISOString()})` });
      } else if (!this.reachable(n, at) && (n.state === 'draining' || (n.lastHeartbeatAt !== null && n.lastHeartbeatAt >= n.stateSince))) {
        // Its runner was alive in this state (or, draining, was serving work) and has gone silent.
        due.push({
          id: n.id,
          state: n.state,
          event: 'runner-lost',
          reason: `no heartbeat for ${Math.round((at - (n.lastHeartbeatAt ?? n.stateSince)) / 1000)} s while ${n.state}`,
        });
      }
    }
    for (const d of due) {
      try {
        const after = await this.transitionNode(d.id, d.event, { actor: 'coord', reason: d.reason, byOperator: false });
        done.push({ nodeId: d.id, from: d.state, to: after.state, event: d.event, actor: 'coord', reason: d.reason, at });
      } catch {
        /* changed meanwhile */
      }
    }
    return done;
  }

  /**
   * Several coords share one ledger: what another coord wrote there (a node it registered, accepted, drained,
   * assigned, and the heartbeats it received) reaches this one's memory within a flush interval. A state this
   * coord changed more recently than the row it read stays as it is. Liveness matters as much as state: a node
   * whose heartbeats a load balancer sends to the other coord is heard of only through the ledger here, and
   * without it this coord would leave the node out of its fan-outs and placements, and sweep it as lost.
   */
  private async followLedger(via?: Queryable): Promise<void> {
    for (const row of await this.store.listNodes(via)) {
      const prev = this.live.get(row.id)?.node;
      if (prev && prev.stateSince > row.stateSince) continue;
      if (
        prev &&
        prev.state === row.state &&
        prev.stateSince === row.stateSince &&
        prev.keyid === row.keyid &&
        JSON.stringify([prev.labels, prev.pool]) === JSON.stringify([row.labels, row.pool])
      ) {
        // Only the liveness may differ: a newer heartbeat that another coord took goes onto this coord's entry
        // in place (the entry, and what is cached on it, stays the same object).
        if (row.lastSeq > prev.lastSeq) Object.assign(prev, { lastSeq: row.lastSeq, lastHeartbeatAt: row.lastHeartbeatAt, health: row.health });
        continue;
      }
      const entry = this.refresh(row);
      if (prev?.state !== row.state) entry.awaitsActivation = null;
    }
  }

  /** Writes every node's liveness that the ledger does not have yet, in one statement. Returns the rows written. */
  async flush(): Promise<number> {
    while (this.flushing) await this.flushing.catch(() => {});
    this.flushing = this.flushOnce().finally(() => {
      this.flushing = null;
    });
    return this.flushing;
  }

  private async flushOnce(): Promise<number> {
    this.lastFlushAt = this.now();
    const beats: HeartbeatRecord[] = [];
    for (const id of this.unflushed) {
      const n = this.live.get(id)?.node;
      if (n?.keyid && n.lastHeartbeatAt !== null && n.health) beats.push({ id, keyid: n.keyid, seq: n.lastSeq, at: n.lastHeartbeatAt, health: n.health });
    }
    this.unflushed.clear();
    const chunks = Math.ceil(beats.length / (this.opts.flushMaxRows ?? 150));
    const size = Math.ceil(beats.length / Math.max(1, chunks));
    let written = 0;
    for (let i = 0; i < beats.length; i += size) {
      // Requests waiting behind a statement are served before the next one.
      if (i > 0) await new Promise((r) => setImmediate(r));
      const chunk = beats.slice(i, i + size);
      try {
        written += await this.store.recordHeartbeats(chunk);
      } catch (e) {
        // Kept for the next flush; a heartbeat that arrived meanwhile is newer and is what gets written.
        for (const b of beats.slice(i)) this.unflushed.add(b.id);
        throw e;
      }
    }
    return written;
  }

  /** The pool a node is in (its supervisors get its jobs); `default` for a node not known here. */
  poolOf(id: string): string {
    return this.live.get(id)?.node.pool ?? DEFAULT_POOL;
  }

  /**
   * Nodes that take work now: active and heard from recently. This coord's memory lags what other coords wrote
   * to a shared ledger by up to a flush interval (a node another coord just activated is not here yet); `fresh`
   * follows the ledger first, for decisions that fix a set of nodes for good (a fan-out step's nodes); `via`
   * reads it through a transaction the caller holds (no second connection while it holds one).
   */
  async workable(opts: { fresh?: boolean; via?: Queryable } = {}): Promise<NodeView[]> {
    await this.start();
    if (opts.fresh) await this.followLedger(opts.via);
    return this.workableNow();
  }

  /**
   * The same from memory alone, without waiting: no statement, so it may be asked inside a transaction that
   * holds PGlite's one connection. Before the registry has loaded, none.
   */
  workableNow(): NodeView[] {
    const at = this.now();
    const nodes: NodeView[] = [];
    for (const n of this.nodesIn(['active'])) if (takesWork(n.state, this.reachable(n, at))) nodes.push({ id: n.id, labels: n.labels });
    return nodes;
  }

  /** Operator: forget a node's key so it can enrol a new one (after a lost or corrupt seed). */
  async rekey(id: string, actor: string, reason: string): Promise<NodeRecord> {
    await this.start();
    const entry = this.live.get(id);
    if (!entry) throw new WritError('NODE_NOT_FOUND', `no node ${id}`);
    const old = entry.node;
    await this.store.clearKey(id);
    // The old key stops working now; its sequence numbers go with it (a new key starts from 0, as in the ledger).
    this.remember({ ...old, keyid: '', publicKey: '', lastSeq: 0 });
    this.unflushed.delete(id);
    const t: NodeTransitionRecord = {
      nodeId: id,
      from: old.state,
      to: old.state,
      event: 'rekey',
      actor,
      reason: reason || `key ${old.keyid} forgotten`,
      at: this.now(),
    };
    await this.opts.onTransition?.(t);
    return (await this.getNode(id))!;
  }

  /** Enrollment: gives a node the labels and pool of its assignment; jobs by label find it from then on. */
  async assign(id: string, patch: { labels: Record<string, string>; pool: string }): Promise<NodeRecord> {
    await this.start();
    if (!this.live.has(id)) throw new WritError('NODE_NOT_FOUND', `no node ${id}`);
    await this.store.assign(id, patch);
    const row = (await this.store.getNode(id))!;
    return { ...this.refresh(row).node, inventory: row.inventory };
  }
}
