// The node daemon's job loop: a BullMQ worker on this node's queue that re-verifies every job from the raw
// envelope (T11), checks it targets this node (T12) and is authorised here (X5, T9), runs it in the sandbox
// pool off the main thread (R4), and reports status, log lines and results through the events stream.
import { UnrecoverableError, Worker, type Job } from 'bullmq';
import { Cluster, Redis } from 'ioredis';
import { newRedisClient, silentLogger, type Logger } from '@writ/protocol'; // REDIS_URL: plain, Sentinel or Cluster
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  BULL_PREFIX,
  JOB_ID_PATTERN,
  KeySetHolder,
  MAX_EVENTS_PER_BATCH,
  PAYLOAD_TYPES,
  RUNNER_BATCH_TARGET_BYTES,
  WritError,
  authorizeJob,
  checkAudience,
  checkJobTimes,
  encodeEnvelope,
  encodeFailureReason,
  encodeRunnerEventBatch,
  eventStreamFields,
  openJobText,
  parseEnvelope,
  parseJobPayload,
  queueJobData,
  signStepResult,
  parseQueueJobData,
  parseQueueJobId,
  queueJobEnvelope,
  queueJobId,
  queueNames,
  redisKeys,
  signEnvelope,
  targetMatchesNode,
  toErrorJSON,
  type OpenedJob,
  type OpenedStep,
  type ErrorJSON,
  type JobPayload,
  type JsonValue,
  type KeyPair,
  type KeyRef,
  type NodeView,
  type RunnerEvent,
} from '@writ/protocol';
import { EffectJournal, parseFailpoint, type JobRun, type JournalOutcome } from './journal.ts';
import { HostBroker, SandboxPool, defaultHostTable, type HostCallJob, type HostTable, type SandboxJob } from './sandbox/index.ts';

export interface RunnerOptions {
  nodeId: string;
  /** The node's identity key: it signs every event this runner reports (T14). */
  nodeKey: KeyPair;
  clusterId: string;
  /** Pinned admins who may sign the first key set this node accepts; later ones chain from the set held. */
  admins: { threshold: number; keys: KeyRef[] };
  /**
   * Where the highest accepted key set (rollback protection) and the effect journal (`journal/`, R2) are
   * kept across restarts. Without one the journal lives in memory: effects are then exactly-once only
   * while this process lives.
   */
  stateDir?: string;
  /** Kill this process at a journal failpoint (tests only; see journal.ts). Default: WRIT_FAILPOINT. */
  failpoint?: string;
  labels?: Record<string, string>;
  redisUrl: string;
  /** Sandbox threads = jobs run at once (default 2). */
  concurrency?: number;
  /** BullMQ lock; scripts never block the main thread, so renewals are not starved. */
  lockDurationMs?: number;
  stalledIntervalMs?: number;
  heartbeatMs?: number;
  hostTable?: HostTable;
  logger?: Logger;
  nowS?: () => number;
  version?: string;
}

const JOB_ID_RE = new RegExp(JOB_ID_PATTERN);

export class Runner {
  private readonly redis: Redis;
  private readonly workerConn: Redis;
  private worker!: Worker;
  private pool!: SandboxPool;
  private readonly log: Logger;
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
  private journal!: EffectJournal;
  /** Executions in progress, by queue entry id (`<job>@<attempt>`): the journal side of their host calls. */
  private readonly runs = new Map<string, JobRun>();
  private pruneTimer: NodeJS.Timeout | undefined;

  private constructor(readonly opts: RunnerOptions) {
    this.log = opts.logger ?? silentLogger;
    this.node = { id: opts.nodeId, labels: opts.labels ?? {} };
    this.keySets = new KeySetHolder({ cluster: opts.clusterId, admins: opts.admins });
    this.redis = newRedisClient({ Redis, Cluster }, opts.redisUrl, { maxRetriesPerRequest: null, lazyConnect: true });
    this.workerConn = newRedisClient({ Redis, Cluster }, opts.redisUrl, { maxRetriesPerRequest: null, lazyConnect: true });
    for (const r of [this.redis, this.workerConn]) r.on('error', (e) => this.log.warn({ err: e.message }, 'redis connection error'));
  }

