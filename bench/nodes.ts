// The coord's node registry under a simulated fleet: 1000 nodes, each with its own ed25519 key, register
// over HTTP with the real protocol (challenge, then a signed registration, driven through NodeAgent), then
// send signed heartbeats at the 30 s rate time-compressed into short windows. The load generator runs in a
// child process (this same file, BENCH_NODES_ROLE=load) so the CPU measured in this process is the stack's:
// coord, its PGlite ledger and an idle supervisor; Redis is another process and not counted. Last line: JSON.
import { fork } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { generateKeyPair, type NodeHealth } from '@writ/protocol';
import { NodeAgent } from '@writ/runner';

const NODES = Number(process.env.BENCH_NODES ?? 1000);
const WINDOWS = Number(process.env.BENCH_WINDOWS ?? 5);
/** One real 30 s heartbeat interval, compressed to this many ms. */
const WINDOW_MS = Number(process.env.BENCH_WINDOW_MS ?? 3000);
const REGISTER_CONCURRENCY = Number(process.env.BENCH_REGISTER_CONCURRENCY ?? 32);
const REAL_HEARTBEAT_MS = 30_000;

type ToLoad = { type: 'start-registrations' } | { type: 'start-heartbeats' };
type FromLoad =
  | { type: 'ready' }
  | { type: 'registered'; seconds: number; latenciesMs: number[] }
  | { type: 'heartbeats'; seconds: number; latenciesMs: number[]; failures: number; lateStarts: number };

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

async function loadGenerator(coordUrl: string): Promise<void> {
  const send = (m: FromLoad) => process.send!(m);
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

  const startOn = (type: ToLoad['type']) => new Promise<void>((resolve) => {
    const on = (m: ToLoad) => {
      if (m.type !== type) return;
      process.off('message', on);
      resolve();
    };
    process.on('message', on);
  });
  const registrations = startOn('start-registrations');
  send({ type: 'ready' });
  await registrations;
  const regLat: number[] = [];
  const tr = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: REGISTER_CONCURRENCY }, async () => {
    while (next < agents.length) {
      const a = agents[next++]!;
      const t = performance.now();
      await a.register();
      regLat.push(performance.now() - t);
    }
  }));
  send({ type: 'registered', seconds: (performance.now() - tr) / 1000, latenciesMs: regLat });

  await startOn('start-heartbeats');
  // Open loop: each node has a fixed slot inside every window, as a fleet with spread-out 30 s timers would.
  const slots = agents.map((_, i) => ((i * 7919) % NODES) / NODES);
  const hbLat: number[] = [];
  let failures = 0;
  let lateStarts = 0;
  const th = performance.now();
  await Promise.all(agents.map(async (a, i) => {
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
  }));
  send({ type: 'heartbeats', seconds: (performance.now() - th) / 1000, latenciesMs: hbLat, failures, lateStarts });
}

async function main(): Promise<void> {
  const { startStack } = await import('@writ/cli');
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'writ-bench-nodes-'));
  const stack = await startStack({ admin: generateKeyPair(), stateDir, nodes: [], heartbeatMs: REAL_HEARTBEAT_MS, reconcileAfterMs: 60_000 });
  const child = fork(import.meta.filename, [], { env: { ...process.env, BENCH_NODES_ROLE: 'load', BENCH_COORD_URL: stack.url }, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
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
    const registeredP = nextMessage('registered');
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    child.send({ type: 'start-registrations' } satisfies ToLoad);
    const reg = await registeredP;
    const regCpu = process.cpuUsage(c0);
    const regWall = performance.now() - t0;
    const nodes = (await stack.ledger.nodeStore.listNodes()).length;

    const heartbeatsP = nextMessage('heartbeats');
    const c1 = process.cpuUsage();
    const t1 = performance.now();
    child.send({ type: 'start-heartbeats' } satisfies ToLoad);
    const hb = await heartbeatsP;
    const hbCpu = process.cpuUsage(c1);
    const hbWall = performance.now() - t1;
    await childExited;

    const regSorted = [...reg.latenciesMs].sort((a, b) => a - b);
    const hbSorted = [...hb.latenciesMs].sort((a, b) => a - b);
    const regCpuMs = (regCpu.user + regCpu.system) / 1000;
    const hbCpuMs = (hbCpu.user + hbCpu.system) / 1000;
    const cpuPerHeartbeatMs = hbCpuMs / Math.max(1, hb.latenciesMs.length);
    const registrationsPerS = NODES / reg.seconds;
    const hbRate = hb.latenciesMs.length / hb.seconds;
    console.log(`registration: ${NODES} nodes (${nodes} in the ledger) in ${reg.seconds.toFixed(2)} s = ${registrationsPerS.toFixed(0)} /s, ${REGISTER_CONCURRENCY} in flight; latency p50 ${pct(regSorted, 50).toFixed(1)} ms, p99 ${pct(regSorted, 99).toFixed(1)} ms`);
    console.log(`  stack process CPU ${regCpuMs.toFixed(0)} ms over ${regWall.toFixed(0)} ms wall = ${(regCpuMs / regWall).toFixed(2)} of a core`);
    console.log(`heartbeats: ${WINDOWS} windows of ${WINDOW_MS} ms (one 30 s interval each, ${(REAL_HEARTBEAT_MS / WINDOW_MS).toFixed(0)}x compressed): ${hb.latenciesMs.length} ok, ${hb.failures} failed, ${hb.lateStarts} started >10% of a window late; ${hbRate.toFixed(0)} /s`);
    console.log(`  latency p50 ${pct(hbSorted, 50).toFixed(2)} ms, p90 ${pct(hbSorted, 90).toFixed(2)} ms, p99 ${pct(hbSorted, 99).toFixed(2)} ms, max ${hbSorted[hbSorted.length - 1]!.toFixed(2)} ms`);
    console.log(`  stack process CPU ${hbCpuMs.toFixed(0)} ms over ${hbWall.toFixed(0)} ms wall = ${(hbCpuMs / hbWall).toFixed(3)} of a core (${cpuPerHeartbeatMs.toFixed(3)} ms per heartbeat)`);
    console.log(`  at the real 30 s rate ${NODES} nodes would cost ${((cpuPerHeartbeatMs * NODES) / REAL_HEARTBEAT_MS).toFixed(4)} of a core`);
    console.log(JSON.stringify({
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
      window_ms: WINDOW_MS,
      windows: WINDOWS,
    }));
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await stack.stop();
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
