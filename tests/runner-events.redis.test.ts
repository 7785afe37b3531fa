// T14: outcomes are signed by the node that produced them. Entries written straight into the Redis event
// stream (unsigned, in the old plain-JSON shape, or signed by another node's key) are refused and recorded
// as security events; the real, node-signed result is what the ledger keeps. Real Redis, PGlite, runners.
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  PAYLOAD_TYPES,
  encodeEnvelope,
  encodeRunnerEventBatch,
  eventStreamFields,
  generateKeyPair,
  redisKeys,
  signEnvelope,
  type KeyPair,
  type RunnerEvent,
} from '@writ/protocol';
import { NOOP, startTestStack, type TestStack } from './helpers/stack.ts';

let s: TestStack;
let redis: Redis;

beforeAll(async () => {
  s = await startTestStack({ nodes: [{ id: 'node-a' }, { id: 'node-b' }] });
  redis = new Redis(s.redisUrl, { maxRetriesPerRequest: null });
}, 60_000);
afterAll(async () => {
  redis?.disconnect();
  await s?.close();
});

function nodeKey(id: string): KeyPair {
  const d = s.daemons.find((x) => x.identity.nodeId === id);
  if (!d) throw new Error(`no daemon ${id}`);
  return d.identity.key;
}

function forgedResult(jobId: string, node: string): RunnerEvent {
  return { type: 'result', jobId, attempt: 1, node, ts: Date.now(), ok: true, value: 'FORGED', durationMs: 1 };
}

function signedBatch(key: KeyPair, node: string, events: RunnerEvent[]): string {
  return encodeEnvelope(signEnvelope(PAYLOAD_TYPES.runnerEvents, encodeRunnerEventBatch({ node, batch: `forge-${Date.now()}`, events }), [key]));
}

/** Security entries the coord recorded for refused runner events, newest last. */
async function refusals(): Promise<{ subject: string; data: { code: string; reason: string } }[]> {
  const entries = (await s.ledger.tailAudit(500)) as { kind: string; actor: string; subject: string; data: { code: string; reason: string } }[];
  return entries.filter((e) => e.kind === 'security' && e.actor.startsWith('supervisor:'));
}

