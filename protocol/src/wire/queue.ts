// The BullMQ seam between supervisor (producer) and runner (consumer): the job name, the queue entry id
// and the job data. The data carries the untouched envelope and the attempt number the ledger assigned;
// the runner verifies the envelope from these bytes (T11) and ignores anything else a writer to Redis may
// have put there.
//
// The attempt number is not signed: Redis could change it. It is a fencing token for the node's journal,
// not a grant: the envelope decides what runs, the node's journal refuses an attempt it has already
// started (T15), and the coord accepts events only for attempts it assigned. An altered number can make a
// node refuse or re-report, never apply an effect twice.
import { WritError } from '../errors.ts';

/** The BullMQ job name of every Writ job. */
export const QUEUE_JOB_NAME = 'job';

/** Attempt numbers above this are refused: no job is dispatched a million times. */
export const MAX_ATTEMPT_NUMBER = 1_000_000;

export interface QueueJobData {
  /** The DSSE envelope exactly as the client signed it. */
  envelope: string;
  /** The attempt number the ledger assigned to this dispatch (1, 2, ...). */
  attempt: number;
}

export function queueJobData(envelope: string, attempt: number): QueueJobData {
  return { envelope, attempt };
}

/**
 * The BullMQ id of one attempt of a job: `<job id>@<attempt>`. Each attempt is its own queue entry, so a
 * re-dispatch never collides with the entry of an attempt that failed or vanished. `@` cannot occur in a
 * job id (JOB_ID_PATTERN), so the split is unambiguous.
 */
export function queueJobId(jobId: string, attempt: number): string {
  return `${jobId}@${attempt}`;
}

/** The job id and attempt of a queue entry id, or null when the id is not of that form. */
export function parseQueueJobId(id: string): { jobId: string; attempt: number } | null {
  const at = id.lastIndexOf('@');
  if (at <= 0) return null;
  const n = id.slice(at + 1);
  if (!/^[1-9][0-9]{0,6}$/.test(n) || Number(n) > MAX_ATTEMPT_NUMBER) return null;
  return { jobId: id.slice(0, at), attempt: Number(n) };
}

/**
 * The envelope text of a job's data, taken out before anything else so that the runner verifies its
 * signature first (an altered envelope is reported as such, whatever else was written beside it).
 */
export function queueJobEnvelope(data: unknown): string {
  const envelope = data && typeof data === 'object' && !Array.isArray(data) ? (data as { envelope?: unknown }).envelope : undefined;
  if (typeof envelope !== 'string') throw new WritError('SECURITY_EVENT', 'job data carries no envelope');
  return envelope;
}

/**
 * Strict: an object with exactly a string `envelope` and a positive integer `attempt`. Anything else is a
 * security event at the runner.
 */
export function parseQueueJobData(data: unknown): QueueJobData {
  const envelope = queueJobEnvelope(data);
  const extra = Object.keys(data as object).filter((k) => k !== 'envelope' && k !== 'attempt');
  if (extra.length > 0)
    throw new WritError(
      'SECURITY_EVENT',
      `job data has fields beside the envelope and attempt (${extra.slice(0, 5).join(', ').slice(0, 200)}); nothing but the signed envelope and the attempt number is taken from Redis`,
    );
  const attempt = (data as { attempt?: unknown }).attempt;
  if (typeof attempt !== 'number' || !Number.isSafeInteger(attempt) || attempt < 1 || attempt > MAX_ATTEMPT_NUMBER) {
    throw new WritError('SECURITY_EVENT', `job data carries no valid attempt number (got ${JSON.stringify(attempt)?.slice(0, 40)})`);
  }
  return { envelope, attempt };
}
