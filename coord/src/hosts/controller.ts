// The host rollout controller (issue 12): moves a signed host deployment through its batches. It hands out
// the switch jobs the admin signed, one node per free slot of the budget (maxUnavailable counts nodes
// switching and nodes failed), a batch only after the one before it ended, and pauses as soon as failed
// nodes fill the budget. A failed node was already rolled back by the nix SAL's health gate on the node
// (the job fails NIX_ACTIVATION_FAILED and the profile keeps its old generation); the controller records
// that and touches no further node. Every step goes to the deployment's step list and the audit log.
// The controller holds no key: it can only submit jobs the admin signed (T10).
import type { EventEmitter } from 'node:events';
import {
  HOST_DEPLOYMENT_PAYLOAD_TYPE,
  PAYLOAD_TYPES,
  TERMINAL_STATUSES,
  WritError,
  authorizeJob,
  checkAudience,
  checkHostSwitchJob,
  checkJobTimes,
  errorCodeOf,
  parseHostDeploymentPayload,
  parseJobPayload,
  sha256Hex,
  toErrorJSON,
  verifyEnvelope,
  type DeploymentNodeState,
  type DeploymentState,
  type DeploymentView,
  type HostDeploymentPayload,
  type KeySetHolder,
  type NodeView,
} from '@writ/protocol';
import type { Db } from '../ledger/db.ts';
import type { JobRecord, Ledger } from '../ledger/index.ts';
import { HostDeploymentStore, type DeploymentNodeRecord, type DeploymentRecord, type StepInput } from './store.ts';

/** What the controller needs from the coord (CoordService provides it). */
export interface HostControllerDeps {
  clusterId: string;
  ledger: Ledger;
  keySets: KeySetHolder;
  events: EventEmitter;
  nodes: { getNode(id: string): Promise<{ id: string; labels: Record<string, string> } | null> };
  submit(raw: string): Promise<{ id: string; status: string }>;
  nowS(): number;
  logger?: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void };
}

export interface HostControllerOptions {
  /** How often deployments are looked at when no job event woke the controller (default 1000 ms). */
  pollMs?: number;
}

export interface CreateDeploymentBody {
  deployment: string;
  jobs: string[];
}

const ACTOR = 'coord:hosts';
const IN_FLIGHT: readonly DeploymentNodeState[] = ['draining', 'switching'];
const ENDED: readonly DeploymentNodeState[] = ['switched', 'failed', 'skipped'];

export class HostController {
  readonly store: HostDeploymentStore;
  /** The ledger's database (cluster intent is applied through it: ./intent.ts). */
  readonly db: Db;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = true;
  /** Job ids of switches in flight, mapped to the listener that wakes the controller when one ends. */
  private readonly watching = new Map<string, () => void>();

  constructor(
    private readonly deps: HostControllerDeps,
    private readonly opts: HostControllerOptions = {},
  ) {
    this.store = new HostDeploymentStore(deps.ledger.db);
    this.db = deps.ledger.db;
  }

  start(): void {
    this.stopped = false;
    this.timer = setInterval(() => this.wake(), this.opts.pollMs ?? 1000);
    this.timer.unref();
    this.wake();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    for (const [job, fn] of this.watching) this.deps.events.off(`job:${job}`, fn);
    this.watching.clear();
    await this.running?.catch(() => {});
  }

