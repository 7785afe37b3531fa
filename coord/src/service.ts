// The coordinator's core, independent of HTTP: admit and record jobs (ledger first, R1), forward them to a
// supervisor, apply signed supervisor reports to the ledger, stream job events, and reconcile what Redis lost.
import { EventEmitter } from 'node:events';
import {
  KeyRing, KeySetHolder, PAYLOAD_TYPES, WritError, checkAudience, checkJobTimes, errorCodeOf, parseJobPayload, parseStrictJson, sha256Hex, toErrorJSON,
  pickByJobId, targetMatchesNode, trustKey, verifyEnvelope, type JobPayload, type KeyRef, type KeySet, type RunnerEvent, type SupervisorReport, type TrustedKey,
} from '@writ/protocol';
import type { Ledger, TransitionedJob } from './ledger/index.ts';
import { NodeRegistry, type NodeStore } from './nodes/registry.ts';
import type { SupervisorClient } from './supervisor-client.ts';

export interface CoordLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}
const silent: CoordLogger = { info() {}, warn() {}, error() {} };

export interface CoordOptions {
  clusterId: string;
  ledger: Ledger;
  supervisor: SupervisorClient;
  /** Where nodes are kept (the ledger's node tables). */
  nodeStore: NodeStore;
  heartbeatMs?: number;
  clock?: () => number;
  /** Public keys of supervisors whose reports are accepted. */
  supervisorKeys: Uint8Array[];
  /** Pinned admins who may sign the cluster's first key set (later ones chain from the set held). */
  admins: { threshold: number; keys: KeyRef[] };
  logger?: CoordLogger;
  maxEnvelopeBytes?: number;
  nowS?: () => number;
  /** Reconciler: look at unfinished jobs untouched for this long (default 5 s), every `reconcileEveryMs`. */
  reconcileAfterMs?: number;
  reconcileEveryMs?: number;
  maxAttempts?: number;
}

export interface JobEventMessage {
  seq: number;
  type: string;
  level?: string | null;
  message: string;
  data?: unknown;
}

export class CoordService {
  readonly events = new EventEmitter();
  readonly keySets: KeySetHolder;
  readonly nodes: NodeRegistry;
  private sweepTimer: NodeJS.Timeout | undefined;
  private readonly supervisorRing: KeyRing;
  private readonly log: CoordLogger;
  private reconcileTimer: NodeJS.Timeout | undefined;
  private reconciling = false;
  /** Job ids known to be in the ledger (bounded), so most runner events skip an existence query. */
  private readonly knownJobs = new Set<string>();
  readonly metrics = { jobsSubmitted: 0, jobsReplayed: 0, jobsRefused: 0, reportsApplied: 0, eventsApplied: 0, redispatched: 0 };

  constructor(readonly opts: CoordOptions) {
    this.log = opts.logger ?? silent;
    this.events.setMaxListeners(0);
    this.supervisorRing = new KeyRing(opts.supervisorKeys.map((k) => trustKey(k)));
    this.keySets = new KeySetHolder({ cluster: opts.clusterId, admins: opts.admins });
    this.nodes = new NodeRegistry({
      store: opts.nodeStore,
      ...(opts.clock ? { clock: opts.clock } : {}),
      ...(opts.heartbeatMs ? { heartbeatMs: opts.heartbeatMs } : {}),
      onTransition: async (t) => {
        await this.ledger.appendAudit({ kind: 'node.transition', actor: t.actor, subject: t.nodeId, data: { from: t.from, to: t.to, event: t.event, reason: t.reason } });
      },
    });
  }

  get ledger(): Ledger {
    return this.opts.ledger;
  }

  private nowS(): number {
    return this.opts.nowS?.() ?? Math.floor(Date.now() / 1000);
  }

  async start(): Promise<void> {
    const current = await this.ledger.currentKeySet();
    if (current) {
      this.keySets.accept(current.envelope, 0);
      await this.opts.supervisor.setKeySet(current.envelope).catch((e) => this.log.warn({ err: (e as Error).message }, 'could not hand the key set to the supervisor yet'));
    }
    this.reconcileTimer = setInterval(() => void this.reconcile().catch((e) => this.log.warn({ err: (e as Error).message }, 'reconcile failed')), this.opts.reconcileEveryMs ?? 2000);
    this.reconcileTimer.unref();
    this.sweepTimer = setInterval(() => void this.nodes.sweep().catch((e) => this.log.warn({ err: (e as Error).message }, 'node sweep failed')), 1000);
    this.sweepTimer.unref();
  }

