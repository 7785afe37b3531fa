// Jobs, their attempts and their event stream. The jobs table is what stops a replay (T5) and what the
// reconciler re-dispatches from (R1); transitions are fenced by attempt number so late reports cannot
// overwrite newer state.
import { JOB_STATUSES, TERMINAL_STATUSES, WritError, type JobStatus, type JobTarget } from '@writ/protocol';
import type { Db, Queryable } from './db.ts';
import { storableJson, storableText, truncateUtf8 } from './json.ts';

export { JOB_STATUSES, TERMINAL_STATUSES, type JobStatus };
const UNFINISHED: readonly JobStatus[] = ['admitted', 'queued', 'running'];

export interface JobRecord {
  id: string;
  /** The signed envelope exactly as received. */
  envelope: string;
  envelopeSha256: string;
  signerKeyids: string[];
  target: JobTarget;
  node: string | null;
  caps: string[];
  status: JobStatus;
  attempts: number;
  maxAttempts: number;
  result: unknown;
  errorCode: string | null;
  errorMessage: string | null;
  exp: Date;
  createdAt: Date;
  updatedAt: Date;
  finishedAt: Date | null;
}

export interface NewJob {
  id: string;
  envelope: string;
  envelopeSha256: string;
  signerKeyids: string[];
  target: JobTarget;
  caps: string[];
  exp: Date;
  maxAttempts?: number;
  node?: string | null;
}

export interface TransitionPatch {
  result?: unknown;
  errorCode?: string;
  errorMessage?: string;
  /** The attempt this report is about; the fencing token. */
  attempt?: number;
  node?: string;
  /** Text of the status event recorded with the transition (default: "<from> → <to>"). */
  message?: string;
  /** Extra data for that event, stored under `detail`. */
  eventData?: unknown;
}

export type JobEventType = 'status' | 'log' | 'security';

export interface JobEventInput {
  type: JobEventType;
  level?: string;
  message: string;
  data?: unknown;
}

export interface JobEvent {
  seq: number;
  at: Date;
  type: JobEventType;
  level: string | null;
  message: string;
  data: unknown;
}

/** A job after a transition, with the status event recorded in the same transaction. */
export type TransitionedJob = JobRecord & { event: JobEvent };

/**
 * What became of one attempt: `queued` (dispatched, not started), `running`, `succeeded`, `failed`, or
 * `superseded` (a newer attempt replaced it, or the job ended, before it reported an outcome).
 */
export type AttemptOutcome = 'queued' | 'running' | 'succeeded' | 'failed' | 'superseded';
const ATTEMPT_OUTCOMES: readonly AttemptOutcome[] = ['queued', 'running', 'succeeded', 'failed', 'superseded'];

export interface JobAttempt {
  jobId: string;
  attempt: number;
  node: string;
  /** When the ledger assigned the attempt (null for attempts recorded before attempts were assigned). */
  dispatchedAt: Date | null;
  /** When the runner reported it running (null while queued, or when it never started). */
  startedAt: Date | null;
  finishedAt: Date | null;
  outcome: AttemptOutcome;
  errorCode: string | null;
}

export interface JobLimits {
  /** UTF-8 bytes of one event message; longer ones are cut with a marker. */
  maxEventMessageBytes: number;
  /** Bytes of one event's data as JSON; larger data is replaced by a note. */
  maxEventDataBytes: number;
  /** Log events kept per job; the next one becomes a single "log truncated" event and later ones are dropped. */
  maxLogEventsPerJob: number;
}

export const DEFAULT_JOB_LIMITS: JobLimits = Object.freeze({ maxEventMessageBytes: 8 * 1024, maxEventDataBytes: 16 * 1024, maxLogEventsPerJob: 10_000 });

interface JobRow {
  id: string;
  envelope: string;
  envelope_sha256: string;
  signer_keyids: string[];
  target: JobTarget;
  node: string | null;
  caps: string[];
  status: JobStatus;
  attempts: number;
  max_attempts: number;
  result: unknown;
  error_code: string | null;
  error_message: string | null;
  exp: Date;
  created_at: Date;
  updated_at: Date;
  finished_at: Date | null;
}

const JOB_COLUMNS =
  'id, envelope, envelope_sha256, signer_keyids, target, node, caps, status, attempts, max_attempts, result, error_code, error_message, exp, created_at, updated_at, finished_at';

