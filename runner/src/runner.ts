// The node daemon's job loop: a BullMQ worker on this node's queue that re-verifies every job from the raw
// envelope (T11), checks it targets this node (T12) and is authorised here (X5, T9), runs it in the sandbox
// pool off the main thread (R4), and reports status, log lines and results through the events stream.
import { UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { parseRedisUrl } from '@writ/protocol'; // REDIS_URL: plain or Sentinel
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  BULL_PREFIX, JOB_ID_PATTERN, KeySetHolder, MAX_EVENTS_PER_BATCH, PAYLOAD_TYPES, RUNNER_BATCH_TARGET_BYTES, WritError, authorizeJob, checkAudience, checkJobTimes, encodeEnvelope, encodeFailureReason,
  encodeRunnerEventBatch, eventStreamFields, parseJobPayload, parseQueueJobData, queueJobEnvelope, queueNames, redisKeys, signEnvelope, targetMatchesNode, toErrorJSON,
  verifyEnvelope, type ErrorJSON, type JobPayload, type KeyPair, type KeyRef, type NodeView, type RunnerEvent,
} from '@writ/protocol';
import { HostBroker, SandboxPool, defaultHostTable, type HostTable, type SandboxJob } from './sandbox/index.ts';

export interface RunnerLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}
const silent: RunnerLogger = { info() {}, warn() {}, error() {} };

export interface RunnerOptions {
  nodeId: string;
  /** The node's identity key: it signs every event this runner reports (T14). */
  nodeKey: KeyPair;
  clusterId: string;
  /** Pinned admins who may sign the first key set this node accepts; later ones chain from the set held. */
  admins: { threshold: number; keys: KeyRef[] };
  /** Where the highest accepted key set is kept across restarts (rollback protection). */
  stateDir?: string;
  labels?: Record<string, string>;
  redisUrl: string;
  /** Sandbox threads = jobs run at once (default 2). */
  concurrency?: number;
  /** BullMQ lock; scripts never block the main thread, so renewals are not starved. */
  lockDurationMs?: number;
  stalledIntervalMs?: number;
  heartbeatMs?: number;
  hostTable?: HostTable;
  logger?: RunnerLogger;
  nowS?: () => number;
  version?: string;
}

const JOB_ID_RE = new RegExp(JOB_ID_PATTERN);

export class Runner {
  private readonly redis: Redis;
  private readonly workerConn: Redis;
  private worker!: Worker;
  private pool!: SandboxPool;
  private readonly log: RunnerLogger;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  readonly keySets: KeySetHolder;
  private seenKeySetVersion: string | null = null;
  private refusedKeySets = new Set<string>();
  private running = 0;
  readonly node: NodeView;
  /** Events waiting for the next signed batch, each with the resolver of its emit(). */
  private outbox: { event: RunnerEvent; done: () => void }[] = [];
  private flushing: Promise<void> | undefined;
  private readonly batchTag = randomBytes(6).toString('base64url');
  private batchSeq = 0;

  private constructor(readonly opts: RunnerOptions) {
    this.log = opts.logger ?? silent;
    this.node = { id: opts.nodeId, labels: opts.labels ?? {} };
    this.keySets = new KeySetHolder({ cluster: opts.clusterId, admins: opts.admins });
    this.redis = new Redis({ ...parseRedisUrl(opts.redisUrl), maxRetriesPerRequest: null, lazyConnect: true });
    this.workerConn = new Redis({ ...parseRedisUrl(opts.redisUrl), maxRetriesPerRequest: null, lazyConnect: true });
    for (const r of [this.redis, this.workerConn]) r.on('error', (e) => this.log.warn({ err: e.message }, 'redis connection error'));
  }

  static async start(opts: RunnerOptions): Promise<Runner> {
    const r = new Runner(opts);
    await r.redis.connect();
    await r.workerConn.connect();
    await r.loadPersistedKeySet();
    await r.refreshKeySet().catch((e) => r.log.warn({ err: (e as Error).message }, 'could not read the key set from Redis yet'));
    const broker = new HostBroker(opts.hostTable ?? defaultHostTable());
    r.pool = new SandboxPool({
      size: opts.concurrency ?? 2,
      hostCall: (job, name, args) => broker.call(job, name, args),
      onLog: (job, level, message) => r.emit({ type: 'log', jobId: job.jobId, attempt: job.attempt, node: r.node.id, ts: Date.now(), level, message }),
    });
    await r.heartbeat();
    r.heartbeatTimer = setInterval(() => void r.heartbeat().catch((e) => r.log.warn({ err: (e as Error).message }, 'heartbeat failed')), opts.heartbeatMs ?? 5000);
    r.heartbeatTimer.unref();
    r.worker = new Worker(queueNames.node(opts.nodeId), (job) => r.process(job), {
      connection: r.workerConn,
      prefix: BULL_PREFIX,
      concurrency: opts.concurrency ?? 2,
      lockDuration: opts.lockDurationMs ?? 30_000,
      stalledInterval: opts.stalledIntervalMs ?? 15_000,
      maxStalledCount: 2,
    });
    r.worker.on('error', (e) => r.log.warn({ err: e.message }, 'worker error'));
    r.log.info({ node: r.node.id, labels: r.node.labels }, 'runner started');
    return r;
  }

