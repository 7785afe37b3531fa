// The signed path end to end on a real Redis and PGlite: coord over HTTP → supervisor → BullMQ → runner
// → QuickJS sandbox → signed report → ledger. Each test names the requirement it proves. The same suite runs
// on a Redis Cluster in signed-path.cluster.redis.test.ts (WRIT_TEST_REDIS_URL, read by startTestStack).
import os from 'node:os';
import { Queue, QueueEvents } from 'bullmq';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { followEvents } from '@writ/cli';
import {
  BULL_PREFIX,
  PAYLOAD_TYPES,
  encodeEnvelope,
  generateKeyPair,
  newRedisClient,
  parseEnvelope,
  parseJobPage,
  parseJobView,
  queueJobId,
  queueNames,
  signEnvelope,
  utf8,
} from '@writ/protocol';
import { until } from './helpers/processes.ts';
import { HELLO, NOOP, startTestStack, type TestStack } from './helpers/stack.ts';

let s: TestStack;
let redis: Redis;

beforeAll(async () => {
  s = await startTestStack({
    nodes: [
      { id: 'node-a', labels: { rack: 'r1' } },
      { id: 'node-b', labels: { rack: 'r2' } },
    ],
  });
  redis = newRedisClient({ Redis, Cluster }, s.redisUrl, { maxRetriesPerRequest: null });
}, 60_000);
afterAll(async () => {
  redis?.disconnect();
  await s?.close();
});

