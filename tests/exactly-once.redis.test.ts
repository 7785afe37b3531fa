// Exactly-once effects (R2), fencing (R3) and no replay on the node (T15), with real runner processes that
// are SIGKILLed at journal failpoints, SIGSTOPped past their lock, and fed replayed queue entries, on a real
// Redis and a real coord. The effects are real network namespaces (root only), named by the script.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BULL_PREFIX, b64url, queueJobId, queueNames } from '@writ/protocol';
import { startTestStack, type TestStack } from './helpers/stack.ts';

const isRoot = process.getuid?.() === 0;
const PREFIX = 'wq';
const RUNNER = path.resolve(import.meta.dirname, 'helpers/effect-runner.mjs');
const NODE = 'fx-1';

let s: TestStack;
let redis: Redis;
const children = new Set<ChildProcess>();

function netns(): string[] {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return r.stdout
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith(PREFIX));
}
function dropNetns(): void {
  for (const n of netns()) spawnSync('ip', ['netns', 'delete', n]);
}

/** Starts a runner process for NODE; resolves once it takes jobs. `exit` resolves when it ends. */
interface RunnerProc {
  child: ChildProcess;
  exit: Promise<NodeJS.Signals | number | null>;
  /** Resolves once the runner logged a line containing `text`. */
  logged(text: string, timeoutMs?: number): Promise<void>;
}
function startRunner(opts: { failpoint?: string; lockDurationMs?: number } = {}): Promise<RunnerProc> {
  const cfg = {
    nodeId: NODE,
    clusterId: s.clusterId,
    admins: { threshold: 1, keys: [{ keyid: s.admin.keyid, publicKey: b64url(s.admin.publicKey) }] },
    stateDir: path.join(s.stateDir, 'fx-node'),
    redisUrl: s.redisUrl,
    coordUrl: s.url,
    heartbeatMs: 300,
    lockDurationMs: opts.lockDurationMs ?? 2000,
    stalledIntervalMs: 500,
  };
  const child = spawn(process.execPath, [RUNNER], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, WRIT_TEST_RUNNER: JSON.stringify(cfg), WRIT_TEST_NET_PREFIX: PREFIX, ...(opts.failpoint ? { WRIT_FAILPOINT: opts.failpoint } : {}) },
  });
  children.add(child);
  const exit = new Promise<NodeJS.Signals | number | null>((r) =>
    child.once('exit', (code, sig) => {
      children.delete(child);
      r(sig ?? code);
    }),
  );
  let err = '';
  let all = '';
  child.stderr!.on('data', (d) => {
    err = (err + String(d)).slice(-4000);
    all += String(d);
    child.emit('logline');
  });
  const logged = (text: string, timeoutMs = 20_000) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the runner never logged "${text}"; its last lines: ${err}; all: ${all.length} chars`)), timeoutMs);
      const look = () => {
        if (!all.includes(text)) return;
        clearTimeout(timer);
        child.off('logline', look);
        resolve();
      };
      child.on('logline', look);
      look();
    });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += String(d);
      if (out.includes('"ready":true')) resolve({ child, exit, logged });
    });
    void exit.then((how) => reject(new Error(`runner exited (${how}) before it was ready: ${err}`)));
  });
}

async function journal(jobId: string): Promise<{ t: string; attempt: number; exec: string; step?: number; op?: string; result?: { created?: boolean } }[]> {
  const text = await readFile(path.join(s.stateDir, 'fx-node', 'journal', `${jobId}.jsonl`), 'utf8');
  return text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
}

async function securityAudit(subject: string, code: string, timeoutMs = 20_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const hit = ((await s.ledger.tailAudit(300)) as { kind: string; subject: string; data: any }[]).find(
      (e) => e.kind === 'security' && e.subject === subject && e.data?.error?.code === code,
    );
    if (hit) return hit;
    if (Date.now() > end) throw new Error(`no ${code} security audit entry for ${subject}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Two effects, each a namespace named by the script; returns what each call answered. */
const TWO_EFFECTS = (tag: string) => `export default async (a, ctx) => {
  const one = await ctx.sal.net.netns.ensure({ name: '${PREFIX}-${tag}-1' });
  const two = await ctx.sal.net.netns.ensure({ name: '${PREFIX}-${tag}-2' });
  return [one.created, two.created];
}`;

