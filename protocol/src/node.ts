// Node registration and heartbeat payloads. Registration proves possession of the node key by signing a
// fresh, single-use challenge from the ledger, bound to the method, path and a hash of what it sends (T13).
// Heartbeats carry a strictly increasing sequence number and a timestamp, so a replayed or stale one is refused.
import { PAYLOAD_TYPES } from './payload-types.ts';
import { assertSchema, compileSchema } from './schema.ts';
import { parseStrictJson, type JsonValue } from './strict-json.ts';
import { NODE_ID_PATTERN, LABEL_KEY_PATTERN } from './job.ts';

export const NODE_REGISTRATION_PAYLOAD_TYPE = PAYLOAD_TYPES.nodeRegistration;
export const HEARTBEAT_PAYLOAD_TYPE = PAYLOAD_TYPES.heartbeat;
export const REGISTER_PATH = '/v1/nodes/register';
export const HEARTBEAT_PATH = '/v1/nodes/heartbeat';

export interface NodeRegistration {
  nodeId: string;
  /** base64url node public key (the key that signs this envelope). */
  publicKey: string;
  /** The challenge the ledger issued (base64url), single use. */
  challenge: string;
  method: 'POST';
  path: typeof REGISTER_PATH;
  /** sha256 hex of the canonical JSON of `inventory`. */
  inventorySha256: string;
  inventory: JsonValue;
  labels: Record<string, string>;
  version: string;
  iat: number;
  /** The enrollment token from the node's boot image (bootstrap secret), when it has one. */
  enrollmentToken?: string;
}

export interface NodeHealth {
  healthy: boolean;
  problems: string[];
  load1: number;
  memAvailableBytes: number;
  diskFreeBytes: number;
  runningJobs: number;
}

export interface Heartbeat {
  nodeId: string;
  method: 'POST';
  path: typeof HEARTBEAT_PATH;
  /** Strictly increasing per node; the ledger refuses a sequence it has seen. */
  seq: number;
  /** Unix milliseconds when it was made. */
  ts: number;
  health: NodeHealth;
}

const labels = { type: 'object', maxProperties: 32, propertyNames: { pattern: LABEL_KEY_PATTERN }, additionalProperties: { type: 'string', maxLength: 63 } };

const registrationSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['nodeId', 'publicKey', 'challenge', 'method', 'path', 'inventorySha256', 'inventory', 'labels', 'version', 'iat'],
  properties: {
    nodeId: { type: 'string', pattern: NODE_ID_PATTERN },
    publicKey: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$' },
    challenge: { type: 'string', pattern: '^[A-Za-z0-9_-]{22,86}$' },
    method: { const: 'POST' },
    path: { const: REGISTER_PATH },
    inventorySha256: { type: 'string', pattern: '^[0-9a-f]{64}$' },
    inventory: {},
    labels,
    version: { type: 'string', maxLength: 64 },
    iat: { type: 'integer', minimum: 0 },
    enrollmentToken: { type: 'string', pattern: '^[A-Za-z0-9_-]{16,128}$' },
  },
};

const heartbeatSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['nodeId', 'method', 'path', 'seq', 'ts', 'health'],
  properties: {
    nodeId: { type: 'string', pattern: NODE_ID_PATTERN },
    method: { const: 'POST' },
    path: { const: HEARTBEAT_PATH },
    seq: { type: 'integer', minimum: 1 },
    ts: { type: 'integer', minimum: 0 },
    health: {
      type: 'object',
      additionalProperties: false,
      required: ['healthy', 'problems', 'load1', 'memAvailableBytes', 'diskFreeBytes', 'runningJobs'],
      properties: {
        healthy: { type: 'boolean' },
        problems: { type: 'array', maxItems: 32, items: { type: 'string', maxLength: 200 } },
        load1: { type: 'number', minimum: 0 },
        memAvailableBytes: { type: 'integer', minimum: 0 },
        diskFreeBytes: { type: 'integer', minimum: 0 },
        runningJobs: { type: 'integer', minimum: 0 },
      },
    },
  },
};

const validateRegistration = compileSchema<NodeRegistration>(registrationSchema);
const validateHeartbeat = compileSchema<Heartbeat>(heartbeatSchema);

export function parseNodeRegistration(bytes: Uint8Array): NodeRegistration {
  const v = parseStrictJson(bytes, { maxBytes: 1024 * 1024 });
  assertSchema(validateRegistration, v, 'node registration');
  return v as unknown as NodeRegistration;
}

export function parseHeartbeat(bytes: Uint8Array): Heartbeat {
  const v = parseStrictJson(bytes, { maxBytes: 64 * 1024 });
  assertSchema(validateHeartbeat, v, 'heartbeat');
  return v as unknown as Heartbeat;
}
