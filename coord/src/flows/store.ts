// Flows in the ledger: one row per flow, one per step, and one per step instance (a job: `<flow>.<step>`, or
// `<flow>.<step>.<node>` for each node of a fan-out step). A step instance's attempts are its job's attempts
// (job_attempts), so retries, reconciliation and exactly-once effects are the job machinery's. The signed
// result of each succeeded instance is kept with it: later steps take their inputs from it.
import type { Queryable } from '../ledger/db.ts';
import { NOW_MS } from '../ledger/jobs.ts';
import { storableJson, storableText } from '../ledger/json.ts';

export const FLOWS_MIGRATION_SQL = `
  CREATE TABLE flows (
    id              text PRIMARY KEY,
    envelope        text NOT NULL,
    envelope_sha256 text NOT NULL,
    payload_sha256  text NOT NULL,
    signer_keyids   text[] NOT NULL,
    status          text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    step_count      integer NOT NULL,
    error_code      text,
    error_message   text,
    exp             timestamptz(3) NOT NULL,
    event_seq       integer NOT NULL DEFAULT 0,
    created_at      timestamptz(3) NOT NULL,
    updated_at      timestamptz(3) NOT NULL,
    finished_at     timestamptz(3)
  );
  CREATE INDEX flows_running ON flows (updated_at) WHERE status = 'running';
  CREATE INDEX flows_created ON flows (created_at DESC, id);
  CREATE TABLE flow_steps (
    flow_id       text NOT NULL REFERENCES flows (id),
    step          text NOT NULL,
    status        text NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    nodes         text[],
    error_code    text,
    error_message text,
    started_at    timestamptz(3),
    finished_at   timestamptz(3),
    PRIMARY KEY (flow_id, step)
  );
  CREATE TABLE flow_jobs (
    job_id      text PRIMARY KEY REFERENCES jobs (id),
    flow_id     text NOT NULL,
    step        text NOT NULL,
    node        text NOT NULL,
    step_result text,
    FOREIGN KEY (flow_id, step) REFERENCES flow_steps (flow_id, step)
  );
  CREATE INDEX flow_jobs_step ON flow_jobs (flow_id, step);
  CREATE TABLE flow_events (
    flow_id  text NOT NULL REFERENCES flows (id),
    seq      integer NOT NULL,
    at       timestamptz(3) NOT NULL,
    type     text NOT NULL,
    step     text,
    message  text NOT NULL,
    data     jsonb,
    PRIMARY KEY (flow_id, seq)
  );
`;

export type FlowStatus = 'running' | 'succeeded' | 'failed' | 'cancelled';
export type StepStatus = 'pending' | 'running' | 'succeeded' | 'failed' | 'cancelled';
export const FLOW_STATUSES: readonly FlowStatus[] = ['running', 'succeeded', 'failed', 'cancelled'];

export interface FlowRecord {
  id: string;
  envelope: string;
  envelopeSha256: string;
  payloadSha256: string;
  signerKeyids: string[];
  status: FlowStatus;
  stepCount: number;
  errorCode: string | null;
  errorMessage: string | null;
  exp: Date;
  createdAt: Date;
  updatedAt: Date;
  finishedAt: Date | null;
}

/** What the engine reads of a step on every pass. */
export interface StepState {
  step: string;
  status: StepStatus;
  nodes: string[] | null;
  errorCode: string | null;
  errorMessage: string | null;
}

export interface StepRecord extends StepState {
  startedAt: Date | null;
  finishedAt: Date | null;
}

export interface StepJobRecord {
  jobId: string;
  step: string;
  node: string;
  /** Whether the ledger holds the runner-signed result of this instance (read with `stepResultsIn`). */
  hasResult: boolean;
  status: string;
  attempts: number;
  errorCode: string | null;
  errorMessage: string | null;
}

export interface FlowEvent {
  seq: number;
  at: Date;
  type: 'flow' | 'step';
  step: string | null;
  message: string;
  data: unknown;
}