function jobFromRow(r: JobRow): JobRecord {
  return {
    id: r.id,
    envelope: r.envelope,
    envelopeSha256: r.envelope_sha256,
    signerKeyids: r.signer_keyids,
    target: r.target,
    node: r.node,
    caps: r.caps,
    status: r.status,
    attempts: Number(r.attempts),
    maxAttempts: Number(r.max_attempts),
    result: r.result ?? null,
    errorCode: r.error_code,
    errorMessage: r.error_message,
    exp: new Date(r.exp),
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
    finishedAt: r.finished_at ? new Date(r.finished_at) : null,
  };
}

interface EventRow {
  seq: number;
  at: Date;
  type: JobEventType;
  level: string | null;
  message: string;
  data: unknown;
}

function eventFromRow(r: EventRow): JobEvent {
  return { seq: Number(r.seq), at: new Date(r.at), type: r.type, level: r.level, message: r.message, data: r.data ?? null };
}

export const NOW_MS = "date_trunc('milliseconds', clock_timestamp())";

function jsonParam(v: unknown): string | null {
  return v === undefined ? null : JSON.stringify(storableJson(v));
}

/**
 * Records a job durably (the promise resolves after commit). The same id with the same envelope hash is a
 * replay and returns the existing row with `created: false`; the same id with another envelope is refused.
 */
export async function insertJob(db: Db, rec: NewJob): Promise<{ job: JobRecord; created: boolean }> {
  if (!Number.isInteger(rec.maxAttempts ?? 1) || (rec.maxAttempts ?? 1) < 1) throw new WritError('BAD_REQUEST', 'maxAttempts must be a positive integer');
  return db.transaction(async (tx) => {
    const inserted = await tx.query<JobRow>(
      `INSERT INTO jobs (id, envelope, envelope_sha256, signer_keyids, target, node, caps, status, attempts, max_attempts, exp, created_at, updated_at, event_seq)
       VALUES ($1, $2, $3, $4::text[], $5::jsonb, $6, $7::text[], 'admitted', 0, $8, $9::timestamptz, ${NOW_MS}, ${NOW_MS}, 1)
       ON CONFLICT (id) DO NOTHING
       RETURNING ${JOB_COLUMNS}`,
      [
        rec.id,
        rec.envelope,
        rec.envelopeSha256,
        rec.signerKeyids,
        JSON.stringify(storableJson(rec.target)),
        rec.node ?? null,
        rec.caps,
        rec.maxAttempts ?? 3,
        rec.exp.toISOString(),
      ],
    );
    const row = inserted[0];
    if (row) {
      await tx.query(`INSERT INTO job_events (job_id, seq, at, type, level, message, data) VALUES ($1, 1, ${NOW_MS}, 'status', NULL, 'admitted', $2::jsonb)`, [
        rec.id,
        JSON.stringify({ status: 'admitted' }),
      ]);
      return { job: jobFromRow(row), created: true };
    }
    const [existing] = await tx.query<JobRow>(`SELECT ${JOB_COLUMNS} FROM jobs WHERE id = $1`, [rec.id]);
    if (!existing) throw new Error(`job ${rec.id} conflicted on insert but cannot be read`);
    if (existing.envelope_sha256 !== rec.envelopeSha256) {
      throw new WritError('JOB_ID_CONFLICT', `job id ${rec.id} is already used by a different envelope`, { id: rec.id });
    }
    return { job: jobFromRow(existing), created: false };
  });
}

export async function getJob(db: Queryable, id: string): Promise<JobRecord | null> {
  const [row] = await db.query<JobRow>(`SELECT ${JOB_COLUMNS} FROM jobs WHERE id = $1`, [id]);
  return row ? jobFromRow(row) : null;
}

export interface ListJobsQuery {
  status?: JobStatus;
  node?: string;
  /** Opaque: the `nextCursor` of the previous page. */
  cursor?: string;
  limit: number;
}

function encodeCursor(job: JobRecord): string {
  return Buffer.from(JSON.stringify([job.createdAt.toISOString(), job.id])).toString('base64url');
}

function decodeCursor(cursor: string): [string, string] {
  try {
    const v = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && typeof v[1] === 'string' && !Number.isNaN(Date.parse(v[0]))) return [v[0], v[1]];
  } catch {
    /* reported below */
  }
  throw new WritError('BAD_REQUEST', 'the cursor is not one this service issued');
}

