// End-to-end throughput and latency of signed no-op scripts over HTTP (coord → supervisor → BullMQ →
// runner with 2 sandbox threads → node-signed events → supervisor report → ledger), on each ledger: PGlite,
// and PostgreSQL when one can be started here (Debian's postgresql on loopback, or BENCH_DATABASE_URL).
// Per ledger, in the same run and on the same Redis: single submits (32 in flight), batched submits
// (POST /v1/jobs:batch, 100 envelopes each, 4 in flight), latency at half the single-submit saturation rate
// (open loop), and raw BullMQ add+process of no-op jobs. Prints figures, then one JSON line per ledger.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue, Worker } from 'bullmq';
import { startStack, type Stack } from '@writ/cli';
import { PAYLOAD_TYPES, buildJobPayload, encodeEnvelope, encodeJobPayload, generateKeyPair, signEnvelope, type KeyPair } from '@writ/protocol';
import { startTestPostgres } from '../tests/helpers/postgres.ts';
import { printLedgerUse, trackLedger } from './_ledger-use.ts';

const N = Number(process.env.BENCH_N ?? 600);
const only = process.env.BENCH_LEDGER; // 'pglite' | 'postgres' to run one

interface LedgerResult {
  bench: 'e2e';
  ledger: 'pglite' | 'postgres';
  jobs_per_s: number;
  batch_jobs_per_s: number;
  raw_bullmq_jobs_per_s: number;
  ratio: number;
  batch_ratio: number;
  p50_ms: number;
  p99_ms: number;
  cpu_ms_per_job: number;
  batch_cpu_ms_per_job: number;
  n: number;
  latency_rate_per_s: number;
  /** One job at a time: medians of submit → answer, answer → coord records `running`, `running` → terminal. */
  seq_total_ms: number;
  seq_ack_ms: number;
  seq_to_running_ms: number;
  seq_running_to_done_ms: number;
  load1: number;
}

async function runOn(ledger: 'pglite' | 'postgres', databaseUrl: string | undefined): Promise<LedgerResult> {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'writ-bench-'));
  const admin = generateKeyPair();
  const stack = await startStack({
    admin,
    stateDir,
    nodes: [{ id: 'bench-1' }],
    runner: { concurrency: 2 },
    reconcileAfterMs: 60_000,
    ...(databaseUrl ? { databaseUrl } : {}),
  });
  try {
    return await measure(ledger, stack, admin);
  } finally {
    await stack.stop();
    await rm(stateDir, { recursive: true, force: true });
  }
}

