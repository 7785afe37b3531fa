// Job payload v1: everything that decides what runs, where, and with which powers is inside the signed
// bytes (T3). Parsed only after a signature verified, and only by this one strict parser (T2).
import { randomBytes } from 'node:crypto';
import { CAPABILITIES, CAPABILITY_NAME_PATTERN } from './capabilities/index.ts';
import { b64url, fromB64url, sha256Hex, utf8 } from './encoding.ts';
import { WritError } from './errors.ts';
import { PAYLOAD_TYPES } from './payload-types.ts';
import { assertSchema, compileSchema } from './schema.ts';
import { parseStrictJson, type JsonValue } from './strict-json.ts';

export const JOB_PAYLOAD_TYPE = PAYLOAD_TYPES.job;
export const DEFAULT_MAX_SCRIPT_BYTES = 256 * 1024;
export const DEFAULT_MAX_CLOCK_SKEW_S = 60;
export const MAX_JOB_LIFETIME_S = 7 * 24 * 3600;
export const JOB_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';
export const NODE_ID_PATTERN = '^[a-z0-9][a-z0-9.-]{0,62}$';
export const LABEL_KEY_PATTERN = '^[a-z0-9][a-z0-9./_-]{0,62}$';

export type JobTarget = { node: string } | { selector: Record<string, string> };

export interface JobPayload {
  id: string;
  script: { source: string; sha256: string };
  args: JsonValue;
  target: JobTarget;
  caps: string[];
  limits: { timeoutMs: number; memoryMiB: number };
  aud: string;
  /** base64url, at least 128 bits. */
  nonce: string;
  /** Unix seconds. */
  iat: number;
  exp: number;
  /** Store paths this job may install (X7). */
  pins?: { nix?: string[] };
}

/** The job payload's JSON schema; flows reuse its parts for their steps. */
export const jobSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'script', 'args', 'target', 'caps', 'limits', 'aud', 'nonce', 'iat', 'exp'],
  properties: {
    id: { type: 'string', pattern: JOB_ID_PATTERN },
    script: {
      type: 'object',
      additionalProperties: false,
      required: ['source', 'sha256'],
      properties: { source: { type: 'string' }, sha256: { type: 'string', pattern: '^[0-9a-f]{64}$' } },
    },
    args: {},
    target: {
      oneOf: [
        { type: 'object', additionalProperties: false, required: ['node'], properties: { node: { type: 'string', pattern: NODE_ID_PATTERN } } },
        {
          type: 'object',
          additionalProperties: false,
          required: ['selector'],
          properties: {
            selector: {
              type: 'object',
              minProperties: 1,
              maxProperties: 16,
              propertyNames: { pattern: LABEL_KEY_PATTERN },
              additionalProperties: { type: 'string', maxLength: 63 },
            },
          },
        },
      ],
    },
    caps: { type: 'array', maxItems: 64, uniqueItems: true, items: { type: 'string', pattern: CAPABILITY_NAME_PATTERN } },
    limits: {
      type: 'object',
      additionalProperties: false,
      required: ['timeoutMs', 'memoryMiB'],
      properties: { timeoutMs: { type: 'integer', minimum: 10, maximum: 3_600_000 }, memoryMiB: { type: 'integer', minimum: 1, maximum: 1024 } },
    },
    aud: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' },
    nonce: { type: 'string', minLength: 22, maxLength: 128, pattern: '^[A-Za-z0-9_-]+$' },
    iat: { type: 'integer', minimum: 0 },
    exp: { type: 'integer', minimum: 0 },
    pins: {
      type: 'object',
      additionalProperties: false,
      properties: {
        nix: {
          type: 'array',
          maxItems: 256,
          uniqueItems: true,
          items: { type: 'string', pattern: '^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]{1,211}$' },
        },
      },
    },
  },
} as const;

const validateJob = compileSchema<JobPayload>(jobSchema as unknown as Record<string, unknown>);

export interface ParseJobOptions {
  maxBytes?: number;
  maxScriptBytes?: number;
}