  async stop(): Promise<void> {
    if (this.reconcileTimer) clearInterval(this.reconcileTimer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
  }

  /**
   * Publishes a signed key set: verified against the set held (or the pinned admins for the first one),
   * recorded in the ledger with its signers, then handed to the supervisor, which verifies it again.
   * The coord holds no admin key: sets are signed by admins with their own keys (T10).
   */
  async publishKeySet(raw: string, actor: string): Promise<{ version: number; changed: boolean }> {
    const before = this.keySets.version;
    const changed = this.keySets.accept(raw, this.nowS());
    const accepted = this.keySets.current!;
    if (changed) {
      await this.ledger.putKeySet({ version: accepted.keySet.version, envelope: raw, signerKeyids: accepted.signers.map((s) => s.keyid) });
      await this.ledger.appendAudit({ kind: 'keyset.publish', actor, subject: `v${accepted.keySet.version}`, data: { from: before, signers: accepted.signers.map((s) => s.keyid), users: accepted.keySet.users.length, roles: accepted.keySet.roles.length, revoked: accepted.keySet.revoked } });
    }
    await this.opts.supervisor.setKeySet(raw);
    return { version: accepted.keySet.version, changed };
  }

  currentKeySet(): { version: number; keySet: KeySet; envelope: string } | null {
    const c = this.keySets.current;
    return c ? { version: c.keySet.version, keySet: c.keySet, envelope: c.raw } : null;
  }

  /**
   * Admission at the coord: verify and parse strictly, record durably, then forward. Returns the job row;
   * `replayed` when the same envelope was seen before (nothing runs twice, T5).
   */
  async submit(raw: string): Promise<{ job: Awaited<ReturnType<Ledger['getJob']>> & object; replayed: boolean }> {
    this.keySets.ensureUsable(this.nowS());
    const verified = verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.job, keys: this.keySets.ring, ...(this.opts.maxEnvelopeBytes ? { maxBytes: this.opts.maxEnvelopeBytes } : {}) });
    const job = parseJobPayload(verified.payload);
    checkJobTimes(job, this.nowS());
    checkAudience(job, this.opts.clusterId);
    const { job: row, created } = await this.ledger.insertJob({
      id: job.id,
      envelope: raw,
      envelopeSha256: sha256Hex(raw),
      signerKeyids: verified.signers.map((s: TrustedKey) => s.keyid),
      target: job.target,
      caps: job.caps,
      exp: new Date(job.exp * 1000),
      maxAttempts: this.opts.maxAttempts ?? 3,
    });
    if (!created) {
      this.metrics.jobsReplayed++;
      return { job: row, replayed: true };
    }
    this.metrics.jobsSubmitted++;
    this.remember(job.id);
    await this.ledger.appendAudit({ kind: 'job.admit', actor: verified.signers.map((s) => s.keyid).join(','), subject: job.id, data: { target: job.target, caps: job.caps } });
    return { job: (await this.dispatch(job.id, raw, job)) ?? row, replayed: false };
  }

  private remember(jobId: string): void {
    if (this.knownJobs.size >= 100_000) this.knownJobs.delete(this.knownJobs.values().next().value!);
    this.knownJobs.add(jobId);
  }

  /** Forwards an admitted job to the supervisor; permanent refusals end the job, transient ones wait for the reconciler. */
  private async dispatch(jobId: string, raw: string, parsed?: JobPayload): Promise<TransitionedJob | null> {
    try {
      // At submit the payload was just verified and parsed; the reconciler passes only the stored envelope.
      const job = parsed ?? parseJobPayload(verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.job, keys: this.keySets.ring }).payload);
      const candidates = (await this.nodes.workable()).filter((n) => targetMatchesNode(job.target, n));
      if (candidates.length === 0) {
        const t = 'node' in job.target ? `node ${job.target.node}` : `selector ${JSON.stringify(job.target.selector)}`;
        throw new WritError('NODE_NOT_ACTIVE', `no active, reachable node for ${t}; the job waits until one is`);
      }
      const { node } = await this.opts.supervisor.submit(raw, pickByJobId(job.id, candidates).id);
      const t = await this.ledger.transitionJob(jobId, 'queued', { node, message: `queued for node ${node}` });
      this.publishTransition(jobId, t);
      return t;
    } catch (e) {
      const err = toErrorJSON(e, true);
      if (err.retryable) {
        this.log.warn({ jobId, code: err.code, msg: err.message }, 'dispatch deferred');
        await this.ledger.appendJobEvent(jobId, { type: 'status', message: `waiting: ${err.code}: ${err.message}` });
        return null;
      }
      this.metrics.jobsRefused++;
      const t = await this.ledger.transitionJob(jobId, 'refused', { errorCode: err.code, errorMessage: err.message, message: `refused: ${err.code}: ${err.message}` });
      await this.ledger.appendAudit({ kind: 'job.refuse', actor: this.opts.supervisor.id, subject: jobId, data: { code: err.code, message: err.message } });
      this.publishTransition(jobId, t);
      return t;
    }
  }

  /** The ledger records a transition and its status event in one transaction; live subscribers get that event. */
  private publishTransition(jobId: string, t: TransitionedJob | null): void {
    if (t) this.publish(jobId, { seq: t.event.seq, type: t.event.type, level: t.event.level, message: t.event.message, data: t.event.data });
  }

  private publish(jobId: string, ev: JobEventMessage): void {
    this.events.emit(`job:${jobId}`, ev);
  }

  /** Applies a signed supervisor report (result payload type) to the ledger. */
  async ingestReport(envelope: string): Promise<{ applied: number }> {
    const v = verifyEnvelope(envelope, { payloadType: PAYLOAD_TYPES.result, keys: this.supervisorRing });
    const report = parseStrictJson(v.payload, { maxBytes: 16 * 1024 * 1024, maxDepth: 80 }) as unknown as SupervisorReport;
    if (!report || !Array.isArray(report.events)) throw new WritError('SCHEMA_INVALID', 'report has no events');
    let applied = 0;
    for (const ev of report.events) {
      try {
        await this.applyEvent(ev);
        applied++;
      } catch (e) {
        // One bad event must not block the stream behind it; it is logged and dropped.
        this.log.error({ err: (e as Error).message, jobId: ev?.jobId, type: ev?.type }, 'could not apply a runner event');
      }
    }
    this.metrics.reportsApplied++;
    this.metrics.eventsApplied += applied;
    return { applied };
  }

  private async applyEvent(ev: RunnerEvent): Promise<void> {
    if (!ev.jobId) {
      await this.ledger.appendAudit({ kind: 'security', actor: `node:${ev.node}`, subject: '', data: ev as unknown as Record<string, unknown> });
      return;
    }
    const jobId = ev.jobId;
    if (!this.knownJobs.has(jobId)) {
      if (await this.ledger.getJob(jobId)) this.remember(jobId);
    }
    if (!this.knownJobs.has(jobId)) {
      if (ev.type === 'security') await this.ledger.appendAudit({ kind: 'security', actor: `node:${ev.node}`, subject: jobId, data: { error: ev.error, note: 'job unknown to the ledger' } });
      return;
    }
    switch (ev.type) {
      case 'status': {
        const t = await this.ledger.transitionJob(jobId, 'running', { attempt: ev.attempt, node: ev.node, message: `running on ${ev.node} (attempt ${ev.attempt})` });
        await this.ledger.recordAttempt(jobId, ev.attempt, ev.node, 'running');
        this.publishTransition(jobId, t);
        return;
      }
      case 'log': {
        const seq = await this.ledger.appendJobEvent(jobId, { type: 'log', level: ev.level, message: ev.message, data: { attempt: ev.attempt } });
        this.publish(jobId, { seq, type: 'log', level: ev.level, message: ev.message, data: { attempt: ev.attempt } });
        return;
      }
      case 'security': {
        await this.ledger.appendAudit({ kind: 'security', actor: `node:${ev.node}`, subject: jobId, data: { error: ev.error, attempt: ev.attempt } });
        const seq = await this.ledger.appendJobEvent(jobId, { type: 'security', level: 'error', message: `${ev.error.code}: ${ev.error.message}`, data: { attempt: ev.attempt } });
        this.publish(jobId, { seq, type: 'security', level: 'error', message: `${ev.error.code}: ${ev.error.message}` });
        return;
      }
      case 'result': {
        if (ev.ok) {
          const t = await this.ledger.transitionJob(jobId, 'succeeded', { result: ev.value, attempt: ev.attempt, message: `succeeded in ${ev.durationMs} ms`, eventData: { result: ev.value, durationMs: ev.durationMs } });
          await this.ledger.recordAttempt(jobId, ev.attempt, ev.node, 'succeeded');
          await this.ledger.appendAudit({ kind: 'job.effect', actor: `node:${ev.node}`, subject: jobId, data: { attempt: ev.attempt, ok: true } });
          this.publishTransition(jobId, t);
        } else {
          const to = ev.final ? 'failed' : 'queued';
          const t = await this.ledger.transitionJob(jobId, to, {
            errorCode: ev.error.code, errorMessage: ev.error.message, attempt: ev.attempt,
            message: `${ev.final ? 'failed' : `attempt ${ev.attempt} failed, will retry`}: ${ev.error.code}: ${ev.error.message}`, eventData: { error: ev.error, durationMs: ev.durationMs },
          });
          await this.ledger.recordAttempt(jobId, ev.attempt, ev.node, 'failed', ev.error.code);
          if (ev.final) await this.ledger.appendAudit({ kind: 'job.fail', actor: `node:${ev.node}`, subject: jobId, data: { attempt: ev.attempt, code: ev.error.code } });
          this.publishTransition(jobId, t);
        }
        return;
      }
    }
  }

  /** Re-dispatches admitted, unfinished jobs that Redis lost (FLUSHALL, restart without AOF), and settles ones BullMQ gave up on. */
  async reconcile(): Promise<{ redispatched: number; settled: number }> {
    if (this.reconciling) return { redispatched: 0, settled: 0 };
    this.reconciling = true;
    let redispatched = 0;
    let settled = 0;
    try {
      // A job that waited past its envelope's expiry will never run (every tier refuses it): settle it.
      for (const job of await this.ledger.listExpiredWaiting()) {
        const t = await this.ledger.transitionJob(job.id, 'failed', { errorCode: 'ENVELOPE_EXPIRED', errorMessage: `the envelope expired at ${job.exp.toISOString()} before the job could run`, message: 'failed: ENVELOPE_EXPIRED: it expired while waiting' });
        if (t) {
          settled++;
          this.publishTransition(job.id, t);
        }
      }
      const jobs = await this.ledger.listUnfinished({ olderThanMs: this.opts.reconcileAfterMs ?? 5000 });
      for (const job of jobs) {
        try {
          if (!job.node) {
            await this.dispatch(job.id, job.envelope);
            continue;
          }
          const st = await this.opts.supervisor.jobState(job.id, job.node);
          if (st.state === 'missing') {
            await this.opts.supervisor.enqueue(job.id, job.node, job.envelope);
            await this.ledger.appendJobEvent(job.id, { type: 'status', message: `re-dispatched to ${job.node}: the queue had lost it` });
            this.log.info({ jobId: job.id, node: job.node }, 're-dispatched a job the queue had lost');
            this.metrics.redispatched++;
            redispatched++;
          } else if (st.state === 'failed') {
            let error = { code: 'INTERNAL', message: st.failedReason ?? 'failed in the queue' };
            try {
              const parsed = JSON.parse(st.failedReason ?? '') as { code?: string; message?: string };
              if (parsed.code) error = { code: parsed.code, message: parsed.message ?? '' };
            } catch {
              /* BullMQ's own reason, e.g. stalled too often */
            }
            const t = await this.ledger.transitionJob(job.id, 'failed', { errorCode: error.code, errorMessage: error.message, message: `failed: ${error.code}: ${error.message}` });
            if (t) {
              settled++;
              this.publishTransition(job.id, t);
            }
          } else {
            // Alive in the queue: touch it so we look again later, not in a tight loop.
            await this.ledger.touchJob(job.id);
          }
        } catch (e) {
          this.log.warn({ jobId: job.id, err: (e as Error).message, code: errorCodeOf(e) }, 'reconcile of one job failed');
        }
      }
    } finally {
      this.reconciling = false;
    }
    return { redispatched, settled };
  }
}
