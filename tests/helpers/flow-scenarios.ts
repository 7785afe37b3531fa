// The flow scenarios, shared by tests/flows.redis.test.ts (a plain Redis) and tests/flows.cluster.redis.test.ts
// (a three-primary Redis Cluster), so the same checks run on both: a real stack (Redis, PGlite, a supervisor
// and three runners): fan-out over the nodes labelled role=hv, inputs wired from earlier steps' signed
// results, retries with backoff, a failing step that fails its dependants and not its siblings, cancel, and a
// step output altered in the ledger.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  PAYLOAD_TYPES,
  b64url,
  encodeEnvelope,
  encodeFlowPayload,
  generateKeyPair,
  signEnvelope,
  stepScript,
  utf8,
  type FlowPayload,
  type FlowStep,
} from '@writ/protocol';
import { Cluster, Redis } from 'ioredis';
import { newRedisClient, redisKeys } from '@writ/protocol';
import { startTestStack, type TestStack } from './stack.ts';
import { until } from './processes.ts';

/** Waits (on the ledger, not a fixed sleep) until `pred` holds. */
const waitUntil = (what: string, pred: () => Promise<boolean>, timeoutMs: number) => until(what, async () => ((await pred()) ? true : undefined), timeoutMs);

let s: TestStack;
export const FLOW_NODES = ['hv-1', 'hv-2', 'hv-3'];
const NODES = FLOW_NODES;

function step(name: string, source: string, more: Partial<FlowStep> = {}): FlowStep {
  return { name, script: stepScript(source), target: { node: 'hv-1' }, caps: [], limits: { timeoutMs: 20_000, memoryMiB: 64 }, depends: [], ...more };
}

function signFlow(id: string, steps: FlowStep[]): string {
  const nowS = Math.floor(Date.now() / 1000);
  const flow: FlowPayload = { id, steps, aud: s.clusterId, nonce: b64url(crypto.getRandomValues(new Uint8Array(16))), iat: nowS, exp: nowS + 900 };
  return encodeEnvelope(signEnvelope(PAYLOAD_TYPES.flow, encodeFlowPayload(flow), [s.admin]));
}