/** Strictly parses and validates job payload bytes (after the envelope signature verified). */
export function parseJobPayload(bytes: Uint8Array, opts: ParseJobOptions = {}): JobPayload {
  const value = parseStrictJson(bytes, { maxBytes: opts.maxBytes ?? 1024 * 1024, maxDepth: 64 });
  assertSchema(validateJob, value, 'job payload');
  const job = value as JobPayload;
  const maxScript = opts.maxScriptBytes ?? DEFAULT_MAX_SCRIPT_BYTES;
  const scriptBytes = Buffer.byteLength(job.script.source, 'utf8');
  if (scriptBytes > maxScript)
    throw new WritError('SCRIPT_TOO_LARGE', `script is ${scriptBytes} bytes, over the ${maxScript}-byte limit`, { limit: maxScript, size: scriptBytes });
  const actual = sha256Hex(job.script.source);
  if (actual !== job.script.sha256)
    throw new WritError('SCRIPT_HASH_MISMATCH', `script.sha256 is ${job.script.sha256} but the source hashes to ${actual}`, {
      declared: job.script.sha256,
      actual,
    });
  const nonce = fromB64url(job.nonce);
  if (!nonce || nonce.length < 16) throw new WritError('SCHEMA_INVALID', 'job payload /nonce must be base64url of at least 16 bytes (128 bits)');
  for (const c of job.caps) {
    if (!CAPABILITIES.has(c)) throw new WritError('CAPABILITY_UNKNOWN', `job requests unknown capability ${JSON.stringify(c)}`, { capability: c });
  }
  if (job.exp <= job.iat || job.exp - job.iat > MAX_JOB_LIFETIME_S) {
    throw new WritError('ENVELOPE_LIFETIME_INVALID', `exp must be after iat and at most ${MAX_JOB_LIFETIME_S} s later (iat=${job.iat}, exp=${job.exp})`);
  }
  return job;
}

/** Checks the signed time window against `nowS` (Unix seconds). */
export function checkJobTimes(job: Pick<JobPayload, 'iat' | 'exp'>, nowS: number, maxSkewS = DEFAULT_MAX_CLOCK_SKEW_S): void {
  if (job.exp <= nowS)
    throw new WritError('ENVELOPE_EXPIRED', `envelope expired ${nowS - job.exp} s ago (exp=${new Date(job.exp * 1000).toISOString()})`, {
      exp: job.exp,
      now: nowS,
    });
  if (job.iat > nowS + maxSkewS)
    throw new WritError('ENVELOPE_NOT_YET_VALID', `envelope iat is ${job.iat - nowS} s in the future; at most ${maxSkewS} s of clock skew is allowed`, {
      iat: job.iat,
      now: nowS,
    });
}

export function checkAudience(job: Pick<JobPayload, 'aud'>, clusterId: string): void {
  if (job.aud !== clusterId)
    throw new WritError('AUDIENCE_MISMATCH', `envelope is for cluster ${JSON.stringify(job.aud)}, this is ${JSON.stringify(clusterId)}`, {
      aud: job.aud,
      cluster: clusterId,
    });
}

export interface NewJobInput {
  id?: string;
  source: string;
  args?: JsonValue;
  target: JobTarget;
  caps?: string[];
  limits?: Partial<JobPayload['limits']>;
  aud: string;
  ttlS?: number;
  nowS?: number;
  pins?: JobPayload['pins'];
}

export const DEFAULT_LIMITS = Object.freeze({ timeoutMs: 30_000, memoryMiB: 64 });

/** Builds a job payload with a fresh 128-bit nonce and the script hash. */
export function buildJobPayload(input: NewJobInput): JobPayload {
  const iat = input.nowS ?? Math.floor(Date.now() / 1000);
  return {
    id: input.id ?? `job-${b64url(randomBytes(12))}`.replace(/_/g, '-'),
    script: { source: input.source, sha256: sha256Hex(input.source) },
    args: input.args ?? null,
    target: input.target,
    caps: input.caps ?? [],
    limits: { ...DEFAULT_LIMITS, ...input.limits },
    aud: input.aud,
    nonce: b64url(randomBytes(16)),
    iat,
    exp: iat + (input.ttlS ?? 600),
    ...(input.pins ? { pins: input.pins } : {}),
  };
}

export function encodeJobPayload(job: JobPayload): Uint8Array {
  return utf8.encode(JSON.stringify(job));
}
