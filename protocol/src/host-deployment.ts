// Host deployment v1: a desired system rolled out to a set of nodes in batches, health-gated (issue 12).
// The admin who creates it signs one deployment payload and, with the same keys, one switch job per node;
// the deployment binds each job's envelope by sha256, so the coord can hand out only the jobs the admin
// signed, in the order and batches the admin signed. The coord holds no key (T10): it cannot add a node,
// change the system or the health check, and every job pins the system's store path for the runner (X7).
import { randomBytes } from 'node:crypto';
import { b64url, fromB64url, sha256Hex, utf8 } from './encoding.ts';
import { WritError } from './errors.ts';
import { MAX_JOB_LIFETIME_S, NODE_ID_PATTERN, LABEL_KEY_PATTERN, type JobPayload, type NewJobInput } from './job.ts';
import { PAYLOAD_TYPES } from './payload-types.ts';
import { assertSchema, compileSchema } from './schema.ts';
import { parseStrictJson } from './strict-json.ts';

export const HOST_DEPLOYMENT_PAYLOAD_TYPE = PAYLOAD_TYPES.hostDeployment;
export const DEPLOYMENT_ID_PATTERN = '^[a-z0-9][a-z0-9-]{0,62}$';
export const STORE_PATH_PATTERN = '^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]{1,211}$';
export const MAX_DEPLOYMENT_NODES = 1000;

export interface HostHealthCheck {
  argv: string[];
  timeoutMs: number;
}

export interface HostDeploymentPayload {
  id: string;
  aud: string;
  /** The system to activate: a store path, pinned in every node's job. */
  system: string;
  /** Where it came from (a flake reference), for the record only. */
  source?: string;
  /** The Nix profile on each node (under the node's configured profiles root). */
  profile: string;
  /** The selector the nodes were resolved from when the admin signed, for the record. */
  selector: Record<string, string>;
  /** Rollout order; batch i is nodes[i*batchSize, (i+1)*batchSize). */
  nodes: string[];
  batchSize: number;
  /** Nodes that may be switching or failed at once; reaching it pauses the rollout. */
  maxUnavailable: number;
  /** Wait for a node's other jobs to finish before switching it. */
  drain: boolean;
  healthCheck: HostHealthCheck;
  /** Per node: the switch must end this long after its job was handed out. */
  timeoutS: number;
  /** The switch job per node, bound by the sha256 of its envelope as submitted. */
  jobs: { node: string; id: string; envelopeSha256: string }[];
  nonce: string;
  iat: number;
  exp: number;
}

const schema = {
  type: 'object',
  additionalProperties: false,
  required: [
    'id',
    'aud',
    'system',
    'profile',
    'selector',
    'nodes',
    'batchSize',
    'maxUnavailable',
    'drain',
    'healthCheck',
    'timeoutS',
    'jobs',
    'nonce',
    'iat',
    'exp',
  ],
  properties: {
    id: { type: 'string', pattern: DEPLOYMENT_ID_PATTERN },
    aud: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' },
    system: { type: 'string', pattern: STORE_PATH_PATTERN },
    source: { type: 'string', minLength: 1, maxLength: 1024 },
    profile: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' },
    selector: { type: 'object', maxProperties: 16, propertyNames: { pattern: LABEL_KEY_PATTERN }, additionalProperties: { type: 'string', maxLength: 63 } },
    nodes: { type: 'array', minItems: 1, maxItems: MAX_DEPLOYMENT_NODES, uniqueItems: true, items: { type: 'string', pattern: NODE_ID_PATTERN } },
    batchSize: { type: 'integer', minimum: 1, maximum: MAX_DEPLOYMENT_NODES },
    maxUnavailable: { type: 'integer', minimum: 1, maximum: MAX_DEPLOYMENT_NODES },
    drain: { type: 'boolean' },
    healthCheck: {
      type: 'object',
      additionalProperties: false,
      required: ['argv', 'timeoutMs'],
      properties: {
        argv: { type: 'array', minItems: 1, maxItems: 64, items: { type: 'string', minLength: 1, maxLength: 4096 } },
        timeoutMs: { type: 'integer', minimum: 100, maximum: 3_600_000 },
      },
    },
    timeoutS: { type: 'integer', minimum: 10, maximum: 3600 },
    jobs: {
      type: 'array',
      maxItems: MAX_DEPLOYMENT_NODES,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['node', 'id', 'envelopeSha256'],
        properties: {
          node: { type: 'string', pattern: NODE_ID_PATTERN },
          id: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$' },
          envelopeSha256: { type: 'string', pattern: '^[0-9a-f]{64}$' },
        },
      },
    },
    nonce: { type: 'string', minLength: 22, maxLength: 128, pattern: '^[A-Za-z0-9_-]+$' },
    iat: { type: 'integer', minimum: 0 },
    exp: { type: 'integer', minimum: 0 },
  },
} as const;
const validate = compileSchema<HostDeploymentPayload>(schema as unknown as Record<string, unknown>);

