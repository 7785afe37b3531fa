// The coordinator's core, independent of HTTP: admit and record jobs (ledger first, R1), forward them to a
// supervisor, apply signed supervisor reports to the ledger, stream job events, and reconcile what Redis lost.
import { EventEmitter } from 'node:events';
import {
  KeyRing,
  KeySetHolder,
  isErrorCode,
  MAX_RUNNER_BATCH_BYTES,
  PAYLOAD_TYPES,
  WritError,
  authorizeJob,
  checkAudience,
  checkJobTimes,
  errorCodeOf,
  isStepBundle,
  openJobText,
  stepBackoffMs,
  parseEnvelope,
  parseQueueFailure,
  parseJobPayload,
  parseRunnerEventBatch,
  parseSupervisorReport,
  pickByJobId,
  sha256Hex,
  backoffDelay,
  silentLogger,
  targetMatchesNode,
  toErrorJSON,
  trustKeyB64url,
  verifyEnvelope,
  type ErrorJSON,
  type JobEventMessage,
  type JobPayload,
  type JobStatus,
  type KeyRef,
  type KeySet,
  type Logger,
  type NodeView,
  type RunnerEvent,
  type RunnerEventBatch,
  type TrustedKey,
} from '@writ/protocol';
import { GroupCommitter } from './ledger/group-commit.ts';
import { batchKey, claimBatchesIn, pruneBatches } from './ledger/batches.ts';
import { FlowEngine } from './flows/engine.ts';
import { flowsOfJobs, recordStepResultsIn, type FlowEvent } from './flows/store.ts';
import { LEASE_KINDS, type Leases } from './ledger/leases.ts';
import type { Admission, AdmissionOutcome, AuditInput, JobRecord, Ledger, Retry, TransitionedJob } from './ledger/index.ts';
import { NodeRegistry, type NodeStore } from './nodes/registry.ts';
import { HostController } from './hosts/controller.ts';
import { SupervisorFederation, type PinnedSupervisor } from './federation/registry.ts';
import { HttpSupervisorClient, type SupervisorClient } from './supervisor-client.ts';
import type { DispatchItem } from '@writ/supervisor';
import { isStoredStep, sendableEnvelope } from './flows/stored-step.ts';

export interface CoordOptions {
  clusterId: string;
  ledger: Ledger;
  /**
   * The supervisor wired in at start-up (`writ dev`'s in-process one, `writ coord --supervisor`): it serves pool
   * `default` without heartbeats. Others join through signed heartbeats when the key set lists them.
   */
  supervisor?: SupervisorClient;
  /** About the start-up supervisor, for listings and node registration. */
  pinnedSupervisor?: Omit<PinnedSupervisor, 'client' | 'keys'>;
  /** Bearer token for the supervisors that join (`WRIT_SUPERVISOR_TOKEN`); how the coord reaches their APIs. */
  supervisorToken?: string;
  /** Where nodes are kept (the ledger's node tables). */
  nodeStore: NodeStore;
  heartbeatMs?: number;
  clock?: () => number;
  /** Public keys of the start-up supervisor, whose reports are accepted (those of the key set's supervisors are too). */
  supervisorKeys: Uint8Array[];
  /** Pinned admins who may sign the cluster's first key set (later ones chain from the set held). */
  admins: { threshold: number; keys: KeyRef[] };
  logger?: Logger;
  maxEnvelopeBytes?: number;
  nowS?: () => number;
  /** Reconciler: look at unfinished jobs untouched for this long (default 5 s), every `reconcileEveryMs`. */
  reconcileAfterMs?: number;
  reconcileEveryMs?: number;
  /** Attempts per job, counting every attempt the ledger assigns (default 3). */
  maxAttempts?: number;
  /** A retried attempt waits this long times 2^(retries so far), at most a minute (default 1000). */
  retryBackoffMs?: number;
  /**
   * Several coords on one PostgreSQL: the reconciler drives only the jobs whose lease it holds (ledger/leases.ts).
   * Without it (PGlite, one coord) it drives every job.
   */
  leases?: Leases;
  /** Told of every event this coord recorded, after its commit: the relay to the other coords (events/relay.ts). */
  onEventPublished?: (jobId: string, seq: number) => void;
}

export type { JobEventMessage };

/** What one submitted envelope came to: recorded (or replayed), or refused before it was recorded. */
export type SubmitResult =
  | { id: string; status: JobStatus; node: string | null; replayed: boolean; errorCode: string | null; errorMessage: string | null }
  | { id: string | null; error: WritError };

/** An envelope verified and parsed at the coord, ready for the group commit. */
interface Prepared {
  raw: string;
  job: JobPayload;
  signers: TrustedKey[];
}

/** A node's registered key, cached for verifying the events it signs. */
interface NodeSigner {
  nodeId: string;
  ring: KeyRing;
  at: number;
}
const NODE_SIGNER_TTL_MS = 60_000;
/**
 * Attempts lost with their runner (it died, or stalled past its lock) before a job is given up. They do not
 * count against `maxAttempts`, which limits attempts that failed with an error: a runner crash is not the
 * job's failure, unless it keeps happening.
 */
const MAX_LOST_ATTEMPTS = 10;