  get runningJobs(): number {
    return this.running;
  }

  get bullWorker(): Worker {
    return this.worker;
  }

  private async heartbeat(): Promise<void> {
    const now = Date.now();
    await this.redis
      .multi()
      .hset(redisKeys.node(this.node.id), { labels: JSON.stringify(this.node.labels), running: String(this.running), version: this.opts.version ?? '0.1.0', seen: String(now) })
      .zadd(redisKeys.nodes(), now, this.node.id)
      .exec();
  }

  /**
   * Queues an event for the stream; resolves once the signed batch holding it was written (or writing it
   * failed, which is logged: the job's outcome then reaches the ledger through the reconciler). Events that
   * arrive while a batch is being written go out together in the next one, in order, under one signature.
   */
  private emit(event: RunnerEvent): Promise<void> {
    return new Promise((done) => {
      this.outbox.push({ event, done });
      this.flushing ??= this.flushOutbox();
    });
  }

  private async flushOutbox(): Promise<void> {
    // Let the events of this tick gather first.
    await new Promise((r) => setImmediate(r));
    while (this.outbox.length > 0) {
      let bytes = 0;
      let n = 0;
      while (n < this.outbox.length && n < MAX_EVENTS_PER_BATCH && (n === 0 || bytes < RUNNER_BATCH_TARGET_BYTES)) {
        const ev = this.outbox[n++]!.event;
        bytes += 200 + (ev.type === 'log' ? ev.message.length * 3 : ev.type === 'result' && ev.ok ? JSON.stringify(ev.value).length : 0);
      }
      const batch = this.outbox.splice(0, n);
      try {
        const payload = encodeRunnerEventBatch({ node: this.node.id, batch: `${this.batchTag}-${++this.batchSeq}`, events: batch.map((b) => b.event) });
        const envelope = encodeEnvelope(signEnvelope(PAYLOAD_TYPES.runnerEvents, payload, [this.opts.nodeKey]));
        await this.redis.xadd(redisKeys.events(), 'MAXLEN', '~', '1000000', '*', ...eventStreamFields(envelope));
      } catch (e) {
        this.log.warn({ err: (e as Error).message, events: batch.length }, 'could not report events');
      }
      for (const b of batch) b.done();
    }
    this.flushing = undefined;
  }

  private nowS(): number {
    return this.opts.nowS?.() ?? Math.floor(Date.now() / 1000);
  }

  private keySetFile(): string | null {
    return this.opts.stateDir ? path.join(this.opts.stateDir, 'keysets.json') : null;
  }

  /** The highest key set accepted before a restart; a Redis serving an older one cannot roll this node back. */
  private async loadPersistedKeySet(): Promise<void> {
    const file = this.keySetFile();
    if (!file) return;
    let raw: string;
    try {
      raw = await readFile(file, 'utf8');
    } catch {
      return;
    }
    // The chain of accepted sets is replayed from the pinned admins: the file is trusted no more than Redis,
    // and admin rotations verify link by link. Expiry is checked when a job runs, not here.
    let chain: string[] = [];
    try {
      chain = JSON.parse(raw) as string[];
    } catch {
      this.log.warn({ file }, 'the stored key set chain is not JSON; ignoring it');
    }
    for (const link of chain) {
      try {
        this.keySets.accept(link, 0);
        this.keySetChain.push(link);
      } catch (e) {
        this.log.warn({ err: (e as Error).message, file }, 'a stored key set does not verify; ignoring the rest of the chain');
        break;
      }
    }
  }

  private keySetChain: string[] = [];

  private async persistKeySet(raw: string): Promise<void> {
    this.keySetChain.push(raw);
    const file = this.keySetFile();
    if (!file) return;
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    await writeFile(`${file}.tmp`, JSON.stringify(this.keySetChain), { mode: 0o600 });
    await rename(`${file}.tmp`, file);
  }

  /** Picks up a newer key set from Redis, verified here before it is used or stored (T6). */
  private async refreshKeySet(): Promise<void> {
    const version = await this.redis.get(redisKeys.keySetVersion());
    // Without a key set, look every time: the version counter may be gone with everything else (FLUSHALL).
    if (version === this.seenKeySetVersion && this.keySets.current) return;
    const raw = await this.redis.get(redisKeys.keySet());
    this.seenKeySetVersion = version;
    if (!raw || raw === this.keySets.current?.raw || this.refusedKeySets.has(raw)) return;
    try {
      if (this.keySets.accept(raw, this.nowS())) {
        await this.persistKeySet(raw);
        this.log.info({ version: this.keySets.version }, 'accepted a new key set');
      }
    } catch (e) {
      this.refusedKeySets.add(raw);
      const error = toErrorJSON(e, true);
      this.log.warn({ code: error.code, msg: error.message }, 'refused a key set: security event');
      await this.emit({ type: 'security', jobId: null, attempt: 0, node: this.node.id, ts: Date.now(), error });
    }
  }

