// The error shape as it crosses a seam (HTTP bodies, runner events, BullMQ's failure reason): one schema
// and one parser, so a reader never rebuilds an ErrorJSON from a loosely typed object.
import { ERROR_CODES, fromErrorJSON, isErrorCode, type ErrorCode, type ErrorJSON } from '../errors.ts';
import { assertSchema, compileSchema } from '../schema.ts';
import { parseStrictJson } from '../strict-json.ts';

export const errorJsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['code', 'message', 'retryable'],
  properties: {
    code: { type: 'string', pattern: '^[A-Z][A-Z0-9_]{1,63}$' },
    message: { type: 'string', maxLength: 65536 },
    retryable: { type: 'boolean' },
    details: { type: 'object' },
  },
} as const;

const validateErrorJson = compileSchema<ErrorJSON>(errorJsonSchema);

/** Checks a value already parsed from JSON is an ErrorJSON with a registered code; throws SCHEMA_INVALID otherwise. */
export function assertErrorJson(value: unknown, what: string): asserts value is ErrorJSON {
  assertSchema(validateErrorJson, value, what);
  if (!isErrorCode(value.code)) assertSchema(validateErrorJson, { ...value, code: '?' }, `${what} (unknown error code ${value.code})`);
}

/**
 * BullMQ keeps a failed job's reason as a string. Writ puts its ErrorJSON there as JSON text, with the run's
 * duration beside it when the script ran (`durationMs`): a coord whose report of the failure was lost settles
 * the job from this. BullMQ's own reasons ("job stalled more than allowable limit") are plain text.
 */
export function encodeFailureReason(error: ErrorJSON, run?: { durationMs: number }): string {
  return JSON.stringify({
    code: error.code,
    message: error.message,
    retryable: error.retryable,
    ...(error.details ? { details: error.details } : {}),
    ...(run ? { durationMs: run.durationMs } : {}),
  });
}

/** A failure reason Writ wrote: the error, and how long the run took when the script ran. */
export interface QueueFailure {
  error: ErrorJSON;
  durationMs?: number;
}

/** Reads a failure reason `encodeFailureReason` wrote; null for a reason Writ did not write (or a malformed one). */
export function parseQueueFailure(reason: string | undefined | null): QueueFailure | null {
  if (!reason || reason[0] !== '{') return null;
  try {
    const value = parseStrictJson(reason, { maxBytes: 256 * 1024, maxDepth: 16 });
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return null;
    const { durationMs, ...error } = value as Record<string, unknown>;
    if (durationMs !== undefined && !(typeof durationMs === 'number' && Number.isFinite(durationMs) && durationMs >= 0)) return null;
    assertErrorJson(error, 'failure reason');
    return { error, ...(durationMs !== undefined ? { durationMs } : {}) };
  } catch {
    return null;
  }
}

/** The body of every failed HTTP answer, from the coord and from a supervisor: `{ error: ErrorJSON }`. */
export interface ErrorAnswer {
  error: ErrorJSON;
}

/** Builds an error answer with the registry's `retryable` for the code. */
export function errorAnswer(code: ErrorCode, message: string, details?: Record<string, unknown>): ErrorAnswer {
  return { error: { code, message, retryable: ERROR_CODES[code].retryable, ...(details ? { details } : {}) } };
}

/** The ErrorJSON of a failed answer's body, or null when the body is not Writ's error shape. */
export function parseErrorAnswer(body: unknown): ErrorJSON | null {
  if (!body || typeof body !== 'object' || Array.isArray(body) || Object.keys(body).length !== 1) return null;
  const error = (body as { error?: unknown }).error;
  try {
    assertErrorJson(error, 'error answer');
    return error;
  } catch {
    return null;
  }
}

/**
 * The body of an HTTP answer from a Writ service: its JSON when the answer is a success; the WritError its
 * error body carries when it failed; `unavailable(message)` when the body is not Writ's (not JSON, another
 * shape), so that the caller chooses the code that names who did not answer.
 */
export function readAnswer(status: number, text: string, unavailable: (message: string) => Error, maxBytes?: number): unknown {
  let doc: unknown = null;
  try {
    doc = text ? parseStrictJson(text, maxBytes ? { maxBytes } : {}) : null;
  } catch {
    throw unavailable(`answered ${status} with a body that is not JSON: ${text.slice(0, 200)}`);
  }
  if (status >= 200 && status < 300) return doc;
  const error = parseErrorAnswer(doc);
  throw error ? fromErrorJSON(error) : unavailable(`answered ${status}`);
}

/** One JSON request to a Writ service, as fetchAnswer makes it. */
export interface AnswerRequest {
  method: string;
  url: string | URL;
  /** Sent as `Authorization: Bearer …`; none for requests a signature in the body authenticates. */
  token?: string;
  /** JSON text as it is (a signed envelope travels byte for byte), or a value to serialise. */
  body?: string | object;
  /** The whole exchange, answer body included, ends after this long. */
  timeoutMs: number;
  /** Besides the timeout, abandons the request. */
  signal?: AbortSignal;
  /** The error for a service that answered something that is not Writ's (readAnswer's message). */
  unavailable: (message: string) => Error;
  /** The error for a service that could not be reached or stopped mid-answer (default: `unavailable`). */
  unreachable?: (cause: Error) => Error;
  /** The largest answer body read as JSON (default: the strict parser's 1 MiB). */
  maxAnswerBytes?: number;
}

/**
 * The one HTTP client of Writ's tiers (the CLI to the coord, the coord to supervisors, a node's agent to
 * the coord): sends the request, reads the whole answer and returns its status and JSON body, or throws the
 * WritError an error answer carries, or the caller's own error for a service that is not there.
 */
export async function fetchAnswer(r: AnswerRequest): Promise<{ status: number; body: unknown }> {
  let res: Response;
  let text: string;
  try {
    res = await fetch(r.url, {
      method: r.method,
      headers: {
        ...(r.token !== undefined ? { authorization: `Bearer ${r.token}` } : {}),
        ...(r.body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: r.body === undefined ? undefined : typeof r.body === 'string' ? r.body : JSON.stringify(r.body),
      signal: r.signal ? AbortSignal.any([r.signal, AbortSignal.timeout(r.timeoutMs)]) : AbortSignal.timeout(r.timeoutMs),
    });
    text = await res.text(); // a service stopping mid-answer is as unreachable as one that is down
  } catch (e) {
    const err = e as Error;
    throw r.unreachable ? r.unreachable(err) : r.unavailable(`is unreachable: ${err.cause ? String(err.cause) : err.message}`);
  }
  return { status: res.status, body: readAnswer(res.status, text, r.unavailable, r.maxAnswerBytes) };
}
