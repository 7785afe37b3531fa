// The runner-event seam: what a runner reports (status, log lines, results, security events) through the
// Redis event stream, signed with its node key (T14). One stream entry is one DSSE envelope of payload type
// `runnerEvents` holding a batch of events from one node. Supervisors carry the envelopes untouched; the
// coord verifies them against the node's registered key before it records anything.
import type { ErrorJSON } from '../errors.ts';
import { WritError } from '../errors.ts';
import { JOB_ID_PATTERN, NODE_ID_PATTERN } from '../job.ts';
import { PAYLOAD_TYPES } from '../payload-types.ts';
import { assertSchema, compileSchema } from '../schema.ts';
import { parseStrictJson, type JsonValue } from '../strict-json.ts';
import { errorJsonSchema } from './errors.ts';

export const RUNNER_EVENTS_PAYLOAD_TYPE = PAYLOAD_TYPES.runnerEvents;

export type RunnerEvent =
  | { type: 'status'; jobId: string; attempt: number; node: string; ts: number; status: 'running' }
  | { type: 'log'; jobId: string; attempt: number; node: string; ts: number; level: 'info' | 'warn' | 'error'; message: string }
  | { type: 'result'; jobId: string; attempt: number; node: string; ts: number; ok: true; value: JsonValue; durationMs: number; stepResult?: string }
  | { type: 'result'; jobId: string; attempt: number; node: string; ts: number; ok: false; error: ErrorJSON; final: boolean; durationMs: number }
  // `stepResult`: for a flow step, the same value as a StepResult signed on its own by the node (flow.ts),
  // which the coord hands to the steps that take it as input.
  | { type: 'security'; jobId: string | null; attempt: number; node: string; ts: number; error: ErrorJSON };

/** The signed payload of one stream entry: events of one node, in the order they happened. */
export interface RunnerEventBatch {
  node: string;
  /** Per-runner-process counter with a random process tag: tells batches apart in logs and audits. */
  batch: string;
  events: RunnerEvent[];
}

/** Events one batch may hold (the runner flushes at most this many per entry). */
export const MAX_EVENTS_PER_BATCH = 500;
/** Bytes of one signed batch envelope in the stream; a runner starts a new batch past RUNNER_BATCH_TARGET_BYTES of payload. */
export const MAX_RUNNER_BATCH_BYTES = 1024 * 1024;
export const RUNNER_BATCH_TARGET_BYTES = 256 * 1024;

const common = {
  jobId: { type: 'string', pattern: JOB_ID_PATTERN },
  attempt: { type: 'integer', minimum: 1, maximum: 1_000_000 },
  node: { type: 'string', pattern: NODE_ID_PATTERN },
  ts: { type: 'integer', minimum: 0 },
} as const;
const base = ['type', 'jobId', 'attempt', 'node', 'ts'];

const eventSchema = {
  oneOf: [
    {
      type: 'object',
      additionalProperties: false,
      required: [...base, 'status'],
      properties: { type: { const: 'status' }, ...common, status: { const: 'running' } },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: [...base, 'level', 'message'],
      properties: { type: { const: 'log' }, ...common, level: { enum: ['info', 'warn', 'error'] }, message: { type: 'string', maxLength: 65536 } },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: [...base, 'ok', 'value', 'durationMs'],
      properties: {
        type: { const: 'result' },
        ...common,
        ok: { const: true },
        value: {},
        durationMs: { type: 'integer', minimum: 0 },
        stepResult: { type: 'string', maxLength: 1024 * 1024 },
      },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: [...base, 'ok', 'error', 'final', 'durationMs'],
      properties: {
        type: { const: 'result' },
        ...common,
        ok: { const: false },
        error: errorJsonSchema,
        final: { type: 'boolean' },
        durationMs: { type: 'integer', minimum: 0 },
      },
    },
    {
      type: 'object',
      additionalProperties: false,
      required: [...base, 'error'],
      properties: {
        type: { const: 'security' },
        ...common,
        attempt: { type: 'integer', minimum: 0, maximum: 1_000_000 },
        jobId: { anyOf: [common.jobId, { type: 'null' }] },
        error: errorJsonSchema,
      },
    },
  ],
} as const;

const batchSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['node', 'batch', 'events'],
  properties: {
    node: { type: 'string', pattern: NODE_ID_PATTERN },
    batch: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' },
    events: { type: 'array', minItems: 1, maxItems: MAX_EVENTS_PER_BATCH, items: eventSchema },
  },
} as const;

const validateBatch = compileSchema<RunnerEventBatch>(batchSchema);

export function encodeRunnerEventBatch(batch: RunnerEventBatch): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(batch));
}

/** Strict parse of a verified batch payload; every event must name the batch's node. */
export function parseRunnerEventBatch(bytes: Uint8Array): RunnerEventBatch {
  const doc = parseStrictJson(bytes, { maxBytes: MAX_RUNNER_BATCH_BYTES, maxDepth: 80 });
  assertSchema(validateBatch, doc, 'runner event batch');
  for (const ev of doc.events) {
    if (ev.node !== doc.node) throw new WritError('SCHEMA_INVALID', `a batch from node ${doc.node} carries an event of node ${ev.node}`);
  }
  return doc;
}

/** The field of a Redis stream entry that holds the signed batch (one field per entry). */
export const EVENT_STREAM_FIELD = 'env';

/** The fields of one stream entry for XADD. */
export function eventStreamFields(envelope: string): [typeof EVENT_STREAM_FIELD, string] {
  return [EVENT_STREAM_FIELD, envelope];
}

/**
 * Reads one stream entry's field list (as XREADGROUP returns it). Returns the envelope text, or an error
 * description when the entry is not shaped like one Writ writes (somebody wrote to the stream directly):
 * such an entry is carried to the coord anyway so that it is refused and recorded there.
 */
export function readEventStreamEntry(fields: readonly string[]): { envelope: string } | { malformed: string } {
  if (fields.length !== 2 || fields[0] !== EVENT_STREAM_FIELD) {
    return {
      malformed: `stream entry has fields [${fields
        .filter((_, i) => i % 2 === 0)
        .slice(0, 5)
        .join(', ')
        .slice(0, 200)}], expected [${EVENT_STREAM_FIELD}]`,
    };
  }
  if (fields[1]!.length > MAX_RUNNER_BATCH_BYTES)
    return { malformed: `stream entry of ${fields[1]!.length} characters is over the ${MAX_RUNNER_BATCH_BYTES}-byte limit` };
  return { envelope: fields[1]! };
}
