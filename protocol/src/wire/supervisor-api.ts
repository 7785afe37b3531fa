// The supervisor's HTTP seam, for a coord in another process (`writ supervisor`): the answers of
// POST /v1/submit, POST /v1/submit:batch and GET /v1/jobs/:node/:id, and the queue states they report.
import { WritError, type ErrorJSON } from '../errors.ts';
import { assertSchema, compileSchema } from '../schema.ts';
import { errorJsonSchema } from './errors.ts';

/** Where a job stands in its node's BullMQ queue; `missing` when the queue holds no such job. */
export const QUEUE_STATES = ['waiting', 'active', 'delayed', 'completed', 'failed', 'prioritized', 'waiting-children', 'missing'] as const;
export type QueueState = (typeof QUEUE_STATES)[number];

/** POST /v1/submit?node=ID: the job was verified, authorised and enqueued on `node`. */
export interface SupervisorSubmitAnswer {
  jobId: string;
  node: string;
}

/**
 * POST /v1/submit:batch: many attempts in one request (a coord hands over what one admission group or one
 * report assigned). Each item is judged on its own: a refused item does not stop the others.
 */
export interface SupervisorBatchItem {
  /** The envelope (or flow step bundle) exactly as signed, as text. */
  envelope: string;
  node: string;
  attempt: number;
  delayMs?: number;
}
/** At most this many items in one batch request (the coord splits larger hand-overs). */
export const MAX_SUPERVISOR_BATCH_ITEMS = 500;
/** At most this many bytes in one batch request's body, as sent (JSON, the envelopes escaped in it). */
export const MAX_SUPERVISOR_BATCH_BYTES = 4 * 1024 * 1024;
/** The answer, one result per item in order: enqueued on `node`, or refused with the reason. */
export interface SupervisorBatchAnswer {
  results: (SupervisorSubmitAnswer | { error: ErrorJSON })[];
}

/**
 * Whether a runner of the node says it is executing the attempt: `yes`/`no` from the node's last heartbeat
 * in Redis, `unknown` when Redis holds no recent heartbeat of the node (it was lost, or the node is silent).
 */
export const HOLDER_STATES = ['yes', 'no', 'unknown'] as const;
export type HolderState = (typeof HOLDER_STATES)[number];

/**
 * GET /v1/jobs/:node/:entry (entry = `<job>@<attempt>`): the attempt's state in the queue, BullMQ's failure
 * reason when it failed, and whether a runner still holds it.
 */
export interface QueueStateAnswer {
  state: QueueState;
  failedReason?: string;
  held: HolderState;
}

const submitAnswerSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['jobId', 'node'],
  properties: { jobId: { type: 'string' }, node: { type: 'string' } },
} as const;
const validateSubmit = compileSchema<SupervisorSubmitAnswer>(submitAnswerSchema);
const validateState = compileSchema<QueueStateAnswer>({
  type: 'object',
  additionalProperties: false,
  required: ['state', 'held'],
  properties: { state: { enum: [...QUEUE_STATES] }, failedReason: { type: 'string' }, held: { enum: [...HOLDER_STATES] } },
});

const validateBatch = compileSchema<SupervisorBatchAnswer>({
  type: 'object',
  additionalProperties: false,
  required: ['results'],
  properties: {
    results: {
      type: 'array',
      maxItems: MAX_SUPERVISOR_BATCH_ITEMS,
      items: {
        oneOf: [submitAnswerSchema, { type: 'object', additionalProperties: false, required: ['error'], properties: { error: errorJsonSchema } }],
      },
    },
  },
});

/** The answer to a batch of `count` items: SCHEMA_INVALID unless it has one result per item. */
export function parseSupervisorBatchAnswer(v: unknown, count: number): SupervisorBatchAnswer {
  assertSchema(validateBatch, v, 'supervisor batch answer');
  if (v.results.length !== count) throw new WritError('SCHEMA_INVALID', `the supervisor answered ${v.results.length} results for ${count} items`);
  return v;
}

export function parseSupervisorSubmitAnswer(v: unknown): SupervisorSubmitAnswer {
  assertSchema(validateSubmit, v, 'supervisor submit answer');
  return v;
}
export function parseQueueStateAnswer(v: unknown): QueueStateAnswer {
  assertSchema(validateState, v, 'queue state answer');
  return v;
}