export class CoordService {
  readonly events = new EventEmitter();
  readonly keySets: KeySetHolder;
  readonly nodes: NodeRegistry;
  /** Signed flows, driven from the ledger (coord/src/flows). */
  readonly flows: FlowEngine;
  /** Host deployments: health-gated rollout of a Nix system across nodes (coord/src/hosts). */
  readonly hosts: HostController;
  /** The supervisors and the choice among them (coord/src/federation). */
  readonly federation: SupervisorFederation;
  private sweepTimer: NodeJS.Timeout | undefined;
  private readonly log: Logger;
  private reconcileTimer: NodeJS.Timeout | undefined;
  private reconciling = false;
  /** When the record of applied runner batches was last pruned (each reconcile pass prunes at most every 10 minutes). */
  private batchesPrunedAt = 0;
  /** Registered node keys by key id, for verifying runner events; dropped on any node transition. */
  private readonly nodeSigners = new Map<string, NodeSigner>();
  /** Admissions arriving together are recorded in one transaction and enqueued in one bulk add. */
  private readonly admissions: GroupCommitter<Admission, AdmissionOutcome>;
  readonly metrics = {
    admissionGroups: 0,
    jobsSubmitted: 0,
    jobsReplayed: 0,
    jobsRefused: 0,
    reportsApplied: 0,
    eventsApplied: 0,
    eventsRefused: 0,
    redispatched: 0,
    reconcilePasses: 0,
    reconcileLeftToOthers: 0,
  };

