// The BullMQ seam between supervisor (producer) and runner (consumer): the job name and the job data.
// The data carries only the untouched envelope; the runner verifies it from these bytes (T11) and ignores
// anything else a writer to Redis may have put there.
import { WritError } from '../errors.ts';

/** The BullMQ job name of every Writ job; the BullMQ job id is the envelope's job id. */
export const QUEUE_JOB_NAME = 'job';

export interface QueueJobData {
  /** The DSSE envelope exactly as the client signed it. */
  envelope: string;
}

export function queueJobData(envelope: string): QueueJobData {
  return { envelope };
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

/** Strict: an object with exactly one string field `envelope`. Anything else is a security event at the runner. */
export function parseQueueJobData(data: unknown): QueueJobData {
  const envelope = queueJobEnvelope(data);
  const extra = Object.keys(data as object).filter((k) => k !== 'envelope');
  if (extra.length > 0) throw new WritError('SECURITY_EVENT', `job data has fields beside the envelope (${extra.slice(0, 5).join(', ').slice(0, 200)}); nothing but the signed envelope is taken from Redis`);
  return { envelope };
}