/** Strictly parses a host deployment payload (after its envelope verified); checks what the schema cannot. */
export function parseHostDeploymentPayload(bytes: Uint8Array): HostDeploymentPayload {
  const value = parseStrictJson(bytes, { maxBytes: 1024 * 1024, maxDepth: 16 });
  assertSchema(validate, value, 'host deployment payload');
  const d = value as HostDeploymentPayload;
  const nonce = fromB64url(d.nonce);
  if (!nonce || nonce.length < 16) throw new WritError('SCHEMA_INVALID', 'host deployment payload /nonce must be base64url of at least 16 bytes (128 bits)');
  if (d.exp <= d.iat || d.exp - d.iat > MAX_JOB_LIFETIME_S) {
    throw new WritError('ENVELOPE_LIFETIME_INVALID', `exp must be after iat and at most ${MAX_JOB_LIFETIME_S} s later (iat=${d.iat}, exp=${d.exp})`);
  }
  if (d.jobs.length !== d.nodes.length || d.jobs.some((j, i) => j.node !== d.nodes[i])) {
    throw new WritError('DEPLOYMENT_INVALID', 'host deployment payload /jobs must name one job per node, in the order of /nodes');
  }
  if (new Set(d.jobs.map((j) => j.id)).size !== d.jobs.length) throw new WritError('DEPLOYMENT_INVALID', 'host deployment payload /jobs names a job id twice');
  return d;
}

export function encodeHostDeploymentPayload(d: HostDeploymentPayload): Uint8Array {
  return utf8.encode(JSON.stringify(d));
}

/**
 * The script every switch job runs: copy the system in when a substituter is given (signature-checked, pinned
 * paths only), then the nix SAL's health-gated switch. A failed health check re-activates the previous system
 * and fails the job with NIX_ACTIVATION_FAILED; a store path other than the pinned one fails NIX_PATH_NOT_PINNED.
 */
export const HOST_SWITCH_SCRIPT = `// writ host deployment: health-gated switch of this node's system (issue 12).
export default async function (args, ctx) {
  const nix = ctx.sal.nix;
  if (!nix || !nix.switch) throw new Error('this node offers no nix.switch: configure the nix SAL on its runner');
  if (args.from) await nix['copy-in']({ paths: [args.system], from: args.from });
  const switched = await nix.switch({ profile: args.profile, path: args.system, healthCheck: args.healthCheck });
  ctx.log.info('switched ' + args.node + ' to ' + args.system + (switched.changed ? '' : ' (already there)'));
  return { node: args.node, deployment: args.deployment, ...switched };
}
`;

/** What a switch job's args hold. */
export interface HostSwitchArgs {
  deployment: string;
  node: string;
  system: string;
  profile: string;
  healthCheck: HostHealthCheck;
  from?: string;
  [k: string]: unknown;
}

/** The job id of a deployment's switch job on one node. */
export function hostSwitchJobId(deployment: string, node: string): string {
  return `${deployment}.${node}`;
}

/** `{node}` in a health-check argument becomes the node id, so one check can look at the node it runs on. */
export function healthCheckFor(check: HostHealthCheck, node: string): HostHealthCheck {
  return { argv: check.argv.map((a) => a.split('{node}').join(node)), timeoutMs: check.timeoutMs };
}

export interface NewHostDeploymentInput {
  id: string;
  aud: string;
  system: string;
  source?: string;
  profile?: string;
  selector: Record<string, string>;
  nodes: string[];
  batchSize?: number;
  maxUnavailable?: number;
  drain?: boolean;
  healthCheck: { argv: string[]; timeoutMs?: number };
  timeoutS?: number;
  /** A configured substituter the nodes copy the system from (none: it must be in their store already). */
  from?: string;
  ttlS?: number;
  nowS?: number;
}

