// Flow payload v1: a signed graph of steps. The whole document is signed once; each step runs as a job
// derived from it on the node the coord assigns, carried as a "step bundle" (the flow envelope, the step's
// name and node, and the signed results of the steps whose outputs it takes as inputs). Every tier derives
// the step's job from the signed flow itself, so nothing between the signer and the node can change what
// runs; and a step's inputs are accepted only inside a result signed by the node that produced them, so
// the coord, a supervisor or Redis cannot forge them (docs/flows.md).
import { CAPABILITIES } from './capabilities/index.ts';
import { verifyEnvelope, encodeEnvelope, signEnvelope, type Envelope } from './dsse.ts';
import { fromB64url, sha256Hex, utf8 } from './encoding.ts';
import { WritError } from './errors.ts';
import { JOB_ID_PATTERN, MAX_JOB_LIFETIME_S, NODE_ID_PATTERN, jobSchema, parseJobPayload, type JobPayload, type JobTarget } from './job.ts';
import { KeyRing, trustKeyB64url, type KeyPair, type TrustedKey } from './keys.ts';
import { PAYLOAD_TYPES } from './payload-types.ts';
import { assertSchema, compileSchema } from './schema.ts';
import { parseStrictJson, type JsonValue } from './strict-json.ts';

export const FLOW_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$';
export const STEP_NAME_PATTERN = '^[a-z0-9][a-z0-9-]{0,22}$';
export const MAX_FLOW_STEPS = 256;
/** A flow envelope may be larger than a job's: it carries every step's script. */
export const MAX_FLOW_ENVELOPE_BYTES = 4 * 1024 * 1024;
/** A step bundle carries the flow envelope and the signed results its inputs come from. */
const MAX_STEP_BUNDLE_BYTES = 8 * 1024 * 1024;
const MAX_SCRIPT_BYTES = 256 * 1024;

/** Where a step input comes from: an earlier step's result, or one field of it (a dotted path). */
export interface FlowInputRef {
  from: string;
  path?: string;
}

export interface FlowStep {
  name: string;
  script: { source: string; sha256: string };
  /** The script's `args` (an object); the resolved inputs are added under `args.inputs`. */
  args?: { [k: string]: JsonValue };
  target: JobTarget;
  /** With a selector target: run once on every matching node (fan-out) instead of on one. */
  each?: boolean;
  /** Fan-out: at most this many nodes run the step at once (default: all). */
  maxParallel?: number;
  /** Fan-out: the step still succeeds when at most this many nodes failed it (default 0). */
  maxFailures?: number;
  caps: string[];
  /** `timeoutMs` is the step's timeout: one run of its script is stopped past it. */
  limits: { timeoutMs: number; memoryMiB: number };
  depends: string[];
  /** Runs after the first that failed with a retryable error, each after `backoffMs` × 2^(retry − 1). */
  retries?: { max: number; backoffMs: number };
  inputs?: Record<string, FlowInputRef>;
  pins?: { nix?: string[] };
}

export interface FlowPayload {
  id: string;
  steps: FlowStep[];
  aud: string;
  nonce: string;
  iat: number;
  exp: number;
}

const jp = jobSchema.properties;
const stepSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'script', 'target', 'caps', 'limits', 'depends'],
  properties: {
    name: { type: 'string', pattern: STEP_NAME_PATTERN },
    script: jp.script,
    args: { type: 'object' },
    target: jp.target,
    each: { type: 'boolean' },
    maxParallel: { type: 'integer', minimum: 1, maximum: 10_000 },
    maxFailures: { type: 'integer', minimum: 0, maximum: 10_000 },
    caps: jp.caps,
    limits: jp.limits,
    depends: { type: 'array', maxItems: MAX_FLOW_STEPS, uniqueItems: true, items: { type: 'string', pattern: STEP_NAME_PATTERN } },
    retries: {
      type: 'object',
      additionalProperties: false,
      required: ['max', 'backoffMs'],
      properties: { max: { type: 'integer', minimum: 0, maximum: 20 }, backoffMs: { type: 'integer', minimum: 0, maximum: 3_600_000 } },
    },
    inputs: {
      type: 'object',
      maxProperties: 64,
      propertyNames: { pattern: '^[A-Za-z_][A-Za-z0-9_]{0,62}$' },
      additionalProperties: {
        type: 'object',
        additionalProperties: false,
        required: ['from'],
        properties: {
          from: { type: 'string', pattern: STEP_NAME_PATTERN },
          path: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,63}(\\.[A-Za-z0-9_-]{1,63}){0,15}$' },
        },
      },
    },
    pins: jp.pins,
  },
} as const;

const flowSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'steps', 'aud', 'nonce', 'iat', 'exp'],
  properties: {
    id: { type: 'string', pattern: FLOW_ID_PATTERN },
    steps: { type: 'array', minItems: 1, maxItems: MAX_FLOW_STEPS, items: stepSchema },
    aud: jp.aud,
    nonce: jp.nonce,
    iat: jp.iat,
    exp: jp.exp,
  },
} as const;
const validateFlow = compileSchema<FlowPayload>(flowSchema as unknown as Record<string, unknown>);

/** Strictly parses and validates flow payload bytes: schema, scripts, capabilities, and the graph. */
export function parseFlowPayload(bytes: Uint8Array): FlowPayload {
  const value = parseStrictJson(bytes, { maxBytes: MAX_FLOW_ENVELOPE_BYTES, maxDepth: 64 });
  assertSchema(validateFlow, value, 'flow payload');
  const flow = value as FlowPayload;
  const nonce = fromB64url(flow.nonce);
  if (!nonce || nonce.length < 16) throw new WritError('SCHEMA_INVALID', 'flow payload /nonce must be base64url of at least 16 bytes (128 bits)');
  if (flow.exp <= flow.iat || flow.exp - flow.iat > MAX_JOB_LIFETIME_S) {
    throw new WritError('ENVELOPE_LIFETIME_INVALID', `exp must be after iat and at most ${MAX_JOB_LIFETIME_S} s later (iat=${flow.iat}, exp=${flow.exp})`);
  }
  const byName = new Map<string, FlowStep>();
  for (const s of flow.steps) {
    if (byName.has(s.name)) throw new WritError('FLOW_INVALID', `two steps are named ${JSON.stringify(s.name)}`, { step: s.name });
    byName.set(s.name, s);
    const bytesOf = Buffer.byteLength(s.script.source, 'utf8');
    if (bytesOf > MAX_SCRIPT_BYTES)
      throw new WritError('SCRIPT_TOO_LARGE', `step ${s.name}: script is ${bytesOf} bytes, over the ${MAX_SCRIPT_BYTES}-byte limit`, {
        limit: MAX_SCRIPT_BYTES,
        size: bytesOf,
      });
    const actual = sha256Hex(s.script.source);
    if (actual !== s.script.sha256)
      throw new WritError('SCRIPT_HASH_MISMATCH', `step ${s.name}: script.sha256 is ${s.script.sha256} but the source hashes to ${actual}`, { step: s.name });
    for (const c of s.caps)
      if (!CAPABILITIES.has(c)) throw new WritError('CAPABILITY_UNKNOWN', `step ${s.name} requests unknown capability ${JSON.stringify(c)}`, { capability: c });
    if (s.each && 'node' in s.target) throw new WritError('FLOW_INVALID', `step ${s.name}: "each" needs a label selector target, not a node`, { step: s.name });
    if (!s.each && (s.maxParallel !== undefined || s.maxFailures !== undefined))
      throw new WritError('FLOW_INVALID', `step ${s.name}: maxParallel and maxFailures apply only to a fan-out step ("each": true)`, { step: s.name });
    if (s.args && 'inputs' in s.args)
      throw new WritError('FLOW_INVALID', `step ${s.name}: args.inputs is reserved for the step's resolved inputs`, { step: s.name });
  }
  for (const s of flow.steps) {
    for (const d of s.depends) {
      if (d === s.name) throw new WritError('FLOW_INVALID', `step ${s.name} depends on itself`, { step: s.name });
      if (!byName.has(d))
        throw new WritError('FLOW_INVALID', `step ${s.name} depends on ${JSON.stringify(d)}, which is no step of this flow`, { step: s.name });
    }
    for (const [k, ref] of Object.entries(s.inputs ?? {})) {
      if (!s.depends.includes(ref.from))
        throw new WritError('FLOW_INVALID', `step ${s.name}: input ${k} comes from ${JSON.stringify(ref.from)}, which the step must list in "depends"`, {
          step: s.name,
        });
    }
  }
  topoOrder(flow);
  return flow;
}

