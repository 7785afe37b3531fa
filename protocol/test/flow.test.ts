// The flow format, its graph checks, and step bundles: what every tier derives from a signed flow, and each
// way the evidence for a step's inputs can be wrong (forged, altered, for another flow, step or node).
import { describe, expect, it } from 'vitest';
import {
  KeyRing,
  PAYLOAD_TYPES,
  b64url,
  encodeEnvelope,
  encodeFlowPayload,
  encodeStepBundle,
  generateKeyPair,
  openJobText,
  openStepBundle,
  parseFlowPayload,
  sha256Hex,
  signEnvelope,
  signStepResult,
  stepBackoffMs,
  stepScript,
  trustKey,
  type FlowPayload,
  type FlowStep,
  type KeyPair,
  type StepEvidence,
} from '../src/index.ts';

const admin = generateKeyPair();
const nodeA = generateKeyPair();
const nodeB = generateKeyPair();
const ring = new KeyRing([trustKey(admin.publicKey)]);

function step(name: string, more: Partial<FlowStep> = {}): FlowStep {
  return {
    name,
    script: stepScript(`export default async () => "${name}"`),
    target: { node: 'a' },
    caps: [],
    limits: { timeoutMs: 1000, memoryMiB: 64 },
    depends: [],
    ...more,
  };
}
function flowOf(steps: FlowStep[], id = 'f1'): FlowPayload {
  return { id, steps, aud: 'c1', nonce: b64url(new Uint8Array(16).fill(7)), iat: 1000, exp: 2000 };
}
function sign(flow: FlowPayload, keys: KeyPair[] = [admin]): string {
  return encodeEnvelope(signEnvelope(PAYLOAD_TYPES.flow, encodeFlowPayload(flow), keys));
}
const flowSha = (flow: FlowPayload) => sha256Hex(encodeFlowPayload(flow));

const graph = flowOf([
  step('disk', { target: { node: 'a' } }),
  step('bridge', { target: { selector: { role: 'hv' } }, each: true, depends: ['disk'] }),
  step('vm', {
    depends: ['disk', 'bridge'],
    inputs: { dev: { from: 'disk', path: 'device' }, bridges: { from: 'bridge' } },
    retries: { max: 2, backoffMs: 250 },
  }),
]);
const signedGraph = sign(graph);

function result(flow: FlowPayload, stepName: string, node: string, key: KeyPair, value: unknown, jobId?: string): StepEvidence {
  const each = flow.steps.find((s) => s.name === stepName)!.each;
  const id = jobId ?? (each ? `${flow.id}.${stepName}.${node}` : `${flow.id}.${stepName}`);
  return {
    step: stepName,
    node,
    publicKey: b64url(key.publicKey),
    result: signStepResult({ flow: flow.id, flowSha256: flowSha(flow), step: stepName, node, jobId: id, attempt: 1, value: value as never }, key),
  };
}
const good = (): StepEvidence[] => [
  result(graph, 'disk', 'a', nodeA, { device: '/dev/vdb' }),
  result(graph, 'bridge', 'a', nodeA, 'br-a'),
  result(graph, 'bridge', 'b', nodeB, 'br-b'),
];
const bundle = (evidence: StepEvidence[], over: Partial<{ flow: string; step: string; node: string }> = {}) =>
  encodeStepBundle({ flow: signedGraph, step: 'vm', node: 'a', evidence, ...over });

describe('flow payloads', () => {
  it('accepts a valid graph and refuses each kind of bad one with FLOW_INVALID naming the step', () => {
    expect(parseFlowPayload(encodeFlowPayload(graph)).steps).toHaveLength(3);
    const bad: [FlowStep[], RegExp][] = [
      [[step('a'), step('a')], /two steps are named "a"/],
      [[step('a', { depends: ['zz'] })], /depends on "zz", which is no step/],
      [[step('a', { depends: ['a'] })], /depends on itself/],
      [[step('a', { depends: ['b'] }), step('b', { depends: ['c'] }), step('c', { depends: ['a'] })], /cycle/],
      [[step('a'), step('b', { inputs: { x: { from: 'a' } } })], /must list in "depends"/],
      [[step('a', { each: true })], /"each" needs a label selector/],
      [[step('a', { maxParallel: 2 })], /apply only to a fan-out step/],
      [[step('a', { args: { inputs: 1 } })], /args.inputs is reserved/],
    ];
    for (const [steps, want] of bad) {
      let err: unknown;
      try {
        parseFlowPayload(encodeFlowPayload(flowOf(steps)));
      } catch (e) {
        err = e;
      }
      expect(err, String(want)).toMatchObject({ code: 'FLOW_INVALID' });
      expect((err as Error).message).toMatch(want);
    }
  });

  it('refuses a script whose hash does not match and an unknown capability', () => {
    const s = step('a');
    expect(() => parseFlowPayload(encodeFlowPayload(flowOf([{ ...s, script: { ...s.script, source: s.script.source + ' ' } }])))).toThrow(
      expect.objectContaining({ code: 'SCRIPT_HASH_MISMATCH' }),
    );
    expect(() => parseFlowPayload(encodeFlowPayload(flowOf([{ ...s, caps: ['nope.nope'] }])))).toThrow(expect.objectContaining({ code: 'CAPABILITY_UNKNOWN' }));
  });
});

