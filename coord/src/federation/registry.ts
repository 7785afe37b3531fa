// Federation: the supervisors the coord knows and the choice among them. A supervisor exists when admins list
// its key in the key set in force; it announces itself with signed heartbeats (kept in the ledger, so every
// coord on one database sees the same supervisors), and each job goes to a healthy supervisor serving its
// node's pool. One silent for SUPERVISOR_MISSED_BEATS intervals is gone, and its pools' work goes to its peers.
// The supervisor wired in at start-up (`writ dev`'s in-process one, `writ coord --supervisor`) is pinned by the
// operator's configuration: it serves pool `default` and sends no heartbeats.
import {
  DEFAULT_POOL,
  KeyRing,
  MAX_REPORT_ENVELOPE_BYTES,
  PAYLOAD_TYPES,
  SUPERVISOR_HEARTBEAT_PATH,
  SUPERVISOR_MISSED_BEATS,
  WritError,
  errorCodeOf,
  parseEnvelope,
  parseSupervisorHeartbeat,
  toErrorJSON,
  trustKey,
  verifyEnvelope,
  type ErrorJSON,
  type HolderState,
  type KeySetHolder,
  type QueueState,
  type SupervisorHeartbeatAnswer,
  type SupervisorView,
  type Logger,
  silentLogger,
} from '@writ/protocol';
import type { DispatchItem } from '@writ/supervisor';
import type { AuditInput, Ledger } from '../ledger/index.ts';
import type { SupervisorClient } from '../supervisor-client.ts';
import { SqlSupervisorStore, type SupervisorRecord } from './store.ts';

export interface PinnedSupervisor {
  client: SupervisorClient;
  /** Public keys whose reports are accepted from it (`writ coord --supervisor-key`). */
  keys: Uint8Array[];
  pools?: string[];
  /** Where it is reached, for listings ('in-process' for `writ dev`). */
  apiUrl: string;
  /** The Redis address runners of its pools use (told to nodes at registration). */
  runnerRedis?: string | null;
}

export interface FederationOptions {
  ledger: Ledger;
  keySets: KeySetHolder;
  clusterId: string;
  pinned?: PinnedSupervisor;
  /** A client for a supervisor that announced itself at `apiUrl`. */
  connect: (id: string, apiUrl: string) => SupervisorClient;
  clock?: () => number;
  /** Heartbeats stamped further than this from our clock are refused (default 60 s). */
  maxSkewMs?: number;
  /** How often gone supervisors are marked and the ledger's rows are read again (default 1 s). */
  sweepEveryMs?: number;
  logger?: Logger;
}

/** A supervisor that can take work: its client and the pools it serves. */
interface Candidate {
  id: string;
  client: SupervisorClient;
}

/** Answers from a supervisor that say the coord cannot use it, rather than that it refused the job. */
const LINK_FAULTS: ReadonlySet<string> = new Set(['UNAUTHENTICATED', 'ROUTE_NOT_FOUND', 'NOT_READY', 'INTERNAL', 'BAD_REQUEST', 'REDIS_UNAVAILABLE']);

/** Refusals of one key are audited at most this often: a refused supervisor retries, and must not flood the log. */
const REFUSAL_AUDIT_EVERY_MS = 60_000;

function jobHash(jobId: string): number {
  let h = 0;
  for (const c of jobId) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return h;
}

export class SupervisorFederation {
  private readonly store: SqlSupervisorStore;
  private readonly now: () => number;
  private records = new Map<string, SupervisorRecord>();
  private readonly clients = new Map<string, { apiUrl: string; client: SupervisorClient }>();
  private readonly pinnedRing: KeyRing;
  private readonly refusalsAudited = new Map<string, number>();
  /** Attempts handed to each supervisor by this coord, for listings. */
  private readonly dispatched = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | null = null;