describe.skipIf(!isRoot)('exactly-once effects on a node (R2, R3, T15)', () => {
  beforeAll(async () => {
    dropNetns();
    s = await startTestStack({ nodes: [], reconcileAfterMs: 800, reconcileEveryMs: 300 });
    redis = new Redis(s.redisUrl, { maxRetriesPerRequest: null });
    const first = await startRunner();
    await s.waitForNode(NODE, ['inspected', 'active']);
    if ((await s.ledger.nodeStore.getNode(NODE))?.state === 'inspected')
      await s.service.nodes.apply(NODE, 'accept', { actor: 'test', reason: 'test node', byOperator: true });
    const end = Date.now() + 20_000;
    while (!(await s.service.nodes.workable()).some((n) => n.id === NODE)) {
      if (Date.now() > end) throw new Error(`${NODE} did not become workable`);
      await new Promise((r) => setTimeout(r, 50));
    }
    first.child.kill('SIGTERM');
    await first.exit;
  }, 90_000);

  // Each test starts the runners it needs: none left over from a failed one may take its job.
  afterEach(async () => {
    const left = [...children].map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.once('exit', r))));
    for (const c of children) c.kill('SIGKILL');
    await Promise.all(left);
  });

  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    redis?.disconnect();
    await s?.close();
    dropNetns();
  });

  // The runner dies at each point around the second effect; a new runner process finishes the job as a new
  // attempt. Each namespace exists once, and the second attempt took the first effect from the journal.
  for (const point of ['before-intent', 'after-intent', 'after-effect', 'after-done'] as const) {
    it(`SIGKILL ${point} of an effect: one effect per step, and the job succeeds as attempt 2`, async () => {
      const tag = point.replace(/[^a-z]/g, '').slice(0, 10);
      const { envelope, id } = s.sign(TWO_EFFECTS(tag), { caps: ['net.netns.ensure'], target: { node: NODE }, timeoutMs: 20_000 });
      const doomed = await startRunner({ failpoint: `${point}:2` });
      expect((await s.post(envelope)).status).toBe(202);
      expect(await doomed.exit).toBe('SIGKILL');
      const rescuer = await startRunner();
      const job = await s.waitFor(id, ['succeeded', 'failed'], 60_000);
      expect([job.status, job.attempts]).toEqual(['succeeded', 2]);
      // Step 1 was journaled done by attempt 1: attempt 2 replayed it (created: true, from the journal).
      // Step 2: made by attempt 2, unless attempt 1 had applied it before dying (then found: created false).
      expect(job.result).toEqual([true, point !== 'after-effect']);
      expect(
        netns()
          .filter((n) => n.startsWith(`${PREFIX}-${tag}-`))
          .sort(),
      ).toEqual([`${PREFIX}-${tag}-1`, `${PREFIX}-${tag}-2`]);
      const recs = await journal(id);
      const created = recs.filter((r) => r.t === 'done' && r.result?.created === true).map((r) => r.step);
      // No step is journaled as created twice; one created per step, except the step whose result died with attempt 1.
      expect(created).toEqual(point === 'after-effect' ? [1] : [1, 2]);
      expect(recs.filter((r) => r.t === 'start').map((r) => r.attempt)).toEqual([1, 2]);
      expect((await s.ledger.listAttempts(id)).map((a) => [a.attempt, a.outcome])).toEqual([
        [1, 'superseded'],
        [2, 'succeeded'],
      ]);
      rescuer.child.kill('SIGTERM');
      await rescuer.exit;
    }, 120_000);
  }

  it('SIGSTOP past the lock, SIGCONT after the retry ran: the resumed runner applies no effect', async () => {
    // Step 1 an effect, then a sleep the pause lands in, then the clock, then an effect named from the clock:
    // each execution that reaches step 4 makes its own namespace, so a second one would show.
    const src = `export default async (a, ctx) => {
      await ctx.sal.net.netns.ensure({ name: '${PREFIX}-stop-1' });
      await ctx.sal.time.sleep({ ms: 3000 });
      const t = (await ctx.sal.time.now()).ms;
      await ctx.sal.net.netns.ensure({ name: '${PREFIX}-stop-' + t });
      return 'done';
    }`;
    const { envelope, id } = s.sign(src, { caps: ['net.netns.ensure', 'time.sleep', 'time.now'], target: { node: NODE }, timeoutMs: 40_000 });
    const paused = await startRunner({ lockDurationMs: 1500 });
    expect((await s.post(envelope)).status).toBe(202);
    // Pause it once step 1 is journaled, inside the sleep.
    for (const end = Date.now() + 20_000; ; await new Promise((r) => setTimeout(r, 20))) {
      const recs = await journal(id).catch(() => []);
      if (recs.some((r) => r.t === 'done' && r.step === 1)) break;
      if (Date.now() > end) throw new Error('step 1 never journaled');
    }
    paused.child.kill('SIGSTOP');
    // Another runner process of the node finds the attempt stalled; the coord dispatches attempt 2.
    const other = await startRunner();
    const job = await s.waitFor(id, ['succeeded', 'failed'], 60_000);
    expect([job.status, job.attempts]).toEqual(['succeeded', 2]);
    const before = netns()
      .filter((n) => n.startsWith(`${PREFIX}-stop-`))
      .sort();
    expect(before).toHaveLength(2); // step 1, and attempt 2's step 4
    paused.child.kill('SIGCONT');
    // The resumed execution wakes from its sleep, reads the clock and is fenced at its next effect; it says so.
    await paused.logged('"code":"EFFECT_FENCED"').catch(async (e: Error) => {
      throw new Error(
        `${e.message}\nstate: ${spawnSync('ps', ['-o', 'stat=', '-p', String(paused.child.pid)], { encoding: 'utf8' }).stdout} exit: ${paused.child.exitCode} ${paused.child.signalCode}\njournal: ${JSON.stringify(await journal(id))}\nattempts: ${JSON.stringify(await s.ledger.listAttempts(id))}`,
      );
    });
    // Where it stopped depends on where the pause caught it: at the fencing check right after step 1's effect,
    // or (paused in the sleep) at step 4's. Either way attempt 1 journaled nothing past step 3 and no end.
    const resumed = (await journal(id)).filter((r) => r.attempt === 1).map((r) => `${r.t}${r.step ?? ''}`);
    expect(resumed.slice(0, 3)).toEqual(['start', 'intent1', 'done1']);
    expect(resumed.filter((r) => !['done2', 'done3'].includes(r)).slice(3)).toEqual([]);
    expect(
      netns()
        .filter((n) => n.startsWith(`${PREFIX}-stop-`))
        .sort(),
    ).toEqual(before);
    const recs = await journal(id);
    expect(recs.filter((r) => r.attempt === 1 && r.step === 4)).toEqual([]);
    expect(await s.ledger.getJob(id)).toMatchObject({ status: 'succeeded', result: 'done', attempts: 2 });
    for (const c of [paused, other]) {
      c.child.kill('SIGTERM');
      await c.exit;
    }
  }, 150_000);

  it('a finished job re-added to its queue with the same id is refused and reported, not run (T15)', async () => {
    const { envelope, id } = s.sign(TWO_EFFECTS('replay'), { caps: ['net.netns.ensure'], target: { node: NODE } });
    const r = await startRunner();
    expect((await s.post(envelope)).status).toBe(202);
    expect((await s.waitFor(id, ['succeeded', 'failed'], 30_000)).status).toBe('succeeded');
    const q = new Queue(queueNames.node(NODE), { connection: redis, prefix: BULL_PREFIX });
    await (await q.getJob(queueJobId(id, 1)))?.remove();
    await q.add('job', { envelope, attempt: 1 }, { jobId: queueJobId(id, 1), attempts: 1 });
    await q.close();
    const hit = await securityAudit(id, 'JOB_REPLAYED');
    expect(hit.data.error.message).toMatch(/already started/);
    expect((await journal(id)).filter((x) => x.t === 'start')).toHaveLength(1);
    expect(await s.ledger.getJob(id)).toMatchObject({ status: 'succeeded', attempts: 1 });
    r.child.kill('SIGTERM');
    await r.exit;
  }, 60_000);

  it('a job whose result was lost with Redis is put back as a new attempt and reports its journaled outcome without running', async () => {
    const { envelope, id } = s.sign(TWO_EFFECTS('lost'), { caps: ['net.netns.ensure'], target: { node: NODE } });
    // The runner dies right after journaling the outcome, before reporting it; then Redis loses everything.
    const doomed = await startRunner({ failpoint: 'after-end' });
    expect((await s.post(envelope)).status).toBe(202);
    expect(await doomed.exit).toBe('SIGKILL');
    expect((await s.ledger.getJob(id))?.status).not.toBe('succeeded');
    await redis.flushall();
    const r = await startRunner();
    const job = await s.waitFor(id, ['succeeded', 'failed'], 60_000);
    expect([job.status, job.attempts, job.result]).toEqual(['succeeded', 2, [true, true]]);
    const recs = await journal(id);
    expect(recs.filter((x) => x.t === 'start').map((x) => x.attempt)).toEqual([1]); // attempt 2 never started: nothing ran again
    expect(recs.filter((x) => x.t === 'intent')).toHaveLength(2);
    r.child.kill('SIGTERM');
    await r.exit;
  }, 90_000);
});
