// Applies the runner events of one supervisor report in the caller's transaction as a handful of set-based
// statements: the jobs concerned are read and locked once, each event is judged in order in the process by
// the same rules as a single transition (decideTransition, statusEvent, the log cap), and the outcome is
// written back with one multi-row statement per table. A report costs about five statements, not several
// per event.
import type { RunnerEvent } from '@writ/protocol';
import type { Queryable } from './db.ts';
import {
  ATTEMPT_UPSERT,
  NOW_MS,
  TERMINAL_STATUSES,
  closeOpenAttempts,
  decideTransition,
  logTruncatedEvent,
  statusEvent,
  storableEvent,
  type AttemptOutcome,
  type JobEventInput,
  type JobEventType,
  type JobLimits,
  type JobStatus,
  type TransitionPatch,
} from './jobs.ts';
import { storableJson, storableText } from './json.ts';
import type { AuditInput } from './audit.ts';

/** An event recorded for a job, for live subscribers once the transaction committed. */
export interface RecordedEvent {
  jobId: string;
  seq: number;
  type: JobEventType;
  level: string | null;
  message: string;
  data: unknown;
}

/** A failed attempt that is retried: the ledger assigned the next attempt; the caller enqueues it after the commit. */
export interface Retry {
  jobId: string;
  node: string;
  attempt: number;
  envelope: string;
}

/** An event signed by a node its job was not dispatched to (`dispatchedTo`, null while the job waits for one). */
export interface Misattributed {
  event: RunnerEvent;
  jobId: string;
  dispatchedTo: string | null;
}

export interface AppliedEvents {
  recorded: RecordedEvent[];
  retries: Retry[];
  /** Events refused because their job went to another node (or none): the caller records them as security events. */
  misattributed: Misattributed[];
  /** Events about jobs the ledger does not know, which moved nothing. */
  unknownJobEvents: number;
}

interface JobState {
  id: string;
  status: JobStatus;
  attempts: number;
  maxAttempts: number;
  /** Attempts that failed with a reported error (what `maxAttempts` limits); read only when needed. */
  failedAttempts: number;
  node: string | null;
  eventSeq: number;
  logEvents: number;
  // What changes, written back at the end.
  transitioned: boolean;
  terminal: boolean;
  setResult: boolean;
  result: unknown;
  setError: boolean;
  errorCode: string | null;
  errorMessage: string | null;
  touched: boolean;
}

interface AttemptWrite {
  jobId: string;
  attempt: number;
  node: string;
  outcome: AttemptOutcome;
  errorCode: string | null;
  /** A new attempt assigned here (a retry): inserted queued with its dispatch time. */
  dispatched?: boolean;
}

/**
 * Records `events` (each already verified against the registered key of the node it names) and returns what
 * was recorded, in order, the retries it assigned, and the events it refused. Audit entries for effects and
 * security events are handed to `audit`.
 *
 * Attribution (T14) is judged here, on the job rows this transaction locks: an event counts only when its job
 * was dispatched to the node that signed it; any other is returned in `misattributed` and moves nothing. So the
 * check costs no statement of its own, and a coord judges a report about jobs another coord dispatched by the
 * same rows as its own. Events of jobs unknown to the ledger are skipped (a security event among them is
 * audited as the node's).
 *
 * Attempt numbers are fencing tokens (R3): an event about an attempt the ledger never assigned is refused
 * as a security event; status and results move the job only when they are about its newest attempt (an
 * older attempt's late result closes that attempt's row and nothing else). A retryable failure of the
 * newest attempt, with attempts left, assigns the next attempt on the same node (the node's journal
 * replays what the failed one did) and returns it for the caller to enqueue.
 */
