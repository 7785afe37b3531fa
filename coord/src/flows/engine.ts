// The flow engine: drives signed flows durably from the ledger. Each decision about a flow is made in one
// transaction that holds the flow's row lock (`SELECT … FOR UPDATE`), so two coords on one PostgreSQL never
// drive the same flow at once and a coord killed mid-flow leaves nothing behind that the next pass (by any
// coord) does not pick up. With several coords, the reconcile pass drives only the flows whose lease
// (`writ.flow`, an advisory lock, ledger/leases.ts) this coord holds; it keeps a flow's lease while the flow
// runs, so one coord drives it and the others skip it, until that coord dies and its session with it. A step starts when its dependencies succeeded; it runs as one job, or one per
// matching node for a fan-out step; its retries are its job's attempts; a failed step fails its dependants.
import {
  WritError,
  authorizeJob,
  checkAudience,
  checkJobTimes,
  encodeStepBundle,
  errorCodeOf,
  parseFlowPayload,
  pickByJobId,
  sha256Hex,
  stepJobId,
  targetMatchesNode,
  toErrorJSON,
  topoOrder,
  verifyEnvelope,
  MAX_FLOW_ENVELOPE_BYTES,
  PAYLOAD_TYPES,
  type FlowPayload,
  type FlowStep,
  type KeySetHolder,
  type NodeView,
  type StepEvidence,
  type TrustedKey,
  type Logger,
} from '@writ/protocol';
import type { DispatchItem } from '@writ/supervisor';
import type { Queryable } from '../ledger/db.ts';
import type { Admission, AuditInput, Ledger } from '../ledger/index.ts';
import { admitJobsIn, transitionJobIn } from '../ledger/jobs.ts';
import { nodePublicKeysIn } from '../nodes/sql-store.ts';
import { appendAuditIn } from '../ledger/audit.ts';
import type { Leases } from '../ledger/leases.ts';
import {
  appendFlowEventsIn,
  getFlow,
  insertFlowIn,
  lockFlowHead,
  insertStepJobsIn,
  listStepJobs,
  readStepsIn,
  listSteps,
  runningFlowIds,
  setFlowIn,
  setStepIn,
  setStepsIn,
  stepResultsIn,
  type StepPatch,
  type FlowEvent,
  type FlowRecord,
  type StepJobRecord,
  type StepState,
} from './store.ts';
import { storedStepText } from './stored-step.ts';

export interface FlowEngineOptions {
  ledger: Ledger;
  keySets: KeySetHolder;
  clusterId: string;
  /**
   * Nodes that can take work now (accepted, reachable). `fresh`: as the shared ledger has them now, not as this
   * coord last heard (asked when steps start, with several coords), read through `via` when given.
   */
  workable(opts?: { fresh?: boolean; via?: Queryable }): Promise<NodeView[]>;
  /** Hands new step attempts to the supervisors after their rows committed (errors are the reconciler's). */
  dispatch(items: DispatchItem[]): Promise<void>;
  /** Live subscribers of a flow's events and of its jobs' transitions. */
  publish(flowId: string, events: FlowEvent[]): void;
  nowS(): number;
  log: Logger;
  /**
   * Several coords on one PostgreSQL: the reconcile pass drives only the flows whose `writ.flow` lease this
   * coord holds. None (one coord, PGlite): it drives every running flow.
   */
  leases?: Leases;
}

/** What one pass over a flow recorded, and what it hands the supervisors once its transaction committed. */
export interface AdvancePass {
  flowId: string;
  events: FlowEvent[];
  toDispatch: DispatchItem[];
}

/** The lease kind of driving a flow on the reconcile pass: `pg_locks.classid = hashtext('writ.flow')`. */
export const FLOW_LEASE = 'writ.flow';

export interface SubmitFlowResult {
  id: string;
  status: string;
  replayed: boolean;
}

interface OpenedFlow {
  /** The flow envelope as signed (every step bundle sent to a supervisor carries it). */
  envelope: string;
  /** sha256 of `envelope`: what a step's job row stores in its place (stored-step.ts). */
  envelopeSha256: string;
  flow: FlowPayload;
  signers: TrustedKey[];
  order: string[];
  byName: Map<string, FlowStep>;
}