interface FlowRow {
  id: string;
  envelope: string;
  envelope_sha256: string;
  payload_sha256: string;
  signer_keyids: string[];
  status: FlowStatus;
  step_count: number;
  error_code: string | null;
  error_message: string | null;
  exp: Date | string;
  created_at: Date | string;
  updated_at: Date | string;
  finished_at: Date | string | null;
}

const FLOW_COLUMNS =
  'id, envelope, envelope_sha256, payload_sha256, signer_keyids, status, step_count, error_code, error_message, exp, created_at, updated_at, finished_at';
const date = (v: Date | string): Date => (v instanceof Date ? v : new Date(v));

function flowFromRow(r: FlowRow): FlowRecord {
  return {
    id: r.id,
    envelope: r.envelope,
    envelopeSha256: r.envelope_sha256,
    payloadSha256: r.payload_sha256,
    signerKeyids: r.signer_keyids,
    status: r.status,
    stepCount: Number(r.step_count),
    errorCode: r.error_code,
    errorMessage: r.error_message,
    exp: date(r.exp),
    createdAt: date(r.created_at),
    updatedAt: date(r.updated_at),
    finishedAt: r.finished_at === null ? null : date(r.finished_at),
  };
}

/** Records a new flow and its steps (all pending). Returns false when the id exists (the caller compares hashes). */
export async function insertFlowIn(
  tx: Queryable,
  f: { id: string; envelope: string; envelopeSha256: string; payloadSha256: string; signerKeyids: string[]; steps: string[]; exp: Date },
): Promise<boolean> {
  const rows = await tx.query<{ id: string }>(
    `INSERT INTO flows (id, envelope, envelope_sha256, payload_sha256, signer_keyids, status, step_count, exp, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, ${NOW_MS}, ${NOW_MS}) ON CONFLICT (id) DO NOTHING RETURNING id`,
    [f.id, f.envelope, f.envelopeSha256, f.payloadSha256, f.signerKeyids, f.steps.length, f.exp.toISOString()],
  );
  if (rows.length === 0) return false;
  await tx.query(`INSERT INTO flow_steps (flow_id, step, status) SELECT $1, s, 'pending' FROM unnest($2::text[]) AS s`, [f.id, f.steps]);
  return true;
}

export async function getFlow(db: Queryable, id: string, opts: { lock?: boolean } = {}): Promise<FlowRecord | null> {
  const [r] = await db.query<FlowRow>(`SELECT ${FLOW_COLUMNS} FROM flows WHERE id = $1${opts.lock ? ' FOR UPDATE' : ''}`, [id]);
  return r ? flowFromRow(r) : null;
}

/**
 * Locks a flow's row for this transaction and reads what decides whether to drive it (not its envelope).
 * `skipLocked`: null at once when another transaction holds the row, instead of waiting for it.
 */
export async function lockFlowHead(
  tx: Queryable,
  id: string,
  opts: { skipLocked?: boolean } = {},
): Promise<{ id: string; status: FlowStatus; envelopeSha256: string } | null> {
  const [r] = await tx.query<{ id: string; status: FlowStatus; envelope_sha256: string }>(
    `SELECT id, status, envelope_sha256 FROM flows WHERE id = $1 FOR UPDATE${opts.skipLocked ? ' SKIP LOCKED' : ''}`,
    [id],
  );
  return r ? { id: r.id, status: r.status, envelopeSha256: r.envelope_sha256 } : null;
}

export async function listFlows(db: Queryable, q: { status?: FlowStatus; limit?: number; before?: string }): Promise<FlowRecord[]> {
  const rows = await db.query<FlowRow>(
    `SELECT ${FLOW_COLUMNS} FROM flows WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR id < $2) ORDER BY created_at DESC, id DESC LIMIT $3`,
    [q.status ?? null, q.before ?? null, Math.max(1, Math.min(q.limit ?? 50, 500))],
  );
  return rows.map(flowFromRow);
}

export async function runningFlowIds(db: Queryable, limit = 1000): Promise<string[]> {
  const rows = await db.query<{ id: string }>(`SELECT id FROM flows WHERE status = 'running' ORDER BY updated_at, id LIMIT $1`, [limit]);
  return rows.map((r) => r.id);
}