/** Newest first, keyset-paginated by (created_at, id): pages neither repeat nor skip rows as jobs are added. */
export async function listJobs(db: Queryable, q: ListJobsQuery): Promise<{ jobs: JobRecord[]; nextCursor: string | null }> {
  const limit = Math.max(1, Math.min(Math.floor(q.limit), 1000));
  if (q.status !== undefined && !JOB_STATUSES.includes(q.status)) throw new WritError('BAD_REQUEST', `unknown job status ${String(q.status)}`);
  const where: string[] = [];
  const params: unknown[] = [];
  if (q.status !== undefined) {
    params.push(q.status);
    where.push(`status = $${params.length}`);
  }
  if (q.node !== undefined) {
    params.push(q.node);
    where.push(`node = $${params.length}`);
  }
  if (q.cursor !== undefined) {
    const [createdAt, id] = decodeCursor(q.cursor);
    params.push(createdAt, id);
    where.push(`(created_at, id) < ($${params.length - 1}::timestamptz, $${params.length})`);
  }
  params.push(limit + 1);
  const rows = await db.query<JobRow>(
    `SELECT ${JOB_COLUMNS} FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC, id DESC LIMIT $${params.length}`,
    params,
  );
  const jobs = rows.slice(0, limit).map(jobFromRow);
  return { jobs, nextCursor: rows.length > limit ? encodeCursor(jobs[jobs.length - 1]!) : null };
}

/**
 * Decides whether a job in state `from`, whose newest assigned attempt is `attempts`, may move to `to` on a
 * report about `attempt`. Returns the attempt count after the move, or null to ignore the report. Rules
 * (docs/ledger.md): terminal states never change; nothing moves back to admitted; a report about any
 * attempt but the newest assigned one moves nothing (attempt numbers are fencing tokens, R3); `running`
 * needs the job queued for that attempt (a duplicate is ignored); a move to `queued` comes only from the
 * coord itself (dispatchAttempt assigns the next number), never from a report.
 */
export function decideTransition(from: JobStatus, attempts: number, to: JobStatus, attempt?: number): { attempts: number } | null {
  if (TERMINAL_STATUSES.has(from) || to === 'admitted') return null;
  if (attempt !== undefined && attempt !== attempts) return null;
  if (to === 'running') return attempt !== undefined && from === 'queued' ? { attempts } : null;
  if (TERMINAL_STATUSES.has(to)) return { attempts };
  // to === 'queued'
  return attempt === undefined && from === 'admitted' ? { attempts } : null;
}

export async function transitionJob(db: Db, limits: JobLimits, id: string, to: JobStatus, patch: TransitionPatch = {}): Promise<TransitionedJob | null> {
  return db.transaction((tx) => transitionJobIn(tx, limits, id, to, patch));
}

/** transitionJob inside a transaction the caller owns. */
export async function transitionJobIn(
  tx: Queryable,
  limits: JobLimits,
  id: string,
  to: JobStatus,
  patch: TransitionPatch = {},
): Promise<TransitionedJob | null> {
  if (!JOB_STATUSES.includes(to)) throw new WritError('BAD_REQUEST', `unknown job status ${String(to)}`);
  if (patch.attempt !== undefined && (!Number.isInteger(patch.attempt) || patch.attempt < 1))
    throw new WritError('BAD_REQUEST', 'attempt must be a positive integer');
  {
    const [cur] = await tx.query<{ status: JobStatus; attempts: number; node: string | null }>(
      'SELECT status, attempts, node FROM jobs WHERE id = $1 FOR UPDATE',
      [id],
    );
    if (!cur) return null;
    const decision = decideTransition(cur.status, Number(cur.attempts), to, patch.attempt);
    if (!decision) return null;
    const terminal = TERMINAL_STATUSES.has(to);
    // Terminal states take result and error exactly as reported; other moves keep the last error unless told.
    const [row] = await tx.query<JobRow & { event_seq: number }>(
      `UPDATE jobs SET
         status = $2,
         attempts = $3,
         node = COALESCE($4, node),
         result = CASE WHEN $5 THEN $6::jsonb ELSE result END,
         error_code = CASE WHEN $5 OR $7::text IS NOT NULL THEN $7 ELSE error_code END,
         error_message = CASE WHEN $5 OR $8::text IS NOT NULL THEN $8 ELSE error_message END,
         updated_at = ${NOW_MS},
         finished_at = CASE WHEN $5 THEN ${NOW_MS} ELSE NULL END,
         event_seq = event_seq + 1
       WHERE id = $1
       RETURNING ${JOB_COLUMNS}, event_seq`,
      [
        id,
        to,
        decision.attempts,
        patch.node ?? null,
        terminal,
        terminal ? jsonParam(patch.result) : null,
        patch.errorCode ?? null,
        patch.errorMessage === undefined ? null : storableText(patch.errorMessage),
      ],
    );
    const job = jobFromRow(row!);
    if (terminal) await closeOpenAttempts(tx, [id]);
    const event = await insertEvent(tx, limits, id, Number(row!.event_seq), statusEvent(cur.status, to, decision.attempts, job.node, patch));
    return { ...job, event };
  }
}

