// The coord's node registry under a simulated fleet: 10 000 nodes, each with its own ed25519 key, register
// over HTTP with the real protocol (challenge, then a signed registration, driven through NodeAgent), then
// send signed heartbeats every 30 s (333/s; BENCH_WINDOW_MS compresses the interval). The load generator runs in a
// child process (this same file, BENCH_NODES_ROLE=load) so the CPU measured in this process is the stack's:
// coord, its PGlite ledger and an idle supervisor; Redis is another process and not counted. Last line: JSON.
import { fork } from 'node:child_process';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { generateKeyPair, type NodeHealth } from '@writ/protocol';
import { NodeAgent } from '@writ/runner';
import { printLedgerUse, trackLedger } from './_ledger-use.ts';

const NODES = Number(process.env.BENCH_NODES ?? 10_000);
const WINDOWS = Number(process.env.BENCH_WINDOWS ?? 3);
/** One real 30 s heartbeat interval, compressed to this many ms. */
const WINDOW_MS = Number(process.env.BENCH_WINDOW_MS ?? 30_000);
const REGISTER_CONCURRENCY = Number(process.env.BENCH_REGISTER_CONCURRENCY ?? 32);
const REAL_HEARTBEAT_MS = 30_000;

type ToLoad = { type: 'start-registrations' } | { type: 'start-heartbeats' };
type FromLoad =
  | { type: 'ready' }
  | { type: 'registered'; seconds: number; latenciesMs: number[] }
  | { type: 'heartbeats'; seconds: number; latenciesMs: number[]; failures: number; lateStarts: number; loopDelayP99Ms: number; loopDelayMaxMs: number };

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

async function loadGenerator(coordUrl: string): Promise<void> {
  // Resolves once the message is on its way: disconnecting before that drops it (10 000 nodes' latencies
  // are ~600 KB, more than the pipe takes at once, and the parent then waited for a message that never came).
  const send = (m: FromLoad) => new Promise<void>((resolve, reject) => process.send!(m, undefined, {}, (e) => (e ? reject(e) : resolve())));
  const health: NodeHealth = { healthy: true, problems: [], load1: 0.1, memAvailableBytes: 8 * 1024 ** 3, diskFreeBytes: 100 * 1024 ** 3, runningJobs: 0 };
  const agents = Array.from({ length: NODES }, (_, i) => {
    const nodeId = `sim-${String(i).padStart(4, '0')}`;
    return new NodeAgent({
      coordUrl,
      identity: { nodeId, key: generateKeyPair(), created: true },
      labels: { rack: `r${i % 20}`, bench: 'nodes' },
      version: 'bench',
      inventory: async () => ({ cpus: 32, memBytes: 128 * 1024 ** 3, disks: [{ name: 'nvme0n1', bytes: 2e12 }], nodeId }),
      health: async () => health,
    });
  });

  const startOn = (type: ToLoad['type']) =>
    new Promise<void>((resolve) => {
      const on = (m: ToLoad) => {
        if (m.type !== type) return;
        process.off('message', on);
        resolve();
      };
      process.on('message', on);
    });
  const registrations = startOn('start-registrations');
  await send({ type: 'ready' });
  await registrations;
  const regLat: number[] = [];
  const tr = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: REGISTER_CONCURRENCY }, async () => {
      while (next < agents.length) {
        const a = agents[next++]!;
        const t = performance.now();
        await a.register();
        regLat.push(performance.now() - t);
      }
    }),
  );
  const heartbeats = startOn('start-heartbeats'); // listening before the parent can answer
  await send({ type: 'registered', seconds: (performance.now() - tr) / 1000, latenciesMs: regLat });
  await heartbeats;
  // Open loop: each node has a fixed slot inside every window, as a fleet with spread-out 30 s timers would.
  const slots = agents.map((_, i) => ((i * 7919) % NODES) / NODES);
  const hbLat: number[] = [];
  let failures = 0;
  let lateStarts = 0;
  // A stall here adds to every heartbeat in flight, so the latencies are only the coord's when this stays low.
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  const th = performance.now();
  await Promise.all(
    agents.map(async (a, i) => {
      for (let w = 0; w < WINDOWS; w++) {
        const due = th + (w + slots[i]!) * WINDOW_MS;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        else if (wait < -WINDOW_MS / 10) lateStarts++;
        const t = performance.now();
        try {
          await a.heartbeat();
          hbLat.push(performance.now() - t);
        } catch (e) {
          failures++;
          if (failures <= 3) console.error(`heartbeat failed: ${(e as Error).message}`);
        }
      }
    }),
  );
  loopDelay.disable();
  await send({
    type: 'heartbeats',
    seconds: (performance.now() - th) / 1000,
    latenciesMs: hbLat,
    failures,
    lateStarts,
    loopDelayP99Ms: loopDelay.percentile(99) / 1e6,
    loopDelayMaxMs: loopDelay.max / 1e6,
  });
}

