// The supervisor: admits jobs (verify, authorise), enqueues one BullMQ job per target node, publishes the
// signed key set for runners, and forwards what runners report to the coord as signed reports.
import { Queue } from 'bullmq';
import { Cluster, Redis } from 'ioredis';
import { backoffDelay, newRedisClient, silentLogger, type Logger } from '@writ/protocol'; // REDIS_URL: plain, Sentinel or Cluster
import {
  BULL_PREFIX,
  KeySetHolder,
  PAYLOAD_TYPES,
  QUEUE_JOB_NAME,
  WritError,
  encodeEnvelope,
  encodeSupervisorReport,
  pickByJobId,
  queueJobData,
  queueJobId,
  queueNames,
  REPORT_TARGET_BYTES,
  readEventStreamEntry,
  redisKeys,
  signEnvelope,
  targetMatchesNode,
  toErrorJSON,
  type ErrorJSON,
  type HolderState,
  type JobPayload,
  type QueueState,
  type ReportEntry,
  type SupervisorReport,
  type KeyPair,
  type KeyRef,
  type NodeView,
} from '@writ/protocol';
import { admitEnvelope, type Admitted } from './admission.ts';
import { assertRedisSafe } from './redis-check.ts';

export interface ReportSink {
  /** Delivers one signed report envelope; must throw when it was not durably accepted. */
  deliver(reportEnvelope: string): Promise<void>;
}

export type { Logger };

export interface SupervisorOptions {
  id: string;
  clusterId: string;
  redisUrl: string;
  signingKey: KeyPair;
  /** Pinned admins who may sign the first key set this supervisor accepts (later ones chain from it). */
  admins: { threshold: number; keys: KeyRef[] };
  sink: ReportSink;
  logger?: Logger;
  /** A node is live when its heartbeat is younger than this. */
  nodeLivenessMs?: number;
  nowS?: () => number;
  /** Production mode refuses an unsafe Redis (eviction on) instead of warning (R7). */
  production?: boolean;
  /**
   * Stream entries another supervisor of the same Redis read but left unacknowledged this long (it died, or
   * cannot reach the coord) are claimed and carried by this one (default 30 s). Supervisors of one pool share
   * one consumer group, so each entry is carried by one of them at a time.
   */
  claimIdleMs?: number;
  /**
   * Read the runner-event stream from the start (default true). A federated supervisor starts with false and
   * collects only once the coord accepted its heartbeat: one the coord refuses must not hold events its peers
   * would carry (they could claim them back only after `claimIdleMs`, and it would read them again).
   */
  collectEvents?: boolean;
}

export type { QueueState };

/** One attempt to put on a node's queue. */
export interface DispatchItem {
  jobId: string;
  node: string;
  envelope: string;
  /** The attempt number the ledger assigned. */
  attempt: number;
  /** Hold the entry back this long (a retry's backoff). */
  delayMs?: number;
}

/** A batch answer carries up to 500 refusals: each keeps at most 4 KiB of message and of details. */
function boundedRefusal(e: ErrorJSON): ErrorJSON {
  const message = e.message.length > 4096 ? `${e.message.slice(0, 4093)}...` : e.message;
  const details = e.details && JSON.stringify(e.details).length <= 4096 ? { details: e.details } : {};
  return { code: e.code, message, retryable: e.retryable, ...details };
}

export class Supervisor {
  readonly keySets: KeySetHolder;
  private readonly redis: Redis;
  private readonly reader: Redis;
  private readonly queues = new Map<string, Queue>();
  private readonly log: Logger;
  private stopping = false;
  private pump: Promise<void> | undefined;
  private reportSeq = 0;
  private repairTimer: NodeJS.Timeout | undefined;
  private collecting: boolean;

  private constructor(readonly opts: SupervisorOptions) {
    this.log = opts.logger ?? silentLogger;
    this.collecting = opts.collectEvents ?? true;
    this.keySets = new KeySetHolder({ cluster: opts.clusterId, admins: opts.admins });
    this.redis = newRedisClient({ Redis, Cluster }, opts.redisUrl, { maxRetriesPerRequest: null, lazyConnect: true });
    this.reader = newRedisClient({ Redis, Cluster }, opts.redisUrl, { maxRetriesPerRequest: null, lazyConnect: true });
    for (const r of [this.redis, this.reader]) r.on('error', (e) => this.log.warn({ err: e.message }, 'redis connection error'));
  }