async function measure(ledger: 'pglite' | 'postgres', stack: Stack, admin: KeyPair): Promise<LedgerResult> {
  const done = new Map<string, number>();
  const running = new Map<string, number>();
  const waiters = new Map<string, () => void>();
  // Observe terminal status events for every job without one listener per job.
  const origEmit = stack.service.events.emit.bind(stack.service.events);
  stack.service.events.emit = (name: string | symbol, ...args: unknown[]) => {
    const ev = args[0] as { type?: string; data?: { status?: string } };
    if (typeof name === 'string' && ev?.type === 'status' && ev.data?.status === 'running') running.set(name.slice(4), performance.now());
    if (typeof name === 'string' && ev?.type === 'status' && (ev.data?.status === 'succeeded' || ev.data?.status === 'failed')) {
      const id = name.slice(4);
      done.set(id, performance.now());
      waiters.get(id)?.();
    }
    return origEmit(name, ...args);
  };
  const waitDone = (id: string) => (done.has(id) ? Promise.resolve() : new Promise<void>((resolve) => waiters.set(id, resolve)));

  const envelopes = (n: number, tag: string) =>
    Array.from({ length: n }, (_, i) => {
      const job = buildJobPayload({
        id: `${tag}-${i}`,
        source: 'export default async () => 1',
        target: { node: 'bench-1' },
        aud: stack.clusterId,
        limits: { timeoutMs: 5000, memoryMiB: 16 },
      });
      return { id: job.id, body: encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(job), [admin])) };
    });
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${stack.token}` };
  const post = async (body: string) => {
    const r = await fetch(`${stack.url}/v1/jobs`, { method: 'POST', headers, body });
    if (r.status !== 202) throw new Error(`submit answered ${r.status}: ${await r.text()}`);
    await r.arrayBuffer();
  };
  const postBatch = async (bodies: string[]) => {
    const r = await fetch(`${stack.url}/v1/jobs:batch`, { method: 'POST', headers, body: `{"envelopes":[${bodies.join(',')}]}` });
    const answer = (await r.json()) as { results: { error?: unknown }[] };
    if (r.status !== 200 || answer.results.some((x) => x.error)) throw new Error(`batch submit answered ${r.status}: ${JSON.stringify(answer).slice(0, 300)}`);
  };
  const timed = async (fn: () => Promise<void>, ids: string[]) => {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await fn();
    await Promise.all(ids.map(waitDone));
    const s = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    return { perS: ids.length / s, seconds: s, cpuMsPerJob: (cpu.user + cpu.system) / 1000 / ids.length };
  };

  // Warm-up (JIT, sandbox instances, PGlite caches).
  await Promise.all(
    envelopes(50, 'warm').map(async (e) => {
      await post(e.body);
      await waitDone(e.id);
    }),
  );

  // 1. Saturation, single submits: 32 in flight.
  const sat = envelopes(N, 'sat');
  let next = 0;
  const single = await timed(
    () =>
      Promise.all(
        Array.from({ length: 32 }, async () => {
          while (next < sat.length) await post(sat[next++]!.body);
        }),
      ).then(() => undefined),
    sat.map((e) => e.id),
  );

  // 2. Saturation, batched submits: 100 envelopes per request, 4 requests in flight.
  const bat = envelopes(N, 'bat');
  const chunks: string[][] = [];
  for (let i = 0; i < bat.length; i += 100) chunks.push(bat.slice(i, i + 100).map((e) => e.body));
  let nextChunk = 0;
  const batch = await timed(
    () =>
      Promise.all(
        Array.from({ length: 4 }, async () => {
          while (nextChunk < chunks.length) await postBatch(chunks[nextChunk++]!);
        }),
      ).then(() => undefined),
    bat.map((e) => e.id),
  );

  // 3. Latency at half the single-submit saturation rate (open loop).
  const rate = single.perS / 2;
  const lat = envelopes(Math.min(N, Math.max(50, Math.round(rate * 10))), 'lat');
  const latencies: number[] = [];
  const ledgerUse = trackLedger(stack.ledger.db);
  const tl = performance.now();
  await Promise.all(
    lat.map(async (e, i) => {
      const wait = tl + (i / rate) * 1000 - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const start = performance.now();
      await post(e.body);
      await waitDone(e.id);
      latencies.push(done.get(e.id)! - start);
    }),
  );
  const latencyLedger = ledgerUse.stop();
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]!;

  // 4. One job at a time, to see where a single job's time goes.
  const seq = envelopes(60, 'seq');
  const stages: { total: number; ack: number; toRunning: number; toDone: number }[] = [];
  for (const e of seq) {
    const t0 = performance.now();
    await post(e.body);
    const acked = performance.now();
    await waitDone(e.id);
    const r = running.get(e.id) ?? done.get(e.id)!;
    stages.push({ total: done.get(e.id)! - t0, ack: acked - t0, toRunning: r - acked, toDone: done.get(e.id)! - r });
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const st = {
    total: median(stages.map((x) => x.total)),
    ack: median(stages.map((x) => x.ack)),
    toRunning: median(stages.map((x) => x.toRunning)),
    toDone: median(stages.map((x) => x.toDone)),
  };

  // 5. Raw BullMQ on the same Redis: add + process no-op jobs, one process, concurrency 50.
  const connection = { url: stack.redisUrl } as never;
  const q = new Queue('bench-raw', { connection });
  let processed = 0;
  let resolveRaw!: () => void;
  const rawDone = new Promise<void>((r) => (resolveRaw = r));
  const w = new Worker(
    'bench-raw',
    async () => {
      if (++processed === N) resolveRaw();
      return 1;
    },
    { connection, concurrency: 50 },
  );
  await w.waitUntilReady();
  const tr = performance.now();
  for (let i = 0; i < N; i += 50)
    await q.addBulk(Array.from({ length: Math.min(50, N - i) }, (_, k) => ({ name: 'noop', data: { i: i + k }, opts: { jobId: `raw-${i + k}` } })));
  await rawDone;
  const rawPerS = N / ((performance.now() - tr) / 1000);
  await w.close();
  await q.obliterate({ force: true });
  await q.close();

  console.log(
    `[${ledger}] single submits (32 in flight): ${single.perS.toFixed(0)} jobs/s, ${single.cpuMsPerJob.toFixed(2)} ms CPU per job (${N} jobs in ${single.seconds.toFixed(2)} s)`,
  );
  console.log(`[${ledger}] batched submits (100 per request, 4 in flight): ${batch.perS.toFixed(0)} jobs/s, ${batch.cpuMsPerJob.toFixed(2)} ms CPU per job`);
  console.log(
    `[${ledger}] latency submit→result at ${rate.toFixed(0)} jobs/s (half of saturation), ${latencies.length} jobs: p50 ${pct(50).toFixed(2)} ms, p99 ${pct(99).toFixed(2)} ms`,
  );
  console.log(`[${ledger}] ledger during the latency phase (${lat.length} jobs; wall time per transaction, queueing included):`);
  printLedgerUse(latencyLedger);
  console.log(
    `[${ledger}] one at a time (${stages.length} jobs, medians): ${st.total.toFixed(2)} ms = answer ${st.ack.toFixed(2)} + to running ${st.toRunning.toFixed(2)} + running to done ${st.toDone.toFixed(2)}`,
  );
  console.log(`[${ledger}] raw BullMQ add+process (same Redis, one process, concurrency 50): ${rawPerS.toFixed(0)} jobs/s`);
  const r3 = (x: number) => Number(x.toFixed(3));
  return {
    bench: 'e2e',
    ledger,
    jobs_per_s: Math.round(single.perS),
    batch_jobs_per_s: Math.round(batch.perS),
    raw_bullmq_jobs_per_s: Math.round(rawPerS),
    ratio: r3(single.perS / rawPerS),
    batch_ratio: r3(batch.perS / rawPerS),
    p50_ms: Number(pct(50).toFixed(2)),
    p99_ms: Number(pct(99).toFixed(2)),
    cpu_ms_per_job: Number(single.cpuMsPerJob.toFixed(2)),
    batch_cpu_ms_per_job: Number(batch.cpuMsPerJob.toFixed(2)),
    n: N,
    latency_rate_per_s: Math.round(rate),
    seq_total_ms: Number(st.total.toFixed(2)),
    seq_ack_ms: Number(st.ack.toFixed(2)),
    seq_to_running_ms: Number(st.toRunning.toFixed(2)),
    seq_running_to_done_ms: Number(st.toDone.toFixed(2)),
    load1: Number(os.loadavg()[0]!.toFixed(2)),
  };
}

const results: LedgerResult[] = [];
if (!only || only === 'pglite') results.push(await runOn('pglite', undefined));
if (!only || only === 'postgres') {
  if (process.env.BENCH_DATABASE_URL) {
    results.push(await runOn('postgres', process.env.BENCH_DATABASE_URL));
  } else {
    const pg = await startTestPostgres();
    if (pg.ok) {
      try {
        results.push(await runOn('postgres', await pg.pg.freshDatabaseUrl()));
      } finally {
        await pg.pg.stop();
      }
    } else {
      console.log(`[postgres] not measured: ${pg.reason}`);
    }
  }
}
for (const r of results)
  console.log(
    `goals ${r.ledger}: ratio ${r.ratio} (≥ 0.35: ${r.ratio >= 0.35 ? 'met' : 'missed'}), p50 ${r.p50_ms} ms (≤ 3: ${r.p50_ms <= 3 ? 'met' : 'missed'}), p99 ${r.p99_ms} ms (≤ 15: ${r.p99_ms <= 15 ? 'met' : 'missed'})`,
  );
for (const r of results) console.log(JSON.stringify(r));
process.exit(0);
