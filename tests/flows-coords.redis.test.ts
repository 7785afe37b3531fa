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
//
// A second flow loses its driver between the commit that records a step's job and the enqueue: the coords'
// calls to the supervisor go through a relay the test holds, the driver records the job and is SIGKILLed while
// it waits on the supervisor. The other coord's reconciler enqueues that attempt (once) and the flow finishes.
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLedger, type Ledger } from '@writ/coord';
import { startEmbeddedRedis, type EmbeddedRedis } from '@writ/cli';
import {
  PAYLOAD_TYPES,
  b64url,
  bootstrapKeySet,
  encodeEnvelope,
  encodeFlowPayload,
  encodeKeySet,
  encodePrivateKeyFile,
  encodePublicKeyFile,
  generateKeyPair,
  signEnvelope,
  stepScript,
  type FlowPayload,
  type FlowStep,
} from '@writ/protocol';
import { startBalancer, type Balancer } from './helpers/balancer.ts';
import { startTestPostgres, type TestPostgres } from './helpers/postgres.ts';
import { freePort, killAllWrit, startWrit, until, type WritProcess } from './helpers/processes.ts';

const postgres = await startTestPostgres();
if (!postgres.ok) console.warn(`skipping the two-coord flow test: ${postgres.reason}`);

const NODES = ['n1', 'n2'];

let pg: TestPostgres;
let dir: string;
let redis: EmbeddedRedis;
let ledger: Ledger | undefined;
const balancers: Balancer[] = [];
const relays: { close(): Promise<void> }[] = [];
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
  for (const r of relays) await r.close();
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

interface HoldingRelay {
  port: number;
  /** From now on, bytes from the coords wait here instead of reaching the supervisor. */
  hold(): void;
  /** Forwards what waited, for the connections still open; a coord that went away meanwhile reached nothing. */
  release(): void;
  close(): Promise<void>;
}

/**
 * A TCP relay between the coords and the supervisor's API that can hold traffic: while held, what a coord
 * sends waits in the relay, so a coord killed meanwhile has handed the supervisor nothing (with a SIGSTOPped
 * supervisor, the kernel would keep the dead coord's request and the supervisor would serve it when resumed).
 */
async function startHoldingRelay(targetPort: number): Promise<HoldingRelay> {
  let held = false;
  const open = new Map<Socket, { upstream: Socket; queue: Buffer[] }>();
  const server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    const conn = { upstream, queue: [] as Buffer[] };
    open.set(client, conn);
    upstream.on('data', (d: Buffer) => client.write(d));
    client.on('data', (d: Buffer) => (held ? conn.queue.push(d) : upstream.write(d)));
    const drop = () => {
      open.delete(client);
      conn.queue = [];
      upstream.destroy();
      client.destroy();
    };
    client.on('end', () => (held ? drop() : upstream.end()));
    client.on('close', drop);
    upstream.on('close', () => client.destroy());
    client.on('error', () => {});
    upstream.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    hold: () => {
      held = true;
    },
    release: () => {
      held = false;
      for (const conn of open.values()) for (const d of conn.queue.splice(0)) conn.upstream.write(d);
    },
    close: () =>
      new Promise<void>((r) => {
        for (const client of open.keys()) client.destroy();
        server.close(() => r());
      }),
  };
}

interface Ctx {
  ports: [number, number];
  coords: Record<number, WritProcess>;
  supervisor: WritProcess;
  relay: HoldingRelay;
  reports: Balancer;
  coordUrl: Record<number, string>;
  api(port: number, method: string, route: string, body?: string): Promise<{ status: number; body: any }>;
  startCoord(port: number): Promise<WritProcess>;
}
let c: Ctx;

const signFlow = (id: string, steps: FlowStep[]) => {
  const nowS = Math.floor(Date.now() / 1000);
  const flow: FlowPayload = { id, steps, aud: 'writ-dev', nonce: b64url(crypto.getRandomValues(new Uint8Array(16))), iat: nowS, exp: nowS + 900 };
  return encodeEnvelope(signEnvelope(PAYLOAD_TYPES.flow, encodeFlowPayload(flow), [admin]));
};

const stepJobs = async (flowId: string) =>
  ledger!.db.query<{ job_id: string; step: string; node: string; status: string; attempts: number }>(
    'SELECT fj.job_id, fj.step, fj.node, j.status, j.attempts FROM flow_jobs fj JOIN jobs j ON j.id = fj.job_id WHERE fj.flow_id = $1 ORDER BY fj.job_id',
    [flowId],
  );