/**
 * Once jobs are terminal, no attempt of theirs stays open: the newest attempt takes the job's outcome when
 * it succeeded, or failed while running; any other open attempt (queued, or running but replaced) is
 * `superseded`.
 */
export async function closeOpenAttempts(tx: Queryable, jobIds: readonly string[]): Promise<void> {
  await tx.query(
    `UPDATE job_attempts AS a SET
       outcome = CASE WHEN a.attempt = j.attempts AND j.status = 'succeeded' THEN 'succeeded'
                      WHEN a.attempt = j.attempts AND a.outcome = 'running' THEN 'failed'
                      ELSE 'superseded' END,
       error_code = CASE WHEN a.attempt = j.attempts AND a.outcome = 'running' THEN j.error_code ELSE a.error_code END,
       finished_at = ${NOW_MS}
     FROM jobs AS j
     WHERE j.id = a.job_id AND a.job_id = ANY($1::text[]) AND a.outcome IN ('queued', 'running')`,
    [jobIds],
  );
}

export interface DispatchAttemptOptions {
  /** The status event's message for the new attempt number (default: "queued for node N (attempt A)"). */
  message?: (attempt: number) => string;
  /**
   * Assign only when the job still has this many attempts: the caller decided from that state (the
   * reconciler judged attempt N lost or failed), and a report applied since may already have assigned the next
   * attempt. Without it, two writers deciding at once would start two attempts and one would be replayed.
   */
  ifAttempts?: number;
}

/**
 * Assigns the next attempt number to an unfinished job and records it queued for `node`: the attempt
 * count goes up by one, an attempt row is opened, and any older attempt still open is superseded (it was
 * lost, or stalled; the node's journal fences it). Returns the job with its status event, or null when
 * the job is unknown, already terminal, or (with `ifAttempts`) no longer at the attempt the caller judged.
 * The caller enqueues the attempt after the commit.
 */
export async function dispatchAttemptIn(
  tx: Queryable,
  limits: JobLimits,
  id: string,
  node: string,
  opts: DispatchAttemptOptions = {},
): Promise<TransitionedJob | null> {
  const [cur] = await tx.query<{ status: JobStatus; attempts: number }>('SELECT status, attempts FROM jobs WHERE id = $1 FOR UPDATE', [id]);
  if (!cur || TERMINAL_STATUSES.has(cur.status)) return null;
  // The caller judged an older state of the job (another writer assigned an attempt since): nothing is written.
  if (opts.ifAttempts !== undefined && cur.attempts !== opts.ifAttempts) return null;
  const [row] = await tx.query<JobRow & { event_seq: number }>(
    `UPDATE jobs SET status = 'queued', attempts = attempts + 1, node = $2, updated_at = ${NOW_MS}, event_seq = event_seq + 1
     WHERE id = $1 RETURNING ${JOB_COLUMNS}, event_seq`,
    [id, node],
  );
  const job = jobFromRow(row!);
  await tx.query(
    `UPDATE job_attempts SET outcome = 'superseded', finished_at = ${NOW_MS} WHERE job_id = $1 AND attempt < $2 AND outcome IN ('queued', 'running')`,
    [id, job.attempts],
  );
  await tx.query(`INSERT INTO job_attempts (job_id, attempt, node, dispatched_at, outcome) VALUES ($1, $2, $3, ${NOW_MS}, 'queued')`, [id, job.attempts, node]);
  const text = opts.message?.(job.attempts) ?? `queued for node ${node} (attempt ${job.attempts})`;
  const event = await insertEvent(tx, limits, id, Number(row!.event_seq), {
    type: 'status',
    message: text,
    data: { status: 'queued', from: cur.status, attempt: job.attempts, node },
  });
  return { ...job, event };
}

