// Two coords on one PostgreSQL drive a flow (issue 10, parts 2 and 3), as processes: `writ coord` twice on a
// PostgreSQL 15 the test starts on loopback, one `writ supervisor`, two `writ runner`s (n1, n2, labelled
// role=hv), a real Redis, and HTTP balancers in front of the coords (tests/helpers/balancer.ts): the
// supervisor's reports go to one coord and fail over to the other, the nodes' heartbeats go round-robin.
//
// A signed four-step flow (one step fanned out over both nodes, inputs wired from signed results) is submitted;
// once one coord holds the flow's lease (`writ.flow`, a PostgreSQL advisory lock) and the fan-out step runs,
// that coord is SIGKILLed. The other coord finishes the flow: every step succeeds, each step job ran
// exactly once (one attempt in the ledger, one `start` in its node's effect journal, one log line), the steps
// after the kill were started by the survivor, which took the flow's lease, and the survivor's SSE stream,
// opened before the kill, carried every flow event and every step's log line to the end.
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLedger, type Ledger } from '@writ/coord';
import { startEmbeddedRedis, type EmbeddedRedis } from '@writ/cli';
import {
  PAYLOAD_TYPES, b64url, bootstrapKeySet, encodeEnvelope, encodeFlowPayload, encodeKeySet, encodePrivateKeyFile, encodePublicKeyFile, generateKeyPair, signEnvelope, stepScript,
  type FlowPayload, type FlowStep,
} from '@writ/protocol';
import { startBalancer, type Balancer } from './helpers/balancer.ts';
import { startTestPostgres, type TestPostgres } from './helpers/postgres.ts';
import { freePort, killAllWrit, startWrit, until, type WritProcess } from './helpers/processes.ts';

const postgres = await startTestPostgres();
if (!postgres.ok) console.warn(`skipping the two-coord flow test: ${postgres.reason}`);

const NODES = ['n1', 'n2'];
const FLOW = 'kill-driver';

let pg: TestPostgres;
let dir: string;
let redis: EmbeddedRedis;
let ledger: Ledger | undefined;
const balancers: Balancer[] = [];
const admin = generateKeyPair();
const token = `test-api-token-${Math.random().toString(36).slice(2)}`;

beforeAll(async () => {
  if (!postgres.ok) return;
  pg = postgres.pg;
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-flow-coords-'));
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

/** A step script that logs one line naming its job and attempt, sleeps `ms`, then returns `value` (a JS expression). */
const sleeper = (ms: number, value: string) =>
  `export default async (args, ctx) => { ctx.log.info("ran " + ctx.job.id + " attempt " + ctx.job.attempt); await ctx.sal.time.sleep({ ms: ${ms} }); return ${value} }`;

function step(name: string, source: string, more: Partial<FlowStep> = {}): FlowStep {
  return { name, script: stepScript(source), target: { node: 'n1' }, caps: ['time.sleep'], limits: { timeoutMs: 60_000, memoryMiB: 64 }, depends: [], ...more };
}

interface FlowStream {
  /** Flow and step events: seq, type, message, status. */
  events: { seq: number; type: string; step: string | null; status?: string }[];
  /** Log lines of the steps' jobs. */
  logs: { job: string; message: string }[];
  ended: boolean;
}

/** Follows a flow's SSE stream on one coord until its `end` event. */
function followFlow(coordUrl: string, id: string): FlowStream {
  const s: FlowStream = { events: [], logs: [], ended: false };
  void (async () => {
    const res = await fetch(`${coordUrl}/v1/flows/${id}/events`, { headers: { authorization: `Bearer ${token}` } });
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
        const ev = JSON.parse(data) as { seq?: number; type?: string; step?: string | null; job?: string; message: string; data?: { status?: string } | null };
        if (event === 'log') s.logs.push({ job: ev.job!, message: ev.message });
        else s.events.push({ seq: ev.seq!, type: ev.type!, step: ev.step ?? null, ...(ev.data?.status ? { status: ev.data.status } : {}) });
      }
    }
  })().catch(() => {});
  return s;
}