const TERMINAL_JOB = new Set(['succeeded', 'failed', 'refused']);
const FAILED_JOB = new Set(['failed', 'refused']);

export class FlowEngine {
  /** Parsed flows by id and envelope hash (the signed document never changes under an id). */
  private readonly opened = new Map<string, OpenedFlow>();
  private readonly advancing = new Map<string, Promise<void>>();
  /** Flows whose lease this coord took (kept while they run). */
  private readonly leased = new Set<string>();
  readonly metrics = { flowsSubmitted: 0, advances: 0, stepJobsCreated: 0, flowsLeftToOthers: 0 };

  constructor(private readonly opts: FlowEngineOptions) {}

  private open(f: Pick<FlowRecord, 'id' | 'envelope' | 'envelopeSha256'>): OpenedFlow {
    const key = `${f.id}:${f.envelopeSha256}`;
    const hit = this.opened.get(key);
    if (hit) return hit;
    const v = verifyEnvelope(f.envelope, { payloadType: PAYLOAD_TYPES.flow, keys: this.opts.keySets.ring, maxBytes: MAX_FLOW_ENVELOPE_BYTES });
    const flow = parseFlowPayload(v.payload);
    const o: OpenedFlow = {
      envelope: f.envelope,
      envelopeSha256: f.envelopeSha256,
      flow,
      signers: v.signers,
      order: topoOrder(flow),
      byName: new Map(flow.steps.map((s) => [s.name, s])),
    };
    if (this.opened.size >= 1000) this.opened.delete(this.opened.keys().next().value!);
    this.opened.set(key, o);
    return o;
  }

