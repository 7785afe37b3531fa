// The supervisor's HTTP seam, for a coord in another process (`writ supervisor`): the answers of
// POST /v1/submit and GET /v1/jobs/:node/:id, and the queue states they report.
import { assertSchema, compileSchema } from '../schema.ts';

/** Where a job stands in its node's BullMQ queue; `missing` when the queue holds no such job. */
export const QUEUE_STATES = ['waiting', 'active', 'delayed', 'completed', 'failed', 'prioritized', 'waiting-children', 'missing'] as const;
export type QueueState = (typeof QUEUE_STATES)[number];

/** POST /v1/submit?node=ID: the job was verified, authorised and enqueued on `node`. */
export interface SupervisorSubmitAnswer {
  jobId: string;
  node: string;
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

const validateSubmit = compileSchema<SupervisorSubmitAnswer>({
  type: 'object',
  additionalProperties: false,
  required: ['jobId', 'node'],
  properties: { jobId: { type: 'string' }, node: { type: 'string' } },
});
const validateState = compileSchema<QueueStateAnswer>({
  type: 'object',
  additionalProperties: false,
  required: ['state', 'held'],
  properties: { state: { enum: [...QUEUE_STATES] }, failedReason: { type: 'string' }, held: { enum: [...HOLDER_STATES] } },
});

export function parseSupervisorSubmitAnswer(v: unknown): SupervisorSubmitAnswer {
  assertSchema(validateSubmit, v, 'supervisor submit answer');
  return v;
}
export function parseQueueStateAnswer(v: unknown): QueueStateAnswer {
  assertSchema(validateState, v, 'queue state answer');
  return v;
}