async function main(): Promise<void> {
  const { startStack } = await import('@writ/cli');
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'writ-bench-nodes-'));
  const stack = await startStack({ admin: generateKeyPair(), stateDir, nodes: [], heartbeatMs: REAL_HEARTBEAT_MS, reconcileAfterMs: 60_000 });
  const child = fork(import.meta.filename, [], {
    env: { ...process.env, BENCH_NODES_ROLE: 'load', BENCH_COORD_URL: stack.url },
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const childExited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const nextMessage = <T extends FromLoad['type']>(type: T) =>
    new Promise<Extract<FromLoad, { type: T }>>((resolve, reject) => {
      const onMsg = (m: FromLoad) => {
        if (m.type !== type) return;
        child.off('message', onMsg);
        resolve(m as Extract<FromLoad, { type: T }>);
      };
      child.on('message', onMsg);
      void childExited.then((code) => reject(new Error(`load generator exited (${code}) before sending ${type}`)));
    });
  try {
    // The child loads and generates its keys first; CPU and wall time are counted per phase from its first request.
    await nextMessage('ready');
    let ledgerUse = trackLedger(stack.ledger.db);
    const registeredP = nextMessage('registered');
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    child.send({ type: 'start-registrations' } satisfies ToLoad);
    const reg = await registeredP;
    const regCpu = process.cpuUsage(c0);
    const regWall = performance.now() - t0;
    const regLedger = ledgerUse.stop();
    const nodes = (await stack.ledger.nodeStore.listNodes()).length;

    ledgerUse = trackLedger(stack.ledger.db);
    const heartbeatsP = nextMessage('heartbeats');
    // How long requests wait for the coord's thread: PGlite runs on it, so a long statement shows here.
    const loopDelay = monitorEventLoopDelay({ resolution: 10 });
    loopDelay.enable();
    const c1 = process.cpuUsage();
    const t1 = performance.now();
    child.send({ type: 'start-heartbeats' } satisfies ToLoad);
    const hb = await heartbeatsP;
    const hbCpu = process.cpuUsage(c1);
    const hbWall = performance.now() - t1;
    loopDelay.disable();
    const hbLedger = ledgerUse.stop();
    await childExited;

    const regSorted = [...reg.latenciesMs].sort((a, b) => a - b);
    const hbSorted = [...hb.latenciesMs].sort((a, b) => a - b);
    const regCpuMs = (regCpu.user + regCpu.system) / 1000;
    const hbCpuMs = (hbCpu.user + hbCpu.system) / 1000;
    const cpuPerHeartbeatMs = hbCpuMs / Math.max(1, hb.latenciesMs.length);
    const registrationsPerS = NODES / reg.seconds;
    const hbRate = hb.latenciesMs.length / hb.seconds;
    console.log(
      `registration: ${NODES} nodes (${nodes} in the ledger) in ${reg.seconds.toFixed(2)} s = ${registrationsPerS.toFixed(0)} /s, ${REGISTER_CONCURRENCY} in flight; latency p50 ${pct(regSorted, 50).toFixed(1)} ms, p99 ${pct(regSorted, 99).toFixed(1)} ms`,
    );
    console.log(`  stack process CPU ${regCpuMs.toFixed(0)} ms over ${regWall.toFixed(0)} ms wall = ${(regCpuMs / regWall).toFixed(2)} of a core`);
    printLedgerUse(regLedger);
    console.log(
      `heartbeats: ${WINDOWS} windows of ${WINDOW_MS} ms (one 30 s interval each, ${(REAL_HEARTBEAT_MS / WINDOW_MS).toFixed(0)}x compressed): ${hb.latenciesMs.length} ok, ${hb.failures} failed, ${hb.lateStarts} started >10% of a window late; ${hbRate.toFixed(0)} /s`,
    );
    console.log(
      `  latency p50 ${pct(hbSorted, 50).toFixed(2)} ms, p90 ${pct(hbSorted, 90).toFixed(2)} ms, p99 ${pct(hbSorted, 99).toFixed(2)} ms, max ${hbSorted[hbSorted.length - 1]!.toFixed(2)} ms`,
    );
    console.log(
      `  stack process CPU ${hbCpuMs.toFixed(0)} ms over ${hbWall.toFixed(0)} ms wall = ${(hbCpuMs / hbWall).toFixed(3)} of a core (${cpuPerHeartbeatMs.toFixed(3)} ms per heartbeat)`,
    );
    console.log(
      `  coord event loop delay p99 ${(loopDelay.percentile(99) / 1e6).toFixed(1)} ms, max ${(loopDelay.max / 1e6).toFixed(1)} ms; load generator's p99 ${hb.loopDelayP99Ms.toFixed(1)} ms, max ${hb.loopDelayMaxMs.toFixed(1)} ms`,
    );
    printLedgerUse(hbLedger);
    console.log(`  at the real 30 s rate ${NODES} nodes would cost ${((cpuPerHeartbeatMs * NODES) / REAL_HEARTBEAT_MS).toFixed(4)} of a core`);
    console.log(
      JSON.stringify({
        bench: 'nodes',
        nodes: NODES,
        registrations_per_s: Math.round(registrationsPerS),
        registration_p99_ms: Number(pct(regSorted, 99).toFixed(2)),
        heartbeat_p50_ms: Number(pct(hbSorted, 50).toFixed(2)),
        heartbeat_p99_ms: Number(pct(hbSorted, 99).toFixed(2)),
        heartbeats_per_s: Math.round(hbRate),
        heartbeat_failures: hb.failures,
        coord_cpu_share: Number((hbCpuMs / hbWall).toFixed(3)),
        coord_cpu_ms_per_heartbeat: Number(cpuPerHeartbeatMs.toFixed(3)),
        coord_cpu_share_at_30s: Number(((cpuPerHeartbeatMs * NODES) / REAL_HEARTBEAT_MS).toFixed(4)),
        loop_delay_p99_ms: Number((loopDelay.percentile(99) / 1e6).toFixed(1)),
        loop_delay_max_ms: Number((loopDelay.max / 1e6).toFixed(1)),
        load_loop_delay_max_ms: Number(hb.loopDelayMaxMs.toFixed(1)),
        window_ms: WINDOW_MS,
        windows: WINDOWS,
      }),
    );
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    const ts = performance.now();
    await stack.stop();
    console.log(`stack stopped in ${(performance.now() - ts).toFixed(0)} ms`);
    await rm(stateDir, { recursive: true, force: true });
  }
}

if (process.env.BENCH_NODES_ROLE === 'load') {
  await loadGenerator(process.env.BENCH_COORD_URL!);
  process.disconnect?.();
} else {
  await main();
  process.exit(0);
}
