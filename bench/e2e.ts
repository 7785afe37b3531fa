// End-to-end throughput and latency of signed no-op scripts over HTTP (coord → supervisor → BullMQ →
// runner with 2 sandbox threads → signed report → ledger), against raw BullMQ add+process of no-op jobs
// on the same Redis in the same run (one process, concurrency 50). Latency is measured at half of the
// measured saturation rate. Last line: one JSON object.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue, Worker } from 'bullmq';
import { startStack } from '@writ/cli';
import { PAYLOAD_TYPES, buildJobPayload, encodeEnvelope, encodeJobPayload, generateKeyPair, signEnvelope } from '@writ/protocol';

const N = Number(process.env.BENCH_N ?? 600);
const stateDir = await mkdtemp(path.join(os.tmpdir(), 'writ-bench-'));
const admin = generateKeyPair();
const stack = await startStack({ admin, stateDir, nodes: [{ id: 'bench-1' }], runner: { concurrency: 2 }, reconcileAfterMs: 60_000, ...(process.env.BENCH_DATABASE_URL ? { databaseUrl: process.env.BENCH_DATABASE_URL } : {}) });
// startStack returns once the node is active, which can be before its first heartbeat is recorded; a job
// submitted then finds no reachable node and waits for the reconciler (60 s here), so wait until it is workable.
for (const end = Date.now() + 15_000; !(await stack.service.nodes.workable()).some((n) => n.id === 'bench-1');) {
  if (Date.now() > end) throw new Error('node bench-1 did not become workable within 15 s');
  await new Promise((r) => setTimeout(r, 20));
}

const done = new Map<string, number>();
const waiters = new Map<string, () => void>();
stack.service.events.setMaxListeners(0);
const origEmit = stack.service.events.emit.bind(stack.service.events);
// Observe terminal status events for every job without one listener per job.
stack.service.events.emit = (name: string | symbol, ...args: unknown[]) => {
  const ev = args[0] as { type?: string; data?: { status?: string } };
  if (typeof name === 'string' && ev?.type === 'status' && (ev.data?.status === 'succeeded' || ev.data?.status === 'failed')) {
    const id = name.slice(4);
    done.set(id, performance.now());
    waiters.get(id)?.();
  }
  return origEmit(name, ...args);
};

function envelopes(n: number, tag: string): { id: string; body: string }[] {
  return Array.from({ length: n }, (_, i) => {
    const job = buildJobPayload({ id: `${tag}-${i}`, source: 'export default async () => 1', target: { node: 'bench-1' }, aud: stack.clusterId, limits: { timeoutMs: 5000, memoryMiB: 16 } });
    return { id: job.id, body: encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(job), [admin])) };
  });
}

async function post(body: string): Promise<void> {
  const r = await fetch(`${stack.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${stack.token}` }, body });
  if (r.status !== 202) throw new Error(`submit answered ${r.status}: ${await r.text()}`);
  await r.arrayBuffer();
}

function waitDone(id: string): Promise<void> {
  if (done.has(id)) return Promise.resolve();
  return new Promise((resolve) => waiters.set(id, resolve));
}

// 1. Saturation: keep 32 submissions in flight.
await Promise.all(envelopes(50, 'warm').map(async (e) => { await post(e.body); await waitDone(e.id); }));
const sat = envelopes(N, 'sat');
const t0 = performance.now();
let next = 0;
await Promise.all(Array.from({ length: 32 }, async () => {
  while (next < sat.length) {
    const e = sat[next++]!;
    await post(e.body);
  }
}));
await Promise.all(sat.map((e) => waitDone(e.id)));
const satSeconds = (performance.now() - t0) / 1000;
const jobsPerS = N / satSeconds;

// 2. Latency at half the saturation rate (open loop).
const rate = jobsPerS / 2;
const lat = envelopes(Math.min(N, Math.round(rate * 10)), 'lat');
const latencies: number[] = [];
const tl = performance.now();
await Promise.all(lat.map(async (e, i) => {
  const due = tl + (i / rate) * 1000;
  const wait = due - performance.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const start = performance.now();
  await post(e.body);
  await waitDone(e.id);
  latencies.push(done.get(e.id)! - start);
}));
latencies.sort((a, b) => a - b);
const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]!;

// 3. Raw BullMQ on the same Redis: add + process no-op jobs, one process, concurrency 50.
const connection = { url: stack.redisUrl } as never;
const q = new Queue('bench-raw', { connection });
let processed = 0;
let resolveRaw!: () => void;
const rawDone = new Promise<void>((r) => (resolveRaw = r));
const w = new Worker('bench-raw', async () => {
  if (++processed === N) resolveRaw();
  return 1;
}, { connection, concurrency: 50 });
await w.waitUntilReady();
const tr = performance.now();
for (let i = 0; i < N; i += 50) await q.addBulk(Array.from({ length: Math.min(50, N - i) }, (_, k) => ({ name: 'noop', data: { i: i + k }, opts: { jobId: `raw-${i + k}` } })));
await rawDone;
const rawPerS = N / ((performance.now() - tr) / 1000);
await w.close();
await q.obliterate({ force: true });
await q.close();

await stack.stop();
await rm(stateDir, { recursive: true, force: true });

console.log(`signed no-op jobs over HTTP, runner pool of 2 threads: ${jobsPerS.toFixed(0)} jobs/s (${N} jobs in ${satSeconds.toFixed(2)} s)`);
console.log(`latency submit→result at ${rate.toFixed(0)} jobs/s (half of saturation), ${latencies.length} jobs: p50 ${pct(50).toFixed(2)} ms, p99 ${pct(99).toFixed(2)} ms`);
console.log(`raw BullMQ add+process (same Redis, one process, concurrency 50): ${rawPerS.toFixed(0)} jobs/s`);
console.log(JSON.stringify({ bench: 'e2e', jobs_per_s: Math.round(jobsPerS), raw_bullmq_jobs_per_s: Math.round(rawPerS), ratio: Number((jobsPerS / rawPerS).toFixed(3)), p50_ms: Number(pct(50).toFixed(2)), p99_ms: Number(pct(99).toFixed(2)), n: N, latency_rate_per_s: Math.round(rate) }));
process.exit(0);
