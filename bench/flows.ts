// `npm run bench -- flows`: what a flow step costs against a lone job, in the same run on the same stack
// (coord, supervisor, one runner with 2 sandbox threads, PGlite; everything in this process, so
// process.cpuUsage() counts every tier and the sandbox threads). A 100-step flow of no-op scripts, 10 wide
// and 10 deep (each step depends on every step of the layer before), against the same 100 scripts
// submitted as separate jobs (16 in flight). Rounds alternate jobs and flow; medians are reported.
// Then, when bench/_coords.ts is present: the coords' CPU per job with two coords sharing one PostgreSQL
// against one coord. Last line: one JSON object.
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startStack, type Stack } from '@writ/cli';
import {
  PAYLOAD_TYPES,
  b64url,
  buildJobPayload,
  encodeEnvelope,
  encodeFlowPayload,
  encodeJobPayload,
  generateKeyPair,
  signEnvelope,
  stepScript,
  type FlowPayload,
  type FlowStep,
  type KeyPair,
} from '@writ/protocol';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const WIDE = 10;
const DEEP = 10;
const N = WIDE * DEEP;
const NOOP = 'export default async () => 1';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

interface Side {
  wallMs: number;
  cpuMs: number;
  /** Ledger statements and transactions the coord ran meanwhile (machine-independent). */
  statements: number;
  transactions: number;
}

/** The ledger's statement and transaction counts so far. */
const ledgerCounts = (stack: Stack) => {
  const c = stack.service.ledger.db.counters;
  return { statements: c?.statements ?? 0, transactions: c?.transactions ?? 0 };
};