export async function listSteps(db: Queryable, flowId: string): Promise<StepRecord[]> {
  const rows = await db.query<{
    step: string;
    status: StepStatus;
    nodes: string[] | null;
    error_code: string | null;
    error_message: string | null;
    started_at: Date | string | null;
    finished_at: Date | string | null;
  }>('SELECT step, status, nodes, error_code, error_message, started_at, finished_at FROM flow_steps WHERE flow_id = $1', [flowId]);
  return rows.map((r) => ({
    step: r.step,
    status: r.status,
    nodes: r.nodes,
    errorCode: r.error_code,
    errorMessage: r.error_message,
    startedAt: r.started_at === null ? null : date(r.started_at),
    finishedAt: r.finished_at === null ? null : date(r.finished_at),
  }));
}

/** A step job row as the engine and the API read it (with its job's state, without the signed result). */
interface StepJobRow {
  job_id: string;
  step: string;
  node: string;
  has_result: boolean;
  status: string;
  attempts: number;
  error_code: string | null;
  error_message: string | null;
}

const stepJobFromRow = (r: StepJobRow): StepJobRecord => ({
  jobId: r.job_id,
  step: r.step,
  node: r.node,
  hasResult: r.has_result,
  status: r.status,
  attempts: Number(r.attempts),
  errorCode: r.error_code,
  errorMessage: r.error_message,
});

export async function listStepJobs(db: Queryable, flowId: string): Promise<StepJobRecord[]> {
  const rows = await db.query<StepJobRow>(
    // Without the signed results themselves (a few hundred bytes each, read on every pass of the engine).
    `SELECT fj.job_id, fj.step, fj.node, fj.step_result IS NOT NULL AS has_result, j.status, j.attempts, j.error_code, j.error_message
     FROM flow_jobs fj JOIN jobs j ON j.id = fj.job_id WHERE fj.flow_id = $1 ORDER BY fj.step, fj.node`,
    [flowId],
  );
  return rows.map(stepJobFromRow);
}

/**
 * What a pass of the engine reads after locking the flow: its steps (without their times) and its step jobs
 * (as listStepJobs), in one statement (one round trip, one snapshot), not two.
 */
export async function readStepsIn(tx: Queryable, flowId: string): Promise<{ steps: StepState[]; jobs: StepJobRecord[] }> {
  // A step row (kind 's': the job columns null) or a step job row (kind 'j': nodes null).
  type Row =
    | { kind: 's'; step: string; status: StepStatus; nodes: string[] | null; error_code: string | null; error_message: string | null }
    | ({ kind: 'j' } & StepJobRow);
  const rows = await tx.query<Row>(
    `SELECT 's' AS kind, step, status, nodes, error_code, error_message, NULL::text AS job_id, NULL::text AS node, NULL::boolean AS has_result,
            NULL::integer AS attempts
     FROM flow_steps WHERE flow_id = $1
     UNION ALL
     SELECT 'j', fj.step, j.status, NULL, j.error_code, j.error_message, fj.job_id, fj.node, fj.step_result IS NOT NULL, j.attempts
     FROM flow_jobs fj JOIN jobs j ON j.id = fj.job_id WHERE fj.flow_id = $1
     ORDER BY kind, step, node`,
    [flowId],
  );
  const steps: StepState[] = [];
  const jobs: StepJobRecord[] = [];
  for (const r of rows) {
    if (r.kind === 's') steps.push({ step: r.step, status: r.status, nodes: r.nodes, errorCode: r.error_code, errorMessage: r.error_message });
    else jobs.push(stepJobFromRow(r));
  }
  return { steps, jobs };
}

