// Clients and services ride out restarts (R6, issue 9 part 7), all as separate processes: `writ submit --wait`
// across a coord restart exits 0 for a job that succeeds (it used to exit 1, "did not succeed"), and
// --wait-timeout ends a wait with WAIT_TIMEOUT, coord up or down; a Redis restart while a job runs is
// recovered by the runner and supervisor by themselves.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startEmbeddedRedis, type EmbeddedRedis } from '@writ/cli';
import { redisKeys } from '@writ/protocol';
import { killAllWrit, processCluster, type ProcessCluster, type WritProcess } from './helpers/processes.ts';

let dir: string;
let redis: EmbeddedRedis;
let c: ProcessCluster;
let coord: WritProcess;
let supervisor: WritProcess;
let runner: WritProcess;
const NODE = 'rs-1';

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-restarts-'));
  redis = await startEmbeddedRedis({ dataDir: path.join(dir, 'redis') });
  c = await processCluster(dir, redis.url);
  supervisor = await c.startSupervisor();
  coord = await c.startCoord();
  await c.publishKeySet();
  runner = await c.startRunner(NODE);
  await c.acceptNode(NODE);
  // Redis and three service processes started one after another: took over 120 s on a 2-core machine at load 25.
}, 300_000);

afterAll(async () => {
  killAllWrit();
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

const sleeper = (ms: number, result: string) =>
  `export default async (a, ctx) => { await ctx.sal.time.sleep({ ms: ${ms} }); return ${JSON.stringify(result)} }`;

/** `writ submit ...` as the CLI runs it (in this process: services are the processes here, and a CLI start costs seconds). */
async function submit(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(
    ['submit', ...args, '--coord', c.coordUrl],
    { out: (l) => out.push(l), err: (l) => err.push(l) },
    { env: { ...process.env, ...c.env }, now: () => Math.floor(Date.now() / 1000) },
  );
  return { code, stdout: out.join('\n'), stderr: err.join('\n') };
}

/** Writes a signed job to a file for `writ submit`. */
async function envelopeFile(source: string): Promise<{ id: string; file: string }> {
  const { id, envelope } = c.sign(source, NODE, ['time.sleep']);
  const file = path.join(dir, `${id}.json`);
  await writeFile(file, envelope);
  return { id, file };
}

/**
 * Resolves once the runner says (in its Redis heartbeat) that it is running a job: the ledger may hear of
 * that later than the runner starts, when reports queued up during an outage.
 */
async function runnerBusy(): Promise<void> {
  const r = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  try {
    while (Number(await r.hget(redisKeys.node(NODE), 'running')) < 1) await new Promise((res) => setTimeout(res, 50));
  } finally {
    r.disconnect();
  }
}

async function restartCoord(how: NodeJS.Signals): Promise<void> {
  coord.child.kill(how);
  await coord.exited();
  coord = await c.startCoord();
}

describe('restarts', () => {
  it('submit --wait rides out a coord restart and exits 0 for a job that succeeds', async () => {
    const { id, file } = await envelopeFile(sleeper(2500, 'done across a coord restart'));
    const submitting = submit([file, '--wait']);
    await runnerBusy();
    await restartCoord('SIGTERM');
    const r = await submitting;
    expect(r.stderr).toContain(`the coord is not answering`); // it did see the coord go away
    expect([r.code, r.stdout]).toEqual([0, expect.stringContaining(`job ${id} succeeded`)]);
    expect(r.stdout).toContain('done across a coord restart');
  }, 90_000);

  it('--wait-timeout ends the wait with WAIT_TIMEOUT, whether the coord answers or is gone', async () => {
    const running = await envelopeFile(sleeper(8000, 'slow'));
    const r1 = await submit([running.file, '--wait', '--wait-timeout', '2s']);
    expect(r1.code).toBe(1);
    expect(r1.stderr).toMatch(new RegExp(`WAIT_TIMEOUT: job ${running.id} did not end within --wait-timeout 2s \\(last seen (queued|running)\\)`));

    const { id, file } = await envelopeFile(sleeper(8000, 'slow too'));
    const t0 = Date.now();
    const waiting = submit([file, '--wait', '--wait-timeout', '4s']);
    await c.waitForJob(id, ['queued', 'running']); // recorded: the coord took it
    coord.child.kill('SIGTERM');
    await coord.exited();
    const r2 = await waiting;
    expect(r2.code).toBe(1);
    expect(r2.stderr).toContain('the coord is not answering');
    // (Had the coord died before its 202 reached the CLI, the CLI would still be asking it to take the job.)
    expect(r2.stderr).toMatch(new RegExp(`WAIT_TIMEOUT: (job ${id}|the submission of the job) did not end within --wait-timeout 4s`));
    expect(Date.now() - t0).toBeLessThan(4000 + 3000);
    coord = await c.startCoord();
  }, 90_000);

  it('a Redis restart while a job runs: runner and supervisor reconnect by themselves and work goes on', async () => {
    const before = c.sign(sleeper(1500, 'ran across a Redis restart'), NODE, ['time.sleep']);
    expect((await c.api('POST', '/v1/jobs', before.envelope)).status).toBe(202);
    await runnerBusy();
    await redis.stop();
    redis = await startEmbeddedRedis({ dataDir: redis.dataDir, port: redis.port });
    expect((await c.waitForJob(before.id, ['succeeded', 'failed'], 40_000)).status).toBe('succeeded');
    const after = c.sign(sleeper(10, 'after the restart'), NODE, ['time.sleep']);
    expect((await c.api('POST', '/v1/jobs', after.envelope)).status).toBe(202);
    expect(await c.waitForJob(after.id, ['succeeded', 'failed'], 30_000)).toMatchObject({ status: 'succeeded', result: 'after the restart' });
    expect([runner.child.exitCode, supervisor.child.exitCode, coord.child.exitCode]).toEqual([null, null, null]);
  }, 90_000);
});
