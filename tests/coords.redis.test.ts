// Two coords on one PostgreSQL (issue 10, part 3), as processes: `writ coord` twice on a PostgreSQL 15 the test
// starts on loopback, one `writ supervisor`, one `writ runner`, a real Redis, and an HTTP balancer in front of
// the coords (tests/helpers/balancer.ts, standing in for HAProxy): the supervisor's reports fail over from
// one coord to the other, the node's heartbeats go round-robin to both.
//
// Jobs wait for their node; while the supervisor is stopped both coords see the node come back and reconcile
// the same waiting jobs at once. The coord that holds their leases (PostgreSQL advisory locks) is SIGKILLed
// once it has run a few of them; the other finishes every job. Each job is dispatched once and runs once, and
// the survivor's SSE streams, opened before any of it, carry every event, including those the killed coord
// recorded (LISTEN/NOTIFY).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLedger, type Ledger } from '@writ/coord';
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
  generateKeyPair,
  signEnvelope,
} from '@writ/protocol';
import { startBalancer, type Balancer } from './helpers/balancer.ts';
import { startTestPostgres, type TestPostgres } from './helpers/postgres.ts';
import { freePort, killAllWrit, startWrit, until, type WritProcess } from './helpers/processes.ts';

const postgres = await startTestPostgres();
if (!postgres.ok) console.warn(`skipping the two-coord test: ${postgres.reason}`);

const JOBS = 60;
const NODE = 'n1';
const SCRIPT = 'export default async (args, ctx) => { ctx.log.info("ran " + args.i); await ctx.sal.time.sleep({ ms: 100 }); return args.i }';

let pg: TestPostgres;
let dir: string;
let redis: EmbeddedRedis;
let ledger: Ledger;
const balancers: Balancer[] = [];
const admin = generateKeyPair();
const token = `test-api-token-${Math.random().toString(36).slice(2)}`;

beforeAll(async () => {
  if (!postgres.ok) return;
  pg = postgres.pg;
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-coords-'));
  redis = await startEmbeddedRedis({ dataDir: path.join(dir, 'redis') });
  await writeFile(path.join(dir, 'admin.key'), encodePrivateKeyFile(admin), { mode: 0o600 });
  await writeFile(path.join(dir, 'admin.pub'), encodePublicKeyFile(admin.publicKey));
}, 60_000);