/** Steps in an order where each comes after its dependencies; throws FLOW_INVALID on a cycle. */
export function topoOrder(flow: Pick<FlowPayload, 'steps'>): string[] {
  const indeg = new Map(flow.steps.map((s) => [s.name, s.depends.length]));
  const dependants = new Map<string, string[]>();
  for (const s of flow.steps) for (const d of s.depends) dependants.set(d, [...(dependants.get(d) ?? []), s.name]);
  const ready = flow.steps.filter((s) => s.depends.length === 0).map((s) => s.name);
  const out: string[] = [];
  while (ready.length > 0) {
    const n = ready.shift()!;
    out.push(n);
    for (const m of dependants.get(n) ?? []) {
      const left = indeg.get(m)! - 1;
      indeg.set(m, left);
      if (left === 0) ready.push(m);
    }
  }
  if (out.length !== flow.steps.length) {
    const stuck = flow.steps.filter((s) => !out.includes(s.name)).map((s) => s.name);
    throw new WritError('FLOW_INVALID', `the steps ${stuck.join(', ')} depend on each other in a cycle`, { steps: stuck });
  }
  return out;
}

export function encodeFlowPayload(flow: FlowPayload): Uint8Array {
  return utf8.encode(JSON.stringify(flow));
}

/** The job id a step instance runs under: `<flow>.<step>`, and `.<node>` for each node of a fan-out step. */
export function stepJobId(flowId: string, step: string, node: string | null): string {
  return node === null ? `${flowId}.${step}` : `${flowId}.${step}.${node}`;
}

/** Signed result of a step instance, by the node that ran it. */
export interface StepResult {
  flow: string;
  /** sha256 (hex) of the flow payload bytes: binds the result to this exact signed flow. */
  flowSha256: string;
  step: string;
  node: string;
  jobId: string;
  attempt: number;
  value: JsonValue;
}

const stepResultSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['flow', 'flowSha256', 'step', 'node', 'jobId', 'attempt', 'value'],
  properties: {
    flow: { type: 'string', pattern: FLOW_ID_PATTERN },
    flowSha256: { type: 'string', pattern: '^[0-9a-f]{64}$' },
    step: { type: 'string', pattern: STEP_NAME_PATTERN },
    node: { type: 'string', pattern: NODE_ID_PATTERN },
    jobId: { type: 'string', pattern: JOB_ID_PATTERN },
    attempt: { type: 'integer', minimum: 1, maximum: 1_000_000 },
    value: {},
  },
} as const;
const validateStepResult = compileSchema<StepResult>(stepResultSchema as unknown as Record<string, unknown>);

export function signStepResult(r: StepResult, nodeKey: KeyPair): string {
  return encodeEnvelope(signEnvelope(PAYLOAD_TYPES.stepResult, utf8.encode(JSON.stringify(r)), [nodeKey]));
}

/** One signed result a step bundle carries for a step input, with the public key of the node that signed it. */
export interface StepEvidence {
  step: string;
  node: string;
  /** base64url ed25519 public key of `node` (as registered at the coord). */
  publicKey: string;
  /** DSSE envelope (JSON text) of a StepResult. */
  result: string;
}