export async function insertStepJobsIn(tx: Queryable, rows: readonly { jobId: string; flowId: string; step: string; node: string }[]): Promise<void> {
  if (rows.length === 0) return;
  await tx.query(
    `INSERT INTO flow_jobs (job_id, flow_id, step, node)
     SELECT r.job_id, r.flow_id, r.step, r.node FROM jsonb_to_recordset($1::jsonb) AS r(job_id text, flow_id text, step text, node text)
     ON CONFLICT (job_id) DO NOTHING`,
    [JSON.stringify(rows.map((r) => ({ job_id: r.jobId, flow_id: r.flowId, step: r.step, node: r.node })))],
  );
}

/** The signed results the ledger holds for these step instances of a flow, by job id. */
export async function stepResultsIn(db: Queryable, flowId: string, jobIds: readonly string[]): Promise<Map<string, string>> {
  if (jobIds.length === 0) return new Map();
  const rows = await db.query<{ job_id: string; step_result: string }>(
    'SELECT job_id, step_result FROM flow_jobs WHERE flow_id = $1 AND job_id = ANY($2::text[]) AND step_result IS NOT NULL',
    [flowId, jobIds],
  );
  return new Map(rows.map((r) => [r.job_id, r.step_result]));
}

/**
 * Keeps the signed results of succeeded step instances, in the transaction that records the runner events
 * they came with. Only for jobs that are step instances on the node that signed them.
 */
export async function recordStepResultsIn(tx: Queryable, results: readonly { jobId: string; node: string; stepResult: string }[]): Promise<string[]> {
  if (results.length === 0) return [];
  const rows = await tx.query<{ flow_id: string }>(
    `UPDATE flow_jobs fj SET step_result = r.step_result
     FROM jsonb_to_recordset($1::jsonb) AS r(job_id text, node text, step_result text)
     WHERE fj.job_id = r.job_id AND fj.node = r.node
     RETURNING fj.flow_id`,
    [JSON.stringify(results.map((r) => ({ job_id: r.jobId, node: r.node, step_result: r.stepResult })))],
  );
  return [...new Set(rows.map((r) => r.flow_id))];
}

/** The flows some of these jobs are step instances of. */
export async function flowsOfJobs(db: Queryable, jobIds: readonly string[]): Promise<string[]> {
  if (jobIds.length === 0) return [];
  const rows = await db.query<{ flow_id: string }>('SELECT DISTINCT flow_id FROM flow_jobs WHERE job_id = ANY($1::text[]) ORDER BY flow_id', [jobIds]);
  return rows.map((r) => r.flow_id);
}

export async function setStepIn(
  tx: Queryable,
  flowId: string,
  step: string,
  patch: { status: StepStatus; nodes?: string[]; errorCode?: string; errorMessage?: string },
): Promise<void> {
  const terminal = patch.status !== 'pending' && patch.status !== 'running';
  await tx.query(
    `UPDATE flow_steps SET status = $3, nodes = COALESCE($4::text[], nodes), error_code = COALESCE($5, error_code), error_message = COALESCE($6, error_message),
       started_at = CASE WHEN $3 = 'running' AND started_at IS NULL THEN ${NOW_MS} ELSE started_at END,
       finished_at = CASE WHEN $7 THEN ${NOW_MS} ELSE finished_at END
     WHERE flow_id = $1 AND step = $2`,
    [
      flowId,
      step,
      patch.status,
      patch.nodes ?? null,
      patch.errorCode ?? null,
      patch.errorMessage === undefined ? null : storableText(patch.errorMessage),
      terminal,
    ],
  );
}

/** What one pass of the engine changes about a step (setStepsIn writes a pass's changes in one statement). */
export interface StepPatch {
  step: string;
  status: StepStatus;
  nodes?: string[];
  errorCode?: string;
  errorMessage?: string;
  /** The step went `running` in this pass (its started_at is set if it had none). */
  started: boolean;
}