/** The pid of the coord holding a flow's lease (its coordination session's application_name), or null. */
async function flowLeaseHolder(flowId: string): Promise<number | null> {
  const rows = await ledger!.db.query<{ app: string }>(
    `SELECT a.application_name AS app FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.classid = hashtext('writ.flow')::oid AND l.objid = hashtext($1)::oid`,
    [flowId],
  );
  if (rows.length > 1) throw new Error(`two sessions hold the lease of flow ${flowId}: ${rows.map((r) => r.app).join('; ')}`);
  return rows[0] ? Number(rows[0].app.split(' ')[2]) : null;
}

/** Waits for a coord to hold the flow's lease; it takes the supervisor's reports from then on. Returns [driver, other]. */
async function driverOf(flowId: string): Promise<[number, number]> {
  const driver = await until(
    `one coord holding the lease of flow ${flowId}`,
    async () => {
      const pid = await flowLeaseHolder(flowId);
      return c.ports.find((p) => c.coords[p]!.child.pid === pid);
    },
    60_000,
  );
  const other = driver === c.ports[0] ? c.ports[1] : c.ports[0];
  c.reports.setBackends([driver, other]);
  return [driver, other];
}

/** Counts the `start` records (one per execution of an attempt) in a node's effect journal of a job. */
async function journalStarts(node: string, jobId: string): Promise<number> {
  const files = await readdir(path.join(dir, `runner-${node}`, 'journal')).catch(() => [] as string[]);
  if (!files.includes(`${jobId}.jsonl`)) return 0;
  const text = await readFile(path.join(dir, `runner-${node}`, 'journal', `${jobId}.jsonl`), 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { t: string })
    .filter((r) => r.t === 'start').length;
}

/**
 * Every step job of the flow succeeded and ran exactly once: one attempt in the ledger, one `start` in its
 * node's effect journal and none in another's, its one log line once in the ledger (and on `stream`).
 */
async function expectEachStepJobRanOnce(flowId: string, expected: string[], stream?: FlowStream): Promise<void> {
  const jobs = await stepJobs(flowId);
  expect(jobs.map((j) => [j.job_id, j.status, Number(j.attempts)])).toEqual(expected.map((id) => [id, 'succeeded', 1]));
  for (const j of jobs) {
    expect(
      (await ledger!.listAttempts(j.job_id)).map((a) => [a.attempt, a.outcome]),
      j.job_id,
    ).toEqual([[1, 'succeeded']]);
    expect(await journalStarts(j.node, j.job_id), `${j.job_id}: runs on ${j.node}`).toBe(1);
    for (const other of NODES.filter((n) => n !== j.node)) expect(await journalStarts(other, j.job_id), `${j.job_id}: runs on ${other}`).toBe(0);
    const line = `ran ${j.job_id} attempt 1`;
    expect(
      (await ledger!.listJobEvents(j.job_id, 0, 1000)).filter((e) => e.type === 'log' && e.message === line),
      j.job_id,
    ).toHaveLength(1);
    if (stream)
      expect(
        stream.logs.filter((l) => l.job === j.job_id && l.message === line),
        `${j.job_id} on the survivor's stream`,
      ).toHaveLength(1);
  }
}

/** What the coords and the ledger say about a flow, for a failed wait. */
async function diagnose(flowId: string): Promise<string> {
  const out: string[] = [`lease ${await flowLeaseHolder(flowId).catch((e) => (e as Error).message)}`];
  for (const j of await stepJobs(flowId)) out.push(`${j.job_id}: ${(await ledger!.listJobEvents(j.job_id, 0, 100)).map((e) => e.message).join(' | ')}`);
  for (const p of c.ports) {
    const proc = c.coords[p]!;
    out.push(
      `coord :${p} pid ${proc.child.pid}${proc.child.exitCode !== null || proc.child.signalCode !== null ? ' (gone)' : ''}: flow ${JSON.stringify((await c.api(p, 'GET', `/v1/flows/${flowId}`).catch(() => ({ body: null }))).body)}; stderr ${proc.stderr().slice(-1500)}`,
    );
  }
  return out.join('\n');
}

const waitFlowEnd = (port: number, flowId: string, onPoll: () => Promise<void> = async () => {}) =>
  until(
    `flow ${flowId} to end`,
    async () => {
      await onPoll();
      const v = (await c.api(port, 'GET', `/v1/flows/${flowId}`)).body;
      return v?.status && v.status !== 'running' ? v : undefined;
    },
    120_000,
  );