describe('step bundles', () => {
  it('derive the job from the signed step, with inputs from verified results (a fan-out producer by node)', () => {
    const opened = openStepBundle(bundle(good()), { keys: ring });
    expect(opened.job.id).toBe('f1.vm');
    expect(opened.job.script).toEqual(graph.steps[2]!.script);
    expect(opened.job.args).toEqual({ inputs: { dev: '/dev/vdb', bridges: { a: 'br-a', b: 'br-b' } } });
    expect(opened.job.exp).toBe(2000);
    expect(opened.signers.map((s) => s.keyid)).toEqual([admin.keyid]);
    // openJobText tells bundles from job envelopes.
    expect(openJobText(bundle(good()), { keys: ring }).step?.step.name).toBe('vm');
    expect(stepBackoffMs(bundle(good()))).toBe(250);
  });

  it('refuse a flow signed by a key outside the key set', () => {
    const raw = encodeStepBundle({ flow: sign(graph, [generateKeyPair()]), step: 'vm', node: 'a', evidence: good() });
    expect(() => openStepBundle(raw, { keys: ring })).toThrow(expect.objectContaining({ code: 'UNKNOWN_KEY' }));
  });

  it('refuse a step that is not in the flow, or a node-targeted step given to another node', () => {
    expect(() => openStepBundle(bundle(good(), { step: 'nope' }), { keys: ring })).toThrow(expect.objectContaining({ code: 'FLOW_INVALID' }));
    expect(() => openStepBundle(bundle(good(), { node: 'b' }), { keys: ring })).toThrow(expect.objectContaining({ code: 'TARGET_MISMATCH' }));
  });

  it('refuse every kind of bad evidence with STEP_INPUT_INVALID', () => {
    const [disk, ba, bb] = good();
    const altered = (() => {
      const env = JSON.parse(disk!.result);
      const payload = JSON.parse(Buffer.from(env.payload, 'base64').toString('utf8'));
      payload.value = { device: '/dev/sda' };
      env.payload = Buffer.from(JSON.stringify(payload)).toString('base64');
      return { ...disk!, result: JSON.stringify(env) };
    })();
    const other = flowOf(graph.steps, 'f2');
    const cases: [string, StepEvidence[]][] = [
      ['a value altered after signing', [altered, ba!, bb!]],
      ['signed by another key than the one given', [{ ...disk!, publicKey: b64url(nodeB.publicKey) }, ba!, bb!]],
      ['a result of another flow', [result(other, 'disk', 'a', nodeA, { device: '/dev/vdb' }), ba!, bb!]],
      ['a result of another step passed off as the disk', [{ ...result(graph, 'bridge', 'a', nodeA, { device: 'x' }), step: 'disk' }, ba!, bb!]],
      ["a node-targeted step's result from another node", [result(graph, 'disk', 'b', nodeB, { device: '/dev/vdb' }), ba!, bb!]],
      ['a result claiming another node than its signer', [{ ...disk!, node: 'b' }, ba!, bb!]],
      ['a result with another job id', [result(graph, 'disk', 'a', nodeA, { device: '/dev/vdb' }, 'f1.other'), ba!, bb!]],
      ['a missing input', [ba!, bb!]],
      ['the same node twice', [disk!, ba!, ba!]],
      ['a result no input asks for', [disk!, ba!, bb!, result(graph, 'vm', 'a', nodeA, 1)]],
      ['a path the result lacks', [result(graph, 'disk', 'a', nodeA, { dev: '/dev/vdb' }), ba!, bb!]],
    ];
    for (const [what, evidence] of cases) {
      expect(() => openStepBundle(bundle(evidence), { keys: ring }), what).toThrow(expect.objectContaining({ code: 'STEP_INPUT_INVALID' }));
    }
  });
});