  /** Re-verifies the raw envelope and every binding; anything wrong is a permanent refusal and a security event. */
  private async admitHere(bullJob: Job): Promise<JobPayload> {
    const raw = queueJobEnvelope(bullJob.data);
    await this.refreshKeySet();
    const nowS = this.nowS();
    this.keySets.ensureUsable(nowS);
    const verified = verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.job, keys: this.keySets.ring });
    const job = parseJobPayload(verified.payload);
    parseQueueJobData(bullJob.data);
    if (job.id !== bullJob.id) throw new WritError('SECURITY_EVENT', `queue job ${bullJob.id} carries the envelope of job ${job.id}`);
    if (!targetMatchesNode(job.target, this.node)) {
      throw new WritError('TARGET_MISMATCH', `job targets ${'node' in job.target ? `node ${job.target.node}` : `labels ${JSON.stringify(job.target.selector)}`}, this is node ${this.node.id}`);
    }
    checkAudience(job, this.opts.clusterId);
    authorizeJob(job, verified.signers, this.keySets.grants, this.node, { dangerousThreshold: this.keySets.threshold });
    checkJobTimes(job, nowS);
    return job;
  }

  private async process(bullJob: Job): Promise<unknown> {
    const attempt = (bullJob.attemptsStarted ?? bullJob.attemptsMade + 1) || 1;
    const jobId = bullJob.id ?? '';
    // A queue entry whose id no job could have was written into Redis by something else. Reported under no
    // job id: an id that breaks the event contract would get the whole signed batch, other jobs' results
    // included, refused at the coord.
    if (!JOB_ID_RE.test(jobId)) {
      const error = toErrorJSON(new WritError('SECURITY_EVENT', `a queue entry with id ${JSON.stringify(jobId.slice(0, 200))}, which no job can have, was refused`), true);
      this.log.warn({ node: this.node.id, code: error.code, msg: error.message }, 'refused a queue entry: security event');
      await this.emit({ type: 'security', jobId: null, attempt: 0, node: this.node.id, ts: Date.now(), error });
      throw new UnrecoverableError(encodeFailureReason(error));
    }
    const base = { jobId, attempt, node: this.node.id };
    let job: JobPayload;
    try {
      job = await this.admitHere(bullJob);
    } catch (e) {
      const error = toErrorJSON(e, true);
      if (error.retryable) {
        // Not a refusal: this node cannot judge the job yet (no key set). Let BullMQ retry it later.
        this.log.warn({ ...base, code: error.code, msg: error.message }, 'cannot check the job yet; it will be retried');
        const final = bullJob.attemptsMade + 1 >= (bullJob.opts.attempts ?? 1);
        await this.emit({ type: 'result', ...base, ts: Date.now(), ok: false, error, final, durationMs: 0 });
        throw new Error(encodeFailureReason(error));
      }
      this.log.warn({ ...base, code: error.code, msg: error.message }, 'refused a job: security event');
      await this.emit({ type: 'security', ...base, ts: Date.now(), error });
      await this.emit({ type: 'result', ...base, ts: Date.now(), ok: false, error, final: true, durationMs: 0 });
      throw new UnrecoverableError(encodeFailureReason(error));
    }
    await this.emit({ type: 'status', ...base, ts: Date.now(), status: 'running' });
    this.running++;
    const sjob: SandboxJob = { jobId, attempt, source: job.script.source, args: job.args, caps: job.caps, limits: job.limits, pins: job.pins };
    let outcome;
    try {
      outcome = await this.pool.run(sjob);
    } finally {
      this.running--;
    }
    if (outcome.ok) {
      await this.emit({ type: 'result', ...base, ts: Date.now(), ok: true, value: outcome.value, durationMs: outcome.durationMs });
      return { ok: true, durationMs: outcome.durationMs };
    }
    const error: ErrorJSON = outcome.error;
    const attemptsAllowed = bullJob.opts.attempts ?? 1;
    const final = !error.retryable || bullJob.attemptsMade + 1 >= attemptsAllowed;
    await this.emit({ type: 'result', ...base, ts: Date.now(), ok: false, error, final, durationMs: outcome.durationMs });
    if (!error.retryable) throw new UnrecoverableError(encodeFailureReason(error));
    throw new Error(encodeFailureReason(error));
  }

  /** Stops taking jobs, lets running ones finish (up to `timeoutMs`), then closes everything. */
  async close(timeoutMs = 30_000): Promise<void> {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    const closing = this.worker.close();
    const timer = new Promise((r) => setTimeout(r, timeoutMs).unref());
    await Promise.race([closing, timer]);
    await this.pool.close();
    await this.flushing; // the last results go out before the connection closes
    await this.redis.quit().catch(() => this.redis.disconnect());
    await this.workerConn.quit().catch(() => this.workerConn.disconnect());
  }
}