async function post(stack: Stack, route: string, body: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${stack.url}${route}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${stack.token}` },
    body,
  });
  return { status: res.status, body: await res.json() };
}

/** Resolves when every one of these job ids reached a terminal status (from the coord's own events). */
function watchJobs(stack: Stack, ids: string[]): Promise<void> {
  let left = ids.length;
  return new Promise((resolve) => {
    for (const id of ids) {
      const on = (ev: { type?: string; data?: { status?: string } }) => {
        if (ev.type !== 'status' || !['succeeded', 'failed', 'refused'].includes(ev.data?.status ?? '')) return;
        stack.service.events.off(`job:${id}`, on);
        if (ev.data?.status !== 'succeeded') console.error(`job ${id} ended ${ev.data?.status}`);
        if (--left === 0) resolve();
      };
      stack.service.events.on(`job:${id}`, on);
    }
  });
}

function watchFlow(stack: Stack, id: string): Promise<string> {
  return new Promise((resolve) => {
    const on = (ev: { type?: string; data?: { status?: string } | null }) => {
      const st = ev.data?.status;
      if (ev.type !== 'flow' || !st || st === 'running') return;
      stack.service.events.off(`flow:${id}`, on);
      resolve(st);
    };
    stack.service.events.on(`flow:${id}`, on);
  });
}

async function runJobs(stack: Stack, admin: KeyPair, round: number): Promise<Side> {
  const envs = Array.from({ length: N }, (_, i) => {
    const job = buildJobPayload({
      id: `jobs-${round}-${i}`,
      source: NOOP,
      target: { node: 'bench-1' },
      aud: stack.clusterId,
      limits: { timeoutMs: 10_000, memoryMiB: 64 },
    });
    return { id: job.id, raw: encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(job), [admin])) };
  });
  const done = watchJobs(
    stack,
    envs.map((e) => e.id),
  );
  const c0 = cpuMs();
  const l0 = ledgerCounts(stack);
  const t0 = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < envs.length) {
        const e = envs[next++]!;
        const r = await post(stack, '/v1/jobs', e.raw);
        if (r.status >= 300) throw new Error(`job refused: ${JSON.stringify(r.body)}`);
      }
    }),
  );
  await done;
  const l1 = ledgerCounts(stack);
  return { wallMs: performance.now() - t0, cpuMs: cpuMs() - c0, statements: l1.statements - l0.statements, transactions: l1.transactions - l0.transactions };
}

async function runFlow(stack: Stack, admin: KeyPair, round: number): Promise<Side> {
  const steps: FlowStep[] = [];
  for (let d = 0; d < DEEP; d++) {
    for (let w = 0; w < WIDE; w++) {
      steps.push({
        name: `s${d}-${w}`,
        script: stepScript(NOOP),
        target: { node: 'bench-1' },
        caps: [],
        limits: { timeoutMs: 10_000, memoryMiB: 64 },
        depends: d === 0 ? [] : Array.from({ length: WIDE }, (_, k) => `s${d - 1}-${k}`),
      });
    }
  }
  const nowS = Math.floor(Date.now() / 1000);
  const flow: FlowPayload = {
    id: `flow-${round}`,
    steps,
    aud: stack.clusterId,
    nonce: b64url(crypto.getRandomValues(new Uint8Array(16))),
    iat: nowS,
    exp: nowS + 3600,
  };
  const raw = encodeEnvelope(signEnvelope(PAYLOAD_TYPES.flow, encodeFlowPayload(flow), [admin]));
  const done = watchFlow(stack, flow.id);
  const c0 = cpuMs();
  const l0 = ledgerCounts(stack);
  const t0 = performance.now();
  const r = await post(stack, '/v1/flows', raw);
  if (r.status >= 300) throw new Error(`flow refused: ${JSON.stringify(r.body)}`);
  const status = await done;
  if (status !== 'succeeded') throw new Error(`flow ${flow.id} ended ${status}`);
  const l1 = ledgerCounts(stack);
  return { wallMs: performance.now() - t0, cpuMs: cpuMs() - c0, statements: l1.statements - l0.statements, transactions: l1.transactions - l0.transactions };
}

async function main(): Promise<void> {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'writ-bench-flows-'));
  const admin = generateKeyPair();
  // The reconciler stays out of the way (it would only re-read unfinished jobs); flows are driven by reports.
  const stack = await startStack({ admin, stateDir, nodes: [{ id: 'bench-1' }], runner: { concurrency: 2 }, reconcileAfterMs: 60_000 });
  const jobs: Side[] = [];
  const flows: Side[] = [];
  const skipped: Side = { wallMs: 0, cpuMs: 0, statements: 0, transactions: 0 };
  try {
    await runJobs(stack, admin, -1); // warm-up: sandbox instances, JIT, PGlite caches
    for (let r = 0; r < ROUNDS; r++) {
      // BENCH_ONLY=jobs|flow runs one side (to profile it alone with node --cpu-prof).
      const j = process.env.BENCH_ONLY === 'flow' ? skipped : await runJobs(stack, admin, r);
      const f = process.env.BENCH_ONLY === 'jobs' ? skipped : await runFlow(stack, admin, r);
      jobs.push(j);
      flows.push(f);
      console.log(
        `round ${r + 1}/${ROUNDS}: ${N} jobs ${j.wallMs.toFixed(0)} ms wall, ${(j.cpuMs / N).toFixed(2)} ms CPU/job; flow of ${N} steps ${f.wallMs.toFixed(0)} ms wall, ${(f.cpuMs / N).toFixed(2)} ms CPU/step; ledger per job ${(j.statements / N).toFixed(2)} statements, ${(j.transactions / N).toFixed(2)} transactions, per step ${(f.statements / N).toFixed(2)}, ${(f.transactions / N).toFixed(2)} (load ${os.loadavg()[0]!.toFixed(1)})`,
      );
    }
  } finally {
    await stack.stop();
    await rm(stateDir, { recursive: true, force: true });
  }
  const jobCpu = median(jobs.map((j) => j.cpuMs / N));
  const stepCpu = median(flows.map((f) => f.cpuMs / N));
  let coords: {
    one_coord_cpu_ms_per_job: number;
    two_coords_cpu_ms_per_job: number;
    two_coords_cpu_per_job_ratio: number;
    two_coords_statements_ratio: number;
    driven_twice: number;
  } | null = null;
  const coordsBench = path.join(import.meta.dirname, '_coords.ts');
  // BENCH_COORDS_PAIRS=0 skips the coords part (to profile the flow side alone).
  if (existsSync(coordsBench) && process.env.BENCH_COORDS_PAIRS !== '0') {
    const mod = (await import(coordsBench)) as {
      measureCoords?: () => Promise<{
        one_coord_cpu_ms_per_job: number;
        two_coords_cpu_ms_per_job: number;
        two_coords_cpu_per_job_ratio: number;
        two_coords_statements_ratio: number;
        driven_twice: number;
      }>;
    };
    if (mod.measureCoords) coords = await mod.measureCoords();
  }
  console.log(`jobs: ${jobCpu.toFixed(2)} ms CPU per job (median of ${ROUNDS}), ${median(jobs.map((j) => j.wallMs)).toFixed(0)} ms wall for ${N}`);
  console.log(
    `flow: ${stepCpu.toFixed(2)} ms CPU per step, ${median(flows.map((f) => f.wallMs)).toFixed(0)} ms wall for ${N} steps in ${DEEP} layers of ${WIDE}`,
  );
  console.log(`a step costs ${(stepCpu / jobCpu).toFixed(2)}× a lone job (goal ≤ 1.2×)`);
  if (coords)
    console.log(
      `coords: one ${coords.one_coord_cpu_ms_per_job.toFixed(2)} ms CPU/job, two ${coords.two_coords_cpu_ms_per_job.toFixed(2)} ms CPU/job (medians), ratio ${coords.two_coords_cpu_per_job_ratio.toFixed(3)} (median of the pairs' ratios; goal ≤ 1.1×); ledger statements per job, two against one: ${coords.two_coords_statements_ratio.toFixed(3)}; driven twice: ${coords.driven_twice}`,
    );
  else console.log('coords: skipped (BENCH_COORDS_PAIRS=0, or bench/_coords.ts is not there); two_coords_cpu_per_job_ratio is null');
  console.log(
    JSON.stringify({
      bench: 'flows',
      steps: N,
      rounds: ROUNDS,
      job_cpu_ms: Number(jobCpu.toFixed(3)),
      step_cpu_ms: Number(stepCpu.toFixed(3)),
      step_overhead_ms: Number((stepCpu - jobCpu).toFixed(3)),
      flow_vs_jobs_ratio: Number((stepCpu / jobCpu).toFixed(3)),
      jobs_wall_ms: Math.round(median(jobs.map((j) => j.wallMs))),
      flow_wall_ms: Math.round(median(flows.map((f) => f.wallMs))),
      job_ledger_transactions: Number(median(jobs.map((j) => j.transactions / N)).toFixed(3)),
      step_ledger_transactions: Number(median(flows.map((f) => f.transactions / N)).toFixed(3)),
      job_ledger_statements: Number(median(jobs.map((j) => j.statements / N)).toFixed(3)),
      step_ledger_statements: Number(median(flows.map((f) => f.statements / N)).toFixed(3)),
      two_coords_cpu_per_job_ratio: coords ? Number(coords.two_coords_cpu_per_job_ratio.toFixed(3)) : null,
      two_coords_statements_ratio: coords ? Number(coords.two_coords_statements_ratio.toFixed(3)) : null,
      driven_twice: coords?.driven_twice ?? null,
      load1: Number(os.loadavg()[0]!.toFixed(2)),
    }),
  );
}

await main();
process.exit(0);