  constructor(readonly opts: FederationOptions) {
    this.store = new SqlSupervisorStore(opts.ledger.db);
    this.now = opts.clock ?? Date.now;
    this.pinnedRing = new KeyRing((opts.pinned?.keys ?? []).map((k) => trustKey(k)));
  }

  private get log(): Logger {
    return this.opts.logger ?? silentLogger;
  }

  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(
      () => void this.sweep().catch((e) => this.log.warn({ err: (e as Error).message }, 'supervisor sweep failed')),
      this.opts.sweepEveryMs ?? 1000,
    );
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private async refresh(): Promise<void> {
    this.records = new Map((await this.store.list()).map((r) => [r.id, r]));
  }

  /** Marks supervisors silent for SUPERVISOR_MISSED_BEATS intervals as gone (audited once, by whichever coord saw it first). */
  sweep(): Promise<void> {
    this.sweeping ??= (async () => {
      try {
        for (const r of await this.store.markGone(this.now(), SUPERVISOR_MISSED_BEATS)) {
          this.log.warn({ supervisor: r.id, pools: r.pools, lastHeartbeatAt: r.lastHeartbeatAt }, 'supervisor gone: its pools go to their other supervisors');
          await this.opts.ledger.appendAudit({
            kind: 'supervisor.gone',
            actor: 'coord',
            subject: r.id,
            data: { pools: r.pools, lastHeartbeatAt: new Date(r.lastHeartbeatAt).toISOString(), missedBeats: SUPERVISOR_MISSED_BEATS },
          });
        }
        await this.refresh();
      } finally {
        this.sweeping = null;
      }
    })();
    return this.sweeping;
  }

  /** The key set's entry for a supervisor id, and whether `keyid` is one of its keys. */
  private listing(id: string): { pools: string[]; keyids: Set<string> } | null {
    const entry = this.opts.keySets.current?.keySet.supervisors?.find((s) => s.id === id);
    if (!entry) return null;
    const keyids = new Set(entry.keys.map((k) => k.keyid).filter((k) => this.opts.keySets.supervisors.has(k)));
    return { pools: entry.pools, keyids };
  }

  /** Listed in the key set in force under its last key, heard from within its missed-beat window, its Redis answering. */
  private healthy(r: SupervisorRecord, at = this.now()): boolean {
    const listing = this.listing(r.id);
    return (
      r.state === 'live' && r.redisOk && at - r.lastHeartbeatAt <= SUPERVISOR_MISSED_BEATS * r.intervalMs && listing !== null && listing.keyids.has(r.keyid)
    );
  }

  private clientOf(r: SupervisorRecord): SupervisorClient {
    const held = this.clients.get(r.id);
    if (held && held.apiUrl === r.apiUrl) return held.client;
    const client = this.opts.connect(r.id, r.apiUrl);
    this.clients.set(r.id, { apiUrl: r.apiUrl, client });
    return client;
  }

  /** Healthy supervisors serving `pool`, the pinned one first when it serves it. */
  private candidates(pool: string): Candidate[] {
    const out: Candidate[] = [];
    const pinned = this.opts.pinned;
    if (pinned && (pinned.pools ?? [DEFAULT_POOL]).includes(pool)) out.push({ id: pinned.client.id, client: pinned.client });
    const at = this.now();
    for (const r of this.records.values()) {
      if (!this.healthy(r, at)) continue;
      const listed = this.listing(r.id)!.pools;
      if (r.pools.includes(pool) && listed.includes(pool)) out.push({ id: r.id, client: this.clientOf(r) });
    }
    return out;
  }