  /** Runs a pass now (or right after the one in progress). */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        try {
          await this.tick();
        } catch (e) {
          this.deps.logger?.warn({ err: (e as Error).message, code: errorCodeOf(e) }, 'host rollout pass failed; retrying');
        }
      } while (this.again && !this.stopped);
    })().finally(() => {
      this.running = null;
    });
  }

  /** Waits until the pass in progress (if any) ended: for tests and shutdown. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  // ---- operator actions ----

  /**
   * Verifies and records a deployment: its envelope verifies against the key set in force, every switch job
   * is the one the deployment binds (same script, system pinned, node, health check), is signed by the same
   * keys, and those keys may run it on that node. Creating the same deployment again returns it.
   */
  async create(body: CreateDeploymentBody): Promise<{ deployment: DeploymentView; created: boolean }> {
    const nowS = this.deps.nowS();
    this.deps.keySets.ensureUsable(nowS);
    const v = verifyEnvelope(body.deployment, { payloadType: HOST_DEPLOYMENT_PAYLOAD_TYPE, keys: this.deps.keySets.ring });
    const spec = parseHostDeploymentPayload(v.payload);
    checkJobTimes(spec, nowS);
    checkAudience(spec, this.deps.clusterId);
    const envelopeSha256 = sha256Hex(body.deployment);
    const existing = await this.store.get(spec.id);
    if (existing) {
      if (existing.envelopeSha256 !== envelopeSha256)
        throw new WritError('RESOURCE_CONFLICT', `host deployment ${spec.id} exists with another envelope`, { id: spec.id });
      return { deployment: await this.view(existing), created: false };
    }
    if (body.jobs.length !== spec.nodes.length)
      throw new WritError('DEPLOYMENT_INVALID', `the deployment names ${spec.nodes.length} nodes but ${body.jobs.length} switch jobs came with it`);
    const signers = v.signers.map((s) => s.keyid).sort();
    const nodes: { node: string; jobId: string; jobEnvelope: string }[] = [];
    for (const [i, raw] of body.jobs.entries()) {
      const node = spec.nodes[i]!;
      const jv = verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.job, keys: this.deps.keySets.ring });
      const job = parseJobPayload(jv.payload);
      checkHostSwitchJob(spec, node, job, sha256Hex(raw));
      const jobSigners = jv.signers.map((s) => s.keyid).sort();
      if (JSON.stringify(jobSigners) !== JSON.stringify(signers)) {
        throw new WritError(
          'DEPLOYMENT_INVALID',
          `the switch job for node ${node} is signed by ${jobSigners.join(', ')}, the deployment by ${signers.join(', ')}: both must carry the same signatures`,
        );
      }
      const known = await this.deps.nodes.getNode(node);
      if (!known) throw new WritError('DEPLOYMENT_INVALID', `node ${node} is not known to the ledger`, { node });
      const view: NodeView = { id: known.id, labels: known.labels };
      authorizeJob(job, jv.signers, this.deps.keySets.grants, view, { dangerousThreshold: this.deps.keySets.threshold });
      nodes.push({ node, jobId: job.id, jobEnvelope: raw });
    }
    const created = await this.store.create({ id: spec.id, envelope: body.deployment, envelopeSha256, signerKeyids: signers, spec, nodes }, [
      {
        kind: 'created',
        actor: signers.join(','),
        data: {
          system: spec.system,
          source: spec.source ?? null,
          nodes: spec.nodes,
          batchSize: spec.batchSize,
          maxUnavailable: spec.maxUnavailable,
          drain: spec.drain,
        },
      },
      { kind: 'batch', actor: ACTOR, data: { batch: 0, of: Math.ceil(spec.nodes.length / spec.batchSize), nodes: spec.nodes.slice(0, spec.batchSize) } },
    ]);
    const rec = await this.store.get(spec.id);
    if (!rec) throw new WritError('INTERNAL', `host deployment ${spec.id} vanished after it was recorded`);
    if (created) this.wake();
    return { deployment: await this.view(rec), created };
  }

  async pause(id: string, actor: string): Promise<DeploymentView> {
    return this.operatorChange(id, ['running'], { state: 'paused', reason: `paused by ${actor}` }, { kind: 'paused', actor, data: { by: 'operator' } });
  }

  /**
   * Resumes a paused deployment. The nodes that failed so far stay failed (on the system they had: the health
   * gate rolled them back) and stop counting against the budget; the rollout goes on with the nodes not yet
   * touched. A failed node is switched again only by a new deployment (its signed job has run).
   */
  async resume(id: string, actor: string): Promise<DeploymentView> {
    const nodes = await this.store.nodes(id);
    const failed = nodes.filter((n) => n.state === 'failed').length;
    return this.operatorChange(
      id,
      ['paused'],
      { state: 'running', reason: null, failuresAccepted: failed },
      { kind: 'resumed', actor, data: { failedNodesAccepted: failed } },
    );
  }

  /** Aborts: no further node is touched (pending ones are skipped); switches in flight end and are recorded. */
  async abort(id: string, actor: string): Promise<DeploymentView> {
    return this.operatorChange(
      id,
      ['running', 'paused'],
      { state: 'aborted', reason: `aborted by ${actor}`, finished: true, skipPending: true },
      { kind: 'aborted', actor, data: {} },
    );
  }

  private async operatorChange(
    id: string,
    from: readonly DeploymentState[],
    patch: Parameters<HostDeploymentStore['update']>[2],
    step: StepInput,
  ): Promise<DeploymentView> {
    const d = await this.store.get(id);
    if (!d) throw new WritError('NOT_FOUND', `no host deployment ${id}`);
    if (!(await this.store.update(id, { state: from }, patch, [step]))) {
      const now = await this.store.get(id);
      throw new WritError(
        'DEPLOYMENT_STATE',
        `host deployment ${id} is ${now?.state ?? d.state}; ${step.kind === 'resumed' ? 'resume' : step.kind === 'paused' ? 'pause' : 'abort'} needs it ${from.join(' or ')}`,
        { state: now?.state ?? d.state },
      );
    }
    this.wake();
    return this.view((await this.store.get(id))!);
  }

  // ---- views ----

  async get(id: string, withSteps = true): Promise<DeploymentView> {
    const d = await this.store.get(id);
    if (!d) throw new WritError('NOT_FOUND', `no host deployment ${id}`);
    return this.view(d, withSteps);
  }

  async list(): Promise<DeploymentView[]> {
    return Promise.all((await this.store.list()).map((d) => this.view(d, false)));
  }

  async view(d: DeploymentRecord, withSteps = true): Promise<DeploymentView> {
    const nodes = await this.store.nodes(d.id);
    const counts = { pending: 0, draining: 0, switching: 0, switched: 0, failed: 0, skipped: 0 };
    for (const n of nodes) counts[n.state]++;
    return {
      id: d.id,
      state: d.state,
      reason: d.reason,
      system: d.spec.system,
      source: d.spec.source ?? null,
      profile: d.spec.profile,
      selector: d.spec.selector,
      batchSize: d.spec.batchSize,
      maxUnavailable: d.spec.maxUnavailable,
      drain: d.spec.drain,
      timeoutS: d.spec.timeoutS,
      batch: d.batch,
      batches: Math.ceil(d.spec.nodes.length / d.spec.batchSize),
      signers: d.signerKeyids,
      counts,
      nodes: nodes.map((n) => ({
        node: n.node,
        batch: n.batch,
        state: n.state,
        job: n.jobId,
        error: n.errorCode ? { code: n.errorCode, message: n.errorMessage ?? '' } : null,
        startedAt: n.startedAt?.toISOString() ?? null,
        finishedAt: n.finishedAt?.toISOString() ?? null,
      })),
      ...(withSteps
        ? { steps: (await this.store.steps(d.id)).map((s) => ({ seq: s.seq, at: s.at.toISOString(), kind: s.kind, node: s.node, data: s.data })) }
        : {}),
      createdAt: d.createdAt.toISOString(),
      updatedAt: d.updatedAt.toISOString(),
      finishedAt: d.finishedAt?.toISOString() ?? null,
    };
  }

  // ---- the rollout ----

  private async tick(): Promise<void> {
    for (const d of await this.store.active()) {
      if (this.stopped) return;
      await this.advance(d);
    }
  }

  private watch(jobId: string): void {
    if (this.watching.has(jobId)) return;
    const fn = () => this.wake();
    this.watching.set(jobId, fn);
    this.deps.events.on(`job:${jobId}`, fn);
  }

  private unwatch(jobId: string): void {
    const fn = this.watching.get(jobId);
    if (fn) this.deps.events.off(`job:${jobId}`, fn);
    this.watching.delete(jobId);
  }

  private async advance(d: DeploymentRecord): Promise<void> {
    const spec = d.spec;
    let nodes = await this.store.nodes(d.id);
    // 1. Nodes in flight: settle the ones whose switch ended, time out the ones past the deadline.
    let settled = false;
    for (const n of nodes.filter((x) => IN_FLIGHT.includes(x.state))) settled = (await this.settle(d, n)) || settled;
    if (settled) nodes = await this.store.nodes(d.id);
    if (d.state !== 'running') return;

    const failed = nodes.filter((n) => n.state === 'failed').length;
    const budgetUsed = failed - d.failuresAccepted;
    const inFlight = nodes.filter((n) => IN_FLIGHT.includes(n.state)).length;
    // 2. Failed nodes filled the budget: pause; nothing further is touched.
    if (budgetUsed >= spec.maxUnavailable) {
      const names = nodes.filter((n) => n.state === 'failed').map((n) => n.node);
      await this.store.update(
        d.id,
        { state: ['running'] },
        {
          state: 'paused',
          reason: `${budgetUsed} failed node(s) (${names.join(', ')}) reached maxUnavailable ${spec.maxUnavailable}; no further node is touched`,
        },
        [{ kind: 'paused', actor: ACTOR, data: { by: 'budget', failed: names, maxUnavailable: spec.maxUnavailable } }],
      );
      return;
    }
    const batches = Math.ceil(spec.nodes.length / spec.batchSize);
    let batch = d.batch;
    let current = nodes.filter((n) => n.batch === batch);
    // 3. The batch ended: on to the next one, or the end.
    if (current.every((n) => ENDED.includes(n.state))) {
      if (batch + 1 >= batches) {
        const state: DeploymentState = failed > 0 ? 'failed' : 'succeeded';
        await this.store.update(
          d.id,
          { state: ['running'], batch },
          { state, reason: failed > 0 ? `${failed} node(s) failed and kept their previous system` : null, finished: true },
          [
            {
              kind: state,
              actor: ACTOR,
              data: { switched: nodes.filter((n) => n.state === 'switched').length, failed, skipped: nodes.filter((n) => n.state === 'skipped').length },
            },
          ],
        );
        return;
      }
      batch++;
      if (
        !(await this.store.update(d.id, { state: ['running'], batch: d.batch }, { batch }, [
          { kind: 'batch', actor: ACTOR, data: { batch, of: batches, nodes: nodes.filter((n) => n.batch === batch).map((n) => n.node) } },
        ]))
      )
        return;
      current = nodes.filter((n) => n.batch === batch);
    }
    // 4. Start nodes of this batch while the budget has room.
    let room = spec.maxUnavailable - budgetUsed - inFlight;
    for (const n of current.filter((x) => x.state === 'pending')) {
      if (room <= 0) break;
      if (spec.drain) {
        if (
          await this.store.moveNode(
            d.id,
            n.node,
            ['pending'],
            'draining',
            { started: true },
            { kind: 'drain', node: n.node, actor: ACTOR, data: { job: n.jobId } },
          )
        ) {
          room--;
          await this.settle(d, { ...n, state: 'draining', startedAt: new Date() });
        }
      } else if (await this.dispatch(d, n, ['pending'])) {
        room--;
      }
    }
  }

  /** Hands the node's signed switch job to the coord's ordinary admission; the node is `switching` from then on. */
  private async dispatch(d: DeploymentRecord, n: DeploymentNodeRecord, from: readonly DeploymentNodeState[]): Promise<boolean> {
    if (
      !(await this.store.moveNode(
        d.id,
        n.node,
        from,
        'switching',
        { started: true },
        { kind: 'dispatch', node: n.node, actor: ACTOR, data: { job: n.jobId, batch: n.batch } },
      ))
    )
      return false;
    this.watch(n.jobId);
    try {
      const r = await this.deps.submit(n.jobEnvelope);
      this.deps.logger?.info({ deployment: d.id, node: n.node, job: r.id, status: r.status }, 'host switch job submitted');
    } catch (e) {
      const err = toErrorJSON(e, true);
      this.unwatch(n.jobId);
      await this.store.moveNode(
        d.id,
        n.node,
        ['switching'],
        'failed',
        { errorCode: err.code, errorMessage: err.message, finished: true },
        { kind: 'failed', node: n.node, actor: ACTOR, data: { job: n.jobId, code: err.code, message: err.message, stage: 'admission' } },
      );
      this.wake();
    }
    return true;
  }

  /** Looks at one node in flight; true when it changed state. */
  private async settle(d: DeploymentRecord, n: DeploymentNodeRecord): Promise<boolean> {
    const elapsedMs = n.startedAt ? Date.now() - n.startedAt.getTime() : 0;
    const late = elapsedMs > d.spec.timeoutS * 1000;
    if (n.state === 'draining') {
      const others = await this.store.otherUnfinishedJobs(n.node, n.jobId);
      if (others === 0) return this.dispatch(d, n, ['draining']);
      if (late)
        return this.fail(
          d,
          n,
          'DEPLOYMENT_NODE_TIMEOUT',
          `node ${n.node} still ran ${others} other job(s) after ${d.spec.timeoutS} s of draining; its system was not touched`,
          'drain',
        );
      return false;
    }
    const job: JobRecord | null = await this.deps.ledger.getJob(n.jobId);
    if (job && TERMINAL_STATUSES.has(job.status)) {
      this.unwatch(n.jobId);
      if (job.status === 'succeeded') {
        return this.store.moveNode(
          d.id,
          n.node,
          ['switching'],
          'switched',
          { result: job.result ?? null, finished: true },
          { kind: 'switched', node: n.node, actor: ACTOR, data: { job: n.jobId, result: job.result ?? null } },
        );
      }
      // NIX_ACTIVATION_FAILED: the SAL re-activated the previous generation and left the profile as it was.
      const code = job.errorCode ?? 'INTERNAL';
      return this.fail(d, n, code, job.errorMessage ?? `switch job ${job.status}`, code === 'NIX_ACTIVATION_FAILED' ? 'health' : 'switch');
    }
    if (late) {
      this.unwatch(n.jobId);
      return this.fail(
        d,
        n,
        'DEPLOYMENT_NODE_TIMEOUT',
        `node ${n.node} did not finish its switch within ${d.spec.timeoutS} s (job ${n.jobId} is ${job?.status ?? 'unrecorded'}; it may still end, and its outcome stays in the job's record)`,
        'timeout',
      );
    }
    return false;
  }

  private async fail(d: DeploymentRecord, n: DeploymentNodeRecord, code: string, message: string, stage: string): Promise<boolean> {
    const rolledBack = code === 'NIX_ACTIVATION_FAILED';
    return this.store.moveNode(
      d.id,
      n.node,
      ['draining', 'switching'],
      'failed',
      { errorCode: code, errorMessage: message, finished: true },
      {
        kind: 'failed',
        node: n.node,
        actor: ACTOR,
        data: { job: n.jobId, code, message, stage, rolledBack },
      },
    );
  }
}

export type { HostDeploymentPayload };