export async function applyRunnerEventsIn(
  tx: Queryable,
  limits: JobLimits,
  events: readonly RunnerEvent[],
  audit: (a: AuditInput) => void,
): Promise<AppliedEvents> {
  const ids = [...new Set(events.map((e) => e.jobId).filter((x): x is string => x !== null))].sort();
  const jobs = new Map<string, JobState>();
  if (ids.length > 0) {
    // Locked in id order, so that two reports touching the same jobs (PostgreSQL, several coords) never deadlock.
    // The envelope is not read here: only a retry needs it (read below for those jobs alone). A flow step's
    // envelope carries its whole signed flow, tens of KB, which every report would otherwise carry back.
    const rows = await tx.query<{
      id: string;
      status: JobStatus;
      attempts: number;
      max_attempts: number;
      node: string | null;
      event_seq: number;
      log_events: number;
    }>('SELECT id, status, attempts, max_attempts, node, event_seq, log_events FROM jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE', [ids]);
    for (const r of rows) {
      jobs.set(r.id, {
        id: r.id,
        status: r.status,
        attempts: Number(r.attempts),
        maxAttempts: Number(r.max_attempts),
        failedAttempts: 0,
        node: r.node,
        eventSeq: Number(r.event_seq),
        logEvents: Number(r.log_events),
        transitioned: false,
        terminal: false,
        setResult: false,
        result: null,
        setError: false,
        errorCode: null,
        errorMessage: null,
        touched: false,
      });
    }
  }
  // Whether a retryable failure is retried depends on how many attempts failed before: read that only for
  // the jobs of such failures (rare), not for every report.
  const failing = [...new Set(events.filter((e) => e.type === 'result' && !e.ok && !e.final && e.jobId !== null).map((e) => e.jobId!))];
  if (failing.length > 0) {
    const counts = await tx.query<{ job_id: string; failed: number }>(
      `SELECT job_id, count(*)::int AS failed FROM job_attempts WHERE job_id = ANY($1::text[]) AND outcome = 'failed' GROUP BY job_id`,
      [failing],
    );
    for (const c of counts) {
      const j = jobs.get(c.job_id);
      if (j) j.failedAttempts = Number(c.failed);
    }
  }
  const recorded: RecordedEvent[] = [];
  const attempts = new Map<string, AttemptWrite>();
  const retries: Retry[] = [];
  const misattributed: Misattributed[] = [];
  let unknownJobEvents = 0;

  const append = (job: JobState, ev: JobEventInput) => {
    const e = storableEvent(limits, ev);
    job.eventSeq++;
    job.touched = true;
    recorded.push({ jobId: job.id, seq: job.eventSeq, type: e.type, level: e.level, message: e.message, data: e.data });
  };
  const transition = (job: JobState, to: JobStatus, patch: TransitionPatch) => {
    const decision = decideTransition(job.status, job.attempts, to, patch.attempt);
    if (!decision) return;
    const from = job.status;
    const terminal = TERMINAL_STATUSES.has(to);
    job.status = to;
    job.attempts = decision.attempts;
    job.node = patch.node ?? job.node;
    job.transitioned = true;
    job.terminal = terminal;
    // Terminal states take result and error exactly as reported; other moves keep the last error unless told.
    if (terminal) {
      job.setResult = true;
      job.result = patch.result === undefined ? null : storableJson(patch.result);
    }
    if (terminal || patch.errorCode !== undefined) {
      job.setError = true;
      job.errorCode = patch.errorCode ?? null;
      job.errorMessage = patch.errorMessage === undefined ? null : storableText(patch.errorMessage);
    }
    append(job, statusEvent(from, to, decision.attempts, job.node, patch));
  };
  // Same rule as recordAttempt: the first report fixes node and start; a finished attempt is never reopened.
  const attempt = (jobId: string, n: number, node: string, outcome: AttemptOutcome, errorCode: string | null = null) => {
    const key = `${jobId}\u0000${n}`;
    const prev = attempts.get(key);
    if (!prev) attempts.set(key, { jobId, attempt: n, node, outcome, errorCode });
    else if (prev.outcome === 'running' || prev.outcome === 'queued') Object.assign(prev, { outcome, errorCode });
  };
  // A retry: the next attempt, on the same node, assigned in this transaction.
  const retry = (job: JobState, ev: Extract<RunnerEvent, { type: 'result' }> & { ok: false }) => {
    const from = job.status;
    const node = job.node ?? ev.node;
    job.status = 'queued';
    job.attempts++;
    job.node = node;
    job.transitioned = true;
    job.setError = true;
    job.errorCode = ev.error.code;
    job.errorMessage = storableText(ev.error.message);
    attempts.set(`${job.id}\u0000${job.attempts}`, { jobId: job.id, attempt: job.attempts, node, outcome: 'queued', errorCode: null, dispatched: true });
    retries.push({ jobId: job.id, node, attempt: job.attempts, envelope: '' });
    append(
      job,
      statusEvent(from, 'queued', job.attempts, node, {
        errorCode: ev.error.code,
        errorMessage: ev.error.message,
        message: `attempt ${ev.attempt} failed, will retry as attempt ${job.attempts}: ${ev.error.code}: ${ev.error.message}`,
        eventData: { error: ev.error, durationMs: ev.durationMs },
      }),
    );
  };

  for (const ev of events) {
    if (ev.jobId === null) {
      audit({
        kind: 'security',
        actor: `node:${ev.node}`,
        subject: '',
        data: { type: ev.type, attempt: ev.attempt, ts: ev.ts, ...(ev.type === 'security' ? { error: ev.error } : {}) },
      });
      continue;
    }
    const job = jobs.get(ev.jobId);
    if (!job) {
      unknownJobEvents++;
      if (ev.type === 'security')
        audit({ kind: 'security', actor: `node:${ev.node}`, subject: ev.jobId, data: { error: ev.error, note: 'job unknown to the ledger' } });
      continue;
    }
    // Only the node the job went to speaks for it. An accepted event never moves the job to another node (a
    // retry stays on its node), so the row's node, read and locked above, is the one to judge by.
    if (job.node !== ev.node) {
      misattributed.push({ event: ev, jobId: job.id, dispatchedTo: job.node });
      continue;
    }
    if (ev.attempt > job.attempts || (ev.attempt < 1 && ev.type !== 'security')) {
      // Not an attempt the ledger assigned: a queue entry written into Redis by something else.
      audit({
        kind: 'security',
        actor: `node:${ev.node}`,
        subject: job.id,
        data: { type: ev.type, attempt: ev.attempt, assigned: job.attempts, note: 'an event about an attempt the ledger never assigned' },
      });
      continue;
    }
    switch (ev.type) {
      case 'status':
        if (ev.attempt !== job.attempts) break; // a late report of a replaced attempt
        transition(job, 'running', { attempt: ev.attempt, node: ev.node, message: `running on ${ev.node} (attempt ${ev.attempt})` });
        attempt(job.id, ev.attempt, ev.node, 'running');
        break;
      case 'log':
        // Log events past the per-job cap are dropped; the first one over becomes a single notice.
        if (job.logEvents > limits.maxLogEventsPerJob) break;
        job.logEvents++;
        append(
          job,
          job.logEvents > limits.maxLogEventsPerJob
            ? logTruncatedEvent(limits)
            : { type: 'log', level: ev.level, message: ev.message, data: { attempt: ev.attempt } },
        );
        break;
      case 'security':
        audit({ kind: 'security', actor: `node:${ev.node}`, subject: job.id, data: { error: ev.error, attempt: ev.attempt } });
        append(job, { type: 'security', level: 'error', message: `${ev.error.code}: ${ev.error.message}`, data: { attempt: ev.attempt } });
        break;
      case 'result': {
        const current = ev.attempt === job.attempts && !TERMINAL_STATUSES.has(job.status);
        if (ev.ok) {
          attempt(job.id, ev.attempt, ev.node, 'succeeded');
          // What the node said is audited even when it moves nothing (a late or repeated result).
          audit({ kind: 'job.effect', actor: `node:${ev.node}`, subject: job.id, data: { attempt: ev.attempt, ok: true } });
          if (current)
            transition(job, 'succeeded', {
              result: ev.value,
              attempt: ev.attempt,
              message: `succeeded in ${ev.durationMs} ms`,
              eventData: { result: ev.value, durationMs: ev.durationMs },
            });
          break;
        }
        // An execution fenced by a newer one did not fail: it was replaced.
        const fenced = ev.error.code === 'EFFECT_FENCED';
        attempt(job.id, ev.attempt, ev.node, fenced ? 'superseded' : 'failed', ev.error.code);
        if (!current) break;
        if (!fenced) job.failedAttempts++;
        // The runner says whether the error is permanent; the ledger counts the attempts that failed (ones lost
        // with a runner or a queue do not count: the reconciler bounds those).
        if ((ev.final && !fenced) || job.failedAttempts >= job.maxAttempts) {
          transition(job, 'failed', {
            errorCode: ev.error.code,
            errorMessage: ev.error.message,
            attempt: ev.attempt,
            message: `failed: ${ev.error.code}: ${ev.error.message}`,
            eventData: { error: ev.error, durationMs: ev.durationMs },
          });
          audit({ kind: 'job.fail', actor: `node:${ev.node}`, subject: job.id, data: { attempt: ev.attempt, code: ev.error.code } });
        } else {
          retry(job, ev);
        }
        break;
      }
    }
  }

  const changed = [...jobs.values()].filter((j) => j.touched);
  if (changed.length > 0) {
    await tx.query(
      `UPDATE jobs AS j SET
         status = u.status,
         attempts = u.attempts,
         node = u.node,
         result = CASE WHEN u.set_result THEN u.result ELSE j.result END,
         error_code = CASE WHEN u.set_error THEN u.error_code ELSE j.error_code END,
         error_message = CASE WHEN u.set_error THEN u.error_message ELSE j.error_message END,
         updated_at = CASE WHEN u.transitioned THEN ${NOW_MS} ELSE j.updated_at END,
         finished_at = CASE WHEN u.transitioned THEN (CASE WHEN u.terminal THEN ${NOW_MS} END) ELSE j.finished_at END,
         event_seq = u.event_seq,
         log_events = u.log_events
       FROM jsonb_to_recordset($1::jsonb) AS u(id text, status text, attempts integer, node text, set_result boolean, result jsonb, set_error boolean,
                                               error_code text, error_message text, transitioned boolean, terminal boolean, event_seq integer, log_events integer)
       WHERE j.id = u.id`,
      [
        JSON.stringify(
          changed.map((j) => ({
            id: j.id,
            status: j.status,
            attempts: j.attempts,
            node: j.node,
            set_result: j.setResult,
            result: j.result,
            set_error: j.setError,
            error_code: j.errorCode,
            error_message: j.errorMessage,
            transitioned: j.transitioned,
            terminal: j.terminal,
            event_seq: j.eventSeq,
            log_events: j.logEvents,
          })),
        ),
      ],
    );
  }
  if (recorded.length > 0) {
    await tx.query(
      `INSERT INTO job_events (job_id, seq, at, type, level, message, data)
       SELECT e.job_id, e.seq, ${NOW_MS}, e.type, e.level, e.message, e.data FROM jsonb_to_recordset($1::jsonb) AS e(job_id text, seq integer, type text, level text, message text, data jsonb)`,
      [JSON.stringify(recorded.map((e) => ({ job_id: e.jobId, seq: e.seq, type: e.type, level: e.level, message: e.message, data: e.data })))],
    );
  }
  if (attempts.size > 0) {
    await tx.query(
      `INSERT INTO job_attempts AS a (job_id, attempt, node, dispatched_at, started_at, finished_at, outcome, error_code)
       SELECT w.job_id, w.attempt, w.node, CASE WHEN w.dispatched THEN ${NOW_MS} END, CASE WHEN w.outcome <> 'queued' THEN ${NOW_MS} END,
              CASE WHEN w.outcome NOT IN ('queued', 'running') THEN ${NOW_MS} END, w.outcome, w.error_code
       FROM jsonb_to_recordset($1::jsonb) AS w(job_id text, attempt integer, node text, outcome text, error_code text, dispatched boolean)
       ON CONFLICT (job_id, attempt) DO UPDATE SET ${ATTEMPT_UPSERT}`,
      [
        JSON.stringify(
          [...attempts.values()].map((w) => ({
            job_id: w.jobId,
            attempt: w.attempt,
            node: w.node,
            outcome: w.outcome,
            error_code: w.errorCode,
            dispatched: w.dispatched === true,
          })),
        ),
      ],
    );
  }
  // Close attempts a terminal job leaves open. The common case has none: one attempt, closed just above.
  const closedHere = (j: JobState) => {
    const w = attempts.get(`${j.id}\u0000${j.attempts}`);
    return j.attempts === 1 && w !== undefined && w.outcome !== 'queued' && w.outcome !== 'running';
  };
  const ended = changed.filter((j) => j.terminal && !closedHere(j)).map((j) => j.id);
  if (ended.length > 0) await closeOpenAttempts(tx, ended);
  if (retries.length > 0) {
    const envs = await tx.query<{ id: string; envelope: string }>('SELECT id, envelope FROM jobs WHERE id = ANY($1::text[])', [retries.map((r) => r.jobId)]);
    const byId = new Map(envs.map((e) => [e.id, e.envelope]));
    for (const r of retries) r.envelope = byId.get(r.jobId)!;
  }
  return { recorded, retries, misattributed, unknownJobEvents };
}