afterAll(async () => {
  killAllWrit();
  for (const b of balancers) await b.close();
  await ledger?.close();
  await redis?.stop();
  await pg?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Stream {
  seqs: number[];
  statuses: string[];
  ended: boolean;
}

/** Follows a job's SSE stream on one coord, recording every event's seq until the `end` event. */
function follow(coordUrl: string, id: string): Stream {
  const s: Stream = { seqs: [], statuses: [], ended: false };
  void (async () => {
    const res = await fetch(`${coordUrl}/v1/jobs/${id}/events`, { headers: { authorization: `Bearer ${token}` } });
    let buf = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += Buffer.from(chunk).toString('utf8');
      let at: number;
      while ((at = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, at);
        buf = buf.slice(at + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        if (event === 'end') {
          s.ended = true;
          return;
        }
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (!data) continue;
        const ev = JSON.parse(data) as { seq: number; data: { status?: string } | null };
        s.seqs.push(ev.seq);
        if (ev.data?.status) s.statuses.push(ev.data.status);
      }
    }
  })().catch(() => {});
  return s;
}

describe.skipIf(!postgres.ok)('two coords on one PostgreSQL', () => {
  it('SIGKILL the coord driving the work: the other finishes it, every job dispatched and run once, SSE on the survivor sees it all', async () => {
    const databaseUrl = await pg.freshDatabaseUrl();
    const env = {
      WRIT_HOME: dir,
      WRIT_TOKEN: token,
      WRIT_SUPERVISOR_TOKEN: `test-sup-token-${Math.random().toString(36).slice(2)}`,
      DATABASE_URL: databaseUrl,
    };
    const [portA, portB, supPort] = [await freePort(), await freePort(), await freePort()];
    const coordUrl = { [portA]: `http://127.0.0.1:${portA}`, [portB]: `http://127.0.0.1:${portB}` };
    const reports = await startBalancer('failover', [portA, portB]);
    const heartbeats = await startBalancer('roundrobin', [portA, portB]);
    balancers.push(reports, heartbeats);
    const adminPub = path.join(dir, 'admin.pub');
    const api = async (port: number, method: string, route: string, body?: string) => {
      const r = await fetch(`${coordUrl[port]}${route}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
        ...(body ? { body } : {}),
      });
      const text = await r.text();
      return { status: r.status, body: text.startsWith('{') ? JSON.parse(text) : text };
    };
    const metric = async (port: number, name: string) =>
      Number(new RegExp(`^${name} (\\d+)$`, 'm').exec((await api(port, 'GET', '/metrics')).body as string)?.[1] ?? NaN);

    const supervisor = await startWrit(
      [
        'supervisor',
        '--coord',
        reports.url,
        '--redis',
        redis.url,
        '--listen',
        `127.0.0.1:${supPort}`,
        '--state',
        path.join(dir, 'sup'),
        '--admin-key',
        adminPub,
      ],
      env,
    );
    const coord = (port: number, name: string) =>
      startWrit(
        [
          'coord',
          '--supervisor',
          `http://127.0.0.1:${supPort}`,
          '--supervisor-key',
          String(supervisor.ready.publicKeyFile),
          '--listen',
          `127.0.0.1:${port}`,
          '--state',
          path.join(dir, name),
          '--admin-key',
          adminPub,
        ],
        env,
      );
    const runner = () =>
      startWrit(
        [
          'runner',
          '--node',
          NODE,
          '--coord',
          heartbeats.url,
          '--redis',
          redis.url,
          '--admin-key',
          adminPub,
          '--state',
          path.join(dir, 'runner'),
          '--heartbeat-ms',
          '500',
          '--concurrency',
          '4',
        ],
        env,
      );
    const coords: Record<number, WritProcess> = { [portA]: await coord(portA, 'coord-a') };

    // The cluster's key set and node, through coord A (B is not up yet).
    const ks = bootstrapKeySet({ cluster: 'writ-dev', admin: { keyid: admin.keyid, publicKey: b64url(admin.publicKey) }, nowS: Math.floor(Date.now() / 1000) });
    expect((await api(portA, 'POST', '/v1/keyset', encodeEnvelope(signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(ks), [admin])))).status).toBe(201);
    await runner();
    await until('the node registering', async () => ((await api(portA, 'GET', `/v1/nodes/${NODE}`)).body?.state === 'inspected' ? true : undefined), 30_000);
    const acc = await api(portA, 'POST', `/v1/nodes/${NODE}/accept`, JSON.stringify({ reason: 'test' }));
    expect(acc.status, JSON.stringify(acc.body)).toBe(200);
    await until('the node active', async () => ((await api(portA, 'GET', `/v1/nodes/${NODE}`)).body?.state === 'active' ? true : undefined), 30_000);

    // Coord B joins the same ledger, and learns the node from it.
    coords[portB] = await coord(portB, 'coord-b');
    ledger = await openLedger({ databaseUrl });
    const nodeState = async () => (await ledger.nodeStore.getNode(NODE))?.state;

    // The operator drains the node (through A); jobs submitted now wait for it, on either coord. A probe
    // submitted to B shows when B has the drain too (it answers `admitted` instead of queueing the job).
    expect((await api(portA, 'POST', `/v1/nodes/${NODE}/drain`, JSON.stringify({ reason: 'test' }))).status).toBe(200);
    await until('the node drained', async () => ((await nodeState()) === 'commissioned' ? true : undefined), 30_000);
    const sign = (i: number) => {
      const job = buildJobPayload({ source: SCRIPT, target: { node: NODE }, caps: ['time.sleep'], aud: 'writ-dev', args: { i }, ttlS: 1800 });
      return { i, id: job.id, envelope: encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(job), [admin])) };
    };
    const jobs: { i: number; id: string; envelope: string }[] = [];
    await until(
      'coord B to hold jobs for the drained node',
      async () => {
        const probe = sign(jobs.length);
        jobs.push(probe);
        return (await api(portB, 'POST', '/v1/jobs', probe.envelope)).body?.status === 'admitted' ? true : undefined;
      },
      30_000,
    );
    const batch = Array.from({ length: JOBS }, (_, k) => sign(jobs.length + k));
    jobs.push(...batch);
    const answered = await api(portA, 'POST', '/v1/jobs:batch', JSON.stringify({ envelopes: batch.map((j) => JSON.parse(j.envelope)) }));
    expect(answered.body.results.map((r: { status: string }) => r.status)).toEqual(batch.map(() => 'admitted'));

    // The operator puts the node back (through A) while the supervisor is stopped: both coords see it come back
    // and reconcile the same waiting jobs, and the first to dispatch one waits on the supervisor, holding
    // what it claimed.
    supervisor.child.kill('SIGSTOP');
    // Coord A must see the drain finished too (another coord may have recorded it; A follows the ledger's node
    // rows every 2 s): from `draining` an accept is refused (409).
    await until(
      'coord A to see the node commissioned',
      async () => ((await api(portA, 'GET', `/v1/nodes/${NODE}`)).body?.state === 'commissioned' ? true : undefined),
      30_000,
    );
    const again = await api(portA, 'POST', `/v1/nodes/${NODE}/accept`, JSON.stringify({ reason: 'test' }));
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    await until('the node active again', async () => ((await nodeState()) === 'active' ? true : undefined), 30_000);
    const leaseHolders = async () =>
      new Map(
        (
          await ledger.db.query<{ app: string; n: number }>(
            `SELECT a.application_name AS app, count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.classid = hashtext('writ.job')::oid GROUP BY 1`,
          )
        ).map((r) => [Number(r.app.split(' ')[2]), Number(r.n)]),
      );
    // The driver: the coord holding the jobs' leases, its pass held up by the stopped supervisor. The other
    // follows the ledger's node states within a few seconds: three reconcile passes of it since make sure it
    // has reconciled the same jobs with the node active (and met the driver's leases).
    const passes = { [portA]: await metric(portA, 'writ_reconcile_passes_total'), [portB]: await metric(portB, 'writ_reconcile_passes_total') };
    // A pass whose dispatch to the stopped supervisor timed out releases its leases until the next pass: once
    // any lease was seen, wait for a moment when one is held again rather than take the no-lease way out below.
    let sawLease = false;
    const driverPort = await until(
      'one coord driving and the other reconciling beside it',
      async () => {
        const holders = await leaseHolders();
        if ([...holders.values()].some((n) => n > 0)) sawLease = true;
        const driving = [portA, portB].find((p) => (holders.get(coords[p]!.child.pid!) ?? 0) > 0);
        // The other coord must have met the driver's leases in a pass of its own (it lists a job only once the job
        // is old enough to reconcile, so a fixed number of passes is not enough).
        if (driving !== undefined)
          return (await metric(driving === portA ? portB : portA, 'writ_reconcile_left_to_other_coords_total')) > 0 ? driving : undefined;
        // Attempts dispatched with no lease held: only without leases (the checks below then show what that does).
        if (sawLease) return undefined;
        const dispatched = Number(
          (
            await ledger.db.query<{ n: number }>('SELECT coalesce(sum(attempts), 0)::int AS n FROM jobs WHERE id = ANY($1::text[])', [batch.map((j) => j.id)])
          )[0]!.n,
        );
        return dispatched >= 2 &&
          (await metric(portA, 'writ_reconcile_passes_total')) > passes[portA]! &&
          (await metric(portB, 'writ_reconcile_passes_total')) > passes[portB]!
          ? portA
          : undefined;
      },
      60_000,
    );
    const survivorPort = driverPort === portA ? portB : portA;
    const driver = coords[driverPort]!;

    // The survivor's streams, opened before anything runs; the driver takes the supervisor's reports.
    const streams = new Map(jobs.map((j) => [j.id, follow(coordUrl[survivorPort]!, j.id)]));
    reports.setBackends([driverPort, survivorPort]);
    supervisor.child.kill('SIGCONT');

    // Once the driver has run a few jobs to the end, SIGKILL it.
    const batchIds = batch.map((j) => j.id);
    const doneIds = async () =>
      (await ledger.db.query<{ id: string }>(`SELECT id FROM jobs WHERE status = 'succeeded' AND id = ANY($1::text[])`, [batchIds])).map((r) => r.id);
    await until('a few jobs done through the driver', async () => ((await doneIds()).length >= 3 ? true : undefined), 60_000);
    const heldAtKill = (await leaseHolders()).get(driver.child.pid!) ?? 0;
    driver.child.kill('SIGKILL');
    const doneBeforeKill = await doneIds();
    await driver.exited();

    const finished = await until(
      'every job finished',
      async () => {
        const rows = await ledger.db.query<{ id: string; status: string; attempts: number }>(
          `SELECT id, status, attempts FROM jobs WHERE status IN ('succeeded', 'failed', 'refused') ORDER BY id`,
        );
        return rows.length === jobs.length ? rows : undefined;
      },
      120_000,
    );
    await until('every stream on the survivor to end', async () => ([...streams.values()].every((s) => s.ended) ? true : undefined), 30_000);

    // Every job succeeded, dispatched once (one attempt) and run once (its one log line once).
    expect(finished.map((r) => [r.id, r.status, Number(r.attempts)])).toEqual(
      jobs
        .map((j) => j.id)
        .sort()
        .map((id) => [id, 'succeeded', 1]),
    );
    for (const j of jobs) {
      expect(
        (await ledger.listAttempts(j.id)).map((a) => [a.attempt, a.outcome]),
        j.id,
      ).toEqual([[1, 'succeeded']]);
      const events = await ledger.listJobEvents(j.id, 0, 1000);
      expect(
        events.filter((e) => e.type === 'log' && e.message === `ran ${j.i}`),
        j.id,
      ).toHaveLength(1);
      // The survivor's stream carried every event the ledger holds, in order, ending with the success.
      expect(streams.get(j.id)!.seqs, j.id).toEqual(events.map((e) => e.seq));
      expect(streams.get(j.id)!.statuses.at(-1), j.id).toBe('succeeded');
    }
    // Jobs the driver ran to the end before it died: everything after their stream opened was recorded by the
    // driver, so only the relay (LISTEN/NOTIFY) can have brought it to the survivor's streams, which ended.
    expect(doneBeforeKill.length).toBeGreaterThanOrEqual(3);
    for (const id of doneBeforeKill) expect([streams.get(id)!.ended, streams.get(id)!.statuses.at(-1)], id).toEqual([true, 'succeeded']);
    // The survivor met the driver's leases and left those jobs to it.
    expect(await metric(survivorPort, 'writ_reconcile_left_to_other_coords_total')).toBeGreaterThan(0);
    console.log(
      `two coords: driver ${driverPort === portA ? 'A' : 'B'} held ${heldAtKill} job leases when SIGKILLed with ${doneBeforeKill.length}/${JOBS} waiting jobs done (${jobs.length - JOBS} probes); reports served ${JSON.stringify(Object.fromEntries(reports.served))}`,
    );
  }, 600_000);
});