/** What the queue carries for a flow step instead of a job envelope. */
export interface StepBundle {
  flowStep: {
    /** The flow's DSSE envelope (JSON text), exactly as signed. */
    flow: string;
    step: string;
    node: string;
    evidence: StepEvidence[];
  };
}

const bundleSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['flowStep'],
  properties: {
    flowStep: {
      type: 'object',
      additionalProperties: false,
      required: ['flow', 'step', 'node', 'evidence'],
      properties: {
        // No maxLength on the two envelope strings: each is verified with its byte limit (MAX_FLOW_ENVELOPE_BYTES,
        // 1 MiB for a result), and the whole bundle is bounded by MAX_STEP_BUNDLE_BYTES before this schema runs.
        // The schema's maxLength counted code points one by one over the tens of KB of every step's flow.
        flow: { type: 'string' },
        step: { type: 'string', pattern: STEP_NAME_PATTERN },
        node: { type: 'string', pattern: NODE_ID_PATTERN },
        evidence: {
          type: 'array',
          maxItems: 10_000,
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['step', 'node', 'publicKey', 'result'],
            properties: {
              step: { type: 'string', pattern: STEP_NAME_PATTERN },
              node: { type: 'string', pattern: NODE_ID_PATTERN },
              publicKey: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$' },
              result: { type: 'string' },
            },
          },
        },
      },
    },
  },
} as const;
const validateBundle = compileSchema<StepBundle>(bundleSchema as unknown as Record<string, unknown>);

export function encodeStepBundle(b: StepBundle['flowStep']): string {
  return JSON.stringify({ flowStep: b });
}

/** Whether a queued envelope text is a step bundle rather than a job's DSSE envelope (a cheap look, not a check). */
export function isStepBundle(raw: string | Uint8Array): boolean {
  const head = (typeof raw === 'string' ? raw.slice(0, 16) : Buffer.from(raw.subarray(0, 16)).toString('utf8')).replace(/\s/g, '');
  return head.startsWith('{"flowStep"');
}

/** A step of a signed flow, opened and checked: the job it runs as, and where it came from. */
export interface OpenedStep {
  flow: FlowPayload;
  /** sha256 (hex) of the flow payload bytes. */
  flowSha256: string;
  step: FlowStep;
  /** The node the bundle assigns the step to (each tier checks it is the node at hand). */
  node: string;
  /** The flow's verified signers. */
  signers: TrustedKey[];
  /** The job derived from the signed step, its inputs resolved from verified results. */
  job: JobPayload;
  /** The flow's envelope as signed. */
  flowEnvelope: Envelope;
}

export interface OpenStepOptions {
  /** Keys that may sign flows (the key set in force). */
  keys: KeyRing;
}

/**
 * Opens a step bundle: verifies the flow envelope against the key set, finds the step, verifies every
 * result its inputs come from (signed by the producing node, for this exact flow and that step), and
 * derives the job the step runs as. Throws SIGNATURE_INVALID/UNKNOWN_KEY, FLOW_INVALID, STEP_INPUT_INVALID.
 */
export function openStepBundle(raw: string | Uint8Array, opts: OpenStepOptions): OpenedStep {
  const doc = parseStrictJson(raw, { maxBytes: MAX_STEP_BUNDLE_BYTES, maxDepth: 8 });
  assertSchema(validateBundle, doc, 'step bundle');
  const b = (doc as StepBundle).flowStep;
  const { flow, flowSha256, signers, envelope } = openFlowEnvelope(b.flow, opts.keys);
  const step = flow.steps.find((s) => s.name === b.step);
  if (!step) throw new WritError('FLOW_INVALID', `flow ${flow.id} has no step ${JSON.stringify(b.step)}`, { flow: flow.id, step: b.step });
  if ('node' in step.target && step.target.node !== b.node) {
    throw new WritError('TARGET_MISMATCH', `step ${step.name} of flow ${flow.id} targets node ${step.target.node}, not ${b.node}`);
  }
  const inputs = resolveInputs(flow, flowSha256, step, b.evidence);
  const jobId = stepJobId(flow.id, step.name, step.each ? b.node : null);
  const job: JobPayload = {
    id: jobId,
    script: step.script,
    args: { ...(step.args ?? {}), inputs },
    target: step.target,
    caps: step.caps,
    limits: step.limits,
    aud: flow.aud,
    nonce: flow.nonce,
    iat: flow.iat,
    exp: flow.exp,
    ...(step.pins ? { pins: step.pins } : {}),
  };
  return { flow, flowSha256, step, node: b.node, signers, job, flowEnvelope: envelope };
}