/** The status event a transition records: its message and data (the same for single and grouped writes). */
export function statusEvent(from: JobStatus, to: JobStatus, attempts: number, node: string | null, patch: TransitionPatch): JobEventInput {
  const data: Record<string, unknown> = { status: to, from, attempt: attempts };
  if (node) data.node = node;
  if (patch.errorCode) data.error = { code: patch.errorCode, message: patch.errorMessage ?? '' };
  if (patch.eventData !== undefined) data.detail = patch.eventData;
  const attemptNote = to === 'running' ? ` (attempt ${attempts}${node ? ` on ${node}` : ''})` : '';
  return { type: 'status', message: patch.message ?? `${from} → ${to}${attemptNote}`, data };
}

/** What replaces the first log event past the per-job cap. */
export function logTruncatedEvent(limits: JobLimits): JobEventInput {
  return {
    type: 'log',
    level: 'warn',
    message: `log truncated: this job wrote more than ${limits.maxLogEventsPerJob} log events; later ones were dropped`,
    data: { truncated: true, limit: limits.maxLogEventsPerJob },
  };
}

/** An event as stored: storable text, message cut to its limit, oversized data replaced by a note. */
export function storableEvent(limits: JobLimits, ev: JobEventInput): { type: JobEventType; level: string | null; message: string; data: unknown } {
  const message = truncateUtf8(storableText(ev.message), limits.maxEventMessageBytes);
  let data = ev.data === undefined ? null : storableJson(ev.data);
  const bytes = data === null ? 0 : Buffer.byteLength(JSON.stringify(data), 'utf8');
  if (bytes > limits.maxEventDataBytes) data = { truncated: true, bytes };
  return { type: ev.type, level: ev.level === undefined ? null : truncateUtf8(storableText(ev.level), 32, ''), message, data };
}

async function insertEvent(tx: Queryable, limits: JobLimits, jobId: string, seq: number, ev: JobEventInput): Promise<JobEvent> {
  const e = storableEvent(limits, ev);
  const [row] = await tx.query<EventRow>(
    `INSERT INTO job_events (job_id, seq, at, type, level, message, data) VALUES ($1, $2, ${NOW_MS}, $3, $4, $5, $6::jsonb)
     RETURNING seq, at, type, level, message, data`,
    [jobId, seq, e.type, e.level, e.message, e.data === null ? null : JSON.stringify(e.data)],
  );
  return eventFromRow(row!);
}

/**
 * Appends an event to a job's stream and returns its seq (monotonic per job, starting at 1). Log events
 * beyond the per-job cap are not stored: the first one over becomes a single "log truncated" event, and
 * every dropped event returns 0. Status and security events are always stored.
 */
export async function appendJobEvent(db: Db, limits: JobLimits, jobId: string, ev: JobEventInput): Promise<number> {
  return db.transaction((tx) => appendJobEventIn(tx, limits, jobId, ev));
}

/** appendJobEvent inside a transaction the caller owns. */
async function appendJobEventIn(tx: Queryable, limits: JobLimits, jobId: string, ev: JobEventInput): Promise<number> {
  if (!['status', 'log', 'security'].includes(ev.type)) throw new WritError('BAD_REQUEST', `unknown job event type ${String(ev.type)}`);
  const isLog = ev.type === 'log';
  {
    // The row lock taken by this UPDATE orders concurrent appends; seq comes from the job row.
    const [row] = await tx.query<{ event_seq: number; log_events: number }>(
      `UPDATE jobs SET event_seq = event_seq + 1, log_events = log_events + $2
       WHERE id = $1 AND ($2 = 0 OR log_events <= $3)
       RETURNING event_seq, log_events`,
      [jobId, isLog ? 1 : 0, limits.maxLogEventsPerJob],
    );
    if (!row) {
      const [exists] = await tx.query('SELECT 1 FROM jobs WHERE id = $1', [jobId]);
      if (!exists) throw new WritError('NOT_FOUND', `no job ${jobId}`, { id: jobId });
      return 0;
    }
    const seq = Number(row.event_seq);
    if (isLog && Number(row.log_events) > limits.maxLogEventsPerJob) {
      await insertEvent(tx, limits, jobId, seq, logTruncatedEvent(limits));
      return 0;
    }
    return (await insertEvent(tx, limits, jobId, seq, ev)).seq;
  }
}

