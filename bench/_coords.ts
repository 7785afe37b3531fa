// Coords' CPU per job with one coord, then with two coords sharing one PostgreSQL (issue 10): not a benchmark of
// its own (`npm run bench -- flows` calls measureCoords), but runnable alone: `npx tsx bench/_coords.ts [JOBS]`.
//
// Each run starts its own processes on a fresh database: `writ supervisor`, `writ coord` (one or two, with
// DATABASE_URL), one `writ runner`, on one Redis and one PostgreSQL 15 (tests/helpers/postgres.ts). With two
// coords an HTTP balancer in this process (tests/helpers/balancer.ts) spreads the supervisor's reports and the
// runner's heartbeats over both, round robin, and the jobs are submitted to each coord in turn. The figure
// is the coords' own CPU (utime + stime from /proc/PID/stat) from the first submission to the last job
// finished, divided by the jobs; the other processes are not counted. "Driven twice" counts jobs that got
// more than one attempt (every job here needs exactly one). The jobs are offered at a fixed rate
// (BENCH_COORDS_RATE, 100 jobs/s; 0 for as fast as they go), the same for one and two coords: on 2 cores a
// saturated machine makes every operation cost more CPU (the same ed25519 verifications took 40% more CPU
// with two busy coords in a profile), which says nothing about the cost of coordinating. Before each run the
// coords' idle CPU is sampled (their fixed cost: passes, node sync, keep-alives). One and two coords are
// measured in BENCH_COORDS_PAIRS pairs (3; every other pair two coords first), and the figure is the median of the
// pairs' ratios.
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { openLedger } from '@writ/coord';
import { startEmbeddedRedis } from '@writ/cli';
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
import { startBalancer } from '../tests/helpers/balancer.ts';
import { startTestPostgres } from '../tests/helpers/postgres.ts';
import { freePort, killAllWrit, startWrit, until, type WritProcess } from '../tests/helpers/processes.ts';

export interface CoordsRun {
  coords: number;
  jobs: number;
  /** Wall time from the first submission to the last job finished. */
  ms: number;
  /** The coords' CPU, summed, per job. */
  cpuMsPerJob: number;
  /** Per coord, ms of CPU over the run. */
  cpuMsByCoord: number[];
  /** Jobs with more than one attempt (driven twice). */
  drivenTwice: number;
  failed: number;
  /** The coords' CPU, summed, per second while idle (measured before the run, after the warm-up): their fixed cost. */
  idleCpuMsPerS: number;
  /** The coords' ledger statements, summed, per second while idle (the same window), less those of the bench's own /metrics reads. */
  idleStatementsPerS: number;
  /** Ledger statements and transactions the coords ran over the run (GET /metrics), summed, per job: machine-independent. */
  statementsPerJob: number;
  transactionsPerJob: number;
  /** The coords' CPU over the run by thread kind (main, V8 workers, libuv pool), summed over coords. */
  cpuMsByThread: Record<string, number>;
}

export interface CoordsBench {
  /** Each pair: one coord, then two coords, on fresh processes and databases. */
  pairs: { one: CoordsRun; two: CoordsRun; ratio: number }[];
  /** Medians over the pairs of the CPU per job with one and with two coords. */
  oneCpuMsPerJob: number;
  twoCpuMsPerJob: number;
  /** The median over the pairs of two.cpuMsPerJob / one.cpuMsPerJob: the goal is at most 1.1. */
  twoCoordsCpuPerJobRatio: number;
  /** The median over the pairs of the ledger statements per job, two coords against one (the same work on any machine). */
  twoCoordsStatementsRatio: number;
  drivenTwice: number;
  /** 1-minute load average before and after. */
  load: [number, number];
}

const TICK_MS = 1000 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim() || 100);
const NOOP = 'export default async () => 1';
/** Jobs through each coord before the measured run (BENCH_COORDS_WARMUP), after the first warm-up job. */
const WARMUP = Number(process.env.BENCH_COORDS_WARMUP ?? 0);
/** BENCH_COORDS_CPU_PROF=DIR: each coord writes a CPU profile there when it stops (`node --cpu-prof`). */
const PROFILE_DIR = process.env.BENCH_COORDS_CPU_PROF;
/** How long the idle CPU is sampled before each run (BENCH_COORDS_IDLE_MS; CPU is counted in 10 ms ticks, so 4 s gives ±2.5 ms/s). */
const IDLE_MS = Number(process.env.BENCH_COORDS_IDLE_MS ?? 4000);
/** Jobs offered per second (0: as fast as the coords take them). */
const RATE = Number(process.env.BENCH_COORDS_RATE ?? 100);