describe.skipIf(!postgres.ok)('a flow on two coords sharing one PostgreSQL', () => {
  beforeAll(async () => {
    const databaseUrl = await pg.freshDatabaseUrl();
    const env = {
      WRIT_HOME: dir,
      WRIT_TOKEN: token,
      WRIT_SUPERVISOR_TOKEN: `test-sup-token-${Math.random().toString(36).slice(2)}`,
      DATABASE_URL: databaseUrl,
    };
    const ports: [number, number] = [await freePort(), await freePort()];
    const [portA, portB] = ports;
    const supPort = await freePort();
    const coordUrl: Record<number, string> = { [portA]: `http://127.0.0.1:${portA}`, [portB]: `http://127.0.0.1:${portB}` };
    const reports = await startBalancer('failover', ports);
    const heartbeats = await startBalancer('roundrobin', ports);
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
    const relay = await startHoldingRelay(supPort);
    relays.push(relay);
    const startCoord = (port: number) =>
      startWrit(
        [
          'coord',
          '--supervisor',
          `http://127.0.0.1:${relay.port}`,
          '--supervisor-key',
          String(supervisor.ready.publicKeyFile),
          '--listen',
          `127.0.0.1:${port}`,
          '--state',
          path.join(dir, `coord-${port}`),
          '--admin-key',
          adminPub,
        ],
        env,
      );
    const coords: Record<number, WritProcess> = { [portA]: await startCoord(portA) };
    c = { ports, coords, supervisor, relay, reports, coordUrl, api, startCoord };
    const ks = bootstrapKeySet({ cluster: 'writ-dev', admin: { keyid: admin.keyid, publicKey: b64url(admin.publicKey) }, nowS: Math.floor(Date.now() / 1000) });
    const published = await api(portA, 'POST', '/v1/keyset', encodeEnvelope(signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(ks), [admin])));
    if (published.status !== 201) throw new Error(`publishing the key set answered ${published.status}: ${JSON.stringify(published.body)}`);
    coords[portB] = await startCoord(portB);
    ledger = await openLedger({ databaseUrl });

    // Two nodes (n2 also tier=b), accepted through A; both coords must see them active before a flow (a
    // fan-out step runs on the matching nodes the driving coord sees).
    for (const node of NODES) {
      await startWrit(
        [
          'runner',
          '--node',
          node,
          '--label',
          'role=hv',
          ...(node === 'n2' ? ['--label', 'tier=b'] : []),
          '--coord',
          heartbeats.url,
          '--redis',
          redis.url,
          '--admin-key',
          adminPub,
          '--state',
          path.join(dir, `runner-${node}`),
          '--heartbeat-ms',
          '500',
        ],
        env,
      );
    }
    for (const node of NODES) {
      await until(
        `node ${node} registering`,
        async () => ((await api(portA, 'GET', `/v1/nodes/${node}`)).body?.state === 'inspected' ? true : undefined),
        30_000,
      );
      const acc = await api(portA, 'POST', `/v1/nodes/${node}/accept`, JSON.stringify({ reason: 'test' }));
      if (acc.status !== 200) throw new Error(`accepting ${node} answered ${acc.status}: ${JSON.stringify(acc.body)}`);
    }
    for (const port of ports) {
      for (const node of NODES)
        await until(
          `node ${node} active on :${port}`,
          async () => ((await api(port, 'GET', `/v1/nodes/${node}`)).body?.state === 'active' ? true : undefined),
          30_000,
        );
    }
  }, 180_000);

  it('SIGKILL the coord driving a flow while its fan-out step runs: the other finishes it, every step job run exactly once, its SSE stream sees it all', async () => {
    const t0 = Date.now();
    const marks: string[] = [];
    const mark = (what: string) => marks.push(`${what} ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    const FLOW = 'kill-driver';
    // prep (n1) → fan (every role=hv node, with prep's device) → join (n2, with fan's results) → last (n1).
    const steps: FlowStep[] = [
      step('prep', sleeper(1500, '({ device: "/dev/vdb" })')),
      // Long enough that the kill lands while it runs: finding the driver (its lease, taken on a reconcile pass)
      // took longer than prep and a 5 s fan-out together in a loaded clean-clone run, and the flow had moved on.
      step('fan', sleeper(20_000, '({ device: args.inputs.device, job: ctx.job.id })'), {
        target: { selector: { role: 'hv' } },
        each: true,
        maxParallel: 2,
        depends: ['prep'],
        inputs: { device: { from: 'prep', path: 'device' } },
      }),
      step('join', sleeper(1500, 'Object.keys(args.inputs.fan).sort()'), { target: { node: 'n2' }, depends: ['fan'], inputs: { fan: { from: 'fan' } } }),
      step('last', sleeper(1500, '({ nodes: args.inputs.nodes, device: args.inputs.device })'), {
        depends: ['join', 'prep'],
        inputs: { nodes: { from: 'join' }, device: { from: 'prep', path: 'device' } },
      }),
    ];
    const submitted = await c.api(c.ports[0], 'POST', '/v1/flows', signFlow(FLOW, steps));
    expect(submitted.status, JSON.stringify(submitted.body)).toBe(202);

    // The coord that drives the flow: the one holding its lease (taken on its first reconcile pass and kept
    // while the flow runs); it takes the supervisor's reports from now on too, so the steps' results reach it.
    const [driverPort, survivorPort] = await driverOf(FLOW);
    mark('driver known');
    const driver = c.coords[driverPort]!;
    // The survivor's stream, opened before the kill.
    const stream = followFlow(c.coordUrl[survivorPort]!, FLOW);

    // Mid-flow: the fan-out step runs (on a loaded machine the two nodes' runs need not overlap in the ledger:
    // one running is enough). Then the driver is SIGKILLed.
    await until(
      'the fan-out step running',
      async () => {
        const fan = (await stepJobs(FLOW)).filter((j) => j.step === 'fan');
        return fan.length === NODES.length && fan.some((j) => j.status === 'running') ? true : undefined;
      },
      60_000,
    ).catch(async (e) => {
      throw new Error(
        `${(e as Error).message}: ${JSON.stringify(await stepJobs(FLOW))} ${JSON.stringify((await c.api(survivorPort, 'GET', `/v1/flows/${FLOW}`)).body)}`,
      );
    });
    const atKill = await stepJobs(FLOW);
    const holderAtKill = await flowLeaseHolder(FLOW);
    const killedAt = Date.now();
    mark('kill');
    driver.child.kill('SIGKILL');
    await driver.exited();
    expect(holderAtKill, 'the driver held the flow lease when it was killed').toBe(driver.child.pid);
    expect(
      atKill.filter((j) => j.step === 'join' || j.step === 'last'),
      'nothing after the fan-out had started when the driver was killed',
    ).toEqual([]);

    // The survivor finishes the flow and takes its lease (seen while the flow still runs).
    let survivorLeased = false;
    const view = await waitFlowEnd(survivorPort, FLOW, async () => {
      if ((await flowLeaseHolder(FLOW)) === c.coords[survivorPort]!.child.pid) survivorLeased = true;
    });
    mark('flow finished');
    expect(view.status, JSON.stringify(view)).toBe('succeeded');
    expect(view.stepList.map((x: { name: string; status: string }) => [x.name, x.status])).toEqual(steps.map((x) => [x.name, 'succeeded']));
    expect(survivorLeased, "the survivor took the flow's lease after the driver died").toBe(true);
    // The steps after the fan-out were started after the kill: by the survivor.
    const started = new Map(
      (await ledger!.db.query<{ step: string; started_at: Date }>('SELECT step, started_at FROM flow_steps WHERE flow_id = $1', [FLOW])).map((r) => [
        r.step,
        new Date(r.started_at).getTime(),
      ]),
    );
    for (const name of ['join', 'last']) expect(started.get(name)!, name).toBeGreaterThan(killedAt);
    // Inputs came through the kill: the last step saw both fan-out nodes (through join) and prep's device.
    expect((await ledger!.getJob(`${FLOW}.last`))?.result).toEqual({ nodes: NODES, device: '/dev/vdb' });

    await until("the survivor's stream to end", async () => (stream.ended ? true : undefined), 30_000);
    await expectEachStepJobRanOnce(FLOW, [`${FLOW}.fan.n1`, `${FLOW}.fan.n2`, `${FLOW}.join`, `${FLOW}.last`, `${FLOW}.prep`], stream);
    // The survivor's stream carried every flow event the ledger holds, in order, ending with the success.
    const recorded = await ledger!.db.query<{ seq: number }>('SELECT seq FROM flow_events WHERE flow_id = $1 ORDER BY seq', [FLOW]);
    expect(stream.events.map((e) => e.seq)).toEqual(recorded.map((r) => Number(r.seq)));
    expect(stream.events.at(-1)).toMatchObject({ type: 'flow', status: 'succeeded' });
    for (const name of steps.map((x) => x.name))
      expect(
        stream.events.filter((e) => e.step === name && e.status === 'succeeded'),
        name,
      ).toHaveLength(1);

    // A flow that ended gives its lease back on the survivor's next pass.
    await until("the flow's lease given back", async () => ((await flowLeaseHolder(FLOW)) === null ? true : undefined), 30_000);
    console.log(
      `flow on two coords: driver :${driverPort} killed with ${atKill.map((j) => `${j.job_id}=${j.status}`).join(', ')}; reports served ${JSON.stringify(Object.fromEntries(c.reports.served))}; ${marks.join(', ')}`,
    );

    // The killed coord comes back on its port for the next test.
    c.coords[driverPort] = await c.startCoord(driverPort);
  }, 180_000);

  it('SIGKILL the coord driving a flow after it recorded a step and before the supervisor had it: the other enqueues it, it runs once, the flow finishes', async () => {
    const t0 = Date.now();
    const marks: string[] = [];
    const mark = (what: string) => marks.push(`${what} ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    const FLOW = 'kill-before-enqueue';
    const steps: FlowStep[] = [
      step('prep', sleeper(5000, '({ device: "/dev/vdc" })')),
      step('fan', sleeper(500, '({ device: args.inputs.device })'), {
        target: { selector: { role: 'hv' } },
        each: true,
        depends: ['prep'],
        inputs: { device: { from: 'prep', path: 'device' } },
      }),
      step('after', sleeper(200, 'args.inputs.fan'), { depends: ['fan'], inputs: { fan: { from: 'fan' } } }),
    ];
    const submitted = await c.api(c.ports[0], 'POST', '/v1/flows', signFlow(FLOW, steps));
    expect(submitted.status, JSON.stringify(submitted.body)).toBe(202);
    const [driverPort, survivorPort] = await driverOf(FLOW);
    mark('driver known');
    const driver = c.coords[driverPort]!;
    const prepStatus = async () => (await stepJobs(FLOW)).find((j) => j.step === 'prep')?.status;
    await until('prep running', async () => ((await prepStatus()) === 'running' ? true : undefined), 60_000).catch(async (e) => {
      throw new Error(`${(e as Error).message}:\n${await diagnose(FLOW)}`);
    });

    // The coords' calls to the supervisor are held from here on, while prep still runs. Its result reaches the
    // driver (the supervisor's reports are not held), which records the fan-out's jobs (attempt 1, in the ledger
    // first) and then waits handing them to the supervisor: it is SIGKILLed right there, nothing enqueued.
    c.relay.hold();
    mark('held');
    try {
      const recorded = await until(
        'the driver to record the fan-out jobs',
        async () => {
          const fan = (await stepJobs(FLOW)).filter((j) => j.step === 'fan');
          return fan.length === NODES.length ? fan : undefined;
        },
        60_000,
      ).catch(async (e) => {
        throw new Error(`${(e as Error).message}: driver pid ${driver.child.pid}\n${await diagnose(FLOW)}`);
      });
      expect(recorded.map((j) => [j.status, Number(j.attempts)])).toEqual(NODES.map(() => ['queued', 1]));
      expect(await flowLeaseHolder(FLOW), 'the driver held the flow lease when it was killed').toBe(driver.child.pid);
      driver.child.kill('SIGKILL');
      await driver.exited();
    } finally {
      c.relay.release();
    }
    const killedAt = Date.now();
    mark('kill');

    const view = await waitFlowEnd(survivorPort, FLOW).catch(async (e) => {
      throw new Error(`${(e as Error).message}:\n${await diagnose(FLOW)}`);
    });
    mark('flow finished');
    expect(view.status, JSON.stringify(view)).toBe('succeeded');
    expect((await ledger!.getJob(`${FLOW}.after`))?.result).toEqual({ n1: { device: '/dev/vdc' }, n2: { device: '/dev/vdc' } });
    await expectEachStepJobRanOnce(FLOW, [`${FLOW}.after`, `${FLOW}.fan.n1`, `${FLOW}.fan.n2`, `${FLOW}.prep`]);
    // The survivor's reconciler found each recorded attempt missing from the queue and enqueued it (once).
    const lines: string[] = [];
    for (const node of NODES) {
      const events = await ledger!.listJobEvents(`${FLOW}.fan.${node}`, 0, 1000);
      expect(
        events.filter((e) => e.message.startsWith(`attempt 1 enqueued again on ${node}`)),
        `${FLOW}.fan.${node} enqueued by the survivor`,
      ).toHaveLength(1);
      lines.push(`${node}: ${events.map((e) => `${((e.at.getTime() - killedAt) / 1000).toFixed(1)}s ${e.message}`).join(' | ')}`);
    }
    console.log(`flow on two coords, killed before the enqueue (${marks.join(', ')}): ${lines.join('; ')}`);
  }, 180_000);
});
