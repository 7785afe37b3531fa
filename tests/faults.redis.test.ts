// Fault injection on the signed path: a runner SIGKILLed mid-job, and Redis losing everything (FLUSHALL)
// while jobs wait. Nothing accepted is lost; nothing runs to completion twice (R1, R5).
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { BULL_PREFIX, encodePublicKeyFile, queueNames } from '@writ/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NOOP, startTestStack, type TestStack } from './helpers/stack.ts';

const BIN = path.resolve(import.meta.dirname, '../bin/writ.mjs');
let s: TestStack;
let redis: Redis;
const children: ChildProcess[] = [];

async function startRunnerProcess(node: string): Promise<ChildProcess> {
  const adminPub = path.join(s.stateDir, 'admin.pub');
  await writeFile(adminPub, encodePublicKeyFile(s.admin.publicKey));
  const args = [
    BIN,
    'runner',
    '--node',
    node,
    '--redis',
    s.redisUrl,
    '--coord',
    s.url,
    '--admin-key',
    adminPub,
    '--cluster',
    s.clusterId,
    '--state',
    path.join(s.stateDir, `proc-${node}`),
    '--lock-ms',
    '2000',
    '--stalled-ms',
    '1000',
    '--heartbeat-ms',
    '1000',
  ];
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, WRIT_LOG_LEVEL: 'warn' },
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += String(d);
      if (out.includes('"ready":true')) resolve(child);
    });
    let err = '';
    child.stderr!.on('data', (d) => (err += String(d)));
    child.once('exit', (code) => reject(new Error(`runner exited early (${code}): ${err}`)));
  });
}

/** An operator accepts the node once it registered (first start only). */
async function acceptWhenRegistered(node: string) {
  await s.waitForNode(node, ['inspected', 'active']);
  if ((await s.ledger.nodeStore.getNode(node))?.state === 'inspected')
    await s.service.nodes.apply(node, 'accept', { actor: 'test', reason: 'test', byOperator: true });
  await s.waitForNode(node, ['active']);
}

beforeAll(async () => {
  s = await startTestStack({ nodes: [{ id: 'node-a' }] });
  redis = new Redis(s.redisUrl, { maxRetriesPerRequest: null });
}, 60_000);
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  redis?.disconnect();
  await s?.close();
});

describe('faults', () => {
  it('a runner SIGKILLed mid-job: the job is retried on a new runner and completes; attempts are in the ledger', async () => {
    const first = await startRunnerProcess('node-k');
    await acceptWhenRegistered('node-k');
    const { envelope, id } = s.sign('export default async (a, ctx) => { ctx.log.info("start"); await ctx.sal.time.sleep({ ms: 2500 }); return "done" }', {
      caps: ['time.sleep'],
      target: { node: 'node-k' },
    });
    expect((await s.post(envelope)).status).toBe(202);
    await s.waitFor(id, ['running']);
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    const second = await startRunnerProcess('node-k');
    const job = await s.waitFor(id, ['succeeded', 'failed'], 40_000);
    second.kill('SIGTERM');
    expect(job.status).toBe('succeeded');
    expect(job.result).toBe('done');
    const attempts = await s.ledger.listAttempts(id);
    expect(attempts.length).toBeGreaterThanOrEqual(2);
    expect(job.attempts).toBeGreaterThanOrEqual(2);
  }, 60_000);

  it('R1: Redis FLUSHALL while jobs wait: the reconciler re-dispatches them and each completes exactly once', async () => {
    // Pausing the queue (not the worker) holds jobs in Redis where FLUSHALL will take them.
    const queue = new Queue(queueNames.node('node-a'), { connection: redis, prefix: BULL_PREFIX });
    await queue.pause();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const { envelope, id } = s.sign(`export default async (a, ctx) => { ctx.log.info("ran ${i}"); return ${i} }`);
      expect((await s.post(envelope)).status).toBe(202);
      ids.push(id);
    }
    for (const id of ids) expect((await s.ledger.getJob(id))?.status).toBe('queued');
    expect(await redis.flushall()).toBe('OK'); // the jobs, the queue's paused flag, the key set and the events group are gone
    await queue.close();
    for (const [i, id] of ids.entries()) {
      const job = await s.waitFor(id, ['succeeded', 'failed'], 30_000);
      expect([job.status, job.result, job.errorCode, job.errorMessage]).toEqual(['succeeded', i, null, null]);
    }
    // Exactly once: one "ran" log line and one succeeded attempt per job.
    await new Promise((r) => setTimeout(r, 1000));
    for (const id of ids) {
      const logs = (await s.ledger.listJobEvents(id, 0, 100)).filter((e: { type: string }) => e.type === 'log');
      expect(logs).toHaveLength(1);
      // The lost entries had never started: the same attempt 1 was enqueued again, no attempt was used up.
      expect((await s.ledger.listAttempts(id)).map((a) => [a.attempt, a.outcome])).toEqual([[1, 'succeeded']]);
    }
    const after = s.sign(NOOP);
    expect((await s.post(after.envelope)).status).toBe(202);
    expect((await s.waitFor(after.id)).status).toBe('succeeded');
  }, 60_000);
});