/** Writes a queue entry for attempt 1 of `jobId` straight into Redis; `data` gets `attempt: 1` unless it has one. */
async function inject(node: string, jobId: string, data: Record<string, unknown>) {
  const q = new Queue(queueNames.node(node), { connection: redis, prefix: BULL_PREFIX });
  await q.add('job', { attempt: 1, ...data }, { jobId: queueJobId(jobId, 1), attempts: 1 });
  await q.close();
}
async function securityAuditFor(subject: string, timeoutMs = 10_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const entries = (await s.ledger.tailAudit(200)) as { kind: string; subject: string; actor: string; data: any }[];
    const hit = entries.find((e) => e.kind === 'security' && e.subject === subject);
    if (hit) return hit;
    if (Date.now() > end) throw new Error(`no security audit entry for ${subject}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('signed path', () => {
  it('runs a signed script over HTTP, streaming its log lines live, and records the result', async () => {
    const { envelope, id } = s.sign(HELLO, { caps: ['host.facts'], args: { name: 'it' } });
    const res = await s.post(envelope);
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({ id, replayed: false });
    const seen: string[] = [];
    await followEvents({ url: s.url, token: s.token }, id, (e) => seen.push(`${e.data.type}:${e.data.message}`));
    expect(seen).toContain('log:hello it');
    expect(seen).toContain(`log:threads ${os.cpus().length}`);
    expect(seen.at(-1)).toMatch(/^status:succeeded/);
    const job = (await s.get(`/v1/jobs/${id}`)).body;
    expect(job).toMatchObject({ status: 'succeeded', node: 'node-a', attempts: 1, result: { threads: os.cpus().length, hostname: os.hostname() } });
    // The coord's answers satisfy the contracts the CLI parses them with.
    expect(parseJobView(job).attemptHistory).toEqual([expect.objectContaining({ attempt: 1, node: 'node-a', outcome: 'succeeded' })]);
    expect(parseJobPage((await s.get('/v1/jobs?limit=5')).body).jobs.length).toBeGreaterThan(0);
  });

  it('T5: the same envelope again returns the existing job and runs nothing twice', async () => {
    const { envelope, id } = s.sign(NOOP);
    expect((await s.post(envelope)).status).toBe(202);
    await s.waitFor(id);
    const again = await s.post(envelope);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ id, replayed: true, status: 'succeeded' });
    await new Promise((r) => setTimeout(r, 500));
    const events = await s.ledger.listJobEvents(id, 0, 100);
    expect(events.filter((e: { message: string }) => e.message.startsWith('running')).length).toBe(1);
    expect((await s.ledger.listAttempts(id)).length).toBe(1);
  });

  it('T5: the same job id with a different envelope is a conflict', async () => {
    const a = s.sign(NOOP, { id: 'fixed-id-1' });
    const b = s.sign(NOOP + ' ', { id: 'fixed-id-1' });
    expect((await s.post(a.envelope)).status).toBe(202);
    const r = await s.post(b.envelope);
    expect([r.status, r.body.error.code]).toEqual([409, 'JOB_ID_CONFLICT']);
  });

  it('refuses expired envelopes and ones issued too far in the future', async () => {
    const now = Math.floor(Date.now() / 1000);
    const old = s.sign(NOOP, { nowS: now - 3600, ttlS: 600 });
    const r1 = await s.post(old.envelope);
    expect([r1.status, r1.body.error.code]).toEqual([400, 'ENVELOPE_EXPIRED']);
    const future = s.sign(NOOP, { nowS: now + 120 });
    const r2 = await s.post(future.envelope);
    expect([r2.status, r2.body.error.code]).toEqual([400, 'ENVELOPE_NOT_YET_VALID']);
    expect(await s.ledger.getJob(old.id)).toBeNull();
  });

  it('X5: an ungranted capability is refused at admission, and by the runner when forced into Redis', async () => {
    const bob = generateKeyPair();
    await s.authorize(bob, ['host.facts']);
    const { envelope, id } = s.sign(NOOP, { caps: ['time.sleep'], keys: [bob] });
    const r = await s.post(envelope);
    expect([r.status, r.body.error.code]).toEqual([403, 'CAPABILITY_NOT_GRANTED']);
    expect((await s.ledger.getJob(id))?.status).toBe('refused');
    const forced = s.sign(NOOP, { caps: ['time.sleep'], keys: [bob] });
    await inject('node-a', forced.id, { envelope: forced.envelope });
    const audit = await securityAuditFor(forced.id);
    expect(audit.data.error.code).toBe('CAPABILITY_NOT_GRANTED');
  });

  it('T11: tampered job data written straight into Redis is refused and reported as a security event', async () => {
    const { envelope, id } = s.sign('export default async () => "original"');
    const env = parseEnvelope(envelope);
    const payload = JSON.parse(Buffer.from(env.payload, 'base64').toString());
    payload.script.source = 'export default async () => "evil"';
    const { createHash } = await import('node:crypto');
    payload.script.sha256 = createHash('sha256').update(payload.script.source).digest('hex');
    const tampered = encodeEnvelope({ ...env, payload: Buffer.from(JSON.stringify(payload)).toString('base64') });
    // A parsed copy next to the envelope is never used: the envelope is verified first (and fails here), and
    // data beside it would be refused even with a valid envelope; only the signed bytes count.
    await inject('node-a', id, { envelope: tampered, job: payload });
    const audit = await securityAuditFor(id);
    expect(audit.data.error.code).toBe('SIGNATURE_INVALID');
    const unsigned = 'unsigned-' + Date.now();
    await inject('node-a', unsigned, { job: payload });
    expect((await securityAuditFor(unsigned)).data.error.code).toBe('SECURITY_EVENT');
  });

  it('T10: a job signed only by the supervisor key is refused by the runner', async () => {
    const { loadOrCreateKey } = await import('@writ/cli');
    const supKey = await loadOrCreateKey(`${s.stateDir}/supervisor.key`);
    const { envelope, id } = s.sign(NOOP, { keys: [supKey] });
    await inject('node-a', id, { envelope });
    expect((await securityAuditFor(id)).data.error.code).toBe('UNKNOWN_KEY');
  });

  it("T12: a job moved to another node's queue is refused there", async () => {
    const { envelope, id } = s.sign(NOOP, { target: { node: 'node-a' } });
    await inject('node-b', id, { envelope });
    const audit = await securityAuditFor(id);
    expect(audit.data.error.code).toBe('TARGET_MISMATCH');
    expect(audit.actor).toBe('node:node-b');
  });

  it('label selectors pick a matching live node', async () => {
    const { envelope, id } = s.sign(NOOP, { target: { selector: { rack: 'r2' } } });
    expect((await s.post(envelope)).status).toBe(202);
    expect(await s.waitFor(id)).toMatchObject({ status: 'succeeded', node: 'node-b' });
    const none = s.sign(NOOP, { target: { selector: { rack: 'r9' } } });
    const r = await s.post(none.envelope);
    expect(r.status).toBe(202); // recorded; waits for a node (retryable), never lost
    expect((await s.ledger.getJob(none.id))?.status).toBe('admitted');
    // One that waits past its envelope's expiry is settled as failed, not left waiting forever.
    const brief = s.sign(NOOP, { target: { selector: { rack: 'r9' } }, ttlS: 2 });
    expect((await s.post(brief.envelope)).status).toBe(202);
    expect(await s.waitFor(brief.id, ['failed'], 10_000)).toMatchObject({ errorCode: 'ENVELOPE_EXPIRED' });
  });

  it('revocation takes effect at execution: a job queued before the revoke fails with KEY_REVOKED (T9)', async () => {
    const carol = generateKeyPair();
    await s.authorize(carol, ['time.sleep']);
    const blocker = s.sign('export default async (a, ctx) => { await ctx.sal.time.sleep({ ms: 1500 }); return 1 }', {
      caps: ['time.sleep'],
      target: { node: 'node-b' },
    });
    const blocker2 = s.sign('export default async (a, ctx) => { await ctx.sal.time.sleep({ ms: 1500 }); return 1 }', {
      caps: ['time.sleep'],
      target: { node: 'node-b' },
    });
    await s.post(blocker.envelope);
    await s.post(blocker2.envelope);
    const waiting = s.sign(NOOP, { keys: [carol], target: { node: 'node-b' } });
    expect((await s.post(waiting.envelope)).status).toBe(202);
    await s.revoke(carol);
    expect(await s.waitFor(waiting.id)).toMatchObject({ status: 'failed', errorCode: 'KEY_REVOKED' });
  });
});

describe('a failure whose report does not come (the supervisor collects nothing meanwhile)', () => {
  it("the reconciler settles it from the queue's reason: the runner's error and the run's duration; the late report changes nothing", async () => {
    s.supervisor.setCollecting(false);
    try {
      const j = s.sign('export default async () => { throw new Error("no report of this") }');
      expect((await s.post(j.envelope)).status).toBe(202);
      const job = await s.waitFor(j.id, ['succeeded', 'failed'], 30_000);
      expect([job.status, job.errorCode]).toEqual(['failed', 'SCRIPT_ERROR']);
      const final = (await s.ledger.listJobEvents(j.id, 0, 100)).filter((e: { type: string }) => e.type === 'status').at(-1)!;
      const detail = (final.data as { detail: { error: { code: string; details?: unknown }; durationMs: number; settledFrom: string } }).detail;
      expect(detail).toMatchObject({ error: { code: 'SCRIPT_ERROR' }, settledFrom: 'queue' });
      expect(detail.durationMs).toBeGreaterThanOrEqual(0);
      expect(detail.durationMs).toBeLessThan(10_000);
      // The duration rode in the queue's reason beside the error, not inside the error as recorded.
      expect(JSON.stringify(detail.error)).not.toContain('durationMs');
      // Collecting again: the runner's own report of the failure arrives late and moves nothing.
      const delivered = s.supervisor.metrics.reportsDelivered;
      s.supervisor.setCollecting(true);
      await until('the late report', async () => (s.supervisor.metrics.reportsDelivered > delivered ? true : undefined), 30_000);
      const after = await s.ledger.getJob(j.id);
      expect([after?.status, after?.errorCode]).toEqual(['failed', 'SCRIPT_ERROR']);
      const failedEvents = (await s.ledger.listJobEvents(j.id, 0, 100)).filter(
        (e: { type: string; data: unknown }) => e.type === 'status' && (e.data as { status?: string } | null)?.status === 'failed',
      );
      expect(failedEvents).toHaveLength(1);
    } finally {
      s.supervisor.setCollecting(true);
    }
  }, 60_000);
});

describe('hostile scripts through the whole path (X1–X4)', () => {
  it('each ends failed with its code within deadline + 1 s while other jobs keep completing', async () => {
    const cases: [string, string, string][] = [
      ['infinite loop', 'export default async () => { for (;;) {} }', 'TIMEOUT'],
      ['catastrophic regex', 'export default async () => /(a+)+$/.test("a".repeat(40) + "!")', 'TIMEOUT'],
      ['deep recursion', 'export default async () => { const f = (n) => f(n + 1) + 1; return f(0) }', 'STACK_LIMIT'],
      ['allocation bomb', 'export default async () => { const a = []; for (;;) a.push(new Array(1e5).fill(1)) }', 'MEMORY_LIMIT'],
      [
        'constructor probe',
        'export default async () => { const g = (function(){}).constructor.constructor("return this")(); return [typeof g.process, typeof g.require, typeof g.postMessage].join() }',
        'OK',
      ],
    ];
    const timeoutMs = 1000;
    const hostile = cases.map(([, src]) => s.sign(src, { timeoutMs, memoryMiB: 32 }));
    const friendly = Array.from({ length: 4 }, () => s.sign(NOOP));
    for (const j of [...hostile, ...friendly]) expect((await s.post(j.envelope)).status).toBe(202);
    for (const j of friendly) {
      const job = await s.waitFor(j.id, ['succeeded', 'failed'], 30_000);
      expect([job.status, job.errorCode, job.errorMessage]).toEqual(['succeeded', null, null]);
    }
    for (const [i, j] of hostile.entries()) {
      const [name, , code] = cases[i]!;
      const job = await s.waitFor(j.id, ['succeeded', 'failed'], 30_000);
      if (code === 'OK') {
        expect([name, job.status, job.result]).toEqual([name, 'succeeded', 'undefined,undefined,undefined']);
        continue;
      }
      expect([name, job.status, job.errorCode, job.errorCode === code ? '' : job.errorMessage]).toEqual([name, 'failed', code, '']);
      // The runner's own measure, from the moment a sandbox thread took the job to its end (report
      // delivery to the coord is not part of the sandbox's deadline).
      const final = (await s.ledger.listJobEvents(j.id, 0, 100)).filter((e: { type: string }) => e.type === 'status').at(-1)!;
      expect((final.data as { detail: { durationMs: number } }).detail.durationMs).toBeLessThan(timeoutMs + 1000);
    }
  }, 60_000);
});

describe('HTTP input (A1, A2)', () => {
  it('answers bad input with 400/401/413/415 and a code', async () => {
    const { envelope } = s.sign(NOOP);
    const doc = JSON.parse(envelope);
    const post = (body: string, headers: Record<string, string> = {}) =>
      fetch(`${s.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}`, ...headers }, body }).then(
        async (r) => [r.status, ((await r.json()) as any).error?.code],
      );
    expect(await post(JSON.stringify({ ...doc, extra: 1 }))).toEqual([400, 'UNKNOWN_FIELD']);
    expect(await post(envelope.replace('{', '{"payload":"AA==",'))).toEqual([400, 'JSON_DUPLICATE_KEY']);
    expect(await post('{"payloadType":"x","payload":"","signatures":[{"keyid":"k","sig":"\\ud800"}]}')).toEqual([400, 'JSON_LONE_SURROGATE']);
    expect(await post(JSON.stringify({ ...doc, payload: 'A'.repeat(2 * 1024 * 1024) }))).toEqual([413, 'BODY_TOO_LARGE']);
    expect(await post(envelope, { authorization: 'Bearer wrong' })).toEqual([401, 'UNAUTHENTICATED']);
    expect(await post(envelope, { 'content-type': 'text/plain' })).toEqual([415, 'UNSUPPORTED_MEDIA_TYPE']);
    const wrongType = encodeEnvelope(signEnvelope(PAYLOAD_TYPES.heartbeat, utf8.encode('{}'), [s.admin]));
    expect(await post(wrongType)).toEqual([400, 'PAYLOAD_TYPE_MISMATCH']);
    const unknown = s.sign(NOOP, { keys: [generateKeyPair()] });
    expect(await post(unknown.envelope)).toEqual([401, 'UNKNOWN_KEY']);
    const r = await fetch(`${s.url}/v1/nope`, { headers: { authorization: `Bearer ${s.token}` } });
    expect([r.status, ((await r.json()) as any).error.code]).toEqual([404, 'ROUTE_NOT_FOUND']);
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${s.url}/metrics`)).status).toBe(200);
    expect((await fetch(`${s.url}/v1/jobs`)).status).toBe(401);
  });

  it('has no CORS headers and sets no cookies (A2)', async () => {
    const r = await fetch(`${s.url}/healthz`, { headers: { origin: 'https://evil.example' } });
    expect(r.headers.get('access-control-allow-origin')).toBeNull();
    expect(r.headers.get('set-cookie')).toBeNull();
  });

  it('lists jobs with paging and filters', async () => {
    const page1 = (await s.get('/v1/jobs?limit=2')).body;
    expect(page1.jobs).toHaveLength(2);
    expect(page1.nextCursor).toBeTruthy();
    const page2 = (await s.get(`/v1/jobs?limit=2&cursor=${page1.nextCursor}`)).body;
    expect(page2.jobs[0].id).not.toBe(page1.jobs[0].id);
    const ok = (await s.get('/v1/jobs?status=succeeded&limit=100')).body;
    expect(ok.jobs.every((j: { status: string }) => j.status === 'succeeded')).toBe(true);
    expect((await s.get('/v1/jobs?bogus=1')).status).toBe(400);
  });

  it('the route list is exactly the declared one (A1 snapshot)', async () => {
    const { ROUTES } = await import('@writ/coord');
    expect([...s.app.routeList].sort()).toEqual([...ROUTES].sort());
    // The snapshot itself: adding a route means changing this list on purpose.
    expect([...ROUTES].sort()).toEqual(
      [
        'GET /healthz',
        'GET /metrics',
        'GET /openapi.json',
        'GET /readyz',
        'GET /v1/audit',
        'GET /v1/audit/verify',
        'GET /v1/jobs',
        'GET /v1/jobs/:id',
        'GET /v1/jobs/:id/events',
        'GET /v1/keyset',
        'GET /v1/nodes',
        'GET /v1/nodes/:id',
        'POST /v1/jobs',
        'POST /v1/jobs:batch',
        'POST /v1/keyset',
        'POST /v1/nodes/:id/:action',
        'POST /v1/nodes/challenge',
        'GET /v1/enroll/rules',
        'POST /v1/enroll/rules',
        'DELETE /v1/enroll/rules/:name',
        'POST /v1/enroll/test',
        'GET /v1/enroll/classes',
        'POST /v1/enroll/classes',
        'DELETE /v1/enroll/classes/:name',
        'GET /v1/enroll/nodes/:id',
        'POST /v1/nodes/heartbeat',
        'POST /v1/nodes/install-report',
        'POST /v1/nodes/register',
        'POST /v1/reports',
        'GET /v1/supervisors',
        'POST /v1/supervisors/heartbeat',
        'GET /v1/deployments',
        'GET /v1/deployments/:id',
        'POST /v1/deployments',
        'POST /v1/deployments/:id/:action',
        'POST /v1/cluster/intent',
        'POST /v1/flows',
        'GET /v1/flows',
        'GET /v1/flows/:id',
        'POST /v1/flows/:id/cancel',
        'GET /v1/flows/:id/events',
        'GET /boot/ipxe',
        'GET /boot/vmlinuz',
        'GET /boot/initramfs.img',
        'GET /',
        'GET /ui/:file',
      ].sort(),
    );
  });

  it('readyz reports ledger and supervisor', async () => {
    const r = await fetch(`${s.url}/readyz`);
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ ok: true, ledger: true, supervisor: true, redis: true });
  });
});