interface OpenedFlowEnvelope {
  flow: FlowPayload;
  flowSha256: string;
  signers: TrustedKey[];
  envelope: Envelope;
}

/**
 * Every step of a flow carries the same signed flow: it is verified and parsed once per key set (the ring)
 * and envelope text, then reused. A new key set is a new ring, so nothing verified under an older one is.
 */
const openedFlows = new WeakMap<KeyRing, Map<string, OpenedFlowEnvelope>>();
const MAX_CACHED_FLOWS = 64;

function openFlowEnvelope(raw: string, keys: KeyRing): OpenedFlowEnvelope {
  const key = sha256Hex(raw);
  let cache = openedFlows.get(keys);
  const hit = cache?.get(key);
  if (hit) return hit;
  const v = verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.flow, keys, maxBytes: MAX_FLOW_ENVELOPE_BYTES });
  const opened = { flow: parseFlowPayload(v.payload), flowSha256: sha256Hex(v.payload), signers: v.signers, envelope: v.envelope };
  if (!cache) openedFlows.set(keys, (cache = new Map()));
  if (cache.size >= MAX_CACHED_FLOWS) cache.delete(cache.keys().next().value!);
  cache.set(key, opened);
  return opened;
}

function resolveInputs(flow: FlowPayload, flowSha256: string, step: FlowStep, evidence: readonly StepEvidence[]): { [k: string]: JsonValue } {
  const refs = step.inputs ?? {};
  const needed = new Set(Object.values(refs).map((r) => r.from));
  // Verify each piece of evidence once; results for steps no input names are refused (nothing unasked rides along).
  const byStep = new Map<string, Map<string, JsonValue>>();
  for (const ev of evidence) {
    if (!needed.has(ev.step))
      throw new WritError('STEP_INPUT_INVALID', `step ${step.name} takes no input from step ${ev.step}, but a result of it was attached`);
    const producer = flow.steps.find((s) => s.name === ev.step)!;
    let key: TrustedKey;
    try {
      key = trustKeyB64url(ev.publicKey);
    } catch {
      throw new WritError('STEP_INPUT_INVALID', `the key given for node ${ev.node} is not an ed25519 public key`);
    }
    let r: StepResult;
    try {
      const vr = verifyEnvelope(ev.result, { payloadType: PAYLOAD_TYPES.stepResult, keys: new KeyRing([key]), maxBytes: 1024 * 1024 });
      const value = parseStrictJson(vr.payload, { maxBytes: 1024 * 1024, maxDepth: 64 });
      assertSchema(validateStepResult, value, 'step result');
      r = value as StepResult;
    } catch (e) {
      throw new WritError('STEP_INPUT_INVALID', `the result of step ${ev.step} from node ${ev.node} does not verify: ${(e as Error).message}`);
    }
    const expectJob = stepJobId(flow.id, ev.step, producer.each ? ev.node : null);
    if (r.flow !== flow.id || r.flowSha256 !== flowSha256 || r.step !== ev.step || r.node !== ev.node || r.jobId !== expectJob) {
      throw new WritError(
        'STEP_INPUT_INVALID',
        `the signed result attached for step ${ev.step} on node ${ev.node} is for ${r.flow}/${r.step} on ${r.node} (job ${r.jobId})`,
      );
    }
    if ('node' in producer.target && producer.target.node !== ev.node) {
      throw new WritError('STEP_INPUT_INVALID', `step ${ev.step} runs on node ${producer.target.node}, but its result was signed by node ${ev.node}`);
    }
    const perNode = byStep.get(ev.step) ?? new Map<string, JsonValue>();
    if (perNode.has(ev.node)) throw new WritError('STEP_INPUT_INVALID', `two results of step ${ev.step} from node ${ev.node} were attached`);
    perNode.set(ev.node, r.value);
    byStep.set(ev.step, perNode);
  }
  const out: { [k: string]: JsonValue } = {};
  for (const [name, ref] of Object.entries(refs)) {
    const producer = flow.steps.find((s) => s.name === ref.from)!;
    const results = byStep.get(ref.from);
    if (!results || results.size === 0)
      throw new WritError('STEP_INPUT_INVALID', `input ${name} of step ${step.name}: no signed result of step ${ref.from} was attached`);
    if (!producer.each && results.size !== 1)
      throw new WritError('STEP_INPUT_INVALID', `input ${name}: step ${ref.from} runs once, but ${results.size} results were attached`);
    const pick = (value: JsonValue, node: string): JsonValue => {
      if (!ref.path) return value;
      let cur: JsonValue = value;
      for (const part of ref.path.split('.')) {
        if (cur === null || typeof cur !== 'object' || !Object.prototype.hasOwnProperty.call(cur, part)) {
          throw new WritError('STEP_INPUT_INVALID', `input ${name}: the result of step ${ref.from} on node ${node} has no ${ref.path}`);
        }
        cur = (cur as { [k: string]: JsonValue })[part] as JsonValue;
      }
      return cur;
    };
    if (producer.each) {
      // A fan-out step's output is an object by node, so a consumer can tell which node produced what.
      const byNode: { [k: string]: JsonValue } = {};
      for (const n of [...results.keys()].sort()) byNode[n] = pick(results.get(n)!, n);
      out[name] = byNode;
    } else {
      const [n, value] = [...results.entries()][0]!;
      out[name] = pick(value, n);
    }
  }
  return out;
}

