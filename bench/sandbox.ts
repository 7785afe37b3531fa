// Sandbox jobs through a SandboxPool with warm instances (a thread keeps its WebAssembly instance and gives
// each job a fresh runtime and context) against the old fresh instance per job (recycleAfterJobs: 1), in the
// same run: a no-op script and a small realistic one, pools of 1 and 2 threads. Rounds alternate the two
// sides so machine noise hits both alike; medians are reported. CPU is the whole process (all threads).
// Last line: one JSON object; its headline figures are the no-op script on a pool of 2, and `ratio` is fresh
// CPU per job over warm CPU per job.
import { SandboxPool, type SandboxJob } from '@writ/runner';

const JOBS = Number(process.env.BENCH_N ?? 400);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);

const scripts = {
  noop: 'export default async function () { return null }',
  realistic: `export default async function (args, ctx) {
  const items = [];
  for (let i = 0; i < args.n; i++) items.push({ id: 'vm-' + i, cpus: (i % 8) + 1, memMiB: 512 * ((i % 4) + 1), up: i % 3 !== 0 });
  const up = items.filter((v) => v.up);
  const byCpus = {};
  for (const v of up) byCpus[v.cpus] = (byCpus[v.cpus] ?? 0) + v.memMiB;
  ctx.log.info('checked ' + items.length + ' machines');
  return { total: items.length, up: up.length, memByCpus: byCpus, names: up.slice(0, 5).map((v) => v.id.toUpperCase()).join(',') };
}`,
};
type Workload = keyof typeof scripts;

let seq = 0;
const job = (workload: Workload): SandboxJob => ({
  jobId: `bench-${++seq}`,
  attempt: 1,
  source: scripts[workload],
  args: { n: 200 },
  caps: [],
  limits: { timeoutMs: 5000, memoryMiB: 64 },
});

/** Runs `JOBS` jobs keeping every thread busy (two jobs queued per thread); returns jobs/s and CPU ms per job. */
async function round(pool: SandboxPool, size: number, workload: Workload): Promise<{ jobsPerS: number; cpuMsPerJob: number }> {
  let next = 0;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const lane = async () => {
    while (next < JOBS) {
      next++;
      const outcome = await pool.run(job(workload));
      if (!outcome.ok) throw new Error(`a ${workload} job failed: ${outcome.error.code} ${outcome.error.message}`);
    }
  };
  await Promise.all(Array.from({ length: size * 2 }, lane));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  return { jobsPerS: JOBS / seconds, cpuMsPerJob: (cpu.user + cpu.system) / 1000 / JOBS };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

interface Figures {
  size: number;
  workload: Workload;
  warm: { jobsPerS: number; cpuMsPerJob: number; instances: number };
  fresh: { jobsPerS: number; cpuMsPerJob: number; instances: number };
}

async function compare(size: number, workload: Workload): Promise<Figures> {
  const hostCall = async () => null;
  const warmPool = new SandboxPool({ size, hostCall });
  const freshPool = new SandboxPool({ size, hostCall, recycleAfterJobs: 1 });
  try {
    // Thread start-up, wasm compilation and JIT warm-up stay out of the figures.
    for (const pool of [warmPool, freshPool]) await round(pool, size, workload);
    const warmBefore = warmPool.stats().instancesCreated;
    const freshBefore = freshPool.stats().instancesCreated;
    const warm: { jobsPerS: number; cpuMsPerJob: number }[] = [];
    const fresh: { jobsPerS: number; cpuMsPerJob: number }[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      // Alternate which side goes first, so a drift in machine load does not favour one.
      if (r % 2 === 0) {
        fresh.push(await round(freshPool, size, workload));
        warm.push(await round(warmPool, size, workload));
      } else {
        warm.push(await round(warmPool, size, workload));
        fresh.push(await round(freshPool, size, workload));
      }
    }
    const summary = (xs: typeof warm, instances: number) => ({
      jobsPerS: median(xs.map((x) => x.jobsPerS)),
      cpuMsPerJob: median(xs.map((x) => x.cpuMsPerJob)),
      instances,
    });
    return {
      size,
      workload,
      warm: summary(warm, warmPool.stats().instancesCreated - warmBefore),
      fresh: summary(fresh, freshPool.stats().instancesCreated - freshBefore),
    };
  } finally {
    await Promise.all([warmPool.close(), freshPool.close()]);
  }
}

const results: Figures[] = [];
for (const size of [1, 2]) {
  for (const workload of ['noop', 'realistic'] as const) {
    const f = await compare(size, workload);
    results.push(f);
    console.log(
      `pool ${size}, ${workload.padEnd(9)}  warm: ${f.warm.jobsPerS.toFixed(0).padStart(5)} jobs/s, ${f.warm.cpuMsPerJob.toFixed(2)} CPU ms/job (${f.warm.instances} instances)` +
        `  fresh: ${f.fresh.jobsPerS.toFixed(0).padStart(5)} jobs/s, ${f.fresh.cpuMsPerJob.toFixed(2)} CPU ms/job (${f.fresh.instances} instances)` +
        `  CPU ratio ${(f.fresh.cpuMsPerJob / f.warm.cpuMsPerJob).toFixed(2)}`,
    );
  }
}
console.log(`${ROUNDS} alternating rounds of ${JOBS} jobs per side and configuration; medians`);

const headline = results.find((r) => r.size === 2 && r.workload === 'noop')!;
const realistic = results.find((r) => r.size === 2 && r.workload === 'realistic')!;
const round2 = (x: number) => Number(x.toFixed(2));
console.log(
  JSON.stringify({
    bench: 'sandbox',
    warm_cpu_ms_per_job: round2(headline.warm.cpuMsPerJob),
    fresh_cpu_ms_per_job: round2(headline.fresh.cpuMsPerJob),
    warm_jobs_per_s: Math.round(headline.warm.jobsPerS),
    fresh_jobs_per_s: Math.round(headline.fresh.jobsPerS),
    ratio: round2(headline.fresh.cpuMsPerJob / headline.warm.cpuMsPerJob),
    realistic_ratio: round2(realistic.fresh.cpuMsPerJob / realistic.warm.cpuMsPerJob),
    pool1_ratio: round2(
      results.find((r) => r.size === 1 && r.workload === 'noop')!.fresh.cpuMsPerJob /
        results.find((r) => r.size === 1 && r.workload === 'noop')!.warm.cpuMsPerJob,
    ),
  }),
);
