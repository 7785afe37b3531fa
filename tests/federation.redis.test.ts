// Federation (issue 10, part 1), as processes: one `writ coord` on a PostgreSQL 15 the test starts on loopback,
// three `writ supervisor`s announcing themselves with signed heartbeats, two pools (pool a: two supervisors
// sharing one Redis; pool b: one supervisor on another Redis), a `writ runner` in each pool, and a fourth
// supervisor whose key the key set does not list.
//
// Jobs route by the target node's pool and both supervisors of pool a take some. Then the coord is stopped
// (SIGSTOP) so that the supervisors hold runner events they cannot deliver; one supervisor of pool a is
// SIGKILLed while it holds some, the coord continues, and its peer claims those entries (XAUTOCLAIM): every
// job completes with one attempt, no result is lost, the coord marks the killed supervisor gone, and new work
// for pool a goes to the survivor. The unlisted supervisor's heartbeats and reports are refused and audited.
//
// Pools are assigned by enrollment (another part of the coord); here the test writes each node's row, with
// its pool, into the ledger before the coord starts, as an operator applying cluster intent would.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLedger } from '@writ/coord';
import { startEmbeddedRedis, type EmbeddedRedis } from '@writ/cli';
import {
  PAYLOAD_TYPES,
  b64url,
  bootstrapKeySet,
  buildJobPayload,
  encodeEnvelope,
  encodeJobPayload,
  encodeKeySet,
  encodePrivateKeyFile,
  encodePublicKeyFile,
  encodeSupervisorReport,
  generateKeyPair,
  redisKeys,
  signEnvelope,
  type KeyPair,
  type KeySet,
  type SupervisorView,
} from '@writ/protocol';
import { startTestPostgres, type TestPostgres } from './helpers/postgres.ts';
import { freePort, killAllWrit, runWrit, startWrit, until, type WritProcess } from './helpers/processes.ts';

const postgres = await startTestPostgres();
if (!postgres.ok) console.warn(`skipping the federation test: ${postgres.reason}`);

const SCRIPT = 'export default async (args, ctx) => { await ctx.sal.time.sleep({ ms: args.ms }); return args.i }';
const HEARTBEAT_MS = 500;

let pg: TestPostgres;
let dir: string;
let redisA: EmbeddedRedis;
let redisB: EmbeddedRedis;
const admin = generateKeyPair();
const token = `test-api-token-${Math.random().toString(36).slice(2)}`;
const supKeys: Record<string, KeyPair> = { 'sup-a1': generateKeyPair(), 'sup-a2': generateKeyPair(), 'sup-b': generateKeyPair(), 'sup-x': generateKeyPair() };
const redisClients: Redis[] = [];

beforeAll(async () => {
  if (!postgres.ok) return;
  pg = postgres.pg;
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-federation-'));
  redisA = await startEmbeddedRedis({ dataDir: path.join(dir, 'redis-a') });
  redisB = await startEmbeddedRedis({ dataDir: path.join(dir, 'redis-b') });
  await writeFile(path.join(dir, 'admin.key'), encodePrivateKeyFile(admin), { mode: 0o600 });
  await writeFile(path.join(dir, 'admin.pub'), encodePublicKeyFile(admin.publicKey));
  // Each supervisor's key made ahead, so that the key set can list it before it first starts.
  for (const [id, kp] of Object.entries(supKeys)) {
    await mkdir(path.join(dir, id), { recursive: true });
    await writeFile(path.join(dir, id, 'supervisor.key'), encodePrivateKeyFile(kp), { mode: 0o600 });
  }
}, 60_000);

