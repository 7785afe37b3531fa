// Node registration, heartbeats and lifecycle in the ledger. Registration proves possession of the node
// key by signing a fresh single-use challenge, bound to method, path and a hash of the inventory (T13).
// Heartbeats are signed, strictly increasing and time-checked; a sick node still reports, with health inside.
import { randomBytes } from 'node:crypto';
import {
  HEARTBEAT_PATH, KeyRing, PAYLOAD_TYPES, REGISTER_PATH, WritError, canonicalJson, keyIdOf, parseEnvelope, parseHeartbeat, parseNodeRegistration, sha256Hex,
  trustKeyB64url, verifyEnvelope, type NodeHealth, type NodeView, type JsonValue,
} from '@writ/protocol';
import { DEFAULT_DEADLINES_MS, IN_PROGRESS, takesWork, transition, type NodeEvent, type NodeState } from './lifecycle.ts';

export interface NodeRecord {
  id: string;
  keyid: string;
  publicKey: string;
  state: NodeState;
  rescuedFrom: NodeState | null;
  labels: Record<string, string>;
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
  listNodes(): Promise<NodeRecord[]>;
  insertNode(n: NodeRecord, t: NodeTransitionRecord): Promise<void>;
  updateRegistration(id: string, patch: { labels: Record<string, string>; inventory: JsonValue; version: string }): Promise<void>;
  /** Records a heartbeat only when `seq` is above the stored one; false otherwise. */
  recordHeartbeat(id: string, seq: number, at: number, health: NodeHealth): Promise<boolean>;
  /** Compare-and-set of the state; records the transition. False when the node was not in `from`. */
  setState(id: string, from: NodeState, to: NodeState, patch: { rescuedFrom: NodeState | null; deadlineAt: number | null; reason: string | null; at: number }, t: NodeTransitionRecord): Promise<boolean>;
  /** Forgets the node's key so that it can register again with a new one (the node's history stays). */
  clearKey(id: string): Promise<void>;
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
  challengeTtlMs?: number;
  deadlinesMs?: Record<string, number>;
  onTransition?: (t: NodeTransitionRecord) => Promise<void> | void;
}

const WORKABLE_TTL_MS = 200;

export class NodeRegistry {
  private readonly now: () => number;
  constructor(readonly opts: NodeRegistryOptions) {
    this.now = opts.clock ?? Date.now;
  }

  private get store(): NodeStore {
    return this.opts.store;
  }

  get unreachableAfterMs(): number {
    return this.opts.unreachableAfterMs ?? 3 * (this.opts.heartbeatMs ?? 30_000);
  }

  reachable(n: NodeRecord, at = this.now()): boolean {
    return n.lastHeartbeatAt !== null && at - n.lastHeartbeatAt <= this.unreachableAfterMs;
  }

  async challenge(nodeId: string, publicKey: string): Promise<{ challenge: string; expiresAt: number }> {
    const key = trustKeyB64url(publicKey);
    const existing = await this.store.getNode(nodeId);
    if (existing && existing.keyid && existing.keyid !== key.keyid) {
      throw new WritError('NODE_KEY_MISMATCH', `node ${nodeId} is registered with key ${existing.keyid}; an operator must run \`writ nodes rekey ${nodeId}\` before it can enrol ${key.keyid}`);
    }
    const challenge = randomBytes(32).toString('base64url');
    const expiresAt = this.now() + (this.opts.challengeTtlMs ?? 60_000);
    await this.store.putChallenge({ challenge, nodeId, keyid: key.keyid, publicKey, expiresAt });
    return { challenge, expiresAt };
  }