  /** Refuses a supervisor that is not listed (or claims what it is not listed for): audited, then thrown. */
  private async refuse(keyid: string, what: 'heartbeat' | 'report', message: string, supervisor?: string): Promise<never> {
    const at = this.now();
    const key = `${keyid}|${what}`;
    if ((this.refusalsAudited.get(key) ?? -Infinity) + REFUSAL_AUDIT_EVERY_MS <= at) {
      if (this.refusalsAudited.size > 10_000) this.refusalsAudited.clear();
      this.refusalsAudited.set(key, at);
      const entry: AuditInput = {
        kind: 'security',
        actor: `supervisor-key:${keyid.slice(0, 80)}`,
        subject: supervisor ?? '',
        data: { code: 'SUPERVISOR_NOT_LISTED', refused: what, reason: message },
      };
      await this.opts.ledger.appendAudit(entry).catch((e: unknown) => this.log.warn({ err: (e as Error).message }, 'could not audit a refused supervisor'));
    }
    this.log.warn({ keyid, what, supervisor, reason: message }, 'refused a supervisor that is not listed in the key set');
    throw new WritError('SUPERVISOR_NOT_LISTED', message, { keyid, ...(supervisor ? { supervisor } : {}) });
  }

  /**
   * A signed heartbeat: from a key the key set in force lists for the supervisor it names, for pools listed for
   * it, for this cluster, fresh and newer than the last one. Recorded in the ledger; a supervisor that joins
   * (first heartbeat, or back after being gone) is audited and handed the key set.
   */
  async heartbeat(raw: string): Promise<SupervisorHeartbeatAnswer> {
    const env = parseEnvelope(raw, 32 * 1024);
    const keyid = env.signatures.map((s) => s.keyid).find((k) => this.opts.keySets.supervisors.has(k));
    if (!keyid)
      return this.refuse(
        env.signatures[0]?.keyid ?? '',
        'heartbeat',
        `signed by ${env.signatures
          .map((s) => s.keyid)
          .join(', ')
          .slice(0, 200)}, which the key set in force (version ${this.opts.keySets.version}) lists for no supervisor`,
      );
    const v = verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.supervisorHeartbeat, keys: this.opts.keySets.supervisorRing, maxBytes: 32 * 1024 });
    const signer = v.signers.map((s) => this.opts.keySets.supervisors.get(s.keyid)).find((e) => e !== undefined)!;
    const hb = parseSupervisorHeartbeat(v.payload);
    if (hb.supervisor !== signer.id)
      return this.refuse(keyid, 'heartbeat', `the key set lists key ${keyid} for supervisor ${signer.id}, not ${hb.supervisor}`, hb.supervisor);
    const unlisted = hb.pools.filter((p) => !signer.pools.includes(p));
    if (unlisted.length > 0)
      return this.refuse(
        keyid,
        'heartbeat',
        `supervisor ${hb.supervisor} claims pool(s) ${unlisted.join(', ')}; the key set lists ${signer.pools.join(', ')} for it`,
        hb.supervisor,
      );
    if (hb.cluster !== this.opts.clusterId)
      throw new WritError('AUDIENCE_MISMATCH', `the heartbeat is for cluster ${hb.cluster}; this is ${this.opts.clusterId}`);
    if (hb.path !== SUPERVISOR_HEARTBEAT_PATH) throw new WritError('HEARTBEAT_STALE', 'the heartbeat is bound to another path');
    const at = this.now();
    const skew = this.opts.maxSkewMs ?? 60_000;
    if (Math.abs(at - hb.ts) > skew)
      throw new WritError('HEARTBEAT_STALE', `the heartbeat is ${Math.round((at - hb.ts) / 1000)} s off our clock (at most ${skew / 1000} s)`);
    const recorded = await this.store.recordHeartbeat({
      id: hb.supervisor,
      keyid: v.signers.find((s) => this.opts.keySets.supervisors.get(s.keyid)?.id === signer.id)!.keyid,
      apiUrl: hb.apiUrl,
      pools: hb.pools,
      queueDepth: hb.queueDepth,
      capacity: hb.capacity,
      redisOk: hb.redisOk,
      redisError: hb.redisError,
      runnerRedis: hb.runnerRedis,
      intervalMs: hb.intervalMs,
      lastTs: hb.ts,
      lastHeartbeatAt: at,
    });
    if (!recorded) throw new WritError('HEARTBEAT_REPLAYED', `a heartbeat of supervisor ${hb.supervisor} at least as new (ts ${hb.ts}) was accepted already`);
    const { before, after } = recorded;
    this.records.set(after.id, after);
    const joined = !before || before.state === 'gone' || before.apiUrl !== after.apiUrl;
    if (joined) {
      await this.opts.ledger.appendAudit({
        kind: before?.state === 'gone' ? 'supervisor.return' : 'supervisor.join',
        actor: `supervisor:${after.id}`,
        subject: after.id,
        data: { keyid: after.keyid, apiUrl: after.apiUrl, pools: after.pools },
      });
      this.log.info({ supervisor: after.id, pools: after.pools, apiUrl: after.apiUrl }, before?.state === 'gone' ? 'supervisor is back' : 'supervisor joined');
      const current = this.opts.keySets.current;
      // Its Redis may hold no key set yet (a new pool): hand it over, as the coord does at start.
      if (current)
        await this.clientOf(after)
          .setKeySet(current.raw)
          .catch((e: unknown) => this.log.warn({ supervisor: after.id, err: (e as Error).message }, 'could not hand the key set to a joining supervisor yet'));
    }
    return { state: 'live', keySetVersion: this.opts.keySets.version };
  }

  /**
   * Verifies a supervisor report's signature: by the pinned supervisor's key, or by a key the key set in force
   * lists for a supervisor (then the report must name that supervisor). Anything else is refused and audited.
   */
  async verifyReport(raw: string): Promise<{ payload: Uint8Array; listedAs: string | null }> {
    const env = parseEnvelope(raw, MAX_REPORT_ENVELOPE_BYTES);
    const keyids = env.signatures.map((s) => s.keyid);
    if (keyids.some((k) => this.pinnedRing.get(k) !== undefined)) {
      return {
        payload: verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.result, keys: this.pinnedRing, maxBytes: MAX_REPORT_ENVELOPE_BYTES }).payload,
        listedAs: null,
      };
    }
    const keyid = keyids.find((k) => this.opts.keySets.supervisors.has(k));
    if (!keyid)
      return this.refuse(
        keyids[0] ?? '',
        'report',
        `a report signed by ${keyids.join(', ').slice(0, 200)}, which is neither the pinned supervisor's key nor listed for a supervisor in the key set in force (version ${this.opts.keySets.version})`,
      );
    const v = verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.result, keys: this.opts.keySets.supervisorRing, maxBytes: MAX_REPORT_ENVELOPE_BYTES });
    return { payload: v.payload, listedAs: this.opts.keySets.supervisors.get(v.signers[0]!.keyid)!.id };
  }

  /** Refuses a report whose body names another supervisor than the key set lists for its signing key. */
  async checkReportCarrier(listedAs: string | null, named: string): Promise<void> {
    if (listedAs !== null && listedAs !== named)
      await this.refuse('', 'report', `a report names supervisor ${named} but is signed with the key the key set lists for ${listedAs}`, named);
  }

  /**
   * Hands attempts to supervisors: each to a healthy supervisor serving its node's pool (spread over a pool's
   * supervisors by job id), the next one of the pool when that one cannot be reached. A supervisor that lost its
   * key set (KEYSET_MISSING) gets it again and the items are offered once more. Per item: null when enqueued,
   * or the refusal (SUPERVISOR_UNAVAILABLE when no supervisor of the pool could take it: the reconciler retries).
   */
  async dispatchMany(items: readonly DispatchItem[], poolOf: (node: string) => string): Promise<(ErrorJSON | null)[]> {
    const out: (ErrorJSON | null)[] = new Array(items.length).fill(null);
    const byPool = new Map<string, number[]>();
    items.forEach((it, i) => {
      const pool = poolOf(it.node);
      byPool.set(pool, [...(byPool.get(pool) ?? []), i]);
    });
    await Promise.all(
      [...byPool].map(async ([pool, indexes]) => {
        const cands = this.candidates(pool);
        if (cands.length === 0) {
          for (const i of indexes)
            out[i] = { code: 'SUPERVISOR_UNAVAILABLE', message: `no healthy supervisor serves pool ${pool} (writ supervisors list)`, retryable: true };
          return;
        }
        // Each item's preferred supervisor first, then the others of the pool in order.
        let pending = indexes.map((i) => ({ i, tried: 0, start: jobHash(items[i]!.jobId) % cands.length }));
        while (pending.length > 0) {
          const bySup = new Map<number, typeof pending>();
          for (const p of pending) {
            const k = (p.start + p.tried) % cands.length;
            bySup.set(k, [...(bySup.get(k) ?? []), p]);
          }
          const next: typeof pending = [];
          await Promise.all(
            [...bySup].map(async ([k, list]) => {
              const results = await this.dispatchTo(
                cands[k]!,
                list.map((p) => items[p.i]!),
              );
              list.forEach((p, j) => {
                const r = results[j] ?? null;
                out[p.i] = r;
                if (r?.code === 'SUPERVISOR_UNAVAILABLE' && p.tried + 1 < cands.length) next.push({ ...p, tried: p.tried + 1 });
              });
            }),
          );
          pending = next;
        }
      }),
    );
    return out;
  }

  private async dispatchTo(c: Candidate, items: readonly DispatchItem[]): Promise<(ErrorJSON | null)[]> {
    let out: (ErrorJSON | null)[];
    try {
      out = await c.client.dispatchMany(items);
    } catch (e) {
      const err = toErrorJSON(e, true);
      return items.map(() =>
        errorCodeOf(e) ? err : { code: 'SUPERVISOR_UNAVAILABLE', message: `supervisor ${c.id}: ${(e as Error).message}`, retryable: true },
      );
    }
    // The link to it is broken (wrong token, an older supervisor without the route, a fault inside it): not a
    // verdict on the job, so the item goes to the pool's next supervisor, or waits for the reconciler.
    out = out.map((r) =>
      r && LINK_FAULTS.has(r.code) ? { code: 'SUPERVISOR_UNAVAILABLE', message: `supervisor ${c.id} answered ${r.code}: ${r.message}`, retryable: true } : r,
    );
    this.countDispatched(c.id, out);
    const missing = out.flatMap((r, i) => (r?.code === 'KEYSET_MISSING' ? [i] : []));
    const current = this.opts.keySets.current;
    if (missing.length === 0 || !current) return out;
    this.log.warn({ supervisor: c.id, items: missing.length }, 'the supervisor had no key set; handing it over again');
    await c.client.setKeySet(current.raw);
    const again = await c.client.dispatchMany(missing.map((i) => items[i]!));
    missing.forEach((i, k) => (out[i] = again[k] ?? null));
    this.countDispatched(c.id, again);
    return out;
  }

  private countDispatched(id: string, results: readonly (ErrorJSON | null)[]): void {
    this.dispatched.set(id, (this.dispatched.get(id) ?? 0) + results.filter((r) => r === null).length);
  }

  /** Where an attempt stands, asked of a healthy supervisor of the node's pool (a pool's supervisors share its Redis). */
  async jobState(jobId: string, attempt: number, node: string, pool: string): Promise<{ state: QueueState; failedReason?: string; held: HolderState }> {
    const cands = this.candidates(pool);
    let last: unknown = new WritError('SUPERVISOR_UNAVAILABLE', `no healthy supervisor serves pool ${pool} (writ supervisors list)`);
    for (const c of cands) {
      try {
        return await c.client.jobState(jobId, attempt, node);
      } catch (e) {
        last = e;
      }
    }
    throw last;
  }

  /** Stops a cancelled job's attempt through a healthy supervisor of the node's pool. */
  async cancel(jobId: string, attempt: number, node: string, pool: string): Promise<{ removed: boolean }> {
    let last: unknown = new WritError('SUPERVISOR_UNAVAILABLE', `no healthy supervisor serves pool ${pool} (writ supervisors list)`);
    for (const c of this.candidates(pool)) {
      try {
        return await c.client.cancel(jobId, attempt, node);
      } catch (e) {
        last = e;
      }
    }
    throw last;
  }

  /**
   * Hands a key set to every supervisor: the pinned one must take it (its refusal is the caller's error, as
   * before federation); the others are told best-effort (each is handed the set again when it next joins).
   */
  async setKeySet(raw: string): Promise<void> {
    const others = [...this.records.values()].filter((r) => this.healthy(r));
    await Promise.all(
      others.map((r) =>
        this.clientOf(r)
          .setKeySet(raw)
          .catch((e: unknown) => this.log.warn({ supervisor: r.id, err: (e as Error).message }, 'could not hand the key set to a supervisor')),
      ),
    );
    if (this.opts.pinned) await this.opts.pinned.client.setKeySet(raw);
  }

  /** Readiness: the pinned supervisor's health, or, without one, whether any supervisor is healthy. */
  async health(): Promise<{ ok: boolean; redis: boolean }> {
    if (this.opts.pinned) return this.opts.pinned.client.health();
    const any = [...this.records.values()].some((r) => this.healthy(r));
    return { ok: any, redis: any };
  }

  /** The Redis address runners of `pool` use, as a healthy supervisor of it announced (null when none did). */
  runnerRedisFor(pool: string): string | null {
    for (const r of this.records.values()) if (this.healthy(r) && r.pools.includes(pool) && r.runnerRedis) return r.runnerRedis;
    const pinned = this.opts.pinned;
    if (pinned && (pinned.pools ?? [DEFAULT_POOL]).includes(pool)) return pinned.runnerRedis ?? null;
    return null;
  }

  /** Every supervisor as GET /v1/supervisors shows it: the pinned one first, then the ledger's rows. */
  async list(): Promise<SupervisorView[]> {
    await this.refresh();
    const at = this.now();
    const views: SupervisorView[] = [];
    const pinned = this.opts.pinned;
    if (pinned) {
      const h = await pinned.client.health();
      const iso = new Date(at).toISOString();
      views.push({
        id: pinned.client.id,
        keyid: [...this.pinnedRing.all()][0]?.keyid ?? '',
        apiUrl: pinned.apiUrl,
        pools: pinned.pools ?? [DEFAULT_POOL],
        state: 'live',
        healthy: h.ok,
        listed: false,
        pinned: true,
        queueDepth: 0,
        capacity: 0,
        dispatched: this.dispatched.get(pinned.client.id) ?? 0,
        redisOk: h.redis,
        redisError: null,
        runnerRedis: pinned.runnerRedis ?? null,
        intervalMs: 0,
        firstSeenAt: iso,
        lastHeartbeatAt: iso,
        stateSince: iso,
      });
    }
    for (const r of this.records.values()) {
      const silent = at - r.lastHeartbeatAt > SUPERVISOR_MISSED_BEATS * r.intervalMs;
      views.push({
        id: r.id,
        keyid: r.keyid,
        apiUrl: r.apiUrl,
        pools: r.pools,
        state: r.state === 'gone' || silent ? 'gone' : 'live',
        healthy: this.healthy(r, at),
        listed: this.listing(r.id)?.keyids.has(r.keyid) ?? false,
        pinned: false,
        queueDepth: r.queueDepth,
        capacity: r.capacity,
        dispatched: this.dispatched.get(r.id) ?? 0,
        redisOk: r.redisOk,
        redisError: r.redisError,
        runnerRedis: r.runnerRedis,
        intervalMs: r.intervalMs,
        firstSeenAt: new Date(r.firstSeenAt).toISOString(),
        lastHeartbeatAt: new Date(r.lastHeartbeatAt).toISOString(),
        stateSince: new Date(r.stateSince).toISOString(),
      });
    }
    return views;
  }
}