/** Events after `afterSeq` (the SSE Last-Event-ID), oldest first. */
export async function listJobEvents(db: Queryable, jobId: string, afterSeq: number, limit: number): Promise<JobEvent[]> {
  const rows = await db.query<EventRow>('SELECT seq, at, type, level, message, data FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3', [
    jobId,
    Math.max(0, Math.floor(afterSeq) || 0),
    Math.max(1, Math.min(Math.floor(limit) || 1, 1000)),
  ]);
  return rows.map(eventFromRow);
}

/**
 * Records what one attempt did. A finished attempt (succeeded/failed) is never reopened by a late
 * `running` report; the first report fixes node and start time.
 */
export async function recordAttempt(
  db: Queryable,
  jobId: string,
  attempt: number,
  node: string,
  outcome: AttemptOutcome,
  errorCode?: string,
): Promise<JobAttempt> {
  if (!Number.isInteger(attempt) || attempt < 1) throw new WritError('BAD_REQUEST', 'attempt must be a positive integer');
  if (!ATTEMPT_OUTCOMES.includes(outcome)) throw new WritError('BAD_REQUEST', `unknown attempt outcome ${String(outcome)}`);
  const finished = outcome !== 'running' && outcome !== 'queued';
  const rows = await db
    .query<AttemptRow>(
      `INSERT INTO job_attempts AS a (job_id, attempt, node, started_at, finished_at, outcome, error_code)
     VALUES ($1, $2, $3, CASE WHEN $5 <> 'queued' THEN ${NOW_MS} END, CASE WHEN $4 THEN ${NOW_MS} END, $5, $6)
     ON CONFLICT (job_id, attempt) DO UPDATE SET
       ${ATTEMPT_UPSERT}
     RETURNING ${ATTEMPT_COLUMNS}`,
      [jobId, attempt, node, finished, outcome, errorCode ?? null],
    )
    .catch((e: unknown) => {
      // 23503: foreign key violation, i.e. no such job.
      if ((e as { code?: string }).code === '23503') throw new WritError('NOT_FOUND', `no job ${jobId}`, { id: jobId });
      throw e;
    });
  return attemptFromRow(rows[0]!);
}

/**
 * How a report updates an attempt row (`a`) with what it says (EXCLUDED): the first report fixes the start;
 * a finished attempt (succeeded, failed, superseded) is never reopened or changed.
 */
export const ATTEMPT_UPSERT = `
       started_at = CASE WHEN a.started_at IS NULL AND EXCLUDED.outcome <> 'queued' THEN EXCLUDED.started_at ELSE a.started_at END,
       outcome = CASE WHEN a.outcome IN ('queued', 'running') AND EXCLUDED.outcome <> 'queued' THEN EXCLUDED.outcome ELSE a.outcome END,
       finished_at = CASE WHEN a.outcome IN ('queued', 'running') AND EXCLUDED.outcome <> 'queued' THEN EXCLUDED.finished_at ELSE a.finished_at END,
       error_code = CASE WHEN a.outcome IN ('queued', 'running') AND EXCLUDED.outcome <> 'queued' THEN EXCLUDED.error_code ELSE a.error_code END`;

interface AttemptRow {
  job_id: string;
  attempt: number;
  node: string;
  dispatched_at: Date | null;
  started_at: Date | null;
  finished_at: Date | null;
  outcome: AttemptOutcome;
  error_code: string | null;
}
const ATTEMPT_COLUMNS = 'job_id, attempt, node, dispatched_at, started_at, finished_at, outcome, error_code';

function attemptFromRow(r: AttemptRow): JobAttempt {
  return {
    jobId: r.job_id,
    attempt: Number(r.attempt),
    node: r.node,
    dispatchedAt: r.dispatched_at ? new Date(r.dispatched_at) : null,
    startedAt: r.started_at ? new Date(r.started_at) : null,
    finishedAt: r.finished_at ? new Date(r.finished_at) : null,
    outcome: r.outcome,
    errorCode: r.error_code,
  };
}