  static async start(opts: RunnerOptions): Promise<Runner> {
    const r = new Runner(opts);
    await r.redis.connect();
    await r.workerConn.connect();
    await r.loadPersistedKeySet();
    await r.refreshKeySet().catch((e) => r.log.warn({ err: (e as Error).message }, 'could not read the key set from Redis yet'));
    r.journal = await EffectJournal.open({
      dir: opts.stateDir ? path.join(opts.stateDir, 'journal') : null,
      failpoint: parseFailpoint(opts.failpoint ?? process.env.WRIT_FAILPOINT),
      onFailpoint: (point, step) => r.log.warn({ point, step }, 'failpoint reached: killing this process'),
    });
    if (!r.journal.durable) r.log.warn({}, 'no state dir: the effect journal is kept in memory and does not survive a restart');
    const prune = () =>
      void r.journal.prune(r.nowS()).then(
        (n) => n > 0 && r.log.info({ removed: n }, 'pruned the journals of expired jobs'),
        () => {},
      );
    prune();
    r.pruneTimer = setInterval(prune, 3600_000);
    r.pruneTimer.unref();
    const broker = new HostBroker(opts.hostTable ?? defaultHostTable());
    r.pool = new SandboxPool({
      size: opts.concurrency ?? 2,
      hostCall: (job, name, args) => r.hostCall(broker, job, name, args),
      // emit() never rejects (a batch that cannot be written is logged), so a log line need not be awaited.
      onLog: (job, level, message) => void r.emit({ type: 'log', jobId: job.jobId, attempt: job.attempt, node: r.node.id, ts: Date.now(), level, message }),
    });
    await r.heartbeat();
    r.heartbeatTimer = setInterval(
      () => void r.heartbeat().catch((e) => r.log.warn({ err: (e as Error).message }, 'heartbeat failed')),
      opts.heartbeatMs ?? 5000,
    );
    r.heartbeatTimer.unref();
    r.worker = new Worker(queueNames.node(opts.nodeId), (job) => r.process(job), {
      connection: r.workerConn,
      prefix: BULL_PREFIX,
      concurrency: opts.concurrency ?? 2,
      lockDuration: opts.lockDurationMs ?? 30_000,
      stalledInterval: opts.stalledIntervalMs ?? 15_000,
      // A stalled entry is not run again under the same attempt number: it fails, and the coord's reconciler
      // dispatches a new attempt, which the journal fences against the stalled one (R3).
      maxStalledCount: 0,
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
      // `jobs` lists the attempts this process is executing: the reconciler does not re-dispatch a job a
      // runner still holds, even when Redis lost its queue entry.
      .hset(redisKeys.node(this.node.id), {
        labels: JSON.stringify(this.node.labels),
        running: String(this.running),
        jobs: JSON.stringify([...this.runs.keys()]),
        version: this.opts.version ?? '0.1.0',
        seen: String(now),
      })
      .zadd(redisKeys.nodes(), now, this.node.id)
      .exec();
  }

  /**
   * Queues an event for the stream; resolves once the signed batch holding it was written (or writing it
   * failed, which is logged: the job's outcome then reaches the ledger through the reconciler). Events that
   * arrive while a batch is being written go out together in the next one, in order, under one signature.
   */
  private emit(event: RunnerEvent): Promise<void> {
    // A job run outside the queue (an install plan's): the coord has no record of it, so its events go to
    // this node's log, and its result to the caller of runEnvelope.
    if (event.jobId !== null && this.localRuns.has(event.jobId)) {
      if (event.type === 'result') this.localRuns.set(event.jobId, event);
      else this.log.info({ job: event.jobId, event: event.type, ...(event.type === 'log' ? { message: event.message } : {}) }, 'install plan job');
      return Promise.resolve();
    }
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
      this.log.warn({ code: error.code, reason: error.message }, 'refused a key set: security event');
      await this.emit({ type: 'security', jobId: null, attempt: 0, node: this.node.id, ts: Date.now(), error });
    }
  }

  private readonly localRuns = new Map<string, Extract<RunnerEvent, { type: 'result' }> | null>();

  /**
   * Runs a signed job envelope handed to this node outside its queue (an install plan's jobs) through the
   * same path as a queued one: the envelope verified against the node's key set, audience, times, target and
   * grants; the effect journal (a job it shows finished reports its journaled outcome and is not run again;
   * an attempt cut short resumes under the next attempt number); the sandbox and the SALs.
   */
  async runEnvelope(raw: string): Promise<JournalOutcome> {
    let jobId: string;
    try {
      // Read by the job payload's own contract (strict JSON, schema); process() verifies the signature and the rest.
      jobId = parseJobPayload(Buffer.from(parseEnvelope(raw).payload, 'base64')).id;
    } catch (e) {
      return { ok: false, error: toErrorJSON(e, true) };
    }
    if (this.localRuns.has(jobId)) return { ok: false, error: toErrorJSON(new WritError('JOB_ID_CONFLICT', `job ${jobId} is already running here`)) };
    const attempt = (await this.journal.read(jobId)).highestAttempt + 1;
    this.localRuns.set(jobId, null);
    try {
      await this.process({ id: queueJobId(jobId, attempt), data: queueJobData(raw, attempt) }).catch(() => {});
      const r = this.localRuns.get(jobId);
      if (!r) return { ok: false, error: toErrorJSON(new WritError('INTERNAL', `job ${jobId} ended without a result`)) };
      return r.ok ? { ok: true, value: r.value } : { ok: false, error: r.error };
    } finally {
      this.localRuns.delete(jobId);
    }
  }

  /** Re-verifies the raw envelope and every binding; anything wrong is a permanent refusal and a security event. */
  private async admitHere(bullJob: Pick<Job, 'id' | 'data'>, entry: { jobId: string; attempt: number }): Promise<OpenedJob> {
    const raw = queueJobEnvelope(bullJob.data);
    await this.refreshKeySet();
    const nowS = this.nowS();
    this.keySets.ensureUsable(nowS);
    // A job envelope, or a flow step's bundle: the flow is verified, the step found in it, and its inputs
    // accepted only inside results signed by the nodes that produced them.
    const opened = openJobText(raw, { keys: this.keySets.ring });
    const { job } = opened;
    const verified = { signers: opened.signers };
    if (opened.step && opened.step.node !== this.node.id)
      throw new WritError(
        'TARGET_MISMATCH',
        `step ${opened.step.step.name} of flow ${opened.step.flow.id} was assigned to node ${opened.step.node}, this is node ${this.node.id}`,
      );
    const data = parseQueueJobData(bullJob.data);
    if (job.id !== entry.jobId) throw new WritError('SECURITY_EVENT', `queue entry ${bullJob.id} carries the envelope of job ${job.id}`);
    if (data.attempt !== entry.attempt) throw new WritError('SECURITY_EVENT', `queue entry ${bullJob.id} carries attempt ${data.attempt} in its data`);
    if (!targetMatchesNode(job.target, this.node)) {
      throw new WritError(
        'TARGET_MISMATCH',
        `job targets ${'node' in job.target ? `node ${job.target.node}` : `labels ${JSON.stringify(job.target.selector)}`}, this is node ${this.node.id}`,
      );
    }
    checkAudience(job, this.opts.clusterId);
    authorizeJob(job, verified.signers, this.keySets.grants, this.node, { dangerousThreshold: this.keySets.threshold });
    checkJobTimes(job, nowS);
    return opened;
  }

  /** A host call from a sandbox: checked by the broker, then replayed, fenced and journaled by the job's run. */
  private async hostCall(broker: HostBroker, job: HostCallJob, name: string, args: JsonValue): Promise<JsonValue> {
    const run = this.runs.get(queueJobId(job.jobId, job.attempt));
    if (!run) return broker.call(job, name, args);
    broker.check(job, name, args); // a journaled result is handed back only for a call the job may make
    return run.call(name, args, () => broker.invoke(job, name, args));
  }

  private async refuse(base: { jobId: string | null; attempt: number; node: string }, e: unknown, withResult: boolean): Promise<never> {
    const error = toErrorJSON(e, true);
    this.log.warn({ ...base, code: error.code, reason: error.message }, 'refused a job: security event');
    await this.emit({ type: 'security', ...base, ts: Date.now(), error });
    if (withResult && base.jobId !== null)
      await this.emit({ type: 'result', ...base, jobId: base.jobId, ts: Date.now(), ok: false, error, final: true, durationMs: 0 });
    throw new UnrecoverableError(encodeFailureReason(error));
  }

  /** A queue entry as the runner reads it: its id (job and attempt) and its data; a BullMQ Job is one. */
  private async process(bullJob: Pick<Job, 'id' | 'data'>): Promise<unknown> {
    const entry = parseQueueJobId(bullJob.id ?? '');
    // A queue entry whose id no job attempt could have was written into Redis by something else. Reported
    // under no job id: an id that breaks the event contract would get the whole signed batch, other jobs'
    // results included, refused at the coord.
    if (!entry || !JOB_ID_RE.test(entry.jobId)) {
      const id = bullJob.id ?? '';
      await this.refuse(
        { jobId: null, attempt: 0, node: this.node.id },
        new WritError('SECURITY_EVENT', `a queue entry with id ${JSON.stringify(id.slice(0, 200))}, which no job attempt can have, was refused`),
        false,
      );
    }
    const { jobId, attempt } = entry!;
    const base = { jobId, attempt, node: this.node.id };
    let job: JobPayload;
    let step: OpenedStep | undefined;
    try {
      ({ job, step } = await this.admitHere(bullJob, entry!));
    } catch (e) {
      const error = toErrorJSON(e, true);
      if (error.retryable) {
        // Not a refusal: this node cannot judge the job yet (no key set). The coord dispatches it again.
        this.log.warn({ ...base, code: error.code, reason: error.message }, 'cannot check the job yet; it will be retried');
        await this.emit({ type: 'result', ...base, ts: Date.now(), ok: false, error, final: false, durationMs: 0 });
        throw new Error(encodeFailureReason(error));
      }
      return this.refuse(base, e, true);
    }
    // The journal decides whether this attempt may run here at all (T15).
    let history;
    try {
      history = await this.journal.read(jobId);
    } catch (e) {
      return this.failRetryable(base, e);
    }
    const finished = history.finished;
    if (finished && attempt > finished.attempt) {
      // A new attempt for a job this node already finished (its result was lost, with Redis or on the way):
      // report the journaled outcome for this attempt; nothing runs again.
      await this.emit({
        type: 'log',
        ...base,
        ts: Date.now(),
        level: 'info',
        message: `attempt ${finished.attempt} finished this job on ${this.node.id}; reporting its journaled outcome instead of running it again`,
      });
      return this.report(base, finished.outcome, finished.durationMs, step);
    }
    if (attempt <= history.highestAttempt) {
      await this.refuse(
        base,
        new WritError(
          'JOB_REPLAYED',
          `attempt ${attempt} of job ${jobId} was already started on node ${this.node.id}${finished ? ` and the job finished (attempt ${finished.attempt})` : ''}; a queue entry for it reappeared and was not run`,
          { attempt, started: history.highestAttempt },
        ),
        false,
      );
    }
    let run: JobRun;
    try {
      run = await this.journal.begin(jobId, attempt, job.exp, history);
    } catch (e) {
      return this.failRetryable(base, e);
    }
    const key = queueJobId(jobId, attempt);
    this.runs.set(key, run);
    await this.emit({ type: 'status', ...base, ts: Date.now(), status: 'running' });
    if (run.replay.size > 0)
      await this.emit({
        type: 'log',
        ...base,
        ts: Date.now(),
        level: 'info',
        message: `resuming: ${run.replay.size} host call(s) of earlier attempts are journaled and are replayed, not made again`,
      });
    this.running++;
    const sjob: SandboxJob = { jobId, attempt, source: job.script.source, args: job.args, caps: job.caps, limits: job.limits, pins: job.pins };
    let outcome;
    // An operator may cancel the job while it runs (a flow cancelled): its supervisor sets a mark this
    // runner looks for twice a second; the run is then stopped where it is.
    const cancelMark = redisKeys.cancel(this.node.id, jobId);
    const watch = setInterval(() => {
      this.redis.exists(cancelMark).then(
        (n) => {
          if (n === 1 && this.pool.cancel(jobId, attempt, `job ${jobId} was cancelled by an operator`)) this.log.info({ ...base }, 'stopped a cancelled job');
        },
        () => {},
      );
    }, 500);
    try {
      outcome = await this.pool.run(sjob);
    } finally {
      clearInterval(watch);
      this.running--;
      this.runs.delete(key);
    }
    if (run.fenced) {
      // A newer attempt owns the job; this execution's outcome is not the job's.
      const error = toErrorJSON(run.fenced, true);
      this.log.warn({ ...base, code: error.code, reason: error.message }, 'attempt superseded: stopped without applying further effects');
      await this.emit({ type: 'result', ...base, ts: Date.now(), ok: false, error, final: true, durationMs: outcome.durationMs });
      throw new UnrecoverableError(encodeFailureReason(error));
    }
    // A flow step that its signed flow gives retries is retried after any failure of its run (a thrown error,
    // a timeout), not only a transient one: the failure is retryable for it, here and in the journal (so the
    // next attempt runs again), and the coord stops at the step's `retries.max`.
    const stepRetries = (step?.step.retries?.max ?? 0) > 0;
    const journaled: JournalOutcome = outcome.ok
      ? { ok: true, value: outcome.value }
      : { ok: false, error: stepRetries ? { ...outcome.error, retryable: true } : outcome.error };
    try {
      await run.end(journaled, outcome.durationMs);
    } catch (e) {
      // The outcome is reported anyway; without its end record a later attempt runs the script again and
      // replays every journaled call, so no effect repeats.
      this.log.warn({ ...base, err: (e as Error).message }, 'could not journal the outcome');
    }
    return this.report(base, journaled, outcome.durationMs, step);
  }

  /** Reports an attempt's outcome and ends the queue entry accordingly. */
  private async report(
    base: { jobId: string; attempt: number; node: string },
    outcome: JournalOutcome,
    durationMs: number,
    step?: OpenedStep,
  ): Promise<unknown> {
    if (outcome.ok) {
      // A flow step's value is also signed on its own, for the steps that take it as input.
      const stepResult = step
        ? signStepResult(
            {
              flow: step.flow.id,
              flowSha256: step.flowSha256,
              step: step.step.name,
              node: this.node.id,
              jobId: base.jobId,
              attempt: base.attempt,
              value: outcome.value,
            },
            this.opts.nodeKey,
          )
        : undefined;
      await this.emit({ type: 'result', ...base, ts: Date.now(), ok: true, value: outcome.value, durationMs, ...(stepResult ? { stepResult } : {}) });
      return { ok: true, durationMs };
    }
    // `final` says the error is permanent; whether a retryable one is retried is the coord's call (it
    // counts the attempts and assigns the next number).
    const error: ErrorJSON = outcome.error;
    await this.emit({ type: 'result', ...base, ts: Date.now(), ok: false, error, final: !error.retryable, durationMs });
    // The queue keeps the reason too, with the run's duration: a coord whose report of this was lost or is late
    // settles the job from it (coord reconcile), and says how long the run took all the same.
    const reason = encodeFailureReason(error, { durationMs });
    if (!error.retryable) throw new UnrecoverableError(reason);
    throw new Error(reason);
  }

  private async failRetryable(base: { jobId: string; attempt: number; node: string }, e: unknown): Promise<never> {
    const error = toErrorJSON(e, true);
    this.log.error({ ...base, code: error.code, reason: error.message }, 'the effect journal cannot be used; the job is not run');
    await this.emit({ type: 'result', ...base, ts: Date.now(), ok: false, error, final: false, durationMs: 0 });
    throw new Error(encodeFailureReason(error));
  }

  /**
   * Stops taking jobs, lets running ones finish, then closes everything: all within `timeoutMs`, whether or not
   * Redis is reachable (a runner whose Redis is gone must still stop when told to).
   */
  async close(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const byDeadline = async (p: Promise<unknown>): Promise<boolean> => {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<false>((r) => (timer = setTimeout(() => r(false), Math.max(0, deadline - Date.now()))));
      try {
        return await Promise.race([
          p.then(
            () => true,
            () => true,
          ),
          late,
        ]);
      } finally {
        clearTimeout(timer);
      }
    };
    const redisUp = () => this.redis.status === 'ready' && this.workerConn.status === 'ready';
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    // Pausing takes no new jobs without asking Redis; running scripts get the grace to finish.
    await byDeadline(this.worker.pause(true));
    while (this.running > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    // BullMQ's graceful close records the outcomes and waits for Redis as long as that takes: with Redis gone,
    // close by force instead (the journal holds the outcomes; a restarted runner reports them).
    if (redisUp()) {
      if (!(await byDeadline(this.worker.close()))) await this.worker.backend.blockingConnection?.disconnect(false).catch(() => {});
    } else {
      await byDeadline(this.worker.close(true));
    }
    await byDeadline(this.pool.close());
    if (redisUp()) await byDeadline(this.flushing ?? Promise.resolve()); // the last results go out before the connection closes
    for (const c of [this.redis, this.workerConn]) {
      if (c.status === 'ready') await byDeadline(c.quit());
      c.disconnect(); // also ends reconnecting to a Redis that is gone, which would keep the process alive
    }
  }
}