  static async start(opts: SupervisorOptions): Promise<Supervisor> {
    const s = new Supervisor(opts);
    await s.redis.connect();
    try {
      await assertRedisSafe(s.redis, opts.production ?? false, (m) => s.log.warn({}, m));
    } catch (e) {
      s.redis.disconnect();
      throw e;
    }
    await s.reader.connect();
    await s.ensureGroup();
    await s.loadKeySetFromRedis();
    s.pump = s.pumpEvents();
    s.repairTimer = setInterval(() => void s.repair().catch(() => {}), 2000);
    s.repairTimer.unref();
    return s;
  }

  get keyid(): string {
    return this.opts.signingKey.keyid;
  }

  private async ensureGroup(): Promise<void> {
    try {
      await this.redis.xgroup('CREATE', redisKeys.events(), redisKeys.eventsGroup(), '0', 'MKSTREAM');
    } catch (e) {
      if (!String((e as Error).message).includes('BUSYGROUP')) throw e;
    }
  }

  private nowS(): number {
    return this.opts.nowS?.() ?? Math.floor(Date.now() / 1000);
  }

  private async loadKeySetFromRedis(): Promise<void> {
    const raw = await this.redis.get(redisKeys.keySet());
    if (!raw) return;
    try {
      this.keySets.accept(raw, this.nowS());
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'the key set in Redis was not accepted; waiting for the coord to publish one');
    }
  }

  /** Redis is a cache: when it lost the key set (restart without data, FLUSHALL), publish it again. */
  private async repair(): Promise<void> {
    const held = this.keySets.current;
    if (!held) return;
    if ((await this.redis.exists(redisKeys.keySet())) === 0) {
      await this.redis.multi().set(redisKeys.keySet(), held.raw).incr(redisKeys.keySetVersion()).exec();
      this.log.warn({ version: held.keySet.version }, 'Redis had lost the key set; published it again');
    }
  }

  /**
   * Verifies a signed key set against the one held (or the pinned admins), adopts it when newer, and
   * publishes the envelope for runners, which verify it again themselves.
   */
  async setKeySet(raw: string): Promise<{ version: number; changed: boolean }> {
    const changed = this.keySets.accept(raw, this.nowS());
    if (changed || (await this.redis.get(redisKeys.keySet())) !== raw) {
      await this.redis.multi().set(redisKeys.keySet(), raw).incr(redisKeys.keySetVersion()).exec();
    }
    return { version: this.keySets.version, changed };
  }

  private queue(node: string): Queue {
    let q = this.queues.get(node);
    if (!q) {
      q = new Queue(queueNames.node(node), { connection: this.redis, prefix: BULL_PREFIX });
      this.queues.set(node, q);
    }
    return q;
  }

  async liveNodes(): Promise<NodeView[]> {
    const since = Date.now() - (this.opts.nodeLivenessMs ?? 15_000);
    const ids = await this.redis.zrangebyscore(redisKeys.nodes(), since, '+inf');
    if (ids.length === 0) return [];
    const pipe = this.redis.pipeline();
    for (const id of ids) pipe.hget(redisKeys.node(id), 'labels');
    const res = (await pipe.exec()) ?? [];
    return ids.map((id, i) => ({ id, labels: JSON.parse((res[i]?.[1] as string | null) ?? '{}') as Record<string, string> }));
  }

  private nodeCache: { at: number; nodes: NodeView[] } = { at: 0, nodes: [] };
  private async nodesFresh(): Promise<NodeView[]> {
    if (Date.now() - this.nodeCache.at > 1000) this.nodeCache = { at: Date.now(), nodes: await this.liveNodes() };
    return this.nodeCache.nodes;
  }

  /** Verifies and authorises an envelope for the node the coord named (or one its target matches), as of `nowS`. */
  private admit(raw: string, node: string | undefined, nodes: NodeView[], nowS: number): Admitted {
    return admitEnvelope(raw, this.keySets, { clusterId: this.opts.clusterId, nowS, pickNode: (job) => pickNode(job, nodes, node) });
  }

  /**
   * Verifies and authorises an envelope, then enqueues attempt `attempt` (default 1) of it for its node.
   * Idempotent per attempt.
   */
  async submit(raw: string, opts: { node?: string; attempt?: number; delayMs?: number } = {}): Promise<{ jobId: string; node: string; admitted: Admitted }> {
    const admitted = this.admit(raw, opts.node, await this.nodesFresh(), this.nowS());
    await this.enqueueMany([
      { jobId: admitted.job.id, node: admitted.node.id, envelope: raw, attempt: opts.attempt ?? 1, ...(opts.delayMs ? { delayMs: opts.delayMs } : {}) },
    ]);
    return { jobId: admitted.job.id, node: admitted.node.id, admitted };
  }

  /**
   * Verifies, authorises and enqueues many attempts (POST /v1/submit:batch): each item is judged on its own
   * (a refusal is that item's answer), and the admitted ones go to their queues in one bulk add per node. If
   * Redis does not take them, the whole call fails and nothing is answered as enqueued.
   */
  async submitMany(
    items: readonly { raw: string; node: string; attempt: number; delayMs?: number }[],
  ): Promise<({ jobId: string; node: string } | { error: ErrorJSON })[]> {
    const nodes = await this.nodesFresh();
    const nowS = this.nowS();
    const answers: ({ jobId: string; node: string } | { error: ErrorJSON })[] = [];
    const toQueue: DispatchItem[] = [];
    for (const it of items) {
      try {
        const admitted = this.admit(it.raw, it.node, nodes, nowS);
        toQueue.push({ jobId: admitted.job.id, node: admitted.node.id, envelope: it.raw, attempt: it.attempt, ...(it.delayMs ? { delayMs: it.delayMs } : {}) });
        answers.push({ jobId: admitted.job.id, node: admitted.node.id });
      } catch (e) {
        answers.push({ error: boundedRefusal(toErrorJSON(e, true)) });
      }
    }
    if (toQueue.length > 0) await this.enqueueMany(toQueue);
    return answers;
  }

  /**
   * Enqueues envelopes admitted elsewhere in this process (the coord verified and authorised them against
   * the same key set a moment ago; verifying again here would only repeat it). One bulk add per node queue.
   * The runner verifies every envelope again on its own (T11).
   */
  async enqueueMany(items: readonly DispatchItem[]): Promise<void> {
    const byNode = new Map<string, DispatchItem[]>();
    for (const it of items) {
      const list = byNode.get(it.node) ?? [];
      list.push(it);
      byNode.set(it.node, list);
    }
    await Promise.all(
      [...byNode].map(([node, list]) =>
        this.queue(node).addBulk(
          list.map((it) => ({
            name: QUEUE_JOB_NAME,
            data: queueJobData(it.envelope, it.attempt),
            opts: {
              // One entry per attempt, run at most once: retries are new attempts from the ledger.
              jobId: queueJobId(it.jobId, it.attempt),
              attempts: 1,
              ...(it.delayMs ? { delay: it.delayMs } : {}),
              removeOnComplete: { age: 24 * 3600, count: 10_000 },
              removeOnFail: { age: 7 * 24 * 3600, count: 10_000 },
            },
          })),
        ),
      ),
    );
  }

  /**
   * Where attempt `attempt` of a job stands in its node's queue, and whether a runner of the node says it
   * is executing it (from the node's heartbeat; `unknown` without a recent one).
   */
  async jobState(jobId: string, attempt: number, node: string): Promise<{ state: QueueState; failedReason?: string; held: HolderState }> {
    const held = await this.holder(node, queueJobId(jobId, attempt));
    // State first, then the job's fields: BullMQ sets the state and failedReason in one script, so fields
    // read after a 'failed' state always carry the reason (read the other way round, a job failing in
    // between looked failed with no reason).
    const q = this.queue(node);
    const id = queueJobId(jobId, attempt);
    const state = (await q.getJobState(id)) as QueueState | 'unknown';
    if (state === 'unknown') return { state: 'missing', held };
    const job = await q.getJob(id);
    if (!job) return { state: 'missing', held };
    return { state, held, ...(job.failedReason ? { failedReason: job.failedReason } : {}) };
  }

  /**
   * Stops attempt `attempt` of a job an operator cancelled: a queue entry still waiting is removed, and the
   * node's runner is told (a mark it watches while it runs the job, kept a week) to stop a run in progress.
   */
  async cancel(jobId: string, attempt: number, node: string): Promise<{ removed: boolean }> {
    await this.redis.set(redisKeys.cancel(node, jobId), String(attempt), 'EX', 7 * 24 * 3600);
    const q = this.queue(node);
    const id = queueJobId(jobId, attempt);
    const state = await q.getJobState(id);
    if (state !== 'waiting' && state !== 'delayed' && state !== 'prioritized') return { removed: false };
    return { removed: (await q.remove(id)) === 1 };
  }

  private async holder(node: string, entry: string): Promise<HolderState> {
    const [seen, jobs] = await this.redis.hmget(redisKeys.node(node), 'seen', 'jobs');
    if (!seen || Date.now() - Number(seen) > (this.opts.nodeLivenessMs ?? 15_000)) return 'unknown';
    try {
      const list = JSON.parse(jobs ?? '[]') as unknown;
      return Array.isArray(list) && list.includes(entry) ? 'yes' : 'no';
    } catch {
      return 'unknown';
    }
  }

  async health(): Promise<{ redis: boolean }> {
    try {
      return { redis: (await this.redis.ping()) === 'PONG' };
    } catch {
      return { redis: false };
    }
  }

  /** Reads runner events (pending first, then new) and forwards them as signed reports; acks only after delivery. */
  private async pumpEvents(): Promise<void> {
    const stream = redisKeys.events();
    const group = redisKeys.eventsGroup();
    const consumer = this.opts.id;
    let failures = 0;
    let cursor = '0'; // our own pending entries first (delivered before a crash or a coord outage)
    const claimIdleMs = this.opts.claimIdleMs ?? 30_000;
    let lastClaimAt = 0;
    while (!this.stopping) {
      if (!this.collecting) {
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      try {
        // A peer that died holds entries it read and never acknowledged: take over those idle long enough,
        // then read our pending entries (which now include them) before new ones.
        if (cursor === '>' && Date.now() - lastClaimAt >= Math.min(5000, claimIdleMs / 2)) {
          lastClaimAt = Date.now();
          if ((await this.claimIdleEntries(claimIdleMs)) > 0) cursor = '0';
        }
        const res = (await this.reader.xreadgroup('GROUP', group, consumer, 'COUNT', 200, 'BLOCK', cursor === '>' ? 1000 : 1, 'STREAMS', stream, cursor)) as
          [string, [string, string[]][]][] | null;
        const entries = res?.[0]?.[1] ?? [];
        if (entries.length === 0) {
          if (cursor === '0') cursor = '>';
          continue;
        }
        // Entries travel untouched: each is a runner's signed batch, verified by the coord against the node's key.
        // One that is not shaped like ours is carried as `malformed`, so the coord records it as a security event.
        // Reports stay under a byte budget; each part is acknowledged in Redis only after the coord took it.
        let part: { id: string; entry: ReportEntry }[] = [];
        let bytes = 0;
        const deliver = async () => {
          if (part.length === 0) return;
          const report: SupervisorReport = { supervisor: this.opts.id, seq: `${Date.now()}-${++this.reportSeq}`, entries: part.map((p) => p.entry) };
          const env = signEnvelope(PAYLOAD_TYPES.result, encodeSupervisorReport(report), [this.opts.signingKey]);
          await this.opts.sink.deliver(encodeEnvelope(env));
          await this.redis.xack(stream, group, ...part.map((p) => p.id));
          this.metrics.reportsDelivered++;
          part = [];
          bytes = 0;
        };
        for (const [id, fields] of entries) {
          const entry = readEventStreamEntry(fields);
          const size = 'envelope' in entry ? entry.envelope.length : 300;
          if (bytes + size > REPORT_TARGET_BYTES) await deliver();
          part.push({ id, entry });
          bytes += size;
        }
        await deliver();
        failures = 0;
      } catch (e) {
        if (this.stopping) break;
        // Redis lost the stream or the group (restart without data, FLUSHALL): make them again.
        if (String((e as Error).message).includes('NOGROUP')) await this.ensureGroup().catch(() => {});
        const retryInMs = backoffDelay(failures++, 100, 5000);
        this.log.warn({ err: (e as Error).message, retryInMs }, 'forwarding runner events failed; will retry');
        cursor = '0';
        await new Promise((r) => setTimeout(r, retryInMs));
      }
    }
  }

  /**
   * XAUTOCLAIM: moves entries of the group left unacknowledged for `minIdleMs` (by any consumer) to this one.
   * Returns how many it claimed; the pump then reads them as its own pending entries.
   */
  private async claimIdleEntries(minIdleMs: number): Promise<number> {
    let start = '0-0';
    let claimed = 0;
    for (let round = 0; round < 50; round++) {
      const res = (await this.reader.call(
        'XAUTOCLAIM',
        redisKeys.events(),
        redisKeys.eventsGroup(),
        this.opts.id,
        String(minIdleMs),
        start,
        'COUNT',
        '500',
        'JUSTID',
      )) as [string, string[], string[]?];
      const ids = res[1] ?? [];
      claimed += ids.length;
      start = res[0];
      if (start === '0-0') break;
    }
    if (claimed > 0) {
      this.metrics.claimedEntries += claimed;
      this.log.warn({ claimed, minIdleMs }, 'claimed runner events another supervisor had left unacknowledged');
    }
    return claimed;
  }

  /** Starts or pauses reading the runner-event stream (federation: only while the coord accepts this supervisor). */
  setCollecting(on: boolean): void {
    if (on !== this.collecting)
      this.log.info({ collecting: on }, on ? 'collecting runner events' : 'paused collecting runner events: the coord does not accept this supervisor');
    this.collecting = on;
  }

  /** Counters for tests and heartbeats. */
  readonly metrics = { claimedEntries: 0, reportsDelivered: 0 };

  /**
   * What a heartbeat says of this supervisor: attempts waiting in the queues of its live nodes, how many live
   * runners its Redis holds, and whether Redis answers.
   */
  async stats(): Promise<{ queueDepth: number; capacity: number; redisOk: boolean; redisError: string | null }> {
    // Commands wait for a Redis that is away (maxRetriesPerRequest: null): a deadline turns that into 'not ok'.
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('Redis did not answer within 2 s')), 2000)));
    try {
      return await Promise.race([
        deadline,
        (async () => {
          const live = await this.liveNodes();
          const counts = await Promise.all(live.slice(0, 1000).map((n) => this.queue(n.id).count()));
          return { queueDepth: counts.reduce((x, y) => x + y, 0), capacity: live.length, redisOk: true, redisError: null };
        })(),
      ]);
    } catch (e) {
      return { queueDepth: 0, capacity: 0, redisOk: false, redisError: (e as Error).message.slice(0, 400) };
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    this.stopping = true;
    if (this.repairTimer) clearInterval(this.repairTimer);
    // Unblock the XREADGROUP so the pump ends promptly.
    this.reader.disconnect();
    // The pump finishes what it delivers while Redis is there. With Redis gone, a command waits for it as long
    // as it takes (maxRetriesPerRequest: null; disconnecting while ioredis reconnects does not fail what is
    // queued): then the pump is left behind, and disconnecting ends the reconnecting that holds the process.
    const pumped = (this.pump ?? Promise.resolve()).then(
      () => true,
      () => true,
    );
    while (!(await Promise.race([pumped, new Promise<false>((r) => setTimeout(() => r(false), 100))])) && this.redis.status === 'ready');
    for (const q of this.queues.values()) await q.close();
    if (this.redis.status === 'ready') await this.redis.quit().catch(() => {});
    this.redis.disconnect();
  }
}

/** Picks the node for a job: the named node if live, else the live node matching the selector with the lowest id hash load. */
export function pickNode(job: JobPayload, live: NodeView[], forced?: string): NodeView {
  if (forced) {
    // The coord chose among nodes it holds active; the target must still match what the node says of itself.
    const n = live.find((x) => x.id === forced);
    if (!n) throw new WritError('NODE_NOT_ACTIVE', `node ${forced} has no live runner (no heartbeat in Redis recently)`, { node: forced });
    return n;
  }
  if ('node' in job.target) {
    const id = job.target.node;
    const n = live.find((x) => x.id === id);
    if (!n) throw new WritError('NODE_NOT_ACTIVE', `node ${id} has no live runner (no heartbeat in the last 15 s)`, { node: id });
    return n;
  }
  const matching = live.filter((n) => targetMatchesNode(job.target, n));
  if (matching.length === 0) throw new WritError('NODE_NOT_ACTIVE', `no live node matches selector ${JSON.stringify(job.target.selector)}`);
  return pickByJobId(job.id, matching);
}