export async function listAttempts(db: Queryable, jobId: string): Promise<JobAttempt[]> {
  const rows = await db.query<AttemptRow>(`SELECT ${ATTEMPT_COLUMNS} FROM job_attempts WHERE job_id = $1 ORDER BY attempt`, [jobId]);
  return rows.map(attemptFromRow);
}

/** Unfinished jobs untouched for `olderThanMs` whose envelope has not expired, oldest update first. */
export async function listUnfinished(db: Queryable, q: { olderThanMs: number; limit?: number }): Promise<JobRecord[]> {
  const rows = await db.query<JobRow>(
    `SELECT ${JOB_COLUMNS} FROM jobs
     WHERE status = ANY($1::text[]) AND updated_at <= clock_timestamp() - $2::double precision * interval '1 millisecond' AND exp > clock_timestamp()
     ORDER BY updated_at, id LIMIT $3`,
    [UNFINISHED, Math.max(0, q.olderThanMs), Math.max(1, Math.min(q.limit ?? 500, 10_000))],
  );
  return rows.map(jobFromRow);
}

/** Jobs still waiting (admitted or queued) whose envelope has expired: nothing will ever run them. */
export async function listExpiredWaiting(db: Queryable, q: { limit?: number } = {}): Promise<JobRecord[]> {
  const rows = await db.query<JobRow>(
    `SELECT ${JOB_COLUMNS} FROM jobs WHERE status IN ('admitted', 'queued') AND exp <= clock_timestamp() ORDER BY exp, id LIMIT $1`,
    [Math.max(1, Math.min(q.limit ?? 500, 10_000))],
  );
  return rows.map(jobFromRow);
}

/** Marks an unfinished job as looked at, so the reconciler's next pass leaves it for `olderThanMs`. */
export async function touchJob(db: Queryable, id: string): Promise<boolean> {
  const rows = await db.query(`UPDATE jobs SET updated_at = ${NOW_MS} WHERE id = $1 AND status = ANY($2::text[]) RETURNING id`, [id, UNFINISHED]);
  return rows.length > 0;
}

/** One admission of a group commit: the job as first recorded (admitted, queued for a node, or refused at once). */
export interface Admission extends NewJob {
  status: 'admitted' | 'queued' | 'refused';
  errorCode?: string;
  errorMessage?: string;
}

export type AdmissionOutcome =
  | { id: string; created: true; status: JobStatus; node: string | null }
  /** The id was recorded before: a replay of the same envelope answers with the row as it stands. */
  | { id: string; created: false; status: JobStatus; node: string | null; errorCode: string | null; errorMessage: string | null }
  | { id: string; error: WritError };

/**
 * Records many admissions in the caller's transaction with one multi-row INSERT for the jobs and one for
 * their first events (`admitted`, then `queued for node …` or `refused: …`). An id seen before (in the
 * ledger or earlier in the same group) is a replay when the envelope hash matches and JOB_ID_CONFLICT
 * otherwise. Outcomes are returned in input order.
 */