describe.skipIf(!postgres.ok)('a flow on two coords sharing one PostgreSQL', () => {
  it('SIGKILL the coord driving a flow mid-flow: the other finishes it, every step job run exactly once, its SSE stream sees it all', async () => {
    const t0 = Date.now();
    const marks: string[] = [];
    const mark = (what: string) => marks.push(`${what} ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    const databaseUrl = await pg.freshDatabaseUrl();
    const env = { WRIT_HOME: dir, WRIT_TOKEN: token, WRIT_SUPERVISOR_TOKEN: `test-sup-token-${Math.random().toString(36).slice(2)}`, DATABASE_URL: databaseUrl };
    const [portA, portB, supPort] = [await freePort(), await freePort(), await freePort()];
    const coordUrl: Record<number, string> = { [portA]: `http://127.0.0.1:${portA}`, [portB]: `http://127.0.0.1:${portB}` };
    const reports = await startBalancer('failover', [portA, portB]);
    const heartbeats = await startBalancer('roundrobin', [portA, portB]);
    balancers.push(reports, heartbeats);
    const adminPub = path.join(dir, 'admin.pub');
    const api = async (port: number, method: string, route: string, body?: string) => {
      const r = await fetch(`${coordUrl[port]}${route}`, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body } : {}) });
      const text = await r.text();
      return { status: r.status, body: text.startsWith('{') ? JSON.parse(text) : text };
    };

    const supervisor = await startWrit(['supervisor', '--coord', reports.url, '--redis', redis.url, '--listen', `127.0.0.1:${supPort}`, '--state', path.join(dir, 'sup'), '--admin-key', adminPub], env);
    const coord = (port: number, name: string) => startWrit(['coord', '--supervisor', `http://127.0.0.1:${supPort}`, '--supervisor-key', String(supervisor.ready.publicKeyFile), '--listen', `127.0.0.1:${port}`,
      '--state', path.join(dir, name), '--admin-key', adminPub], env);
    const coords: Record<number, WritProcess> = { [portA]: await coord(portA, 'coord-a') };
    const ks = bootstrapKeySet({ cluster: 'writ-dev', admin: { keyid: admin.keyid, publicKey: b64url(admin.publicKey) }, nowS: Math.floor(Date.now() / 1000) });
    expect((await api(portA, 'POST', '/v1/keyset', encodeEnvelope(signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(ks), [admin])))).status).toBe(201);
    coords[portB] = await coord(portB, 'coord-b');
    ledger = await openLedger({ databaseUrl });
    const db = ledger.db;

    // Two nodes, accepted through A; both coords must see them active before the flow (a fan-out step runs on
    // the matching nodes the driving coord sees).
    for (const node of NODES) {
      await startWrit(['runner', '--node', node, '--label', 'role=hv', '--coord', heartbeats.url, '--redis', redis.url, '--admin-key', adminPub, '--state', path.join(dir, `runner-${node}`), '--heartbeat-ms', '500'], env);
    }
    for (const node of NODES) {
      await until(`node ${node} registering`, async () => ((await api(portA, 'GET', `/v1/nodes/${node}`)).body?.state === 'inspected' ? true : undefined), 30_000);
      const acc = await api(portA, 'POST', `/v1/nodes/${node}/accept`, JSON.stringify({ reason: 'test' }));
      expect(acc.status, JSON.stringify(acc.body)).toBe(200);
    }
    for (const port of [portA, portB]) {
      for (const node of NODES) await until(`node ${node} active on :${port}`, async () => ((await api(port, 'GET', `/v1/nodes/${node}`)).body?.state === 'active' ? true : undefined), 30_000);
    }

    mark('nodes active');
    // prep (n1) → fan (every role=hv node, with prep's device) → join (n2, with fan's results) → last (n1).
    const steps: FlowStep[] = [
      step('prep', sleeper(1500, '({ device: "/dev/vdb" })')),
      step('fan', sleeper(5000, '({ device: args.inputs.device, job: ctx.job.id })'), { target: { selector: { role: 'hv' } }, each: true, maxParallel: 2, depends: ['prep'], inputs: { device: { from: 'prep', path: 'device' } } }),
      step('join', sleeper(1500, 'Object.keys(args.inputs.fan).sort()'), { target: { node: 'n2' }, depends: ['fan'], inputs: { fan: { from: 'fan' } } }),
      step('last', sleeper(1500, '({ nodes: args.inputs.nodes, device: args.inputs.device })'), { depends: ['join', 'prep'], inputs: { nodes: { from: 'join' }, device: { from: 'prep', path: 'device' } } }),
    ];
    const nowS = Math.floor(Date.now() / 1000);
    const flow: FlowPayload = { id: FLOW, steps, aud: 'writ-dev', nonce: b64url(crypto.getRandomValues(new Uint8Array(16))), iat: nowS, exp: nowS + 900 };
    const submitted = await api(portA, 'POST', '/v1/flows', encodeEnvelope(signEnvelope(PAYLOAD_TYPES.flow, encodeFlowPayload(flow), [admin])));
    expect(submitted.status, JSON.stringify(submitted.body)).toBe(202);

    // The coord that drives the flow: the one holding its lease (taken on its first reconcile pass and kept
    // while the flow runs). It takes the supervisor's reports from now on too, so the steps' results reach it.
    const pidOf = (port: number) => coords[port]!.child.pid!;
    const flowLeaseHolder = async (): Promise<number | null> => {
      const rows = await db.query<{ app: string }>(
        `SELECT a.application_name AS app FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid = hashtext('writ.flow')::oid AND l.objid = hashtext($1)::oid`,
        [FLOW],
      );
      if (rows.length > 1) throw new Error(`two sessions hold the lease of flow ${FLOW}: ${rows.map((r) => r.app).join('; ')}`);
      return rows[0] ? Number(rows[0].app.split(' ')[2]) : null;
    };
    const driverPort = await until('one coord holding the flow\'s lease', async () => {
      const pid = await flowLeaseHolder();
      return [portA, portB].find((p) => pidOf(p) === pid);
    }, 60_000);
    const survivorPort = driverPort === portA ? portB : portA;
    mark('driver known');
    reports.setBackends([driverPort, survivorPort]);
    const driver = coords[driverPort]!;

    // The survivor's stream, opened before the kill.
    const stream = followFlow(coordUrl[survivorPort]!, FLOW);

    // Mid-flow: the fan-out step runs. Then the driver is SIGKILLed.
    const stepJobs = async () => db.query<{ job_id: string; step: string; node: string; status: string; attempts: number }>(
      'SELECT fj.job_id, fj.step, fj.node, j.status, j.attempts FROM flow_jobs fj JOIN jobs j ON j.id = fj.job_id WHERE fj.flow_id = $1 ORDER BY fj.job_id', [FLOW],
    );
    // (On a loaded machine the two nodes' runs need not overlap in the ledger: one running is enough.)
    await until('the fan-out step running', async () => {
      const fan = (await stepJobs()).filter((j) => j.step === 'fan');
      return fan.length === NODES.length && fan.some((j) => j.status === 'running') ? true : undefined;
    }, 60_000).catch(async (e) => {
      throw new Error(`${(e as Error).message}: ${JSON.stringify(await stepJobs())} ${JSON.stringify((await api(survivorPort, 'GET', `/v1/flows/${FLOW}`)).body)}`);
    });
    const atKill = await stepJobs();
    const holderAtKill = await flowLeaseHolder();
    const killedAt = Date.now();
    mark('kill');
    driver.child.kill('SIGKILL');
    await driver.exited();
    expect(holderAtKill, 'the driver held the flow lease when it was killed').toBe(driver.child.pid);
    expect(atKill.filter((j) => j.step === 'join' || j.step === 'last'), 'nothing after the fan-out had started when the driver was killed').toEqual([]);

    // The survivor finishes the flow and takes its lease (seen while the flow still runs).
    let survivorLeased = false;
    const view = await until('the survivor to finish the flow', async () => {
      if ((await flowLeaseHolder()) === pidOf(survivorPort)) survivorLeased = true;
      const v = (await api(survivorPort, 'GET', `/v1/flows/${FLOW}`)).body;
      return v?.status && v.status !== 'running' ? v : undefined;
    }, 120_000);
    mark('flow finished');
    expect(view.status, JSON.stringify(view)).toBe('succeeded');
    expect(view.stepList.map((x: { name: string; status: string }) => [x.name, x.status])).toEqual(steps.map((x) => [x.name, 'succeeded']));
    expect(survivorLeased, 'the survivor took the flow\'s lease after the driver died').toBe(true);
    // The steps after the fan-out were started after the kill: by the survivor.
    const started = new Map((await db.query<{ step: string; started_at: Date }>('SELECT step, started_at FROM flow_steps WHERE flow_id = $1', [FLOW])).map((r) => [r.step, new Date(r.started_at).getTime()]));
    for (const name of ['join', 'last']) expect(started.get(name)!, name).toBeGreaterThan(killedAt);
    // Inputs came through the kill: the last step saw both fan-out nodes (through join) and prep's device.
    expect((await ledger.getJob(`${FLOW}.last`))?.result).toEqual({ nodes: NODES, device: '/dev/vdb' });

    // Every step job ran exactly once: one attempt in the ledger, one `start` in its node's effect journal (and
    // in no other node's), one log line in the ledger and one on the survivor's stream.
    const jobs = await stepJobs();
    const expected = [`${FLOW}.fan.n1`, `${FLOW}.fan.n2`, `${FLOW}.join`, `${FLOW}.last`, `${FLOW}.prep`];
    expect(jobs.map((j) => [j.job_id, j.status, Number(j.attempts)])).toEqual(expected.map((id) => [id, 'succeeded', 1]));
    await until('the survivor\'s stream to end', async () => (stream.ended ? true : undefined), 30_000);
    const journalStarts = async (node: string, jobId: string) => {
      const files = await readdir(path.join(dir, `runner-${node}`, 'journal')).catch(() => [] as string[]);
      if (!files.includes(`${jobId}.jsonl`)) return 0;
      const text = await readFile(path.join(dir, `runner-${node}`, 'journal', `${jobId}.jsonl`), 'utf8');
      return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { t: string }).filter((r) => r.t === 'start').length;
    };
    for (const j of jobs) {
      expect((await ledger.listAttempts(j.job_id)).map((a) => [a.attempt, a.outcome]), j.job_id).toEqual([[1, 'succeeded']]);
      expect(await journalStarts(j.node, j.job_id), `${j.job_id}: runs on ${j.node}`).toBe(1);
      expect(await journalStarts(j.node === 'n1' ? 'n2' : 'n1', j.job_id), `${j.job_id}: runs elsewhere`).toBe(0);
      const line = `ran ${j.job_id} attempt 1`;
      expect((await ledger.listJobEvents(j.job_id, 0, 1000)).filter((e) => e.type === 'log' && e.message === line), j.job_id).toHaveLength(1);
      expect(stream.logs.filter((l) => l.job === j.job_id && l.message === line), `${j.job_id} on the survivor's stream`).toHaveLength(1);
    }

    // The survivor's stream carried every flow event the ledger holds, in order, ending with the success.
    const recorded = await db.query<{ seq: number }>('SELECT seq FROM flow_events WHERE flow_id = $1 ORDER BY seq', [FLOW]);
    expect(stream.events.map((e) => e.seq)).toEqual(recorded.map((r) => Number(r.seq)));
    expect(stream.events.at(-1)).toMatchObject({ type: 'flow', status: 'succeeded' });
    for (const name of steps.map((x) => x.name)) expect(stream.events.filter((e) => e.step === name && e.status === 'succeeded'), name).toHaveLength(1);

    // A flow that ended gives its lease back on the survivor's next pass.
    await until('the flow\'s lease given back', async () => ((await flowLeaseHolder()) === null ? true : undefined), 30_000);
    console.log(`flow on two coords: driver ${driverPort === portA ? 'A' : 'B'} killed with ${atKill.map((j) => `${j.job_id}=${j.status}`).join(', ')}; reports served ${JSON.stringify(Object.fromEntries(reports.served))}; ${marks.join(', ')}`);
  }, 300_000);
});