async function waitForRefusals(n: number, timeoutMs = 20_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const r = await refusals();
    if (r.length >= n) return r;
    if (Date.now() > end) throw new Error(`expected ${n} refused runner events, saw ${r.length}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

describe('signed runner events (T14)', () => {
  it('refuses forged entries in the stream while the job runs, records them, and keeps the real result', async () => {
    // The job sleeps long enough for the forgeries to be judged while it is still running, so a coord that
    // accepted them would record FORGED as the result of a live job.
    const { envelope, id } = s.sign('export default async (a, ctx) => { await ctx.sal.time.sleep({ ms: 6000 }); return "real" }', {
      caps: ['time.sleep'],
      target: { node: 'node-a' },
    });
    expect((await s.post(envelope)).status).toBe(202);
    await s.waitFor(id, ['running']);
    const before = (await refusals()).length;

    // 1. The old, unsigned shape: a plain JSON event under a field of its own.
    await redis.xadd(redisKeys.events(), '*', 'e', JSON.stringify(forgedResult(id, 'node-a')));
    // 2. The right field, but not an envelope at all, then an envelope with no valid signature.
    await redis.xadd(redisKeys.events(), '*', ...eventStreamFields('{"not":"an envelope"}'));
    await redis.xadd(redisKeys.events(), '*', ...eventStreamFields(signedBatch(generateKeyPair(), 'node-a', [forgedResult(id, 'node-a')])));
    // 3. Signed by another registered node (node-b) about a job that was dispatched to node-a.
    await redis.xadd(redisKeys.events(), '*', ...eventStreamFields(signedBatch(nodeKey('node-b'), 'node-b', [forgedResult(id, 'node-b')])));
    // 4. Signed by node-b but claiming to come from node-a.
    await redis.xadd(redisKeys.events(), '*', ...eventStreamFields(signedBatch(nodeKey('node-b'), 'node-a', [forgedResult(id, 'node-a')])));

    const seen = (await waitForRefusals(before + 5)).slice(before);
    const reasons = seen.map((r) => `${r.data.code}: ${r.data.reason}`);
    expect(reasons.some((r) => /not written by a runner.*\[e\]/.test(r))).toBe(true);
    expect(reasons).toContain('UNKNOWN_FIELD: runner events refused: envelope has unknown field "not"');
    expect(reasons.some((r) => r.startsWith('UNKNOWN_KEY'))).toBe(true);
    expect(seen.some((r) => r.subject === id && /node node-b reported a result event for job .* dispatched to node-a/.test(r.data.reason))).toBe(true);
    expect(reasons.some((r) => /node node-b signed events that claim to come from node node-a/.test(r))).toBe(true);

    // Judged while the job still ran: nothing forged was recorded.
    const during = await s.ledger.getJob(id);
    expect(during?.result).toBeNull();
    expect(during?.status).toBe('running');
    const done = await s.waitFor(id);
    expect(done).toMatchObject({ status: 'succeeded', result: 'real' });
    expect((await s.get('/metrics')).body).toMatch(/writ_runner_events_refused_total [1-9]/);
  }, 40_000);

  it('records results signed by the node the job went to', async () => {
    const { envelope, id } = s.sign(NOOP, { target: { node: 'node-b' } });
    expect((await s.post(envelope)).status).toBe(202);
    expect(await s.waitFor(id)).toMatchObject({ status: 'succeeded', node: 'node-b', result: 1 });
  });

  it('refuses job data with anything beside the signed envelope (the queue seam is strict)', async () => {
    const { Queue } = await import('bullmq');
    const { BULL_PREFIX, queueJobId, queueNames } = await import('@writ/protocol');
    const { envelope, id } = s.sign(NOOP, { target: { node: 'node-a' } });
    const q = new Queue(queueNames.node('node-a'), { connection: redis, prefix: BULL_PREFIX });
    await q.add('job', { envelope, attempt: 1, extra: { source: 'export default async () => "evil"' } }, { jobId: queueJobId(id, 1), attempts: 1 });
    await q.close();
    const end = Date.now() + 15_000;
    for (;;) {
      const entries = (await s.ledger.tailAudit(300)) as { kind: string; subject: string; data: { error?: { code: string; message: string } } }[];
      const hit = entries.find((e) => e.kind === 'security' && e.subject === id);
      if (hit) {
        expect(hit.data.error?.code).toBe('SECURITY_EVENT');
        expect(hit.data.error?.message).toMatch(/fields beside the envelope and attempt \(extra\)/);
        break;
      }
      if (Date.now() > end) throw new Error('no security event for the job with extra data');
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  it('reports a queue entry whose id no job can have as a node security event, without spoiling the batch it travels in', async () => {
    const { Queue } = await import('bullmq');
    const { BULL_PREFIX, queueNames } = await import('@writ/protocol');
    const q = new Queue(queueNames.node('node-a'), { connection: redis, prefix: BULL_PREFIX });
    const ok = s.sign(NOOP, { target: { node: 'node-a' } });
    await q.add('job', { envelope: 'x' }, { jobId: 'no such id!', attempts: 1 });
    expect((await s.post(ok.envelope)).status).toBe(202);
    await q.close();
    expect(await s.waitFor(ok.id)).toMatchObject({ status: 'succeeded' });
    const end = Date.now() + 15_000;
    for (;;) {
      const entries = (await s.ledger.tailAudit(300)) as { kind: string; actor: string; subject: string; data: { error?: { message: string } } }[];
      const hit = entries.find((e) => e.kind === 'security' && e.actor === 'node:node-a' && e.data.error?.message.includes('"no such id!"'));
      if (hit) break;
      if (Date.now() > end)
        throw new Error(`no node security event for the impossible id; refusals: ${JSON.stringify((await refusals()).map((r) => r.data.reason))}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  });
});