export async function admitJobsIn(tx: Queryable, limits: JobLimits, items: readonly Admission[]): Promise<AdmissionOutcome[]> {
  for (const it of items) {
    if (!Number.isInteger(it.maxAttempts ?? 1) || (it.maxAttempts ?? 1) < 1) throw new WritError('BAD_REQUEST', 'maxAttempts must be a positive integer');
  }
  const firstById = new Map<string, Admission>();
  for (const it of items) if (!firstById.has(it.id)) firstById.set(it.id, it);
  const firsts = [...firstById.values()];
  const rows = firsts.map((it) => ({
    id: it.id,
    envelope: it.envelope,
    sha: it.envelopeSha256,
    signers: it.signerKeyids,
    target: storableJson(it.target),
    node: it.node ?? null,
    caps: it.caps,
    status: it.status,
    max_attempts: it.maxAttempts ?? 3,
    error_code: it.errorCode ?? null,
    error_message: it.errorMessage === undefined ? null : storableText(it.errorMessage),
    exp: it.exp.toISOString(),
    event_seq: it.status === 'admitted' ? 1 : 2,
  }));
  const inserted = await tx.query<{ id: string }>(
    `INSERT INTO jobs (id, envelope, envelope_sha256, signer_keyids, target, node, caps, status, attempts, max_attempts, error_code, error_message, exp, created_at, updated_at, finished_at, event_seq)
     SELECT u.id, u.envelope, u.sha, ARRAY(SELECT jsonb_array_elements_text(u.signers)), u.target, u.node, ARRAY(SELECT jsonb_array_elements_text(u.caps)),
            u.status, CASE WHEN u.status = 'queued' THEN 1 ELSE 0 END, u.max_attempts, u.error_code, u.error_message, u.exp, ${NOW_MS}, ${NOW_MS}, CASE WHEN u.status = 'refused' THEN ${NOW_MS} END, u.event_seq
     FROM jsonb_to_recordset($1::jsonb) AS u(id text, envelope text, sha text, signers jsonb, target jsonb, node text, caps jsonb, status text, max_attempts integer,
                                             error_code text, error_message text, exp timestamptz, event_seq integer)
     ON CONFLICT (id) DO NOTHING
     RETURNING id`,
    [JSON.stringify(rows)],
  );
  const created = new Set(inserted.map((r) => r.id));
  const events: { job_id: string; seq: number; message: string; data: unknown }[] = [];
  for (const it of firsts) {
    if (!created.has(it.id)) continue;
    events.push({ job_id: it.id, seq: 1, message: 'admitted', data: { status: 'admitted' } });
    if (it.status === 'queued')
      events.push({ job_id: it.id, seq: 2, message: `queued for node ${it.node}`, data: { status: 'queued', from: 'admitted', attempt: 1, node: it.node } });
    if (it.status === 'refused') {
      const error = { code: it.errorCode ?? 'INTERNAL', message: it.errorMessage ?? '' };
      events.push({
        job_id: it.id,
        seq: 2,
        message: truncateUtf8(storableText(`refused: ${error.code}: ${error.message}`), limits.maxEventMessageBytes),
        data: storableJson({ status: 'refused', from: 'admitted', attempt: 0, error }),
      });
    }
  }
  if (events.length > 0) {
    await tx.query(
      `INSERT INTO job_events (job_id, seq, at, type, level, message, data)
       SELECT e.job_id, e.seq, ${NOW_MS}, 'status', NULL, e.message, e.data FROM jsonb_to_recordset($1::jsonb) AS e(job_id text, seq integer, message text, data jsonb)`,
      [JSON.stringify(events)],
    );
  }
  // A job queued at admission is dispatched as attempt 1.
  const dispatched = firsts.filter((it) => created.has(it.id) && it.status === 'queued').map((it) => ({ job_id: it.id, node: it.node }));
  if (dispatched.length > 0) {
    await tx.query(
      `INSERT INTO job_attempts (job_id, attempt, node, dispatched_at, outcome)
       SELECT d.job_id, 1, d.node, ${NOW_MS}, 'queued' FROM jsonb_to_recordset($1::jsonb) AS d(job_id text, node text)`,
      [JSON.stringify(dispatched)],
    );
  }
  const replayIds = [...new Set(items.filter((it) => !created.has(it.id) || firstById.get(it.id) !== it).map((it) => it.id))];
  const existing = new Map<
    string,
    { envelope_sha256: string; status: JobStatus; node: string | null; error_code: string | null; error_message: string | null }
  >();
  if (replayIds.length > 0) {
    const found = await tx.query<{
      id: string;
      envelope_sha256: string;
      status: JobStatus;
      node: string | null;
      error_code: string | null;
      error_message: string | null;
    }>('SELECT id, envelope_sha256, status, node, error_code, error_message FROM jobs WHERE id = ANY($1::text[])', [replayIds]);
    for (const r of found) existing.set(r.id, r);
  }
  return items.map((it): AdmissionOutcome => {
    if (created.has(it.id) && firstById.get(it.id) === it) return { id: it.id, created: true, status: it.status, node: it.node ?? null };
    const row = existing.get(it.id);
    if (!row) return { id: it.id, error: new WritError('INTERNAL', `job ${it.id} conflicted on insert but cannot be read`) };
    if (row.envelope_sha256 !== it.envelopeSha256)
      return { id: it.id, error: new WritError('JOB_ID_CONFLICT', `job id ${it.id} is already used by a different envelope`, { id: it.id }) };
    return { id: it.id, created: false, status: row.status, node: row.node, errorCode: row.error_code, errorMessage: row.error_message };
  });
}