  /**
   * Admits a signed flow: verified against the key set in force, checked (audience, time, graph), and every
   * step authorised for its target, so the thresholds of dangerous capabilities count over all steps. Then
   * recorded with its steps pending and driven at once. A replay of the same envelope answers with the flow.
   */
  async submit(raw: string): Promise<SubmitFlowResult> {
    const nowS = this.opts.nowS();
    this.opts.keySets.ensureUsable(nowS);
    const v = verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.flow, keys: this.opts.keySets.ring, maxBytes: MAX_FLOW_ENVELOPE_BYTES });
    const flow = parseFlowPayload(v.payload);
    checkJobTimes(flow, nowS);
    checkAudience(flow, this.opts.clusterId);
    const workable = await this.opts.workable();
    for (const s of flow.steps) {
      const node = 'node' in s.target ? workable.find((n) => n.id === (s.target as { node: string }).node) : undefined;
      try {
        authorizeJob({ caps: s.caps, target: s.target }, v.signers, this.opts.keySets.grants, node, { dangerousThreshold: this.opts.keySets.threshold });
      } catch (e) {
        const err = e as WritError;
        throw new WritError(err.code, `step ${s.name}: ${err.message}`, err.details);
      }
    }
    const envelopeSha256 = sha256Hex(raw);
    const signerKeyids = v.signers.map((s) => s.keyid);
    const created = await this.opts.ledger.db.transaction(async (tx) => {
      const ok = await insertFlowIn(tx, {
        id: flow.id,
        envelope: raw,
        envelopeSha256,
        payloadSha256: sha256Hex(v.payload),
        signerKeyids,
        steps: flow.steps.map((s) => s.name),
        exp: new Date(flow.exp * 1000),
      });
      if (ok) {
        await appendFlowEventsIn(tx, flow.id, [
          { type: 'flow', message: `flow admitted: ${flow.steps.length} step(s)`, data: { status: 'running', steps: flow.steps.length } },
        ]);
        await appendAuditIn(tx, [
          {
            kind: 'flow.admit',
            actor: signerKeyids.join(','),
            subject: flow.id,
            data: { steps: flow.steps.map((s) => ({ name: s.name, target: s.target, caps: s.caps, each: s.each ?? false })) },
          },
        ]);
      }
      return ok;
    });
    if (!created) {
      const existing = await getFlow(this.opts.ledger.db, flow.id);
      if (!existing) throw new WritError('INTERNAL', `flow ${flow.id} conflicted on insert but cannot be read`);
      if (existing.envelopeSha256 !== envelopeSha256)
        throw new WritError('FLOW_ID_CONFLICT', `flow id ${flow.id} is already used by a different envelope`, { id: flow.id });
      return { id: flow.id, status: existing.status, replayed: true };
    }
    this.metrics.flowsSubmitted++;
    this.opts.log.info({ flowId: flow.id, steps: flow.steps.length }, 'flow admitted');
    await this.advance(flow.id);
    const now = await getFlow(this.opts.ledger.db, flow.id);
    return { id: flow.id, status: now?.status ?? 'running', replayed: false };
  }

  /**
   * Drives every running flow once (the reconciler's pass: catches up after a crash or a lost notification);
   * with several coords, only the flows whose lease this coord holds or takes now.
   */
  async advanceAll(): Promise<void> {
    const running = await runningFlowIds(this.opts.ledger.db);
    for (const id of await this.leaseFlows(running)) {
      try {
        await this.advance(id);
      } catch (e) {
        this.opts.log.warn({ flowId: id, err: (e as Error).message, code: errorCodeOf(e) }, 'advancing a flow failed; the next pass retries');
      }
    }
  }

  /**
   * Of the running flows, those this coord drives on its pass: every one without leases; else those whose lease
   * it held already (while its session lasted) or takes now. Leases of flows that ended are given back.
   */
  private async leaseFlows(running: string[]): Promise<string[]> {
    const leases = this.opts.leases;
    if (!leases) return running;
    const live = new Set(running);
    const ended: string[] = [];
    for (const id of this.leased) {
      // Lost with the session (the server released it already), or the flow ended (here or on another coord).
      if (!leases.holds(FLOW_LEASE, id)) this.leased.delete(id);
      else if (!live.has(id)) ended.push(id);
    }
    if (ended.length > 0) {
      for (const id of ended) this.leased.delete(id);
      await leases.release(FLOW_LEASE, ended);
    }
    for (const id of await leases.claim(
      FLOW_LEASE,
      running.filter((id) => !this.leased.has(id)),
    ))
      this.leased.add(id);
    const mine = running.filter((id) => this.leased.has(id));
    this.metrics.flowsLeftToOthers += running.length - mine.length;
    return mine;
  }

  /** Drives one flow; concurrent calls for the same flow in this process share one pass plus one more. */
  advance(flowId: string): Promise<void> {
    const running = this.advancing.get(flowId);
    const next = (running ?? Promise.resolve()).catch(() => {}).then(() => this.advanceOnce(flowId));
    const tracked = next.finally(() => {
      if (this.advancing.get(flowId) === tracked) this.advancing.delete(flowId);
    });
    this.advancing.set(flowId, tracked);
    return tracked;
  }

  private async advanceOnce(flowId: string): Promise<void> {
    // Read before the transaction: it goes through another connection (PGlite has one, held by the transaction).
    const workable = await this.opts.workable();
    const pass = await this.opts.ledger.db.transaction((tx) => this.advanceIn(tx, flowId, workable));
    if (pass) await this.afterCommit(pass);
  }

  /**
   * Drives these flows inside a transaction the caller already holds (the one that recorded the runner's
   * report that finished their step jobs), so a pass costs no transaction of its own. A flow whose row another
   * transaction holds (another coord's pass, a cancel) is not waited for, so the caller's transaction never
   * waits on a flow while it holds job rows. Each pass runs under a savepoint: a pass that fails is undone
   * alone and the caller's writes stand. Flows skipped or failed are returned in `later`, for `advance()`
   * after the commit; call `afterCommit` with `passes` once committed.
   */
  async advanceManyIn(tx: Queryable, flowIds: readonly string[], workable: NodeView[]): Promise<{ passes: AdvancePass[]; later: string[] }> {
    const passes: AdvancePass[] = [];
    const later: string[] = [];
    for (const id of flowIds) {
      await tx.query('SAVEPOINT writ_flow_pass');
      try {
        const pass = await this.advanceIn(tx, id, workable, { skipLocked: true });
        await tx.query('RELEASE SAVEPOINT writ_flow_pass');
        if (pass) passes.push(pass);
        else later.push(id);
      } catch (e) {
        await tx.query('ROLLBACK TO SAVEPOINT writ_flow_pass');
        this.opts.log.warn(
          { flowId: id, err: (e as Error).message, code: errorCodeOf(e) },
          'advancing a flow with its report failed; it is advanced on its own',
        );
        later.push(id);
      }
    }
    return { passes, later };
  }

  /** After a pass committed: its events to live subscribers, its new step attempts to the supervisors. */
  async afterCommit(pass: AdvancePass | readonly AdvancePass[]): Promise<void> {
    for (const { flowId, events, toDispatch } of Array.isArray(pass) ? pass : [pass]) {
      // A subscriber that throws loses its own events, not the other flows' dispatch (the passes committed).
      if (events.length > 0)
        try {
          this.opts.publish(flowId, events);
        } catch (e) {
          this.opts.log.warn({ flowId, err: (e as Error).message }, 'a subscriber of the flow failed on its events');
        }
      if (toDispatch.length > 0) {
        this.metrics.stepJobsCreated += toDispatch.length;
        await this.opts
          .dispatch(toDispatch)
          .catch((e) => this.opts.log.warn({ flowId, jobs: toDispatch.length, err: (e as Error).message }, 'enqueueing step jobs failed; the reconciler will'));
      }
    }
  }

  /**
   * One pass over a flow, in `tx`: what it recorded, and what to hand the supervisors once committed. Null when
   * `skipLocked` and another transaction holds the flow's row.
   */
  private async advanceIn(tx: Queryable, flowId: string, workableNow: NodeView[], lock: { skipLocked?: boolean } = {}): Promise<AdvancePass | null> {
    this.metrics.advances++;
    const toDispatch: DispatchItem[] = [];
    let workable = workableNow;
    // With several coords (PostgreSQL), the nodes a starting step gets are read from the ledger again, once for
    // the pass: a node that another coord activated a moment ago is not in this coord's memory yet, and a
    // fan-out step's nodes are fixed when it starts. One coord alone (PGlite): its memory is the ledger.
    let followed = !this.opts.leases;
    const startingNodes = async () => {
      if (!followed) {
        followed = true;
        // Through the pass's own transaction: no second connection while it holds one (a pool could run dry).
        workable = await this.opts.workable({ fresh: true, via: tx });
      }
      return workable;
    };
    const events = await (async () => {
      // The row lock, without the envelope: the parsed flow is cached by its hash.
      const f = await lockFlowHead(tx, flowId, lock);
      if (!f) return null;
      if (f.status !== 'running') return [];
      const o = this.opened.get(`${f.id}:${f.envelopeSha256}`) ?? this.open((await getFlow(tx, flowId))!);
      const read = await readStepsIn(tx, flowId);
      const steps = new Map(read.steps.map((s) => [s.step, s]));
      const jobs = read.jobs;
      const jobsOf = (step: string) => jobs.filter((j) => j.step === step);
      const out: { type: 'flow' | 'step'; step?: string; message: string; data?: unknown }[] = [];
      const audits: AuditInput[] = [];
      // The pass's step changes, merged per step and written in one statement at its end (setStepsIn).
      const patches = new Map<string, StepPatch>();
      // Steps that start instances in this pass, on these nodes.
      const toCreate: { def: FlowStep; nodes: string[] }[] = [];
      const setStep = async (
        name: string,
        patch: { status: StepState['status']; nodes?: string[]; errorCode?: string; errorMessage?: string },
        message: string,
      ) => {
        const prev = patches.get(name);
        // A later change of the same step in this pass wins field by field; `started` sticks once set.
        patches.set(name, { ...prev, ...patch, step: name, started: (prev?.started ?? false) || patch.status === 'running' });
        const cur = steps.get(name)!;
        steps.set(name, {
          ...cur,
          status: patch.status,
          nodes: patch.nodes ?? cur.nodes,
          errorCode: patch.errorCode ?? cur.errorCode,
          errorMessage: patch.errorMessage ?? cur.errorMessage,
        });
        out.push({
          type: 'step',
          step: name,
          message,
          data: {
            status: patch.status,
            ...(patch.nodes ? { nodes: patch.nodes } : {}),
            ...(patch.errorCode ? { error: { code: patch.errorCode, message: patch.errorMessage } } : {}),
          },
        });
      };
      if (o.flow.exp <= this.opts.nowS()) {
        for (const [name, st] of steps) {
          if (st.status === 'pending' || st.status === 'running')
            await setStep(
              name,
              { status: 'failed', errorCode: 'ENVELOPE_EXPIRED', errorMessage: 'the flow expired before this step finished' },
              `step ${name} failed: ENVELOPE_EXPIRED`,
            );
        }
      }
      for (const name of o.order) {
        const def = o.byName.get(name)!;
        let st = steps.get(name)!;
        if (st.status === 'pending') {
          const deps = def.depends.map((d) => steps.get(d)!);
          const bad = deps.find((d) => d.status === 'failed' || d.status === 'cancelled');
          if (bad) {
            await setStep(
              name,
              { status: 'failed', errorCode: 'STEP_DEPENDENCY_FAILED', errorMessage: `step ${bad.step} ${bad.status}` },
              `step ${name} failed: its dependency ${bad.step} ${bad.status}`,
            );
            continue;
          }
          if (!deps.every((d) => d.status === 'succeeded')) continue;
          const nodes = this.chooseNodes(o.flow.id, def, await startingNodes());
          if (nodes.length === 0) continue; // no node matches yet: the next pass looks again
          const what = def.each
            ? `step ${name} runs on ${nodes.length} node(s): ${nodes.join(', ')}${def.maxParallel ? `, at most ${def.maxParallel} at once` : ''}`
            : `step ${name} started on ${nodes[0]}`;
          await setStep(name, { status: 'running', nodes }, what);
          st = steps.get(name)!;
        }
        if (st.status !== 'running') continue;
        const mine = jobsOf(name);
        const nodes = st.nodes ?? [];
        const failed = mine.filter((j) => FAILED_JOB.has(j.status));
        const active = mine.filter((j) => !TERMINAL_JOB.has(j.status));
        const maxFailures = def.maxFailures ?? 0;
        if (failed.length > maxFailures) {
          const first = failed[0]!;
          const what = def.each
            ? `${failed.length} of ${nodes.length} node(s) failed it (maxFailures ${maxFailures}); first: ${first.node}: ${first.errorCode}`
            : `${first.errorCode}: ${first.errorMessage ?? ''}`;
          await setStep(name, { status: 'failed', errorCode: first.errorCode ?? 'INTERNAL', errorMessage: what }, `step ${name} failed: ${what}`);
          continue;
        }
        const started = new Set(mine.map((j) => j.node));
        const notStarted = nodes.filter((n) => !started.has(n));
        const room = Math.max(0, (def.maxParallel ?? Number.MAX_SAFE_INTEGER) - active.length);
        if (notStarted.length > 0 && room > 0) {
          // Recorded after the loop, all of the pass's new instances at once (a later step of this pass cannot
          // depend on them: a step starts only when its dependencies succeeded).
          toCreate.push({ def, nodes: notStarted.slice(0, room) });
          continue;
        }
        if (notStarted.length === 0 && active.length === 0) {
          const ok = mine.filter((j) => j.status === 'succeeded').length;
          await setStep(name, { status: 'succeeded' }, `step ${name} succeeded${def.each ? ` on ${ok} of ${nodes.length} node(s)` : ''}`);
        }
      }
      if (toCreate.length > 0) {
        // The nodes as read for the steps that started in this pass (fresh, with several coords); the later
        // instances of a step already running (maxParallel) are placed on the nodes as this coord knows them.
        const created = await this.createInstances(tx, o, toCreate, jobs, workable);
        toDispatch.push(...created.dispatch);
        for (const { def } of toCreate) {
          const mine = created.records.filter((j) => j.step === def.name);
          if (def.each && mine.length > 0)
            out.push({
              type: 'step',
              step: def.name,
              message: `step ${def.name}: started on ${mine.map((j) => j.node).join(', ')}`,
              data: { status: 'running', jobs: mine.map((j) => ({ id: j.jobId, node: j.node, status: j.status })) },
            });
        }
      }
      const all = [...steps.values()];
      if (all.every((s) => s.status === 'succeeded' || s.status === 'failed' || s.status === 'cancelled')) {
        const failedStep = o.order.map((n) => steps.get(n)!).find((s) => s.status !== 'succeeded');
        if (failedStep) {
          await setFlowIn(tx, flowId, {
            status: 'failed',
            errorCode: failedStep.errorCode ?? 'INTERNAL',
            errorMessage: `step ${failedStep.step} ${failedStep.status}: ${failedStep.errorMessage ?? ''}`,
          });
          out.push({
            type: 'flow',
            message: `flow failed: step ${failedStep.step} ${failedStep.status}`,
            data: { status: 'failed', error: { code: failedStep.errorCode, message: failedStep.errorMessage } },
          });
        } else {
          await setFlowIn(tx, flowId, { status: 'succeeded' });
          out.push({ type: 'flow', message: 'flow succeeded', data: { status: 'succeeded' } });
        }
        audits.push({ kind: 'flow.finish', actor: 'coord', subject: flowId, data: { status: failedStep ? 'failed' : 'succeeded' } });
      }
      await setStepsIn(tx, flowId, [...patches.values()]);
      await appendAuditIn(tx, audits);
      return appendFlowEventsIn(tx, flowId, out);
    })();
    // No row: held by another transaction (skipLocked), or no such flow (nothing to do either way).
    if (events === null) return lock.skipLocked ? null : { flowId, events: [], toDispatch };
    return { flowId, events, toDispatch };
  }

  /** The nodes a step runs on: its node; one matching workable node; or, fan-out, every matching workable node. */
  private chooseNodes(flowId: string, def: FlowStep, workable: readonly NodeView[]): string[] {
    if ('node' in def.target) return [def.target.node];
    const matching = workable.filter((n) => targetMatchesNode(def.target, n));
    if (matching.length === 0) return [];
    if (def.each) return matching.map((n) => n.id).sort();
    return [pickByJobId(stepJobId(flowId, def.name, null), matching).id];
  }

  /**
   * Records the jobs of these steps on their nodes, in one admission: each carries the signed flow and the
   * signed results its inputs come from, authorised for its node as any job is. A step whose producers'
   * results cannot be vouched for yet (no registered key) waits for a later pass. Returns the records and
   * what to enqueue.
   */
  private async createInstances(
    tx: Queryable,
    o: OpenedFlow,
    starts: readonly { def: FlowStep; nodes: readonly string[] }[],
    jobs: readonly StepJobRecord[],
    workable: readonly NodeView[],
  ): Promise<{ records: StepJobRecord[]; dispatch: DispatchItem[] }> {
    // The producers' signed results and their nodes' registered keys, read in this transaction, once for the
    // pass (only when a starting step takes inputs).
    const producersOf = (def: FlowStep) => new Set(Object.values(def.inputs ?? {}).map((r) => r.from));
    const wanted = new Set(starts.flatMap(({ def }) => [...producersOf(def)]));
    const produced = jobs.filter((j) => wanted.has(j.step) && j.status === 'succeeded' && j.hasResult);
    const results = await stepResultsIn(
      tx,
      o.flow.id,
      produced.map((j) => j.jobId),
    );
    const keys = await nodePublicKeysIn(tx, [...new Set(produced.map((j) => j.node))]);
    const items: Admission[] = [];
    const bundles: string[] = [];
    const placed: { step: string; node: string }[] = [];
    for (const { def, nodes } of starts) {
      const producers = producersOf(def);
      const evidence: StepEvidence[] = [];
      let vouched = true;
      for (const j of produced) {
        if (!producers.has(j.step)) continue;
        const publicKey = keys.get(j.node);
        const result = results.get(j.jobId);
        if (!publicKey || !result)
          vouched = false; // no registered key to vouch for it (yet): wait
        else evidence.push({ step: j.step, node: j.node, publicKey, result });
      }
      if (!vouched) continue;
      for (const node of nodes) {
        // Sent with the whole signed flow; stored with the flow named by its hash (stored-step.ts).
        bundles.push(encodeStepBundle({ flow: o.envelope, step: def.name, node, evidence }));
        placed.push({ step: def.name, node });
        const stored = storedStepText({ flowEnvelopeSha256: o.envelopeSha256, step: def.name, node, evidence });
        const id = stepJobId(o.flow.id, def.name, def.each ? node : null);
        const view = workable.find((n) => n.id === node);
        const base = {
          id,
          envelope: stored,
          envelopeSha256: sha256Hex(stored),
          signerKeyids: o.signers.map((s) => s.keyid),
          target: def.target,
          caps: def.caps,
          exp: new Date(o.flow.exp * 1000),
          maxAttempts: (def.retries?.max ?? 0) + 1,
        };
        if (!view) {
          items.push({ ...base, status: 'admitted' });
          continue;
        }
        try {
          authorizeJob({ caps: def.caps, target: def.target }, o.signers, this.opts.keySets.grants, view, { dangerousThreshold: this.opts.keySets.threshold });
          items.push({ ...base, status: 'queued', node });
        } catch (e) {
          const err = toErrorJSON(e, true);
          items.push({ ...base, status: 'refused', errorCode: err.code, errorMessage: err.message });
        }
      }
    }
    if (items.length === 0) return { records: [], dispatch: [] };
    const outcomes = await admitJobsIn(tx, this.opts.ledger.jobLimits, items);
    const records: StepJobRecord[] = [];
    const dispatch: DispatchItem[] = [];
    const rows: { jobId: string; flowId: string; step: string; node: string }[] = [];
    outcomes.forEach((out, i) => {
      const it = items[i]!;
      const { step, node } = placed[i]!;
      rows.push({ jobId: it.id, flowId: o.flow.id, step, node });
      const status = 'error' in out ? 'failed' : out.status;
      records.push({
        jobId: it.id,
        step,
        node,
        hasResult: false,
        status,
        attempts: it.status === 'queued' ? 1 : 0,
        errorCode: it.errorCode ?? null,
        errorMessage: it.errorMessage ?? null,
      });
      if ('created' in out && out.created && it.status === 'queued') dispatch.push({ jobId: it.id, node, envelope: bundles[i]!, attempt: 1 });
    });
    await insertStepJobsIn(tx, rows);
    return { records, dispatch };
  }

  /**
   * Cancels a running flow: pending and running steps end `cancelled`, and their unfinished jobs end failed
   * with JOB_CANCELLED (a runner that reports later is fenced off: the job is terminal). Returns the jobs
   * that were unfinished, so the caller can stop them where they run.
   */
  async cancel(flowId: string, actor: string): Promise<{ status: string; stopped: { jobId: string; node: string; attempt: number }[] }> {
    const stopped: { jobId: string; node: string; attempt: number }[] = [];
    const events = await this.opts.ledger.db.transaction(async (tx) => {
      const f = await getFlow(tx, flowId, { lock: true });
      if (!f) throw new WritError('FLOW_NOT_FOUND', `no flow ${flowId}`);
      if (f.status !== 'running') throw new WritError('FLOW_FINISHED', `flow ${flowId} already ${f.status}`, { status: f.status });
      const out: { type: 'flow' | 'step'; step?: string; message: string; data?: unknown }[] = [];
      for (const st of await listSteps(tx, flowId)) {
        if (st.status !== 'pending' && st.status !== 'running') continue;
        await setStepIn(tx, flowId, st.step, { status: 'cancelled', errorCode: 'JOB_CANCELLED', errorMessage: `cancelled by ${actor}` });
        out.push({ type: 'step', step: st.step, message: `step ${st.step} cancelled`, data: { status: 'cancelled' } });
      }
      for (const j of await listStepJobs(tx, flowId)) {
        if (TERMINAL_JOB.has(j.status)) continue;
        const t = await transitionJobIn(tx, this.opts.ledger.jobLimits, j.jobId, 'failed', {
          errorCode: 'JOB_CANCELLED',
          errorMessage: `flow ${flowId} was cancelled by ${actor}`,
          message: `failed: JOB_CANCELLED: flow ${flowId} was cancelled`,
        });
        if (t) stopped.push({ jobId: j.jobId, node: j.node, attempt: j.attempts });
      }
      await setFlowIn(tx, flowId, { status: 'cancelled', errorCode: 'JOB_CANCELLED', errorMessage: `cancelled by ${actor}` });
      out.push({ type: 'flow', message: `flow cancelled by ${actor}`, data: { status: 'cancelled' } });
      await appendAuditIn(tx, [{ kind: 'flow.cancel', actor, subject: flowId, data: { stopped: stopped.map((s) => s.jobId) } }]);
      return appendFlowEventsIn(tx, flowId, out);
    });
    this.opts.publish(flowId, events);
    return { status: 'cancelled', stopped };
  }
}