afterAll(async () => {
  killAllWrit();
  for (const r of redisClients) r.disconnect();
  await redisA?.stop();
  await redisB?.stop();
  await pg?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe.skipIf(!postgres.ok)('federation: supervisors join, serve pools, and leave', () => {
  it('jobs route by pool to both supervisors of a pool; SIGKILL one of the pair mid-run: every job completes once, its peer claims what it held, the coord marks it gone; an unlisted supervisor is refused', async () => {
    const databaseUrl = await pg.freshDatabaseUrl();
    const env = {
      WRIT_HOME: dir,
      WRIT_TOKEN: token,
      WRIT_SUPERVISOR_TOKEN: `test-sup-token-${Math.random().toString(36).slice(2)}`,
      DATABASE_URL: databaseUrl,
    };
    const coordPort = await freePort();
    const coordUrl = `http://127.0.0.1:${coordPort}`;
    const adminPub = path.join(dir, 'admin.pub');
    const api = async (method: string, route: string, body?: string) => {
      const r = await fetch(`${coordUrl}${route}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
        ...(body ? { body } : {}),
      });
      const text = await r.text();
      return { status: r.status, body: text.startsWith('{') ? JSON.parse(text) : text };
    };
    const supervisors = async () => ((await api('GET', '/v1/supervisors')).body as { supervisors: SupervisorView[] }).supervisors;
    const sup = async (id: string) => (await supervisors()).find((s) => s.id === id);

    // The nodes' rows with their pools (enrollment's part), then the coord on that ledger.
    const ledger = await openLedger({ databaseUrl });
    for (const [node, pool] of [
      ['na1', 'a'],
      ['nb1', 'b'],
    ] as const) {
      await ledger.db.query(
        `INSERT INTO nodes (id, state, labels, inventory, version, registered_at, state_since, reason, pool) VALUES ($1, 'inspected', '{}', '{}', '', $2, $2, 'seeded by the test', $3)`,
        [node, Date.now(), pool],
      );
    }
    await ledger.close();
    const coord = await startWrit(['coord', '--listen', `127.0.0.1:${coordPort}`, '--state', path.join(dir, 'coord'), '--admin-key', adminPub], env);

    // Admins decide which supervisors exist: a, a and b are listed; x is not.
    const ref = (kp: KeyPair) => ({ keyid: kp.keyid, publicKey: b64url(kp.publicKey) });
    const ks: KeySet = {
      ...bootstrapKeySet({ cluster: 'writ-dev', admin: ref(admin), nowS: Math.floor(Date.now() / 1000) }),
      supervisors: [
        { id: 'sup-a1', keys: [ref(supKeys['sup-a1']!)], pools: ['a'] },
        { id: 'sup-a2', keys: [ref(supKeys['sup-a2']!)], pools: ['a'] },
        { id: 'sup-b', keys: [ref(supKeys['sup-b']!)], pools: ['b'] },
      ],
    };
    expect((await api('POST', '/v1/keyset', encodeEnvelope(signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(ks), [admin])))).status).toBe(201);

    const startSupervisor = async (id: string, redis: EmbeddedRedis, pool: string) =>
      startWrit(
        [
          'supervisor',
          '--id',
          id,
          '--coord',
          coordUrl,
          '--redis',
          redis.url,
          '--listen',
          `127.0.0.1:${await freePort()}`,
          '--state',
          path.join(dir, id),
          '--admin-key',
          adminPub,
          '--pool',
          pool,
          '--heartbeat-ms',
          String(HEARTBEAT_MS),
          '--claim-idle-ms',
          '1500',
        ],
        env,
      );
    // Started together: each process takes seconds to load on a busy machine.
    const started = await Promise.all(
      (
        [
          ['sup-a1', redisA, 'a'],
          ['sup-a2', redisA, 'a'],
          ['sup-b', redisB, 'b'],
          ['sup-x', redisA, 'a'],
        ] as const
      ).map(async ([id, redis, pool]) => [id, await startSupervisor(id, redis, pool)] as const),
    );
    const procs: Record<string, WritProcess> = Object.fromEntries(started);

    await until(
      'the three listed supervisors live and healthy',
      async () => {
        const list = await supervisors();
        return ['sup-a1', 'sup-a2', 'sup-b'].every((id) => list.find((s) => s.id === id)?.healthy) ? list : undefined;
      },
      60_000,
    );

    // The unlisted supervisor: its heartbeats are refused (audited), it is not among the supervisors, and a report
    // signed with its key is refused too.
    const audited = (refused: string) =>
      until(
        `an audit entry for sup-x's refused ${refused}`,
        async () => {
          const { entries } = (await api('GET', '/v1/audit?tail=1000')).body as {
            entries: { kind: string; actor: string; data: { code?: string; refused?: string } }[];
          };
          return (
            entries.find(
              (e) =>
                e.kind === 'security' && e.data.code === 'SUPERVISOR_NOT_LISTED' && e.data.refused === refused && e.actor.includes(supKeys['sup-x']!.keyid),
            ) ?? undefined
          );
        },
        30_000,
      );
    await audited('heartbeat');
    expect((await supervisors()).map((s) => s.id)).not.toContain('sup-x');
    const report = encodeEnvelope(
      signEnvelope(PAYLOAD_TYPES.result, encodeSupervisorReport({ supervisor: 'sup-x', seq: 'r1', entries: [] }), [supKeys['sup-x']!]),
    );
    const refusedReport = await fetch(`${coordUrl}/v1/reports`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: report });
    expect(refusedReport.status).toBe(403);
    expect(((await refusedReport.json()) as { error: { code: string } }).error.code).toBe('SUPERVISOR_NOT_LISTED');
    await audited('report');

    // A runner in each pool, on its pool's Redis: na1 is told it (--redis); nb1 is not, and learns it from the
    // coord's registration answer (the Redis sup-b announces for pool b). Its jobs below run only if it did.
    const runner = (node: string, redis: EmbeddedRedis | null) =>
      startWrit(
        [
          'runner',
          '--node',
          node,
          '--coord',
          coordUrl,
          ...(redis ? ['--redis', redis.url] : []),
          '--admin-key',
          adminPub,
          '--state',
          path.join(dir, `runner-${node}`),
          '--heartbeat-ms',
          String(HEARTBEAT_MS),
          '--concurrency',
          '2',
        ],
        env,
      );
    const [, nb1] = await Promise.all([runner('na1', redisA), runner('nb1', null)]);
    expect(nb1.ready).toMatchObject({ redis: `redis://127.0.0.1:${new URL(redisB.url).port}`, redisFrom: 'registration' });
    for (const node of ['na1', 'nb1']) {
      await until(`${node} registering`, async () => ((await api('GET', `/v1/nodes/${node}`)).body?.keyid ? true : undefined), 60_000);
      expect((await api('POST', `/v1/nodes/${node}/accept`, JSON.stringify({ reason: 'test' }))).status).toBe(200);
      await until(`${node} active`, async () => ((await api('GET', `/v1/nodes/${node}`)).body?.state === 'active' ? true : undefined), 30_000);
      expect((await api('GET', `/v1/nodes/${node}`)).body.pool).toBe(node === 'na1' ? 'a' : 'b');
    }

    const jobs: { id: string; i: number; node: string }[] = [];
    const submit = async (node: string, n: number, ms: number) => {
      const made = Array.from({ length: n }, () => {
        const i = jobs.length;
        const job = buildJobPayload({ source: SCRIPT, target: { node }, caps: ['time.sleep'], aud: 'writ-dev', args: { i, ms }, ttlS: 1800 });
        jobs.push({ id: job.id, i, node });
        return encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(job), [admin]));
      });
      const res = await api('POST', '/v1/jobs:batch', JSON.stringify({ envelopes: made.map((e) => JSON.parse(e)) }));
      expect(res.status).toBe(200);
      return made.length;
    };
    const waitAll = (ids: readonly string[], timeoutMs: number) =>
      until(
        `${ids.length} jobs succeeded`,
        async () => {
          const views = await Promise.all(ids.map(async (id) => (await api('GET', `/v1/jobs/${id}`)).body));
          return views.every((v) => v.status === 'succeeded') ? views : undefined;
        },
        timeoutMs,
      );

    // Phase 1: jobs route by pool. A job sent to the other pool's supervisor would never run (its node has no
    // runner on that Redis), and both supervisors of pool a take some.
    await submit('na1', 8, 50);
    await submit('nb1', 4, 50);
    await waitAll(
      jobs.map((j) => j.id),
      90_000,
    );
    const afterPhase1 = Object.fromEntries((await supervisors()).map((s) => [s.id, s.dispatched]));
    expect(afterPhase1['sup-b']).toBe(4);
    expect(afterPhase1['sup-a1']! + afterPhase1['sup-a2']!).toBe(8);
    expect(afterPhase1['sup-a1']).toBeGreaterThan(0);
    expect(afterPhase1['sup-a2']).toBeGreaterThan(0);

    // Phase 2: work in flight on pool a; the coord stops answering, so the supervisors hold what they read.
    const redis = new Redis(redisA.url);
    redisClients.push(redis);
    const pendingOf = async (consumer: string) => {
      const rows = (await redis.xpending(redisKeys.events(), redisKeys.eventsGroup(), '-', '+', 1000, consumer)) as unknown[];
      return rows.length;
    };
    const phase2Start = jobs.length;
    await submit('na1', 10, 600);
    const phase2 = jobs.slice(phase2Start).map((j) => j.id);
    await until(
      'a phase-2 job running',
      async () => {
        const views = await Promise.all(phase2.map(async (id) => (await api('GET', `/v1/jobs/${id}`)).body.status as string));
        return views.includes('running') || views.includes('succeeded') ? true : undefined;
      },
      60_000,
    );
    coord.child.kill('SIGSTOP');
    try {
      await until('sup-a1 holding runner events it could not deliver', async () => ((await pendingOf('sup-a1')) > 0 ? true : undefined), 60_000);
      procs['sup-a1']!.child.kill('SIGKILL');
      await procs['sup-a1']!.exited();
      // Without entries held at its death, what follows would prove nothing about claiming them.
      expect(await pendingOf('sup-a1')).toBeGreaterThan(0);
    } finally {
      coord.child.kill('SIGCONT');
    }

    // Its peer claims what it held: every job completes, none lost, each in one attempt.
    await waitAll(phase2, 120_000);
    await until('no runner event left unacknowledged', async () => ((await pendingOf('sup-a1')) === 0 ? true : undefined), 30_000);
    const gone = await until(
      'sup-a1 marked gone',
      async () => {
        const s = await sup('sup-a1');
        return s?.state === 'gone' && !s.healthy ? s : undefined;
      },
      30_000,
    );
    expect(gone.pools).toEqual(['a']);
    const { entries } = (await api('GET', '/v1/audit?tail=1000')).body as { entries: { kind: string; subject: string }[] };
    expect(entries.some((e) => e.kind === 'supervisor.gone' && e.subject === 'sup-a1')).toBe(true);

    // Phase 3: new work for pool a goes to the survivor.
    await until('sup-a2 healthy', async () => ((await sup('sup-a2'))?.healthy ? true : undefined), 30_000);
    const a1Before = (await sup('sup-a1'))!.dispatched;
    const phase3Start = jobs.length;
    await submit('na1', 4, 50);
    await submit('nb1', 2, 50);
    await waitAll(
      jobs.slice(phase3Start).map((j) => j.id),
      90_000,
    );
    expect((await sup('sup-a1'))!.dispatched).toBe(a1Before);

    // Every job: succeeded, its own result, exactly one attempt.
    for (const j of jobs) {
      const view = (await api('GET', `/v1/jobs/${j.id}`)).body;
      expect({
        id: j.id,
        status: view.status,
        result: view.result,
        attempts: view.attempts,
        outcomes: view.attemptHistory.map((a: { outcome: string }) => a.outcome),
      }).toEqual({ id: j.id, status: 'succeeded', result: j.i, attempts: 1, outcomes: ['succeeded'] });
    }
    // The unlisted supervisor never took an event its peers should carry.
    expect(await pendingOf('sup-x')).toBe(0);

    // The operator's view: writ supervisors list --json.
    const listed = await runWrit(['supervisors', 'list', '--json', '--coord', coordUrl], env);
    expect(listed.code).toBe(0);
    const fromCli = (JSON.parse(listed.stdout) as { supervisors: SupervisorView[] }).supervisors;
    expect(fromCli.map((s) => [s.id, s.state])).toEqual(
      expect.arrayContaining([
        ['sup-a1', 'gone'],
        ['sup-a2', 'live'],
        ['sup-b', 'live'],
      ]),
    );
  }, 600_000);
});
