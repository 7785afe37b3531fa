// The coord's HTTP seam: job statuses, the submit answers, the job view and the events streamed to
// clients (SSE). The coord builds these shapes; the CLI parses them with the parsers here.
import type { ErrorJSON } from '../errors.ts';
import type { JobTarget } from '../job.ts';
import { assertSchema, compileSchema } from '../schema.ts';
import type { JsonValue } from '../strict-json.ts';
import { errorJsonSchema } from './errors.ts';

export const JOB_STATUSES = ['admitted', 'queued', 'running', 'succeeded', 'failed', 'refused'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const TERMINAL_STATUSES: ReadonlySet<JobStatus> = new Set<JobStatus>(['succeeded', 'failed', 'refused']);
export function isJobStatus(s: unknown): s is JobStatus {
  return typeof s === 'string' && (JOB_STATUSES as readonly string[]).includes(s);
}

/** POST /v1/jobs (202 recorded, 200 replayed). */
export interface SubmitAnswer {
  id: string;
  status: JobStatus;
  node: string | null;
  replayed: boolean;
}

/** Envelopes one POST /v1/jobs:batch may carry, and the bytes of its body (larger sets take several requests). */
export const MAX_BATCH_ENVELOPES = 500;
export const MAX_BATCH_BYTES = 32 * 1024 * 1024;

/** POST /v1/jobs:batch: one answer per envelope, in order; a refused or invalid envelope carries its error. */
export type BatchSubmitItem = SubmitAnswer | { error: ErrorJSON; id: string | null };
export interface BatchSubmitAnswer {
  results: BatchSubmitItem[];
}

/** One attempt of a job, as GET /v1/jobs/:id lists them. */
/** What became of an attempt; `superseded`: replaced by a newer attempt, or the job ended, before it reported. */
export const ATTEMPT_OUTCOMES = ['queued', 'running', 'succeeded', 'failed', 'superseded'] as const;

/** One attempt, numbered by the ledger when it dispatched it (R3). */
export interface AttemptView {
  attempt: number;
  node: string;
  dispatchedAt: string | null;
  /** When the runner reported it running; null while queued, or when it never ran. */
  startedAt: string | null;
  finishedAt: string | null;
  outcome: (typeof ATTEMPT_OUTCOMES)[number];
  errorCode: string | null;
}

export interface JobView {
  id: string;
  status: JobStatus;
  node: string | null;
  target: JobTarget;
  caps: string[];
  signers: string[];
  attempts: number;
  result: JsonValue;
  error: { code: string; message: string } | null;
  createdAt: string;
  updatedAt: string;
  finishedAt: string | null;
  attemptHistory?: AttemptView[];
}

/** GET /v1/jobs: a page, newest first; `nextCursor` continues it. */
export interface JobPage {
  jobs: JobView[];
  nextCursor: string | null;
}

/** One event of a job's stream (GET /v1/jobs/:id/events data, and the coord's live notifications). */
export interface JobEventMessage {
  seq: number;
  type: string;
  level?: string | null;
  message: string;
  data?: unknown;
}

const statusSchema = { enum: [...JOB_STATUSES] } as const;
const submitAnswerProps = {
  id: { type: 'string' },
  status: statusSchema,
  node: { type: ['string', 'null'] },
  replayed: { type: 'boolean' },
} as const;
const submitAnswerSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'status', 'node', 'replayed'],
  properties: submitAnswerProps,
} as const;

const batchAnswerSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['results'],
  properties: {
    results: {
      type: 'array',
      maxItems: MAX_BATCH_ENVELOPES,
      items: {
        oneOf: [
          submitAnswerSchema,
          { type: 'object', additionalProperties: false, required: ['error', 'id'], properties: { error: errorJsonSchema, id: { type: ['string', 'null'] } } },
        ],
      },
    },
  },
} as const;

const jobViewSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'status', 'node', 'target', 'caps', 'signers', 'attempts', 'result', 'error', 'createdAt', 'updatedAt', 'finishedAt'],
  properties: {
    ...submitAnswerProps,
    target: { type: 'object' },
    caps: { type: 'array', items: { type: 'string' } },
    signers: { type: 'array', items: { type: 'string' } },
    attempts: { type: 'integer', minimum: 0 },
    result: {},
    error: {
      anyOf: [
        { type: 'null' },
        { type: 'object', additionalProperties: false, required: ['code', 'message'], properties: { code: { type: 'string' }, message: { type: 'string' } } },
      ],
    },
    createdAt: { type: 'string' },
    updatedAt: { type: 'string' },
    finishedAt: { type: ['string', 'null'] },
    attemptHistory: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['attempt', 'node', 'dispatchedAt', 'startedAt', 'finishedAt', 'outcome', 'errorCode'],
        properties: {
          attempt: { type: 'integer', minimum: 1 },
          node: { type: 'string' },
          dispatchedAt: { type: ['string', 'null'] },
          startedAt: { type: ['string', 'null'] },
          finishedAt: { type: ['string', 'null'] },
          outcome: { enum: [...ATTEMPT_OUTCOMES] },
          errorCode: { type: ['string', 'null'] },
        },
      },
    },
  },
} as const;

const jobPageSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['jobs', 'nextCursor'],
  properties: { jobs: { type: 'array', items: jobViewSchema }, nextCursor: { type: ['string', 'null'] } },
} as const;

const eventMessageSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['seq', 'type', 'message'],
  properties: { seq: { type: 'integer', minimum: 0 }, type: { type: 'string' }, level: { type: ['string', 'null'] }, message: { type: 'string' }, data: {} },
} as const;

const validateSubmit = compileSchema<SubmitAnswer>(submitAnswerSchema);
const validateBatch = compileSchema<BatchSubmitAnswer>(batchAnswerSchema);
const validateJobView = compileSchema<JobView>(jobViewSchema);
const validateEvent = compileSchema<JobEventMessage>(eventMessageSchema);
const validateJobPage = compileSchema<JobPage>(jobPageSchema);

export function parseSubmitAnswer(v: unknown): SubmitAnswer {
  assertSchema(validateSubmit, v, 'submit answer');
  return v;
}
export function parseBatchSubmitAnswer(v: unknown): BatchSubmitAnswer {
  assertSchema(validateBatch, v, 'batch submit answer');
  return v;
}
export function parseJobView(v: unknown): JobView {
  assertSchema(validateJobView, v, 'job view');
  return v;
}
export function parseJobPage(v: unknown): JobPage {
  assertSchema(validateJobPage, v, 'job page');
  return v;
}
export function parseJobEventMessage(v: unknown): JobEventMessage {
  assertSchema(validateEvent, v, 'job event');
  return v;
}