describe('runner stays responsive (R4)', () => {
  it('a CPU-heavy script causes no BullMQ stalled event', async () => {
    // Its own node with a short lock (3 s, checked every second): a busy main thread would lose it.
    const r4 = await s.startRunner('node-r4', {}, { runner: { lockDurationMs: 3000, stalledIntervalMs: 1000 } });
    // Its own connection: QueueEvents blocks on it reading the queue's event stream.
    const eventsConn = newRedisClient({ Redis, Cluster }, s.redisUrl, { maxRetriesPerRequest: null });
    const events = new QueueEvents(queueNames.node('node-r4'), { connection: eventsConn, prefix: BULL_PREFIX });
    await events.waitUntilReady();
    let stalled = 0;
    events.on('stalled', () => stalled++);
    r4.bullWorker.on('stalled', () => stalled++);
    const { envelope, id } = s.sign(
      'export default async (a, ctx) => { const end = (await ctx.sal.time.now()).ms + 11000; let x = 0; for (;;) { for (let i = 0; i < 5e6; i++) { x = (x + i) % 1000003 } if ((await ctx.sal.time.now()).ms > end) return x } }',
      { caps: ['time.now'], timeoutMs: 80_000, target: { node: 'node-r4' } },
    );
    await s.post(envelope);
    const job = await s.waitFor(id, ['succeeded', 'failed'], 90_000);
    await events.close();
    eventsConn.disconnect();
    expect(job.status).toBe('succeeded');
    // The script must have outlived the lock several times over for this to prove anything.
    const attempts = await s.ledger.listAttempts(id);
    expect(attempts[0]!.finishedAt!.getTime() - attempts[0]!.startedAt!.getTime()).toBeGreaterThan(3 * 3000);
    expect(stalled).toBe(0);
  }, 120_000);
});