  constructor(readonly opts: CoordOptions) {
    this.log = opts.logger ?? silentLogger;
    this.events.setMaxListeners(0);
    this.keySets = new KeySetHolder({ cluster: opts.clusterId, admins: opts.admins });
    this.federation = new SupervisorFederation({
      ledger: opts.ledger,
      keySets: this.keySets,
      clusterId: opts.clusterId,
      logger: this.log,
      ...(opts.clock ? { clock: opts.clock } : {}),
      ...(opts.supervisor ? { pinned: { apiUrl: 'in-process', ...opts.pinnedSupervisor, client: opts.supervisor, keys: opts.supervisorKeys } } : {}),
      connect: (id, apiUrl) => new HttpSupervisorClient(id, apiUrl, opts.supervisorToken ?? ''),
    });
    this.nodes = new NodeRegistry({
      store: opts.nodeStore,
      ...(opts.clock ? { clock: opts.clock } : {}),
      ...(opts.heartbeatMs ? { heartbeatMs: opts.heartbeatMs } : {}),
      onTransition: async (t) => {
        this.nodeSigners.clear();
        await this.ledger.appendAudit({
          kind: 'node.transition',
          actor: t.actor,
          subject: t.nodeId,
          data: { from: t.from, to: t.to, event: t.event, reason: t.reason },
        });
      },
    });
    this.hosts = new HostController({
      clusterId: opts.clusterId,
      ledger: opts.ledger,
      keySets: this.keySets,
      events: this.events,
      nodes: this.nodes,
      submit: (raw) => this.submit(raw),
      nowS: () => this.nowS(),
      logger: this.log,
    });
    this.flows = new FlowEngine({
      ledger: opts.ledger,
      keySets: this.keySets,
      clusterId: opts.clusterId,
      log: this.log,
      nowS: () => this.nowS(),
      ...(opts.leases ? { leases: opts.leases } : {}),
      workable: (o) => this.nodes.workable(o),
      dispatch: async (items) => {
        const refusals = await this.dispatchToSupervisor(items);
        await Promise.all(
          refusals.map(async (err, i) => {
            if (err && !err.retryable) await this.refuseQueued(items[i]!.jobId, err);
          }),
        );
      },
      publish: (flowId, events) => this.publishFlow(flowId, events),
    });
    // PGlite runs one transaction at a time: a second group in flight would only wait, and the admissions that
    // arrive meanwhile would form smaller groups. PostgreSQL runs two groups at once.
    this.admissions = new GroupCommitter((items) => this.commitAdmissions(items), { maxItems: 500, maxInFlight: opts.ledger.engine === 'pglite' ? 1 : 2 });
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
      await this.opts.supervisor
        ?.setKeySet(current.envelope)
        .catch((e) => this.log.warn({ err: (e as Error).message }, 'could not hand the key set to the supervisor yet'));
    }
    await this.federation.start();
    this.reconcileTimer = setInterval(
      () => void this.reconcile().catch((e) => this.log.warn({ err: (e as Error).message }, 'reconcile failed')),
      this.opts.reconcileEveryMs ?? 2000,
    );
    this.reconcileTimer.unref();
    this.sweepTimer = setInterval(() => void this.nodes.sweep().catch((e) => this.log.warn({ err: (e as Error).message }, 'node sweep failed')), 1000);
    this.sweepTimer.unref();
    this.hosts.start();
  }

  async stop(): Promise<void> {
    if (this.reconcileTimer) clearInterval(this.reconcileTimer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    await this.hosts.stop();
    this.federation.stop();
    await this.nodes.stop();
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
      await this.ledger.appendAudit({
        kind: 'keyset.publish',
        actor,
        subject: `v${accepted.keySet.version}`,
        data: {
          from: before,
          signers: accepted.signers.map((s) => s.keyid),
          users: accepted.keySet.users.length,
          roles: accepted.keySet.roles.length,
          revoked: accepted.keySet.revoked,
        },
      });
    }
    await this.federation.setKeySet(raw);
    return { version: accepted.keySet.version, changed };
  }

  currentKeySet(): { version: number; keySet: KeySet; envelope: string } | null {
    const c = this.keySets.current;
    return c ? { version: c.keySet.version, keySet: c.keySet, envelope: c.raw } : null;
  }

  /** Admission of one envelope; see submitMany. Throws the refusal (verification, policy) as a WritError. */
  async submit(
    raw: string,
  ): Promise<{ id: string; status: JobStatus; node: string | null; replayed: boolean; errorCode: string | null; errorMessage: string | null }> {
    const [r] = await this.submitMany([raw]);
    if (!r || 'error' in r) throw r?.error ?? new WritError('INTERNAL', 'no admission outcome');
    return r;
  }

  /**
   * Admission at the coord, for one envelope or a batch: verify and parse each strictly, choose its node
   * among the workable ones and authorise it there (a refusal is recorded and answered at once), record the
   * group durably in one transaction (R1), then enqueue what was queued in one bulk add. Each result is
   * returned only after its row committed. A replayed envelope answers with the job as it stands (T5).
   */
  async submitMany(raws: readonly string[]): Promise<SubmitResult[]> {
    const nowS = this.nowS();
    const results: (SubmitResult | undefined)[] = new Array(raws.length);
    const pending: { index: number; item: Admission }[] = [];
    let workable: NodeView[] | undefined;
    for (let i = 0; i < raws.length; i++) {
      const raw = raws[i]!;
      let prepared: Prepared;
      try {
        this.keySets.ensureUsable(nowS);
        const verified = verifyEnvelope(raw, {
          payloadType: PAYLOAD_TYPES.job,
          keys: this.keySets.ring,
          ...(this.opts.maxEnvelopeBytes ? { maxBytes: this.opts.maxEnvelopeBytes } : {}),
        });
        const job = parseJobPayload(verified.payload);
        checkJobTimes(job, nowS);
        checkAudience(job, this.opts.clusterId);
        prepared = { raw, job, signers: verified.signers };
      } catch (e) {
        if (!errorCodeOf(e)) this.log.error({ err: (e as Error).message }, 'preparing an envelope failed unexpectedly');
        // An unexpected error keeps its text out of the answer (A2); it is logged above.
        results[i] = { id: null, error: errorCodeOf(e) ? (e as WritError) : new WritError('INTERNAL', undefined, undefined, { cause: e }) };
        continue;
      }
      workable ??= await this.nodes.workable();
      pending.push({ index: i, item: this.placeJob(prepared, workable, await this.targetKnown(prepared.job.target, workable)) });
    }
    if (pending.length > 0) {
      const outcomes = await this.admissions.add(pending.map((p) => p.item));
      pending.forEach((p, k) => {
        const o = outcomes[k]!;
        if ('error' in o) results[p.index] = { id: o.id, error: o.error };
        else if (o.created)
          results[p.index] = {
            id: o.id,
            status: o.status,
            node: o.node,
            replayed: false,
            errorCode: p.item.errorCode ?? null,
            errorMessage: p.item.errorMessage ?? null,
          };
        else results[p.index] = { id: o.id, status: o.status, node: o.node, replayed: true, errorCode: o.errorCode, errorMessage: o.errorMessage };
      });
    }
    return results.map((r) => r!);
  }

  /**
   * Chooses the node for a verified job among the workable ones and authorises it there. Policy refusals are
   * permanent and recorded as such; with no workable node the job is recorded as admitted and waits for the
   * reconciler (the supervisor authorises it when it is dispatched).
   */
  /**
   * Whether a job's target node is one the coord has registered (in any state). A selector is always "known":
   * nodes with its labels may come. Asked only when no workable node matches, so the common path reads nothing.
   */
  private async targetKnown(target: Prepared['job']['target'], workable: readonly NodeView[]): Promise<boolean> {
    if (!('node' in target) || workable.some((n) => n.id === target.node)) return true;
    return (await this.nodes.getNode(target.node)) !== null;
  }

  private placeJob(p: Prepared, workable: readonly NodeView[], targetKnown = true): Admission {
    const base = {
      id: p.job.id,
      envelope: p.raw,
      envelopeSha256: sha256Hex(p.raw),
      signerKeyids: p.signers.map((s) => s.keyid),
      target: p.job.target,
      caps: p.job.caps,
      exp: new Date(p.job.exp * 1000),
      maxAttempts: this.opts.maxAttempts ?? 3,
    };
    const candidates = workable.filter((n) => targetMatchesNode(p.job.target, n));
    if (candidates.length === 0 && !targetKnown && 'node' in p.job.target) {
      // A mistyped node would otherwise wait silently until the envelope expires: refuse it at once.
      return {
        ...base,
        status: 'refused',
        errorCode: 'NODE_UNKNOWN',
        errorMessage: `no node ${p.job.target.node} is registered with this coord (\`writ nodes list\` shows the nodes); a node that is known but down or draining makes the job wait instead`,
      };
    }
    if (candidates.length === 0) return { ...base, status: 'admitted' };
    const node = pickByJobId(p.job.id, candidates);
    try {
      authorizeJob(p.job, p.signers, this.keySets.grants, node, { dangerousThreshold: this.keySets.threshold });
    } catch (e) {
      const err = toErrorJSON(e, true);
      return { ...base, status: 'refused', errorCode: err.code, errorMessage: err.message };
    }
    return { ...base, status: 'queued', node: node.id };
  }

  /** One group: record every admission and its audit entries in one transaction, then enqueue the queued ones. */
  private async commitAdmissions(items: Admission[]): Promise<AdmissionOutcome[]> {
    this.metrics.admissionGroups++;
    const outcomes = await this.ledger.admitJobs(items, (outs) => {
      const audits: AuditInput[] = [];
      outs.forEach((o, i) => {
        if (!('created' in o) || !o.created) return;
        const it = items[i]!;
        audits.push({ kind: 'job.admit', actor: it.signerKeyids.join(','), subject: it.id, data: { target: it.target, caps: it.caps } });
        if (it.status === 'refused')
          audits.push({ kind: 'job.refuse', actor: 'coord', subject: it.id, data: { code: it.errorCode, message: it.errorMessage } });
      });
      return audits;
    });
    const toQueue: { jobId: string; node: string; envelope: string; attempt: number }[] = [];
    const waiting: string[] = [];
    outcomes.forEach((o, i) => {
      if (!('created' in o) || !o.created) {
        if ('created' in o) this.metrics.jobsReplayed++;
        return;
      }
      const it = items[i]!;
      this.metrics.jobsSubmitted++;
      if (it.status === 'refused') this.metrics.jobsRefused++;
      else if (it.status === 'queued') toQueue.push({ jobId: it.id, node: it.node!, envelope: it.envelope, attempt: 1 });
      else waiting.push(it.id);
    });
    if (toQueue.length > 0) {
      // Recorded as queued already: if Redis does not take them now, the reconciler finds them missing from
      // their queue and enqueues them then (R1). A refusal by a supervisor in another process ends the job.
      try {
        const refusals = await this.dispatchToSupervisor(toQueue);
        await Promise.all(
          refusals.map(async (err, i) => {
            if (err && !err.retryable) await this.refuseQueued(toQueue[i]!.jobId, err);
          }),
        );
      } catch (e) {
        this.log.warn({ jobs: toQueue.length, err: (e as Error).message, code: errorCodeOf(e) }, 'enqueue failed; the reconciler will enqueue these jobs');
      }
    }
    for (const id of waiting) {
      await this.ledger
        .appendJobEvent(id, { type: 'status', message: 'waiting: NODE_NOT_ACTIVE: no active, reachable node matches the target; the job waits until one is' })
        .catch(() => {});
    }
    return outcomes;
  }

  private async refuseQueued(jobId: string, err: ErrorJSON): Promise<void> {
    this.metrics.jobsRefused++;
    const t = await this.ledger.write(async (w) => {
      w.audit({ kind: 'job.refuse', actor: 'supervisor', subject: jobId, data: { code: err.code, message: err.message } });
      return w.transitionJob(jobId, 'refused', { errorCode: err.code, errorMessage: err.message, message: `refused: ${err.code}: ${err.message}` });
    });
    this.publishTransition(jobId, t);
  }

  /**
   * Dispatches a job recorded without a node (none could take it at admission), as admission does: choose
   * and authorise a node, record the job `queued` for it, then enqueue. Recording first matters: a runner
   * may report before the enqueue call returns, and its events are accepted only for the node the coord
   * recorded. Permanent refusals end the job; transient ones leave it for the next reconcile.
   */
  private async dispatch(jobId: string, stored: string, ifAttempts?: number): Promise<TransitionedJob | null> {
    try {
      const raw = await this.sendable(stored);
      // A job envelope, or a flow step's bundle: a step runs on the node its flow assigned it.
      const opened = openJobText(raw, { keys: this.keySets.ring, ...(this.opts.maxEnvelopeBytes ? { maxBytes: this.opts.maxEnvelopeBytes } : {}) });
      const job = opened.job;
      const workable = await this.nodes.workable();
      const placed = this.placeJob({ raw, job, signers: opened.signers }, opened.step ? workable.filter((n) => n.id === opened.step!.node) : workable);
      if (placed.status === 'admitted') {
        const t = 'node' in job.target ? `node ${job.target.node}` : `selector ${JSON.stringify(job.target.selector)}`;
        throw new WritError('NODE_NOT_ACTIVE', `no active, reachable node for ${t}; the job waits until one is`);
      }
      if (placed.status === 'refused') throw new WritError(isErrorCode(placed.errorCode) ? placed.errorCode : 'INTERNAL', placed.errorMessage);
      const node = placed.node!;
      const t = await this.ledger.dispatchAttempt(jobId, node, ifAttempts === undefined ? {} : { ifAttempts });
      if (!t) return null; // it ended meanwhile (expired, refused), or another writer dispatched it: nothing to enqueue
      this.publishTransition(jobId, t);
      // If Redis does not take it now, the reconciler finds it missing from its queue and dispatches it then.
      const [refusal] = await this.dispatchToSupervisor([{ jobId, node, envelope: raw, attempt: t.attempts }]);
      if (refusal && !refusal.retryable) await this.refuseQueued(jobId, refusal);
      return t;
    } catch (e) {
      const err = toErrorJSON(e, true);
      if (err.retryable) {
        this.log.warn({ jobId, code: err.code, reason: err.message }, 'dispatch deferred');
        await this.ledger.appendJobEvent(jobId, { type: 'status', message: `waiting: ${err.code}: ${err.message}` });
        return null;
      }
      this.metrics.jobsRefused++;
      const t = await this.ledger.write(async (w) => {
        w.audit({ kind: 'job.refuse', actor: 'coord', subject: jobId, data: { code: err.code, message: err.message } });
        return w.transitionJob(jobId, 'refused', { errorCode: err.code, errorMessage: err.message, message: `refused: ${err.code}: ${err.message}` });
      });
      this.publishTransition(jobId, t);
      return t;
    }
  }

  /** The ledger records a transition and its status event in one transaction; live subscribers get that event. */
  private publishTransition(jobId: string, t: TransitionedJob | null): void {
    if (t) this.publish(jobId, { seq: t.event.seq, type: t.event.type, level: t.event.level, message: t.event.message, data: t.event.data });
  }

  private publishFlow(flowId: string, events: readonly FlowEvent[]): void {
    for (const ev of events) this.events.emit(`flow:${flowId}`, ev);
  }

  /** Admits a signed flow (see FlowEngine.submit). */
  submitFlow(raw: string): Promise<{ id: string; status: string; replayed: boolean }> {
    return this.flows.submit(raw);
  }

  /**
   * Cancels a running flow: its pending and running steps end cancelled, their unfinished jobs fail
   * JOB_CANCELLED, and each job's attempt is stopped where it is (removed from its queue, or stopped by its
   * runner). A supervisor that cannot be reached is logged: the run ends on its own and its report is fenced off.
   */
  async cancelFlow(flowId: string, actor: string): Promise<{ status: string; stopped: number }> {
    const out = await this.flows.cancel(flowId, actor);
    await Promise.all(
      out.stopped.map(async (s) => {
        if (s.attempt < 1) return;
        try {
          await this.federation.cancel(s.jobId, s.attempt, s.node, this.nodes.poolOf(s.node));
        } catch (e) {
          this.log.warn(
            { jobId: s.jobId, node: s.node, err: (e as Error).message, code: errorCodeOf(e) },
            'could not ask the supervisor to stop a cancelled job',
          );
        }
      }),
    );
    return { status: out.status, stopped: out.stopped.length };
  }

  private publish(jobId: string, ev: JobEventMessage): void {
    this.events.emit(`job:${jobId}`, ev);
    this.opts.onEventPublished?.(jobId, ev.seq);
  }

  /**
   * Applies a signed supervisor report: every entry is a runner's event batch, verified here against the
   * registered key of the node it claims to come from (T14). An event is recorded only when its job was
   * dispatched to that node; anything else (unsigned, forged, another node's key, another node's job) is
   * refused and recorded as a security event. The whole report is one transaction: it resolves after the
   * commit, and rejects when the ledger could not write it, so the supervisor keeps the entries and retries.
   */
  async ingestReport(envelope: string): Promise<{ applied: number; refused: number }> {
    // Signed by the start-up supervisor's key or one the key set in force lists (else SUPERVISOR_NOT_LISTED, audited).
    const v = await this.federation.verifyReport(envelope);
    const report = parseSupervisorReport(v.payload);
    await this.federation.checkReportCarrier(v.listedAs, report.supervisor);
    const carrier = `supervisor:${report.supervisor}`;
    const refusals: AuditInput[] = [];
    const refuse = (reason: string, code: string, extra: Record<string, unknown> = {}) => {
      refusals.push({ kind: 'security', actor: carrier, subject: typeof extra.jobId === 'string' ? extra.jobId : '', data: { code, reason, ...extra } });
    };
    const batches: RunnerEventBatch[] = [];
    for (const entry of report.entries) {
      if ('malformed' in entry) {
        refuse(`an event stream entry not written by a runner: ${entry.malformed}`, 'SECURITY_EVENT');
        continue;
      }
      try {
        batches.push(await this.verifyRunnerBatch(entry.envelope));
      } catch (e) {
        // The node's key could not be read: not the batch's fault, so the report fails and is delivered again.
        if (errorCodeOf(e) === 'LEDGER_UNAVAILABLE' || errorCodeOf(e) === 'LEDGER_CORRUPT') throw e;
        const err = toErrorJSON(e, true);
        refuse(`runner events refused: ${err.message}`, err.code);
      }
    }
    // Which batch each event came in: a batch applied before (a redelivered report) is skipped as a whole.
    // Whether each event's job went to the node that signed it is judged on the job rows the write locks.
    const batchOf = new Map<RunnerEvent, string>();
    for (const b of batches) for (const ev of b.events) batchOf.set(ev, batchKey(b));
    const { recorded, retries, flowPasses, fresh, misattributed, unknownJobEvents } = await this.ledger.write(async (w) => {
      for (const r of refusals) w.audit(r);
      const firstTime = await claimBatchesIn(
        w.tx,
        batches.map((b) => ({ node: b.node, batch: b.batch })),
      );
      const fresh = [...batchOf].filter(([, key]) => firstTime.has(key)).map(([ev]) => ev);
      const applied = await w.applyRunnerEvents(fresh);
      for (const { event: ev, jobId, dispatchedTo } of applied.misattributed)
        w.audit({
          kind: 'security',
          actor: carrier,
          subject: jobId,
          data: {
            code: 'SECURITY_EVENT',
            reason: `node ${ev.node} reported a ${ev.type} event for job ${jobId}, which was dispatched to ${dispatchedTo ?? 'no node'}`,
            jobId,
            node: ev.node,
          },
        });
      // A flow step's signed result is kept with its job, in the same commit as the job's success. The row it goes
      // to names the step's node, so a result from any other node (misattributed above) finds none.
      const stepResults = fresh.flatMap((ev) =>
        ev.type === 'result' && ev.ok && ev.stepResult && ev.jobId !== null ? [{ jobId: ev.jobId, node: ev.node, stepResult: ev.stepResult }] : [],
      );
      await recordStepResultsIn(w.tx, stepResults);
      const ended = applied.recorded.filter(
        (e) =>
          e.type === 'status' &&
          typeof e.data === 'object' &&
          e.data !== null &&
          ['succeeded', 'failed', 'refused'].includes((e.data as { status?: string }).status ?? ''),
      );
      const retried = applied.retries.map((r) => r.jobId);
      // The flows whose step jobs ended or retry here move on in this same transaction (no commit of their own).
      const flows = await flowsOfJobs(w.tx, [...new Set([...ended.map((e) => e.jobId), ...retried])]);
      // The nodes a step can start on, from memory (no statement beside the transaction, which holds PGlite's one
      // connection), and only when a flow moves: most reports move none.
      return { ...applied, fresh: fresh.length, flowPasses: flows.length > 0 ? await this.flows.advanceManyIn(w.tx, flows, this.nodes.workableNow()) : null };
    });
    for (const e of recorded) this.publish(e.jobId, { seq: e.seq, type: e.type, level: e.level, message: e.message, data: e.data });
    if (retries.length > 0) await this.enqueueRetries(retries);
    if (flowPasses) {
      await this.flows.afterCommit(flowPasses.passes);
      for (const id of flowPasses.later)
        await this.flows.advance(id).catch((e) => this.log.warn({ flowId: id, err: (e as Error).message }, 'advancing a flow failed; the reconciler retries'));
    }
    const refused = refusals.length + misattributed.length;
    if (refused > 0) this.log.warn({ supervisor: report.supervisor, refused }, 'refused runner events: security event');
    this.metrics.reportsApplied++;
    // Applied: the events of batches not seen before, less those refused or about jobs the ledger does not know.
    const applied = fresh - misattributed.length - unknownJobEvents;
    this.metrics.eventsApplied += applied;
    this.metrics.eventsRefused += refused;
    return { applied, refused };
  }

  /** Verifies one runner event batch against the registered key of the node whose key id it names. */
  private async verifyRunnerBatch(raw: string): Promise<RunnerEventBatch> {
    const env = parseEnvelope(raw, MAX_RUNNER_BATCH_BYTES);
    const keyid = env.signatures[0]!.keyid;
    const signer = await this.nodeSigner(keyid);
    if (!signer) throw new WritError('UNKNOWN_KEY', `signed by ${keyid.slice(0, 80)}, which is no registered node's key`);
    const v = verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.runnerEvents, keys: signer.ring, maxBytes: MAX_RUNNER_BATCH_BYTES });
    const batch = parseRunnerEventBatch(v.payload);
    if (batch.node !== signer.nodeId) throw new WritError('SECURITY_EVENT', `node ${signer.nodeId} signed events that claim to come from node ${batch.node}`);
    return batch;
  }

  private async nodeSigner(keyid: string): Promise<NodeSigner | null> {
    const cached = this.nodeSigners.get(keyid);
    if (cached && Date.now() - cached.at < NODE_SIGNER_TTL_MS) return cached;
    const n = await this.nodes.opts.store.getNodeByKeyid(keyid);
    if (!n?.publicKey) return null;
    const signer = { nodeId: n.id, ring: new KeyRing([trustKeyB64url(n.publicKey)]), at: Date.now() };
    if (signer.ring.get(keyid) === undefined) return null; // the hint names another key than the node's
    this.nodeSigners.set(keyid, signer);
    return signer;
  }

  /** How long a retry waits: the backoff doubles with each retry, capped at a minute. */
  private retryDelayMs(attempt: number, envelope?: string): number {
    const stepBackoff = envelope !== undefined && isStepBundle(envelope) ? stepBackoffMs(envelope) : undefined;
    return backoffDelay(attempt - 2, stepBackoff ?? this.opts.retryBackoffMs ?? 1000, 60_000);
  }

  /**
   * Enqueues the attempts a report assigned to retry failed ones (already recorded queued). If Redis does
   * not take them now, the reconciler finds them missing and dispatches them then.
   */
  private async enqueueRetries(retries: readonly Retry[]): Promise<void> {
    try {
      const items = await Promise.all(retries.map(async (r) => ({ ...r, envelope: await this.sendable(r.envelope) })));
      await this.dispatchToSupervisor(
        items.map((r) => ({ jobId: r.jobId, node: r.node, envelope: r.envelope, attempt: r.attempt, delayMs: this.retryDelayMs(r.attempt, r.envelope) })),
      );
    } catch (e) {
      this.log.warn({ jobs: retries.length, err: (e as Error).message, code: errorCodeOf(e) }, 'enqueueing retries failed; the reconciler will dispatch them');
    }
  }

  /**
   * Dispatches a new attempt of a job on the node it was dispatched to before (the node's journal replays
   * what earlier attempts did there, so no effect repeats), with a new attempt number from the ledger.
   */
  private async redispatch(job: JobRecord, node: string, why: string, delayMs = 0): Promise<boolean> {
    // Only if the attempt judged is still the job's current one: a runner's report applied since this pass read
    // the job may have assigned the next attempt already (a retry), and a second new attempt would race it.
    const t = await this.ledger.dispatchAttempt(job.id, node, { message: (n) => `re-dispatched to ${node} as attempt ${n}: ${why}`, ifAttempts: job.attempts });
    if (!t) return false;
    this.publishTransition(job.id, t);
    const [refusal] = await this.dispatchToSupervisor([{ jobId: job.id, node, envelope: job.envelope, attempt: t.attempts, ...(delayMs ? { delayMs } : {}) }]);
    if (refusal && !refusal.retryable) await this.refuseQueued(job.id, refusal);
    this.log.info({ jobId: job.id, node, attempt: t.attempts, why }, 're-dispatched a job');
    this.metrics.redispatched++;
    return true;
  }

  /**
   * Hands attempts to a healthy supervisor of each node's pool (federation/registry.ts: failover to the pool's
   * other supervisors, the key set handed again to one that lost it).
   */
  private async dispatchToSupervisor(items: readonly DispatchItem[]): Promise<(ErrorJSON | null)[]> {
    const sendable = await Promise.all(items.map(async (it) => (isStoredStep(it.envelope) ? { ...it, envelope: await this.sendable(it.envelope) } : it)));
    return this.federation.dispatchMany(sendable, (node) => this.nodes.poolOf(node));
  }

  /** Signed flows by the sha256 of their envelope text, for the step rows that name them (flows/stored-step.ts). */
  private readonly flowEnvelopes = new Map<string, string>();

  /** A job row's envelope text as a supervisor takes it: a stored flow step gets its signed flow back. */
  private sendable(raw: string): Promise<string> {
    return sendableEnvelope(raw, async (sha) => {
      let env = this.flowEnvelopes.get(sha);
      if (env === undefined) {
        [env] = (await this.ledger.db.query<{ envelope: string }>('SELECT envelope FROM flows WHERE envelope_sha256 = $1 LIMIT 1', [sha])).map(
          (r) => r.envelope,
        );
        if (env === undefined) return undefined;
        if (this.flowEnvelopes.size >= 64) this.flowEnvelopes.delete(this.flowEnvelopes.keys().next().value!);
        this.flowEnvelopes.set(sha, env);
      }
      return env;
    });
  }

  /** Puts the current attempt of a job back on its queue (it was lost before any runner reported it). */
  private async reenqueue(job: JobRecord, node: string): Promise<void> {
    const [refusal] = await this.dispatchToSupervisor([{ jobId: job.id, node, envelope: job.envelope, attempt: job.attempts }]);
    if (refusal && !refusal.retryable) return this.refuseQueued(job.id, refusal);
    if (refusal) {
      this.log.warn(
        { jobId: job.id, node, attempt: job.attempts, code: refusal.code, reason: refusal.message },
        'could not enqueue a lost attempt again; will retry',
      );
      await this.ledger.touchJob(job.id);
      return;
    }
    await this.ledger.appendJobEvent(job.id, {
      type: 'status',
      message: `attempt ${job.attempts} enqueued again on ${node}: the queue had lost it before it started`,
    });
    this.log.info({ jobId: job.id, node, attempt: job.attempts }, 'enqueued a lost attempt again');
    this.metrics.redispatched++;
  }

  /** Ends a job as failed from the reconciler's side (no runner report will come), closing its attempts. */
  private async settleFailed(job: JobRecord, error: ErrorJSON, message: string, eventData?: Record<string, unknown>): Promise<boolean> {
    // Bound to the attempt judged (when it has one): a report applied since may have moved the job on.
    const t = await this.ledger.transitionJob(job.id, 'failed', {
      errorCode: error.code,
      errorMessage: error.message,
      message,
      ...(job.attempts > 0 ? { attempt: job.attempts } : {}),
      ...(eventData ? { eventData } : {}),
    });
    if (t) this.publishTransition(job.id, t);
    return t !== null;
  }

  /**
   * Looks after unfinished jobs nobody reported on for a while (R1, R3):
   * - admitted jobs get a node and attempt 1;
   * - an attempt whose queue entry vanished (Redis lost it) is dispatched again as a new attempt, but only
   *   once the node's heartbeat says no runner holds it: a job is never run twice at once;
   * - an attempt BullMQ gave up on (its lock expired: the runner died or stalled) becomes a new attempt
   *   unless a runner still holds it; one that failed with a reported error is settled or retried from
   *   that error when its report was lost.
   */
  async reconcile(): Promise<{ redispatched: number; settled: number }> {
    if (this.reconciling) return { redispatched: 0, settled: 0 };
    this.reconciling = true;
    this.metrics.reconcilePasses++;
    let redispatched = 0;
    let settled = 0;
    const claimed: string[] = [];
    try {
      // A job that waited past its envelope's expiry will never run (every tier refuses it): settle it.
      for (const job of await this.ledger.listExpiredWaiting()) {
        if (
          await this.settleFailed(
            job,
            { code: 'ENVELOPE_EXPIRED', message: `the envelope expired at ${job.exp.toISOString()} before the job could run`, retryable: false },
            'failed: ENVELOPE_EXPIRED: it expired while waiting',
          )
        )
          settled++;
      }
      const jobs = await this.claimForReconcile(await this.ledger.listUnfinished({ olderThanMs: this.opts.reconcileAfterMs ?? 5000 }), claimed);
      for (const job of jobs) {
        try {
          if (!job.node || job.status === 'admitted' || job.attempts === 0) {
            await this.dispatch(job.id, job.envelope, job.attempts);
            continue;
          }
          const node = job.node;
          const st = await this.federation.jobState(job.id, job.attempts, node, this.nodes.poolOf(node));
          if (st.state === 'missing') {
            if (st.held === 'no') {
              const current = (await this.ledger.listAttempts(job.id)).find((a) => a.attempt === job.attempts);
              if (current?.outcome === 'queued') {
                // No runner ever reported it: enqueue the same attempt again rather than number a new one, so a
                // queue that keeps losing entries (or refusing them) does not use up attempts. Had a runner
                // started it after all, the node refuses it as a replay and a new attempt follows (below).
                await this.reenqueue(job, node);
                redispatched++;
              } else if (await this.redispatch(job, node, `the queue had lost attempt ${job.attempts}`)) redispatched++;
            } else {
              // Held, or no recent heartbeat to ask (Redis lost it too, or the node is silent): look again later.
              if (st.held === 'unknown')
                this.log.info(
                  { jobId: job.id, node, attempt: job.attempts },
                  'the queue lost an attempt; waiting for the node to say whether it still runs it',
                );
              await this.ledger.touchJob(job.id);
            }
          } else if (st.state === 'failed') {
            // Writ's own failures carry their ErrorJSON (the runner reported them; this report was lost).
            // BullMQ's own reasons (the lock expired: the runner died or stalled) are plain text.
            const failure = parseQueueFailure(st.failedReason);
            const reported = failure?.error;
            if (reported?.code === 'JOB_REPLAYED') {
              // The node had started this attempt already (its report was lost): a new attempt resumes it there.
              if (await this.redispatch(job, node, `node ${node} had already started attempt ${job.attempts}`)) redispatched++;
            } else if (reported) {
              const failedBefore = (await this.ledger.listAttempts(job.id)).filter((a) => a.outcome === 'failed' && a.attempt !== job.attempts).length;
              if (!reported.retryable || failedBefore + 1 >= job.maxAttempts) {
                // The runner's error, and the run's duration it left in the queue beside it.
                const detail = { error: reported, ...(failure?.durationMs !== undefined ? { durationMs: failure.durationMs } : {}), settledFrom: 'queue' };
                if (await this.settleFailed(job, reported, `failed: ${reported.code}: ${reported.message}`, detail)) settled++;
              } else if (await this.redispatch(job, node, `attempt ${job.attempts} failed: ${reported.code}`, this.retryDelayMs(job.attempts + 1)))
                redispatched++;
            } else if (st.held === 'yes') {
              await this.ledger.touchJob(job.id); // its runner still executes it: its report will come
            } else if ((await this.ledger.listAttempts(job.id)).filter((a) => a.outcome === 'superseded').length + 1 >= MAX_LOST_ATTEMPTS) {
              // Its runner died or stalled under it again and again: it may be what kills the runner.
              const reason = `${MAX_LOST_ATTEMPTS} attempts were lost with their runner (the last: ${st.failedReason ?? 'given up by the queue'}); the job may be what crashes it`;
              if (await this.settleFailed(job, { code: 'INTERNAL', message: reason, retryable: true }, `failed: INTERNAL: ${reason}`)) settled++;
            } else if (await this.redispatch(job, node, `attempt ${job.attempts} was given up by the queue (${st.failedReason ?? 'no reason'})`))
              redispatched++;
          } else {
            // Alive in the queue (or completed, its report on the way): look again later, not in a tight loop.
            await this.ledger.touchJob(job.id);
          }
        } catch (e) {
          this.log.warn({ jobId: job.id, err: (e as Error).message, code: errorCodeOf(e) }, 'reconcile of one job failed');
        }
      }
    } finally {
      if (claimed.length > 0) await this.opts.leases?.release(LEASE_KINDS.job, claimed.splice(0));
      this.reconciling = false;
    }
    await this.flows.advanceAll().catch((e) => this.log.warn({ err: (e as Error).message }, 'advancing flows failed'));
    if (Date.now() - this.batchesPrunedAt > 600_000) {
      this.batchesPrunedAt = Date.now();
      await pruneBatches(this.ledger.db).catch((e) => this.log.warn({ err: (e as Error).message }, 'pruning applied runner batches failed'));
    }
    return { redispatched, settled };
  }

  /**
   * Several coords on one ledger: of the jobs listed, those whose lease this coord took (into `claimed`), as
   * they stand now that it holds them; a job another coord worked on since the listing is left for a later
   * pass. One coord (no leases): every job listed.
   */
  private async claimForReconcile(listed: JobRecord[], claimed: string[]): Promise<JobRecord[]> {
    const leases = this.opts.leases;
    if (!leases || listed.length === 0) return listed;
    claimed.push(
      ...(await leases.claim(
        LEASE_KINDS.job,
        listed.map((j) => j.id),
      )),
    );
    this.metrics.reconcileLeftToOthers += listed.length - claimed.length;
    const mine = new Set(claimed);
    const out: JobRecord[] = [];
    for (const seen of listed) {
      if (!mine.has(seen.id)) continue; // another coord drives it
      const fresh = await this.ledger.getJob(seen.id);
      if (fresh && fresh.status === seen.status && fresh.attempts === seen.attempts && fresh.updatedAt.getTime() === seen.updatedAt.getTime()) out.push(fresh);
    }
    return out;
  }
}