/** Writes every step change of one engine pass in one statement, as setStepIn would one by one. */
export async function setStepsIn(tx: Queryable, flowId: string, patches: readonly StepPatch[]): Promise<void> {
  if (patches.length === 0) return;
  const rows = patches.map((p) => ({
    step: p.step,
    status: p.status,
    nodes: p.nodes ?? null,
    error_code: p.errorCode ?? null,
    error_message: p.errorMessage === undefined ? null : storableText(p.errorMessage),
    started: p.started,
    terminal: p.status !== 'pending' && p.status !== 'running',
  }));
  await tx.query(
    `UPDATE flow_steps s SET status = p.status,
       nodes = CASE WHEN p.nodes IS NULL THEN s.nodes ELSE ARRAY(SELECT jsonb_array_elements_text(p.nodes)) END,
       error_code = COALESCE(p.error_code, s.error_code), error_message = COALESCE(p.error_message, s.error_message),
       started_at = CASE WHEN p.started AND s.started_at IS NULL THEN ${NOW_MS} ELSE s.started_at END,
       finished_at = CASE WHEN p.terminal THEN ${NOW_MS} ELSE s.finished_at END
     FROM jsonb_to_recordset($2::jsonb) AS p(step text, status text, nodes jsonb, error_code text, error_message text, started boolean, terminal boolean)
     WHERE s.flow_id = $1 AND s.step = p.step`,
    [flowId, JSON.stringify(rows)],
  );
}

export async function setFlowIn(tx: Queryable, flowId: string, patch: { status: FlowStatus; errorCode?: string; errorMessage?: string }): Promise<void> {
  const terminal = patch.status !== 'running';
  await tx.query(
    `UPDATE flows SET status = $2, error_code = COALESCE($3, error_code), error_message = COALESCE($4, error_message), updated_at = ${NOW_MS},
       finished_at = CASE WHEN $5 THEN ${NOW_MS} ELSE finished_at END WHERE id = $1`,
    [flowId, patch.status, patch.errorCode ?? null, patch.errorMessage === undefined ? null : storableText(patch.errorMessage), terminal],
  );
}

/** Appends flow events (step and flow transitions) with consecutive sequence numbers. */
export async function appendFlowEventsIn(
  tx: Queryable,
  flowId: string,
  events: readonly { type: 'flow' | 'step'; step?: string; message: string; data?: unknown }[],
): Promise<FlowEvent[]> {
  if (events.length === 0) return [];
  // A flow that recorded events was updated: its updated_at moves with its event_seq, in one statement.
  const [r] = await tx.query<{ event_seq: number }>(`UPDATE flows SET event_seq = event_seq + $2, updated_at = ${NOW_MS} WHERE id = $1 RETURNING event_seq`, [
    flowId,
    events.length,
  ]);
  const first = Number(r!.event_seq) - events.length + 1;
  const rows = events.map((e, i) => ({
    seq: first + i,
    type: e.type,
    step: e.step ?? null,
    message: storableText(e.message),
    data: e.data === undefined ? null : storableJson(e.data),
  }));
  const out = await tx.query<{ seq: number; at: Date | string }>(
    `INSERT INTO flow_events (flow_id, seq, at, type, step, message, data)
     SELECT $1, e.seq, ${NOW_MS}, e.type, e.step, e.message, e.data FROM jsonb_to_recordset($2::jsonb) AS e(seq integer, type text, step text, message text, data jsonb)
     RETURNING seq, at`,
    [flowId, JSON.stringify(rows)],
  );
  const at = new Map(out.map((o) => [Number(o.seq), date(o.at)]));
  return rows.map((e) => ({ seq: e.seq, at: at.get(e.seq) ?? new Date(), type: e.type, step: e.step, message: e.message, data: e.data }));
}

export async function listFlowEvents(db: Queryable, flowId: string, afterSeq: number, limit = 500): Promise<FlowEvent[]> {
  const rows = await db.query<{ seq: number; at: Date | string; type: 'flow' | 'step'; step: string | null; message: string; data: unknown }>(
    'SELECT seq, at, type, step, message, data FROM flow_events WHERE flow_id = $1 AND seq > $2 ORDER BY seq LIMIT $3',
    [flowId, afterSeq, Math.max(1, Math.min(limit, 5000))],
  );
  return rows.map((r) => ({ seq: Number(r.seq), at: date(r.at), type: r.type, step: r.step, message: r.message, data: r.data }));
}
