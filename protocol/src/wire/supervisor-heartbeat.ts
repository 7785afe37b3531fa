// The federation seam: a supervisor announces itself to the coord with signed heartbeats (payload type
// `supervisor-heartbeat`, signed by the supervisor's key as listed in the key set), and the coord lists the
// supervisors it knows (GET /v1/supervisors). Both sides use the parsers here.
import { PAYLOAD_TYPES } from '../payload-types.ts';
import { assertSchema, compileSchema } from '../schema.ts';
import { parseStrictJson } from '../strict-json.ts';

export const SUPERVISOR_HEARTBEAT_PAYLOAD_TYPE = PAYLOAD_TYPES.supervisorHeartbeat;
export const SUPERVISOR_HEARTBEAT_PATH = '/v1/supervisors/heartbeat';
/** The pool every node is in until enrollment assigns another, and the one `writ dev`'s supervisor serves. */
export const DEFAULT_POOL = 'default';
export const POOL_PATTERN = '^[a-z0-9][a-z0-9._-]{0,62}$';
export const SUPERVISOR_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$';
/** A supervisor silent for this many of its heartbeat intervals is gone: its pools' work goes to its peers. */
export const SUPERVISOR_MISSED_BEATS = 3;

export interface SupervisorHeartbeat {
  supervisor: string;
  /** The cluster it belongs to (audience): a heartbeat for another cluster is refused. */
  cluster: string;
  method: 'POST';
  path: typeof SUPERVISOR_HEARTBEAT_PATH;
  /** Where the coord reaches its API (POST /v1/submit, job states, key sets). */
  apiUrl: string;
  /** The node pools it serves; each must be listed for it in the key set. */
  pools: string[];
  /** Attempts waiting in the queues of its live nodes. */
  queueDepth: number;
  /** Live runners in its Redis (nodes with a recent heartbeat there). */
  capacity: number;
  redisOk: boolean;
  redisError: string | null;
  /** The Redis address its pools' runners use, without credentials (told to nodes at registration). */
  runnerRedis: string | null;
  /** How often it sends a heartbeat (ms): the coord marks it gone after SUPERVISOR_MISSED_BEATS of these. */
  intervalMs: number;
  /** Unix milliseconds when it was made; must increase from one heartbeat to the next. */
  ts: number;
}

const heartbeatSchema = {
  type: 'object',
  additionalProperties: false,
  required: [
    'supervisor',
    'cluster',
    'method',
    'path',
    'apiUrl',
    'pools',
    'queueDepth',
    'capacity',
    'redisOk',
    'redisError',
    'runnerRedis',
    'intervalMs',
    'ts',
  ],
  properties: {
    supervisor: { type: 'string', pattern: SUPERVISOR_ID_PATTERN },
    cluster: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' },
    method: { const: 'POST' },
    path: { const: SUPERVISOR_HEARTBEAT_PATH },
    apiUrl: { type: 'string', pattern: '^https?://', maxLength: 500 },
    pools: { type: 'array', minItems: 1, maxItems: 64, uniqueItems: true, items: { type: 'string', pattern: POOL_PATTERN } },
    queueDepth: { type: 'integer', minimum: 0 },
    capacity: { type: 'integer', minimum: 0 },
    redisOk: { type: 'boolean' },
    redisError: { type: ['string', 'null'], maxLength: 500 },
    runnerRedis: { type: ['string', 'null'], pattern: '^rediss?(\\+sentinel)?://[^@]*$', maxLength: 500 },
    intervalMs: { type: 'integer', minimum: 100, maximum: 3_600_000 },
    ts: { type: 'integer', minimum: 0 },
  },
} as const;

const validateHeartbeat = compileSchema<SupervisorHeartbeat>(heartbeatSchema);

export function encodeSupervisorHeartbeat(hb: SupervisorHeartbeat): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(hb));
}

/** Strict parse of a verified heartbeat payload. */
export function parseSupervisorHeartbeat(bytes: Uint8Array): SupervisorHeartbeat {
  const doc = parseStrictJson(bytes, { maxBytes: 16 * 1024, maxDepth: 4 });
  assertSchema(validateHeartbeat, doc, 'supervisor heartbeat');
  return doc;
}

/** POST /v1/supervisors/heartbeat answers this; `keySetVersion` lets the supervisor ask for a newer set. */
export interface SupervisorHeartbeatAnswer {
  state: 'live';
  keySetVersion: number;
}

/** One supervisor as GET /v1/supervisors shows it. */
export interface SupervisorView {
  id: string;
  keyid: string;
  apiUrl: string;
  pools: string[];
  /** live: heard from within SUPERVISOR_MISSED_BEATS intervals; gone: silent longer (work goes to its peers). */
  state: 'live' | 'gone';
  /** Live, its Redis answering, and its key listed in the key set in force: it gets work. */
  healthy: boolean;
  /** Its key is listed for it in the key set in force. */
  listed: boolean;
  /** Wired in when the coord started (`writ dev`'s in-process one, or `writ coord --supervisor`): no heartbeats. */
  pinned: boolean;
  queueDepth: number;
  capacity: number;
  /** Attempts this coord handed to it since the coord started (other coords count their own). */
  dispatched: number;
  redisOk: boolean;
  redisError: string | null;
  runnerRedis: string | null;
  intervalMs: number;
  firstSeenAt: string;
  lastHeartbeatAt: string;
  stateSince: string;
}

export interface SupervisorList {
  supervisors: SupervisorView[];
}

const ISO = { type: 'string', maxLength: 40 } as const;
const viewSchema = {
  type: 'object',
  additionalProperties: false,
  required: [
    'id',
    'keyid',
    'apiUrl',
    'pools',
    'state',
    'healthy',
    'listed',
    'pinned',
    'queueDepth',
    'capacity',
    'dispatched',
    'redisOk',
    'redisError',
    'runnerRedis',
    'intervalMs',
    'firstSeenAt',
    'lastHeartbeatAt',
    'stateSince',
  ],
  properties: {
    id: { type: 'string' },
    keyid: { type: 'string' },
    apiUrl: { type: 'string' },
    pools: { type: 'array', items: { type: 'string' } },
    state: { enum: ['live', 'gone'] },
    healthy: { type: 'boolean' },
    listed: { type: 'boolean' },
    pinned: { type: 'boolean' },
    queueDepth: { type: 'integer' },
    capacity: { type: 'integer' },
    dispatched: { type: 'integer' },
    redisOk: { type: 'boolean' },
    redisError: { type: ['string', 'null'] },
    runnerRedis: { type: ['string', 'null'] },
    intervalMs: { type: 'integer' },
    firstSeenAt: ISO,
    lastHeartbeatAt: ISO,
    stateSince: ISO,
  },
} as const;
const validateList = compileSchema<SupervisorList>({
  type: 'object',
  additionalProperties: false,
  required: ['supervisors'],
  properties: { supervisors: { type: 'array', items: viewSchema } },
});
const validateAnswer = compileSchema<SupervisorHeartbeatAnswer>({
  type: 'object',
  additionalProperties: false,
  required: ['state', 'keySetVersion'],
  properties: { state: { const: 'live' }, keySetVersion: { type: 'integer', minimum: 0 } },
});

export function parseSupervisorList(v: unknown): SupervisorList {
  assertSchema(validateList, v, 'supervisor list');
  return v;
}

export function parseSupervisorHeartbeatAnswer(v: unknown): SupervisorHeartbeatAnswer {
  assertSchema(validateAnswer, v, 'supervisor heartbeat answer');
  return v;
}