/**
 * The retry backoff a step bundle's step asks for, read without verifying anything (it only sets a delay;
 * every tier verifies the bundle before acting on it). Undefined when it cannot be read.
 */
export function stepBackoffMs(raw: string): number | undefined {
  try {
    const b = (JSON.parse(raw) as StepBundle).flowStep;
    const env = JSON.parse(b.flow) as { payload: string };
    const flow = JSON.parse(Buffer.from(env.payload, 'base64').toString('utf8')) as FlowPayload;
    const ms = flow.steps.find((s) => s.name === b.step)?.retries?.backoffMs;
    return typeof ms === 'number' && Number.isFinite(ms) && ms >= 0 ? ms : undefined;
  } catch {
    return undefined;
  }
}

/** Flow payload builder for the CLI and tests. */
export function stepScript(source: string): { source: string; sha256: string } {
  return { source, sha256: sha256Hex(source) };
}

/** What a queued job text opens to: a job's envelope, or a flow step's bundle with the job derived from it. */
export interface OpenedJob {
  job: JobPayload;
  signers: TrustedKey[];
  /** Set for a flow step: the node the step was assigned to, and the flow it comes from. */
  step?: OpenedStep;
}

/** Opens what a job row or a queue entry carries: a job envelope, or a flow step bundle (see openStepBundle). */
export function openJobText(raw: string, opts: { keys: KeyRing; maxBytes?: number }): OpenedJob {
  if (isStepBundle(raw)) {
    const step = openStepBundle(raw, { keys: opts.keys });
    return { job: step.job, signers: step.signers, step };
  }
  const v = verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.job, keys: opts.keys, ...(opts.maxBytes ? { maxBytes: opts.maxBytes } : {}) });
  return { job: parseJobPayload(v.payload), signers: v.signers };
}
