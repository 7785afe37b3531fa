// The history check's run (R8): coord, supervisor and an effect runner as separate processes on an
// append-only Redis, signed jobs whose scripts create network namespaces through the journal, and faults on
// a schedule; then the checker (checker.ts) over the ledger, the journal and `ip netns`. Needs root (netns,
// tmpfs), redis-server and redis-sentinel. Used by tests/history.redis.test.ts and `npm run chaos`.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, statfs, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort, startEmbeddedRedis, type EmbeddedRedis } from '@writ/cli';
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
import { checkHistory, formatReport, readJournals, type FaultRecord, type HistoryReport, type LedgerJob, type Submission } from './checker.ts';
import { Service, type Log } from './procs.ts';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
const WRIT_BIN = path.join(ROOT, 'bin/writ.mjs');
const EFFECT_RUNNER = path.join(ROOT, 'tests/helpers/effect-runner.mjs');
// tests/helpers/sentinel.ts (the Sentinel tests' group on loopback), loaded when the failover is scheduled.
const SENTINEL_HELPER = path.join(ROOT, 'tests/helpers/sentinel.ts');
/** The helpers this harness runs: the effect runner always, the Sentinel group for the failover. */
export const HELPER_FILES = [EFFECT_RUNNER, SENTINEL_HELPER];

/** What the harness uses of tests/helpers/sentinel.ts. */
interface SentinelGroup {
  url: string;
  currentPrimaryPort(): Promise<number>;
  kill(port: number): Promise<void>;
  waitForFailover(oldPort: number, timeoutMs?: number): Promise<number>;
  stop(): Promise<void>;
}

export const FAULT_KINDS = [
  'kill-runner',
  'kill-supervisor',
  'kill-coord',
  'stop-runner',
  'redis-restart',
  'redis-wipe',
  'disk-full',
  'sentinel-failover',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface HistoryOptions {
  /** How many jobs to submit, spread over the run. */
  jobs: number;
  /** How long the fault schedule lasts; faults repeat in order until then (the Sentinel failover comes once, last). */
  durationMs: number;
  /** Fault kinds to inject (default: all). */
  faults?: readonly FaultKind[];
  /** After the schedule: how long jobs may take to settle before what is unfinished counts as lost. */
  settleMs?: number;
  /** Runner lock (the SIGSTOP fault pauses it well past this). */
  lockDurationMs?: number;
  log?: Log;
  /** Keep the run's folder (for a look afterwards). */
  keep?: boolean;
}

export interface HistoryResult extends HistoryReport {
  lines: string[];
  faults: FaultRecord[];
  dir: string;
  unplannedExits: string[];
}

const NODE = 'h1';
const CLUSTER = 'writ-dev';
const TERMINAL = new Set(['succeeded', 'failed', 'refused']);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Each job makes `steps` namespaces `<prefix><tag>s<step>` and sleeps between them, so faults land mid-job.
const SCRIPT = `export default async function (args, ctx) {
  for (let i = 1; i <= args.steps; i++) {
    await ctx.sal.net.netns.ensure({ name: args.prefix + args.tag + 's' + i });
    if (i < args.steps) await ctx.sal.time.sleep({ ms: args.sleepMs });
  }
  return 'ok:' + args.tag + ':' + args.steps;
}`;

async function until<T>(what: string, get: () => Promise<T | undefined>, timeoutMs: number, everyMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await get().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

async function netnsNames(prefix: string): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith(prefix));
}