  /** Verifies a signed registration against the challenge issued for its key, then records or refreshes the node. */
  async register(raw: string): Promise<NodeRecord> {
    const env = parseEnvelope(raw, 2 * 1024 * 1024);
    const hint = env.signatures[0]?.keyid ?? '';
    const pending = await this.store.takeChallenge(hint); // single use, whatever happens next
    if (!pending) throw new WritError('CHALLENGE_INVALID', 'no pending challenge for this key: ask for one first (POST /v1/nodes/challenge)');
    if (pending.expiresAt < this.now()) throw new WritError('CHALLENGE_INVALID', 'the challenge expired; ask for a new one');
    const key = trustKeyB64url(pending.publicKey);
    const v = verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.nodeRegistration, keys: new KeyRing([key]), maxBytes: 2 * 1024 * 1024 });
    const reg = parseNodeRegistration(v.payload);
    if (reg.challenge !== pending.challenge) throw new WritError('CHALLENGE_INVALID', 'the registration signs another challenge');
    if (reg.nodeId !== pending.nodeId || reg.publicKey !== pending.publicKey) throw new WritError('CHALLENGE_INVALID', 'the registration names another node or key than the challenge was issued for');
    if (reg.method !== 'POST' || reg.path !== REGISTER_PATH) throw new WritError('CHALLENGE_INVALID', 'the registration is bound to another method or path');
    if (sha256Hex(canonicalJson(reg.inventory)) !== reg.inventorySha256) throw new WritError('CHALLENGE_INVALID', 'the inventory does not match its signed hash');
    const at = this.now();
    const existing = await this.store.getNode(reg.nodeId);
    if (existing) {
      if (existing.keyid && existing.keyid !== key.keyid) throw new WritError('NODE_KEY_MISMATCH', `node ${reg.nodeId} is registered with another key`);
      await this.store.updateRegistration(reg.nodeId, { labels: reg.labels, inventory: reg.inventory, version: reg.version });
      if (!existing.keyid) await this.store.insertNode({ ...existing, keyid: key.keyid, publicKey: reg.publicKey }, { nodeId: reg.nodeId, from: existing.state, to: existing.state, event: 'rekeyed', actor: `node:${reg.nodeId}`, reason: `enrolled key ${key.keyid}`, at });
      return (await this.store.getNode(reg.nodeId))!;
    }
    const node: NodeRecord = {
      id: reg.nodeId, keyid: keyIdOf(key.publicKey), publicKey: reg.publicKey, state: 'discovered', rescuedFrom: null, labels: reg.labels, inventory: reg.inventory,
      version: reg.version, registeredAt: at, stateSince: at, deadlineAt: null, reason: null, lastHeartbeatAt: null, lastSeq: 0, health: null,
    };
    const t: NodeTransitionRecord = { nodeId: node.id, from: null, to: 'discovered', event: 'register', actor: `node:${node.id}`, reason: 'registered with a signed challenge', at };
    await this.store.insertNode(node, t);
    await this.opts.onTransition?.(t);
    // It came with its inventory: it is inspected.
    await this.apply(node.id, 'inspect', { actor: `node:${node.id}`, reason: 'inventory received', byOperator: false });
    return (await this.store.getNode(node.id))!;
  }

  /** Verifies a signed heartbeat; refuses replays and stale ones; moves nodes along when their health says so. */
  async heartbeat(raw: string): Promise<{ node: NodeRecord; reachable: boolean }> {
    const env = parseEnvelope(raw, 128 * 1024);
    const node = await this.store.getNodeByKeyid(env.signatures[0]?.keyid ?? '');
    if (!node) throw new WritError('NODE_NOT_FOUND', 'no node is registered with the signing key; register first');
    const v = verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.heartbeat, keys: new KeyRing([trustKeyB64url(node.publicKey)]) });
    const hb = parseHeartbeat(v.payload);
    if (hb.nodeId !== node.id) throw new WritError('HEARTBEAT_STALE', 'the heartbeat names another node');
    if (hb.path !== HEARTBEAT_PATH) throw new WritError('HEARTBEAT_STALE', 'the heartbeat is bound to another path');
    const at = this.now();
    const skew = this.opts.maxSkewMs ?? 60_000;
    if (Math.abs(at - hb.ts) > skew) throw new WritError('HEARTBEAT_STALE', `the heartbeat is ${Math.round((at - hb.ts) / 1000)} s off our clock (at most ${skew / 1000} s)`);
    this.workableCache = null; // a heartbeat can make a node reachable again
    if (!(await this.store.recordHeartbeat(node.id, hb.seq, at, hb.health))) {
      throw new WritError('HEARTBEAT_REPLAYED', `heartbeat sequence ${hb.seq} is not above the last one seen (${node.lastSeq})`);
    }
    if (hb.health.healthy && (node.state === 'commissioned' || node.state === 'installed') && (await this.wantsActivation(node.id))) {
      await this.apply(node.id, 'activate', { actor: `node:${node.id}`, reason: 'healthy heartbeat after an operator accept', byOperator: false }).catch(() => {});
    }
    if (node.state === 'draining' && hb.health.runningJobs === 0) {
      await this.apply(node.id, 'drained', { actor: `node:${node.id}`, reason: 'no running jobs left', byOperator: false }).catch(() => {});
    }
    const fresh = (await this.store.getNode(node.id))!;
    return { node: fresh, reachable: true };
  }

  /** A commissioned node becomes active only when an operator accepted it (not when it was drained into commissioned). */
  private async wantsActivation(id: string): Promise<boolean> {
    const last = (await this.store.listTransitions(id)).filter((t) => t.from !== t.to || t.event === 'accept').at(-1);
    return last?.event === 'accept' || last?.event === 'install-done';
  }

  /** Applies a lifecycle event; throws TRANSITION_NOT_ALLOWED or NODE_NOT_FOUND. */
  async apply(id: string, event: NodeEvent, ctx: { actor: string; reason: string; byOperator: boolean }): Promise<NodeRecord> {
    const node = await this.store.getNode(id);
    if (!node) throw new WritError('NODE_NOT_FOUND', `no node ${id}`);
    const r = transition(node.state, event, { byOperator: ctx.byOperator, rescuedFrom: node.rescuedFrom });
    const at = this.now();
    const deadline = IN_PROGRESS.has(r.to) ? at + (this.opts.deadlinesMs?.[r.to] ?? DEFAULT_DEADLINES_MS[r.to] ?? 3_600_000) : null;
    const t: NodeTransitionRecord = { nodeId: id, from: r.from, to: r.to, event, actor: ctx.actor, reason: ctx.reason, at };
    this.workableCache = null;
    const ok = await this.store.setState(id, r.from, r.to, { rescuedFrom: r.to === 'rescue' ? (r.rescuedFrom ?? null) : null, deadlineAt: deadline, reason: ctx.reason, at }, t);
    if (!ok) throw new WritError('TRANSITION_NOT_ALLOWED', `node ${id} changed state meanwhile; try again`);
    await this.opts.onTransition?.(t);
    return (await this.store.getNode(id))!;
  }

  /** Fails in-progress nodes past their deadline or whose runner went silent. Run it on a timer. */
  async sweep(): Promise<NodeTransitionRecord[]> {
    const at = this.now();
    const done: NodeTransitionRecord[] = [];
    await this.store.purgeChallenges(at);
    for (const n of await this.store.listNodes()) {
      if (!IN_PROGRESS.has(n.state)) continue;
      let event: NodeEvent | null = null;
      let reason = '';
      if (n.deadlineAt !== null && at > n.deadlineAt) {
        event = 'deadline';
        reason = `${n.state} ran past its deadline (${new Date(n.deadlineAt).toISOString()})`;
      } else if (!this.reachable(n, at) && (n.state === 'draining' || (n.lastHeartbeatAt !== null && n.lastHeartbeatAt >= n.stateSince))) {
        // Its runner was alive in this state (or, draining, was serving work) and has gone silent.
        event = 'runner-lost';
        reason = `no heartbeat for ${Math.round((at - (n.lastHeartbeatAt ?? n.stateSince)) / 1000)} s while ${n.state}`;
      }
      if (!event) continue;
      try {
        const after = await this.apply(n.id, event, { actor: 'coord', reason, byOperator: false });
        done.push({ nodeId: n.id, from: n.state, to: after.state, event, actor: 'coord', reason, at });
      } catch {
        /* changed meanwhile */
      }
    }
    return done;
  }

  /** Nodes that take work now: active and heard from recently. */
  async workable(): Promise<NodeView[]> {
    const at = this.now();
    // Every dispatch asks; the answer may be up to WORKABLE_TTL_MS old (a lifecycle change drops it at once).
    if (this.workableCache && at - this.workableCache.at < WORKABLE_TTL_MS) return this.workableCache.nodes;
    const nodes = (await this.store.listNodes()).filter((n) => takesWork(n.state, this.reachable(n, at))).map((n) => ({ id: n.id, labels: n.labels }));
    this.workableCache = { at, nodes };
    return nodes;
  }
  private workableCache: { at: number; nodes: NodeView[] } | null = null;

  /** Operator: forget a node's key so it can enrol a new one (after a lost or corrupt seed). */
  async rekey(id: string, actor: string, reason: string): Promise<NodeRecord> {
    const node = await this.store.getNode(id);
    if (!node) throw new WritError('NODE_NOT_FOUND', `no node ${id}`);
    await this.store.clearKey(id);
    const t: NodeTransitionRecord = { nodeId: id, from: node.state, to: node.state, event: 'rekey', actor, reason: reason || `key ${node.keyid} forgotten`, at: this.now() };
    await this.opts.onTransition?.(t);
    return (await this.store.getNode(id))!;
  }
}