async function post(route: string, body: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${s.url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}` }, body });
  return { status: res.status, body: await res.json() };
}

async function waitFlow(id: string, statuses = ['succeeded', 'failed', 'cancelled'], timeoutMs = 120_000): Promise<any> {
  let view: any;
  await waitUntil(
    `flow ${id} to reach ${statuses.join('|')}`,
    async () => {
      view = (await s.get(`/v1/flows/${id}`)).body;
      return statuses.includes(view.status);
    },
    timeoutMs,
  );
  return view;
}

const stepOf = (view: any, name: string) => view.stepList.find((x: any) => x.name === name);

/**
 * Defines the flow suite under `title`: one stack per suite (on `redisUrl()` when given, else its own
 * redis-server), three runners labelled role=hv. `stack()` hands the stack to checks a variant adds.
 */
export function flowSuite(title: string, opts: { redisUrl?: () => string } = {}): { stack: () => TestStack } {
  beforeAll(async () => {
    s = await startTestStack({ nodes: NODES.map((id) => ({ id, labels: { role: 'hv' } })), ...(opts.redisUrl ? { redisUrl: opts.redisUrl() } : {}) });
  }, 180_000);
  afterAll(async () => {
    await s?.close();
  });
  describe(title, defineScenarios);
  return { stack: () => s };
}

function defineScenarios(): void {
  it('runs a ten-step flow with fan-out over three nodes and inputs wired from signed results, each step once', async () => {
    const steps: FlowStep[] = [
      step('disk', 'export default async () => ({ device: "/dev/vdb", sizeGiB: 20 })'),
      step('bridge', 'export default async (args, ctx) => ({ bridge: "br0", device: args.inputs.device, job: ctx.job.id })', {
        target: { selector: { role: 'hv' } },
        each: true,
        maxParallel: 2,
        depends: ['disk'],
        inputs: { device: { from: 'disk', path: 'device' } },
      }),
      step('count', 'export default async (args) => Object.keys(args.inputs.bridges).sort()', { depends: ['bridge'], inputs: { bridges: { from: 'bridge' } } }),
      step('vm', 'export default async (args) => ({ vm: "vm-1", disk: args.inputs.disk, bridges: args.inputs.n.length })', {
        target: { node: 'hv-2' },
        depends: ['disk', 'count'],
        inputs: { disk: { from: 'disk', path: 'device' }, n: { from: 'count' } },
      }),
      ...['s5', 's6', 's7', 's8', 's9'].map((n, i) =>
        step(n, `export default async () => ${i}`, { depends: i === 0 ? ['disk'] : [`s${i + 4}`], target: { node: NODES[i % 3]! } }),
      ),
      step('done', 'export default async (args) => args.inputs', { depends: ['vm', 's9'], inputs: { vm: { from: 'vm' }, last: { from: 's9' } } }),
    ];
    expect(steps).toHaveLength(10);
    const r = await post('/v1/flows', signFlow('ten', steps));
    expect(r.status).toBe(202);
    const view = await waitFlow('ten');
    expect(view.status).toBe('succeeded');
    expect(view.stepList.map((x: any) => x.status)).toEqual(Array(10).fill('succeeded'));
    // Fan-out: one job per labelled node, each run once.
    const bridge = stepOf(view, 'bridge');
    expect(bridge.jobs.map((j: any) => j.node).sort()).toEqual(NODES);
    for (const x of view.stepList) for (const j of x.jobs) expect(j.attempts).toBe(1);
    // Inputs came through: the fan-out step saw the disk's device; the consumer saw every node's result.
    const b1 = await s.ledger.getJob('ten.bridge.hv-1');
    expect(b1?.result).toEqual({ bridge: 'br0', device: '/dev/vdb', job: 'ten.bridge.hv-1' });
    expect((await s.ledger.getJob('ten.count'))?.result).toEqual(NODES);
    const done = await s.ledger.getJob('ten.done');
    expect(done?.result).toEqual({ vm: { vm: 'vm-1', disk: '/dev/vdb', bridges: 3 }, last: 4 });
  }, 240_000);

  it('retries a step that fails twice with its backoff, then succeeds', async () => {
    const flaky = step(
      'flaky',
      'export default async (args, ctx) => { if (ctx.job.attempt < 3) throw new Error("not yet: attempt " + ctx.job.attempt); return ctx.job.attempt }',
      {
        retries: { max: 3, backoffMs: 400 },
      },
    );
    const r = await post('/v1/flows', signFlow('retry', [flaky]));
    expect(r.status).toBe(202);
    const view = await waitFlow('retry');
    if (view.status !== 'succeeded') console.log(JSON.stringify(view), JSON.stringify(await s.ledger.listJobEvents('retry.flaky', 0, 100)));
    expect(view.status).toBe('succeeded');
    const job = await s.ledger.getJob('retry.flaky');
    expect(job?.result).toBe(3);
    const attempts = await s.ledger.listAttempts('retry.flaky');
    expect(attempts.map((a) => a.outcome)).toEqual(['failed', 'failed', 'succeeded']);
    // The retry delay doubles: 400 ms before attempt 2, 800 ms before attempt 3 (each counted from the failure report).
    const gap = (a: any, b: any) => b.startedAt.getTime() - a.finishedAt.getTime();
    expect(gap(attempts[0], attempts[1])).toBeGreaterThanOrEqual(400);
    expect(gap(attempts[1], attempts[2])).toBeGreaterThanOrEqual(800);
  }, 120_000);

  it('fails the dependants of a step that keeps failing, and not its siblings', async () => {
    const r = await post(
      '/v1/flows',
      signFlow('fails', [
        step('root', 'export default async () => "ok"'),
        step('bad', 'export default async () => { throw new Error("always") }', { depends: ['root'], retries: { max: 1, backoffMs: 50 } }),
        step('after-bad', 'export default async () => "never"', { depends: ['bad'] }),
        step('sibling', 'export default async () => "fine"', { depends: ['root'], target: { node: 'hv-3' } }),
      ]),
    );
    expect(r.status).toBe(202);
    const view = await waitFlow('fails');
    expect(view.status).toBe('failed');
    expect(stepOf(view, 'bad').status).toBe('failed');
    expect(stepOf(view, 'bad').jobs[0].attempts).toBe(2);
    expect(stepOf(view, 'after-bad').status).toBe('failed');
    expect(stepOf(view, 'after-bad').error.code).toBe('STEP_DEPENDENCY_FAILED');
    expect(stepOf(view, 'after-bad').jobs).toEqual([]);
    expect(stepOf(view, 'sibling').status).toBe('succeeded');
  }, 120_000);

  it('cancels a running flow: the running script is stopped, running and pending steps end cancelled, nothing after them starts', async () => {
    // A minute of sleeping: without the stop it would still run long after the check below gives up.
    const r = await post(
      '/v1/flows',
      signFlow('cancel-me', [
        step('slow', 'export default async (a, ctx) => { for (let i = 0; i < 60; i++) await ctx.sal.time.sleep({ ms: 1000 }); return "slept" }', {
          caps: ['time.sleep'],
          limits: { timeoutMs: 90_000, memoryMiB: 64 },
        }),
        step('next', 'export default async () => "next"', { depends: ['slow'] }),
      ]),
    );
    expect(r.status).toBe(202);
    await waitUntil('the slow step to run', async () => (await s.ledger.getJob('cancel-me.slow'))?.status === 'running', 60_000);
    const redis = newRedisClient<Redis | Cluster>({ Redis, Cluster }, s.redisUrl);
    const running = async () => Number(await redis.hget(redisKeys.node('hv-1'), 'running'));
    await waitUntil('the runner to report the slow step running', async () => (await running()) === 1, 30_000);
    const c = await post('/v1/flows/cancel-me/cancel', '{}');
    expect(c.status).toBe(200);
    expect(c.body.stopped).toBe(1);
    const view = await waitFlow('cancel-me');
    expect(view.status).toBe('cancelled');
    expect(stepOf(view, 'slow').status).toBe('cancelled');
    expect(stepOf(view, 'next').status).toBe('cancelled');
    expect((await s.ledger.getJob('cancel-me.slow'))?.errorCode).toBe('JOB_CANCELLED');
    // The runner stopped the script: its node runs nothing any more, well before the minute of sleep is over.
    try {
      await waitUntil('the runner to stop the cancelled script', async () => (await running()) === 0, 30_000);
    } finally {
      redis.disconnect();
    }
    expect(await s.ledger.listJobEvents('cancel-me.next', 0, 10)).toEqual([]);
    // Cancelling again is an error with its own code.
    const again = await post('/v1/flows/cancel-me/cancel', '{}');
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('FLOW_FINISHED');
  }, 120_000);

  it('refuses a step whose input was altered in the ledger after it was signed by the producing node', async () => {
    const r = await post(
      '/v1/flows',
      signFlow('tamper', [
        step('produce', 'export default async () => ({ device: "/dev/vdb" })'),
        step('gate', 'export default async (a, ctx) => { await ctx.sal.time.sleep({ ms: 3000 }); return 1 }', {
          caps: ['time.sleep'],
          target: { node: 'hv-2' },
        }),
        step('consume', 'export default async (args) => args.inputs.device', {
          depends: ['produce', 'gate'],
          inputs: { device: { from: 'produce', path: 'device' } },
        }),
      ]),
    );
    expect(r.status).toBe(202);
    let signed = '';
    await waitUntil(
      'the produce step to be signed',
      async () => {
        const rows = await s.ledger.db.query<{ step_result: string | null }>("SELECT step_result FROM flow_jobs WHERE job_id = 'tamper.produce'");
        signed = rows[0]?.step_result ?? '';
        return signed !== '';
      },
      60_000,
    );
    // Change the value inside the signed result, keep the node's signature: the consumer must refuse it.
    const env = JSON.parse(signed);
    const payload = JSON.parse(Buffer.from(env.payload, 'base64').toString('utf8'));
    payload.value = { device: '/dev/sda' };
    env.payload = Buffer.from(utf8.encode(JSON.stringify(payload))).toString('base64');
    await s.ledger.db.query("UPDATE flow_jobs SET step_result = $1 WHERE job_id = 'tamper.produce'", [JSON.stringify(env)]);
    const view = await waitFlow('tamper');
    expect(view.status).toBe('failed');
    const consume = await s.ledger.getJob('tamper.consume');
    // Refused where it was checked last, on the node: a permanent failure, nothing ran.
    expect(consume?.status).toBe('failed');
    expect(consume?.errorCode).toBe('STEP_INPUT_INVALID');
    expect(consume?.result ?? null).toBeNull();
  }, 120_000);

  it('refuses a flow signed by an unknown key, a cyclic flow, and a replay with another envelope under the same id', async () => {
    const stranger = generateKeyPair();
    const nowS = Math.floor(Date.now() / 1000);
    const flow: FlowPayload = {
      id: 'stranger',
      steps: [step('a', 'export default async () => 1')],
      aud: s.clusterId,
      nonce: b64url(crypto.getRandomValues(new Uint8Array(16))),
      iat: nowS,
      exp: nowS + 600,
    };
    const bad = await post('/v1/flows', encodeEnvelope(signEnvelope(PAYLOAD_TYPES.flow, encodeFlowPayload(flow), [stranger])));
    expect(bad.status).toBe(401);
    const cyclic = await post(
      '/v1/flows',
      signFlow('cyclic', [step('a', 'export default async () => 1', { depends: ['b'] }), step('b', 'export default async () => 1', { depends: ['a'] })]),
    );
    expect(cyclic.status).toBe(400);
    expect(cyclic.body.error.code).toBe('FLOW_INVALID');
    const first = signFlow('twice', [step('a', 'export default async () => 1')]);
    expect((await post('/v1/flows', first)).status).toBe(202);
    expect((await post('/v1/flows', first)).status).toBe(200);
    const other = await post('/v1/flows', signFlow('twice', [step('a', 'export default async () => 2')]));
    expect(other.status).toBe(409);
    expect(other.body.error.code).toBe('FLOW_ID_CONFLICT');
  }, 60_000);
}