export async function runHistory(opts: HistoryOptions): Promise<HistoryResult> {
  const log: Log = opts.log ?? (() => {});
  const kinds = opts.faults ?? FAULT_KINDS;
  const lockMs = opts.lockDurationMs ?? 2000;
  const runId = randomBytes(3).toString('hex').slice(0, 4);
  // netns names are at most 255 bytes, but short ones read better in `ip netns`: wh<run><job>s<step>.
  const prefix = `wh${runId}`;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'writ-history-'));
  const coordDir = path.join(dir, 'coord');
  const runnerDir = path.join(dir, `runner-${NODE}`);
  const redisDir = path.join(dir, 'redis');
  await mkdir(coordDir, { recursive: true });
  const admin = generateKeyPair();
  await writeFile(path.join(dir, 'admin.key'), encodePrivateKeyFile(admin), { mode: 0o600 });
  await writeFile(path.join(dir, 'admin.pub'), encodePublicKeyFile(admin.publicKey));
  const token = `hist-${randomBytes(8).toString('hex')}`;
  const env = { WRIT_HOME: dir, WRIT_TOKEN: token, WRIT_SUPERVISOR_TOKEN: `hist-sup-${randomBytes(8).toString('hex')}` };
  const coordPort = await freePort();
  const supPort = await freePort();
  const redisPort = await freePort();
  const coordUrl = `http://127.0.0.1:${coordPort}`;
  const adminPub = path.join(dir, 'admin.pub');
  let redisUrl = `redis://127.0.0.1:${redisPort}`;
  let redis: EmbeddedRedis | null = null;
  let sentinel: SentinelGroup | null = null;
  let tmpfs = false;
  const faults: FaultRecord[] = [];
  const submissions: Submission[] = [];
  const observed = new Map<string, string[]>();
  const services: Service[] = [];
  let stopping = false;

  const supervisor = new Service(
    {
      name: 'supervisor',
      logFile: path.join(dir, 'supervisor.log'),
      argv: () => [
        WRIT_BIN,
        'supervisor',
        '--coord',
        coordUrl,
        '--redis',
        redisUrl,
        '--listen',
        `127.0.0.1:${supPort}`,
        '--state',
        path.join(dir, 'sup'),
        '--admin-key',
        adminPub,
      ],
      env: () => env,
    },
    log,
  );
  const coord = new Service(
    {
      name: 'coord',
      logFile: path.join(dir, 'coord.log'),
      argv: () => [
        WRIT_BIN,
        'coord',
        '--supervisor',
        `http://127.0.0.1:${supPort}`,
        '--supervisor-key',
        path.join(dir, 'sup', 'supervisor.key.pub'),
        '--listen',
        `127.0.0.1:${coordPort}`,
        '--state',
        coordDir,
        '--admin-key',
        adminPub,
      ],
      env: () => env,
    },
    log,
  );
  const runner = new Service(
    {
      name: 'runner',
      logFile: path.join(dir, 'runner.log'),
      argv: () => [EFFECT_RUNNER],
      env: () => ({
        ...env,
        WRIT_TEST_NET_PREFIX: prefix,
        WRIT_TEST_RUNNER: JSON.stringify({
          nodeId: NODE,
          clusterId: CLUSTER,
          admins: { threshold: 1, keys: [{ keyid: admin.keyid, publicKey: b64url(admin.publicKey) }] },
          stateDir: runnerDir,
          redisUrl,
          coordUrl,
          heartbeatMs: 500,
          lockDurationMs: lockMs,
          stalledIntervalMs: 500,
          concurrency: 4,
          graceMs: 3000,
        }),
      }),
    },
    log,
  );
  services.push(supervisor, coord, runner);

  const api = async (method: string, route: string, body?: string) => {
    const r = await fetch(`${coordUrl}${route}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body } : {}),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await r.text();
    return { status: r.status, body: (text.startsWith('{') ? JSON.parse(text) : text) as any };
  };

  const startRedis = async () => {
    redis = await startEmbeddedRedis({ dataDir: redisDir, port: redisPort, appendOnly: true });
  };

  let result: HistoryResult | undefined;
  try {
    // The coord's state dir on a small tmpfs of its own, for the ledger-disk fault.
    if (kinds.includes('disk-full')) {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=256m,mode=0700', 'writ-history', coordDir]);
      tmpfs = true;
    }
    // With the failover as the only fault, the cluster runs on the Sentinel group from the start (no move).
    const sentinelOnly = kinds.length > 0 && kinds.every((k) => k === 'sentinel-failover');
    if (sentinelOnly) {
      const helper = (await import(SENTINEL_HELPER)) as { startSentinelGroup(dir: string): Promise<SentinelGroup> };
      sentinel = await helper.startSentinelGroup(path.join(dir, 'sentinel'));
      redisUrl = sentinel.url;
    } else await startRedis();
    await supervisor.start();
    await coord.start();
    const ks = bootstrapKeySet({ cluster: CLUSTER, admin: { keyid: admin.keyid, publicKey: b64url(admin.publicKey) }, nowS: Math.floor(Date.now() / 1000) });
    const pub = await api('POST', '/v1/keyset', encodeEnvelope(signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(ks), [admin])));
    if (pub.status >= 300) throw new Error(`publishing the key set answered ${pub.status}: ${JSON.stringify(pub.body)}`);
    await runner.start();
    const state = await until(
      'the node registering',
      async () => {
        const s = (await api('GET', `/v1/nodes/${NODE}`)).body?.state as string | undefined;
        return s === 'inspected' || s === 'active' ? s : undefined;
      },
      30_000,
    );
    if (state === 'inspected') {
      const res = await api('POST', `/v1/nodes/${NODE}/accept`, JSON.stringify({ reason: 'history check' }));
      if (res.status >= 300) throw new Error(`accepting ${NODE} answered ${res.status}: ${JSON.stringify(res.body)}`);
    }
    await until('the node active', async () => ((await api('GET', `/v1/nodes/${NODE}`)).body?.state === 'active' ? true : undefined), 30_000);
    log(`cluster up in ${dir} (prefix ${prefix})`);

    // Submissions: one every durationMs/jobs, each retried with the same envelope until a 2xx (or 60 s).
    const t0 = Date.now();
    // A tenth of the jobs (at least 5) are kept for the Sentinel phase, so the failover hits running jobs.
    const sentinelJobs = kinds.includes('sentinel-failover') ? Math.min(opts.jobs, Math.max(5, Math.floor(opts.jobs / 10))) : 0;
    const plainJobs = opts.jobs - sentinelJobs;
    const intervalMs = Math.max(50, Math.floor(opts.durationMs / Math.max(1, plainJobs)));
    const owners = new Map<string, { jobId: string; step: number }>();
    const submitOne = async (i: number) => {
      const tag = i.toString(36);
      const steps = 1 + (i % 2);
      const args = { prefix, tag, steps, sleepMs: 300 + (i % 5) * 200 };
      const job = buildJobPayload({
        source: SCRIPT,
        target: { node: NODE },
        caps: ['net.netns.ensure', 'time.sleep'],
        aud: CLUSTER,
        args,
        limits: { timeoutMs: 60_000, memoryMiB: 64 },
        ttlS: 3600,
      });
      const envelope = encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(job), [admin]));
      const sub: Submission = { id: job.id, tag, steps, expected: `ok:${tag}:${steps}`, acceptedAt: null, lastAnswer: '' };
      submissions.push(sub);
      for (let s = 1; s <= steps; s++) owners.set(`${prefix}${tag}s${s}`, { jobId: job.id, step: s });
      const end = Date.now() + 60_000;
      while (!stopping && Date.now() < end) {
        try {
          const r = await api('POST', '/v1/jobs', envelope);
          sub.lastAnswer = `${r.status} ${JSON.stringify(r.body).slice(0, 200)}`;
          if (r.status >= 200 && r.status < 300) {
            sub.acceptedAt = Date.now();
            return;
          }
        } catch (e) {
          sub.lastAnswer = (e as Error).message;
        }
        await sleep(500);
      }
    };
    const inflight: Promise<void>[] = [];
    const submitter = (async () => {
      for (let i = 0; i < plainJobs && !stopping; i++) {
        const due = t0 + i * intervalMs;
        if (due > Date.now()) await sleep(due - Date.now());
        inflight.push(submitOne(i));
        if (i % 25 === 24) log(`submitted ${i + 1}/${opts.jobs}`);
      }
      await Promise.all(inflight);
    })();

    // The observer: every job's status over time, from the ledger's job list.
    let observing = true;
    let lastFinish = 0;
    const observe = async () => {
      let cursor: string | undefined;
      do {
        const r = await api('GET', `/v1/jobs?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
        if (r.status !== 200) return;
        for (const j of r.body.jobs as { id: string; status: string; finishedAt: string | null }[]) {
          if (j.finishedAt) lastFinish = Math.max(lastFinish, Date.parse(j.finishedAt));
          const seen = observed.get(j.id) ?? [];
          if (seen[seen.length - 1] !== j.status) observed.set(j.id, [...seen, j.status]);
        }
        cursor = r.body.nextCursor ?? undefined;
      } while (cursor);
    };
    const observer = (async () => {
      while (observing) {
        await observe().catch(() => {});
        await sleep(1000);
      }
    })();

    // The fault schedule: faults in order, evenly spaced; the Sentinel failover last (it moves the cluster to
    // a Sentinel group for the rest of the run).
    const plain = kinds.filter((k) => k !== 'sentinel-failover');
    const schedule: FaultKind[] = [];
    const perFaultMs = 12_000;
    const rounds = Math.max(1, Math.floor(opts.durationMs / (perFaultMs * Math.max(1, plain.length))));
    for (let r = 0; r < rounds; r++) schedule.push(...plain);
    if (kinds.includes('sentinel-failover')) schedule.push('sentinel-failover');
    const gapMs = Math.max(1000, Math.floor(opts.durationMs / (schedule.length + 1)));
    const pickedRunning = async () => {
      // Faults land better while a job runs: wait (a little) for one.
      await until('a running job', async () => ([...observed.values()].some((s) => s[s.length - 1] === 'running') ? true : undefined), 3000, 100).catch(
        () => {},
      );
    };
    const fault = async (kind: FaultKind) => {
      const rec: FaultRecord = { kind, at: Date.now(), restoredAt: null };
      faults.push(rec);
      log(`fault ${faults.length}/${schedule.length}: ${kind}`);
      switch (kind) {
        case 'kill-runner':
        case 'kill-supervisor':
        case 'kill-coord': {
          const svc = kind === 'kill-runner' ? runner : kind === 'kill-supervisor' ? supervisor : coord;
          await svc.settled();
          rec.at = Date.now();
          await svc.signal('SIGKILL');
          await svc.start();
          break;
        }
        case 'stop-runner': {
          await runner.settled();
          rec.at = Date.now();
          runner.child?.kill('SIGSTOP');
          // Past the lock, the stall check and the reconciler's 5 s, so a new attempt is dispatched meanwhile.
          await sleep(Math.max(lockMs * 3, 9000));
          runner.child?.kill('SIGCONT');
          break;
        }
        case 'redis-restart':
        case 'redis-wipe': {
          rec.at = Date.now();
          if (kind === 'redis-restart') await redis!.stop();
          else {
            redis!.process.kill('SIGKILL');
            await new Promise((r) => (redis!.process.exitCode !== null || redis!.process.signalCode !== null ? r(null) : redis!.process.once('exit', r)));
            for (const f of await readdir(redisDir)) await rm(path.join(redisDir, f), { recursive: true, force: true });
          }
          await startRedis();
          break;
        }
        case 'disk-full': {
          const st = await statfs(coordDir);
          const fill = path.join(coordDir, 'history-fill');
          rec.at = Date.now();
          await run('fallocate', ['-l', String(Number(st.bavail) * Number(st.bsize)), fill]).catch(async () => {
            await run('dd', ['if=/dev/zero', `of=${fill}`, 'bs=1M'], { maxBuffer: 1 << 20 }).catch(() => {});
          });
          rec.note = `filled ${coordDir}: ${(await statfs(coordDir)).bavail} blocks left`;
          await sleep(6000);
          await unlink(fill);
          break;
        }
        case 'sentinel-failover': {
          // Move the cluster to a Sentinel group: drain, restart supervisor and runner on the sentinel URL.
          if (!sentinel) {
            await until(
              'every accepted job terminal before the move to Sentinel',
              async () => (submissions.every((s) => s.acceptedAt === null || TERMINAL.has(observed.get(s.id)?.at(-1) ?? '')) ? true : undefined),
              60_000,
              250,
            ).catch(() => log('moving to Sentinel with jobs unfinished'));
            const helper = (await import(SENTINEL_HELPER)) as { startSentinelGroup(dir: string): Promise<SentinelGroup> };
            sentinel = await helper.startSentinelGroup(path.join(dir, 'sentinel'));
            await runner.signal('SIGTERM');
            await supervisor.signal('SIGTERM');
            redisUrl = sentinel.url;
            await supervisor.start();
            await runner.start();
          }
          const group = sentinel as SentinelGroup;
          const before = submissions.length;
          for (let i = plainJobs; i < opts.jobs; i++) inflight.push(submitOne(i));
          // Fail over while a job runs on the Sentinel group: wait (bounded) until one does.
          const ranHere = await until(
            'a job running on the Sentinel group',
            async () => (submissions.slice(before).some((x) => ['running', 'succeeded'].includes(observed.get(x.id)?.at(-1) ?? '')) ? true : undefined),
            60_000,
            100,
          ).catch(() => false);
          if (!ranHere) log('  no job ran on the Sentinel group within 60 s of its submission (before any failover)');
          const old = await group.currentPrimaryPort();
          rec.at = Date.now();
          await group.kill(old);
          const now = await group.waitForFailover(old, 60_000);
          rec.note = `primary ${old} → ${now}`;
          break;
        }
      }
      rec.restoredAt = Date.now();
      log(`  ${kind} restored after ${rec.restoredAt - rec.at} ms${rec.note ? ` (${rec.note})` : ''}`);
      // The next fault waits for this one's recovery: a job reaching a terminal state after it (or nothing
      // left to finish), so each fault is measured on its own.
      const idle = () => submissions.every((s) => s.acceptedAt === null || TERMINAL.has(observed.get(s.id)?.at(-1) ?? ''));
      await until(`recovery from ${kind}`, async () => (lastFinish > rec.at || idle() ? true : undefined), 90_000, 250).catch(() =>
        log(`  no job finished within 90 s of ${kind}`),
      );
    };
    for (let i = 0; i < schedule.length; i++) {
      const due = t0 + (i + 1) * gapMs;
      if (due > Date.now()) await sleep(due - Date.now());
      await pickedRunning();
      await fault(schedule[i]!);
    }
    await submitter;
    await Promise.all(inflight);
    log(`schedule done after ${Math.round((Date.now() - t0) / 1000)} s; settling`);

    // Settle: until every accepted job is terminal (bounded).
    await Promise.all(services.map((s) => s.settled()));
    const settleEnd = Date.now() + (opts.settleMs ?? 60_000);
    while (Date.now() < settleEnd) {
      await observe().catch(() => {});
      if (submissions.every((s) => s.acceptedAt === null || TERMINAL.has(observed.get(s.id)?.at(-1) ?? ''))) break;
      await sleep(500);
    }
    observing = false;
    await observer;

    // The ledger's final word on each job, with its attempts.
    const ledger = new Map<string, LedgerJob>();
    for (const s of submissions) {
      const r = await until(
        `the ledger view of ${s.id}`,
        async () => {
          const x = await api('GET', `/v1/jobs/${s.id}`);
          return x.status === 200 || x.status === 404 ? x : undefined;
        },
        30_000,
      );
      if (r.status === 200) ledger.set(s.id, r.body as LedgerJob);
    }
    const report = checkHistory({
      submissions,
      observed,
      ledger,
      journals: await readJournals({ [NODE]: runnerDir }),
      netns: await netnsNames(prefix),
      netnsOwner: (name) => owners.get(name) ?? null,
      faults,
    });
    const lines = formatReport(report);
    result = {
      ...report,
      lines,
      faults,
      dir,
      unplannedExits: services.flatMap((s) =>
        s.unplannedExits.map((e) => `${s.spec.name} at ${new Date(e.at).toISOString()} (${e.code ?? e.signal}): ${e.stderr.slice(-600)}`),
      ),
    };
    return result;
  } finally {
    stopping = true;
    await Promise.all(services.map((s) => s.stop().catch(() => {})));
    await (redis as EmbeddedRedis | null)?.stop().catch(() => {});
    await (sentinel as SentinelGroup | null)?.stop().catch(() => {});
    for (const n of await netnsNames(prefix).catch(() => [] as string[])) await run('ip', ['netns', 'del', n]).catch(() => {});
    if (tmpfs) await run('umount', ['-l', coordDir]).catch((e) => log(`umount ${coordDir}: ${(e as Error).message}`));
    if (!opts.keep && !(result && result.summary !== 'lost=0 duplicated=0 unexpected=0')) await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}