async function cpuMs(pid: number): Promise<number> {
  // Fields after the command (which may hold spaces) in parentheses: utime and stime are the 12th and 13th.
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * TICK_MS;
}

/**
 * A process's CPU (ms) by thread kind, from /proc/PID/task/TID/stat: the main thread, V8's workers (concurrent
 * GC and compilation), libuv's pool. A CPU profile sees only the main thread; this says where the rest went.
 */
async function threadCpuMs(pid: number): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => '');
    if (!stat) continue;
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const kind = tid === String(pid) ? 'main' : comm.replace(/[\d\s]+$/, '');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    out.set(kind, (out.get(kind) ?? 0) + (Number(f[11]) + Number(f[12])) * TICK_MS);
  }
  return out;
}

/** Per thread kind, summed over processes: what `after` has more than `before`. */
function threadDelta(before: Map<string, number>[], after: Map<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  after.forEach((m, i) => {
    for (const [k, v] of m) out[k] = (out[k] ?? 0) + v - (before[i]?.get(k) ?? 0);
  });
  return out;
}

async function run(coordCount: 1 | 2, jobs: number, log: (m: string) => void): Promise<CoordsRun> {
  const pgStart = await startTestPostgres();
  if (!pgStart.ok) throw new Error(`no PostgreSQL for the coords bench: ${pgStart.reason}`);
  const pg = pgStart.pg;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'writ-bench-coords-'));
  const redis = await startEmbeddedRedis({ dataDir: path.join(dir, 'redis') });
  const balancers: { close(): Promise<void> }[] = [];
  const coords: WritProcess[] = [];
  try {
    const databaseUrl = await pg.freshDatabaseUrl();
    const admin = generateKeyPair();
    await writeFile(path.join(dir, 'admin.key'), encodePrivateKeyFile(admin), { mode: 0o600 });
    await writeFile(path.join(dir, 'admin.pub'), encodePublicKeyFile(admin.publicKey));
    const token = `bench-${Math.random().toString(36).slice(2)}`;
    const env = {
      WRIT_HOME: dir,
      WRIT_TOKEN: token,
      WRIT_SUPERVISOR_TOKEN: `bench-sup-${Math.random().toString(36).slice(2)}`,
      DATABASE_URL: databaseUrl,
      WRIT_LOG_LEVEL: 'error',
    };
    const ports = [await freePort(), await freePort()].slice(0, coordCount);
    const supPort = await freePort();
    const front = await startBalancer('roundrobin', ports);
    balancers.push(front);
    const api = async (port: number, method: string, route: string, body?: string) => {
      const r = await fetch(`http://127.0.0.1:${port}${route}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
        ...(body ? { body } : {}),
      });
      const text = await r.text();
      return { status: r.status, body: text.startsWith('{') ? JSON.parse(text) : text };
    };
    const adminPub = path.join(dir, 'admin.pub');
    const sup = await startWrit(
      ['supervisor', '--coord', front.url, '--redis', redis.url, '--listen', `127.0.0.1:${supPort}`, '--state', path.join(dir, 'sup'), '--admin-key', adminPub],
      env,
    );
    const coord = (port: number, i: number) =>
      startWrit(
        [
          'coord',
          '--supervisor',
          `http://127.0.0.1:${supPort}`,
          '--supervisor-key',
          String(sup.ready.publicKeyFile),
          '--listen',
          `127.0.0.1:${port}`,
          '--state',
          path.join(dir, `coord-${i}`),
          '--admin-key',
          adminPub,
        ],
        env,
        PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`, `--cpu-prof-name=coord-${i + 1}of${coordCount}-${Date.now()}.cpuprofile`] : [],
      );
    coords.push(await coord(ports[0]!, 0));
    const ks = bootstrapKeySet({ cluster: 'writ-dev', admin: { keyid: admin.keyid, publicKey: b64url(admin.publicKey) }, nowS: Math.floor(Date.now() / 1000) });
    await api(ports[0]!, 'POST', '/v1/keyset', encodeEnvelope(signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(ks), [admin])));
    await startWrit(
      [
        'runner',
        '--node',
        'bench-1',
        '--coord',
        front.url,
        '--redis',
        redis.url,
        '--admin-key',
        adminPub,
        '--state',
        path.join(dir, 'runner'),
        '--heartbeat-ms',
        '1000',
        '--concurrency',
        '8',
      ],
      env,
    );
    await until(
      'the node registering',
      async () => ((await api(ports[0]!, 'GET', '/v1/nodes/bench-1')).body?.state === 'inspected' ? true : undefined),
      60_000,
    );
    await api(ports[0]!, 'POST', '/v1/nodes/bench-1/accept', JSON.stringify({ reason: 'bench' }));
    await until('the node active', async () => ((await api(ports[0]!, 'GET', '/v1/nodes/bench-1')).body?.state === 'active' ? true : undefined), 60_000);
    // The second coord joins once the node is known (it reads the nodes from the ledger at start).
    if (coordCount === 2) coords.push(await coord(ports[1]!, 1));
    const envelopes = Array.from({ length: jobs }, () =>
      encodeEnvelope(
        signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(buildJobPayload({ source: NOOP, target: { node: 'bench-1' }, aud: 'writ-dev', ttlS: 3600 })), [admin]),
      ),
    );
    // A warm-up job through each coord, so start-up work is not counted; then WARMUP jobs more through each (in
    // batches of 50, paced like the run), so each coord's optimising compiler has seen the hot path before the
    // measured run: two coords compile it twice, a start-up cost, not a cost of coordinating.
    for (const p of ports) {
      const w = encodeEnvelope(
        signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(buildJobPayload({ source: NOOP, target: { node: 'bench-1' }, aud: 'writ-dev' })), [admin]),
      );
      const id = (await api(p, 'POST', '/v1/jobs', w)).body.id as string;
      await until('the warm-up job', async () => ((await api(p, 'GET', `/v1/jobs/${id}`)).body?.status === 'succeeded' ? true : undefined), 60_000);
    }
    for (const p of ports) {
      for (let sent = 0; sent < WARMUP; sent += 50) {
        const batch = Array.from({ length: Math.min(50, WARMUP - sent) }, () =>
          signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(buildJobPayload({ source: NOOP, target: { node: 'bench-1' }, aud: 'writ-dev' })), [admin]),
        );
        const r = await api(p, 'POST', '/v1/jobs:batch', JSON.stringify({ envelopes: batch }));
        if (r.status !== 200) throw new Error(`a warm-up batch answered ${r.status}: ${JSON.stringify(r.body).slice(0, 300)}`);
        await new Promise((res) => setTimeout(res, (50 * 1000) / (RATE || 100)));
      }
    }
    const ledger = await openLedger({ databaseUrl });
    try {
      const finishedCount = async () =>
        Number((await ledger.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM jobs WHERE status IN ('succeeded', 'failed', 'refused')`))[0]!.n);
      await until('the warm-up jobs finished', async () => ((await finishedCount()) >= ports.length * (1 + WARMUP) ? true : undefined), 300_000);
      const before = await finishedCount();
      const ledgerWork = async () => {
        let statements = 0;
        let transactions = 0;
        for (const p of ports) {
          const text = String((await api(p, 'GET', '/metrics')).body);
          const v = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
          statements += v('writ_ledger_statements_total');
          transactions += v('writ_ledger_transactions_total');
        }
        return { statements, transactions };
      };
      // The coords' fixed cost (reconcile passes, node sync, leases, keep-alives): their CPU and statements while idle.
      const idleWork0 = await ledgerWork();
      const idle0 = await Promise.all(coords.map((c) => cpuMs(c.child.pid!)));
      const idleT0 = performance.now();
      await new Promise((r) => setTimeout(r, IDLE_MS));
      const idle1 = await Promise.all(coords.map((c) => cpuMs(c.child.pid!)));
      const idleS = (performance.now() - idleT0) / 1000;
      const idleCpuMsPerS = (idle1.reduce((a, b) => a + b, 0) - idle0.reduce((a, b) => a + b, 0)) / idleS;
      // Each /metrics read runs three statements of its own (coord/src/metrics.ts), counted by the next read.
      const idleStatementsPerS = ((await ledgerWork()).statements - idleWork0.statements - 3 * ports.length) / idleS;
      const work0 = await ledgerWork();
      const cpu0 = await Promise.all(coords.map((c) => cpuMs(c.child.pid!)));
      const threads0 = await Promise.all(coords.map((c) => threadCpuMs(c.child.pid!)));
      const t0 = performance.now();
      const mono0 = process.hrtime.bigint() / 1000n;
      // Batches of 50, to the coords in turn: paced at RATE jobs/s (the same offered load for one and two coords,
      // below what this machine can take, so the CPU per job is not inflated by a saturated machine), or with
      // BENCH_COORDS_RATE=0 as fast as they go, a few batches in flight at once.
      const batches: string[][] = [];
      for (let i = 0; i < envelopes.length; i += 50) batches.push(envelopes.slice(i, i + 50));
      const send = async (b: number) => {
        const r = await api(ports[b % ports.length]!, 'POST', '/v1/jobs:batch', JSON.stringify({ envelopes: batches[b]!.map((e) => JSON.parse(e)) }));
        if (r.status !== 200) throw new Error(`a batch answered ${r.status}: ${JSON.stringify(r.body).slice(0, 300)}`);
      };
      if (RATE > 0) {
        const sent: Promise<void>[] = [];
        for (let b = 0; b < batches.length; b++) {
          const due = t0 + (b * 50 * 1000) / RATE;
          if (due > performance.now()) await new Promise((r) => setTimeout(r, due - performance.now()));
          sent.push(send(b));
        }
        await Promise.all(sent);
      } else {
        let next = 0;
        await Promise.all(
          Array.from({ length: 4 }, async () => {
            for (let b = next++; b < batches.length; b = next++) await send(b);
          }),
        );
      }
      await until(`${jobs} jobs finished`, async () => ((await finishedCount()) >= before + jobs ? true : undefined), 600_000);
      const ms = performance.now() - t0;
      const cpu1 = await Promise.all(coords.map((c) => cpuMs(c.child.pid!)));
      const byThread = threadDelta(threads0, await Promise.all(coords.map((c) => threadCpuMs(c.child.pid!))));
      // The measured window on the monotonic clock (µs), which a CPU profile's sample times use too.
      if (PROFILE_DIR) log(`${coordCount} coord(s): profile window ${mono0}-${process.hrtime.bigint() / 1000n} µs (monotonic)`);
      const cpuMsByCoord = cpu1.map((c, i) => c - cpu0[i]!);
      const work1 = await ledgerWork();
      const [twice] = await ledger.db.query<{ twice: number; failed: number }>(
        `SELECT count(*) FILTER (WHERE attempts > 1)::int AS twice, count(*) FILTER (WHERE status <> 'succeeded')::int AS failed FROM jobs`,
      );
      const r: CoordsRun = {
        coords: coordCount,
        jobs,
        ms: Math.round(ms),
        cpuMsPerJob: cpuMsByCoord.reduce((a, b) => a + b, 0) / jobs,
        cpuMsByCoord: cpuMsByCoord.map((c) => Math.round(c)),
        drivenTwice: Number(twice!.twice),
        failed: Number(twice!.failed),
        idleCpuMsPerS,
        idleStatementsPerS,
        statementsPerJob: (work1.statements - work0.statements) / jobs,
        transactionsPerJob: (work1.transactions - work0.transactions) / jobs,
        cpuMsByThread: Object.fromEntries(Object.entries(byThread).map(([k, v]) => [k, Math.round(v)])),
      };
      log(
        `${coordCount} coord(s): ${jobs} jobs in ${r.ms} ms (${Math.round(jobs / (ms / 1000))} jobs/s), coords' CPU ${r.cpuMsByCoord.join(' + ')} ms = ${r.cpuMsPerJob.toFixed(2)} ms/job, driven twice ${r.drivenTwice}, not succeeded ${r.failed}; idle beforehand ${idleCpuMsPerS.toFixed(1)} ms CPU/s and ${idleStatementsPerS.toFixed(1)} statements/s; ledger per job: ${r.statementsPerJob.toFixed(2)} statements, ${r.transactionsPerJob.toFixed(2)} transactions; CPU by thread (ms): ${Object.entries(
          r.cpuMsByThread,
        )
          .filter(([, v]) => v > 0)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ')}`,
      );
      return r;
    } finally {
      await ledger.close();
    }
  } finally {
    // A profiled coord writes its profile only when it exits by itself.
    if (PROFILE_DIR) for (const c of coords) if (c.child.exitCode === null && c.child.kill('SIGTERM')) await c.exited();
    killAllWrit();
    for (const b of balancers) await b.close();
    await redis.stop();
    await pg.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/**
 * Runs `jobs` no-op jobs through one coord and through two coords on one PostgreSQL, `pairs` times, in turn
 * (one pair moves by more than the goal's margin on this shared machine); see the top of the file.
 */
export async function benchCoords(opts: { jobs?: number; pairs?: number; log?: (m: string) => void } = {}): Promise<CoordsBench> {
  const jobs = opts.jobs ?? 1000;
  const log = opts.log ?? ((m: string) => console.log(m));
  const load0 = os.loadavg()[0]!;
  const pairs: CoordsBench['pairs'] = [];
  for (let i = 0; i < (opts.pairs ?? 3); i++) {
    // Every other pair runs two coords first, so what drifts over a pair (the machine's load, PostgreSQL's and the
    // page cache's warmth) does not always favour the same side.
    const twoFirst = i % 2 === 1;
    const first = await run(twoFirst ? 2 : 1, jobs, log);
    const second = await run(twoFirst ? 1 : 2, jobs, log);
    const [one, two] = twoFirst ? [second, first] : [first, second];
    pairs.push({ one, two, ratio: two.cpuMsPerJob / one.cpuMsPerJob });
    log(
      `pair ${i + 1} (${twoFirst ? 'two coords first' : 'one coord first'}): two coords / one coord = ${(two.cpuMsPerJob / one.cpuMsPerJob).toFixed(3)} in CPU per job, ${(two.statementsPerJob / one.statementsPerJob).toFixed(3)} in ledger statements per job`,
    );
  }
  return {
    pairs,
    oneCpuMsPerJob: median(pairs.map((p) => p.one.cpuMsPerJob)),
    twoCpuMsPerJob: median(pairs.map((p) => p.two.cpuMsPerJob)),
    twoCoordsCpuPerJobRatio: median(pairs.map((p) => p.ratio)),
    twoCoordsStatementsRatio: median(pairs.map((p) => p.two.statementsPerJob / p.one.statementsPerJob)),
    drivenTwice: pairs.reduce((a, p) => a + p.one.drivenTwice + p.two.drivenTwice, 0),
    load: [load0, os.loadavg()[0]!],
  };
}

/** What `npm run bench -- flows` (bench/flows.ts) asks for: the coords' CPU per job with one and with two coords. */
export async function measureCoords(opts: { jobs?: number; pairs?: number } = {}): Promise<{
  one_coord_cpu_ms_per_job: number;
  two_coords_cpu_ms_per_job: number;
  two_coords_cpu_per_job_ratio: number;
  two_coords_statements_ratio: number;
  driven_twice: number;
}> {
  const r = await benchCoords({ jobs: opts.jobs ?? 1000, pairs: opts.pairs ?? Number(process.env.BENCH_COORDS_PAIRS ?? 3) });
  return {
    one_coord_cpu_ms_per_job: r.oneCpuMsPerJob,
    two_coords_cpu_ms_per_job: r.twoCpuMsPerJob,
    two_coords_cpu_per_job_ratio: r.twoCoordsCpuPerJobRatio,
    two_coords_statements_ratio: r.twoCoordsStatementsRatio,
    driven_twice: r.drivenTwice,
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await benchCoords({ jobs: Number(process.argv[2] ?? 1000), pairs: Number(process.env.BENCH_COORDS_PAIRS ?? 3) });
  console.log(
    JSON.stringify({
      bench: 'coords',
      pairs: r.pairs.length,
      rate: RATE,
      one_cpu_ms_per_job: +r.oneCpuMsPerJob.toFixed(3),
      two_cpu_ms_per_job: +r.twoCpuMsPerJob.toFixed(3),
      two_coords_cpu_per_job_ratio: +r.twoCoordsCpuPerJobRatio.toFixed(3),
      two_coords_statements_ratio: +r.twoCoordsStatementsRatio.toFixed(3),
      driven_twice: r.drivenTwice,
      load: r.load.map((l) => +l.toFixed(1)),
    }),
  );
  process.exit(0);
}