/** Builds the switch job input for one node (to be signed like any job: buildJobPayload, signEnvelope). */
export function hostSwitchJob(
  d: Pick<HostDeploymentPayload, 'id' | 'aud' | 'system' | 'profile' | 'healthCheck' | 'timeoutS' | 'iat' | 'exp'>,
  node: string,
  from?: string,
): NewJobInput {
  const args: HostSwitchArgs = {
    deployment: d.id,
    node,
    system: d.system,
    profile: d.profile,
    healthCheck: healthCheckFor(d.healthCheck, node),
    ...(from ? { from } : {}),
  };
  return {
    id: hostSwitchJobId(d.id, node),
    source: HOST_SWITCH_SCRIPT,
    args: args as never,
    target: { node },
    caps: from ? ['nix.copy-in', 'nix.switch'] : ['nix.switch'],
    limits: { timeoutMs: Math.min(d.timeoutS * 1000, 3_600_000), memoryMiB: 64 },
    aud: d.aud,
    nowS: d.iat,
    ttlS: d.exp - d.iat,
    pins: { nix: [d.system] },
  };
}

/** The deployment payload without its job bindings (added once the jobs are signed). */
export function buildHostDeploymentPayload(input: NewHostDeploymentInput): Omit<HostDeploymentPayload, 'jobs'> {
  const iat = input.nowS ?? Math.floor(Date.now() / 1000);
  return {
    id: input.id,
    aud: input.aud,
    system: input.system,
    ...(input.source ? { source: input.source } : {}),
    profile: input.profile ?? 'system',
    selector: input.selector,
    nodes: input.nodes,
    batchSize: input.batchSize ?? 1,
    maxUnavailable: input.maxUnavailable ?? 1,
    drain: input.drain ?? false,
    healthCheck: { argv: input.healthCheck.argv, timeoutMs: input.healthCheck.timeoutMs ?? 30_000 },
    timeoutS: input.timeoutS ?? 600,
    nonce: b64url(randomBytes(16)),
    iat,
    exp: iat + (input.ttlS ?? 24 * 3600),
  };
}

/** Checks that a signed switch job is exactly the one the deployment describes for `node`. */
export function checkHostSwitchJob(d: HostDeploymentPayload, node: string, job: JobPayload, envelopeSha256: string): void {
  const bound = d.jobs.find((j) => j.node === node);
  const bad = (why: string) => new WritError('DEPLOYMENT_INVALID', `the switch job for node ${node} ${why}`, { node, job: job.id });
  if (!bound) throw bad('is not part of the deployment');
  if (bound.envelopeSha256 !== envelopeSha256) throw bad('is not the envelope the deployment binds (sha256 differs)');
  if (job.id !== bound.id || job.id !== hostSwitchJobId(d.id, node)) throw bad(`has id ${job.id}, not ${hostSwitchJobId(d.id, node)}`);
  if (!('node' in job.target) || job.target.node !== node) throw bad('targets another node');
  if (job.script.sha256 !== sha256Hex(HOST_SWITCH_SCRIPT)) throw bad('does not run the host switch script');
  const pins = job.pins?.nix ?? [];
  if (pins.length !== 1 || pins[0] !== d.system) throw bad(`must pin exactly ${d.system}`);
  const a = job.args as Partial<HostSwitchArgs> | null;
  const want = healthCheckFor(d.healthCheck, node);
  if (
    !a ||
    a.system !== d.system ||
    a.profile !== d.profile ||
    a.node !== node ||
    a.deployment !== d.id ||
    JSON.stringify(a.healthCheck) !== JSON.stringify(want)
  ) {
    throw bad("does not carry the deployment's system, profile and health check");
  }
  if (job.aud !== d.aud) throw bad('is for another cluster');
}

// ---- the API's views ----

export const DEPLOYMENT_STATES = ['running', 'paused', 'succeeded', 'failed', 'aborted'] as const;
export type DeploymentState = (typeof DEPLOYMENT_STATES)[number];
export const DEPLOYMENT_NODE_STATES = ['pending', 'draining', 'switching', 'switched', 'failed', 'skipped'] as const;
export type DeploymentNodeState = (typeof DEPLOYMENT_NODE_STATES)[number];

export interface DeploymentNodeView {
  node: string;
  batch: number;
  state: DeploymentNodeState;
  job: string;
  error: { code: string; message: string } | null;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface DeploymentStepView {
  seq: number;
  at: string;
  kind: string;
  node: string | null;
  data: Record<string, unknown>;
}

export interface DeploymentView {
  id: string;
  state: DeploymentState;
  reason: string | null;
  system: string;
  source: string | null;
  profile: string;
  selector: Record<string, string>;
  batchSize: number;
  maxUnavailable: number;
  drain: boolean;
  timeoutS: number;
  batch: number;
  batches: number;
  signers: string[];
  counts: Record<DeploymentNodeState, number>;
  nodes: DeploymentNodeView[];
  steps?: DeploymentStepView[];
  createdAt: string;
  updatedAt: string;
  finishedAt: string | null;
}
