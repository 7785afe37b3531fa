// R6: REDIS_URL as a Sentinel address, and a failover while jobs run. Supervisor and runners (one in this
// process, one a `writ runner` process) follow the sentinels to the promoted replica by themselves: every job
// submitted before and after the primary is SIGKILLed completes, and none runs twice (its script's one log
// line appears once in the ledger).
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodePublicKeyFile } from '@writ/protocol';
import { killAllWrit, startWrit } from './helpers/processes.ts';
import { startSentinelGroup, type SentinelGroup } from './helpers/sentinel.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

let dir: string;
let group: SentinelGroup;
let s: TestStack;
// tools/setup.mjs installs Debian's redis-sentinel for `npm test`; without it this file says so and skips.
const haveSentinel = spawnSync('redis-sentinel', ['--version']).status === 0;
if (!haveSentinel) console.warn('skipping the Sentinel tests: redis-sentinel is not installed (apt-get install redis-sentinel)');

beforeAll(async () => {
  if (!haveSentinel) return;
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-sentinel-'));
  group = await startSentinelGroup(dir);
  s = await startTestStack({ redisUrl: group.url, nodes: [{ id: 'node-a' }] });
  await writeFile(path.join(dir, 'admin.pub'), encodePublicKeyFile(s.admin.publicKey));
}, 60_000);

afterAll(async () => {
  killAllWrit();
  await s?.close();
  await group?.stop();
  await rm(dir, { recursive: true, force: true });
});

const SCRIPT = 'export default async (args, ctx) => { ctx.log.info("ran " + args.i); await ctx.sal.time.sleep({ ms: 1200 }); return args.i }';

async function post(envelope: string): Promise<void> {
  // During a failover the coord may answer 503 for a moment; a job it answered 202 for is recorded.
  for (let i = 0; ; i++) {
    const res = await s.post(envelope);
    if (res.status === 202 || res.status === 200) return;
    if (res.status < 500 || i > 100) throw new Error(`submit answered ${res.status}: ${JSON.stringify(res.body)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.skipIf(!haveSentinel)('Redis Sentinel (R6)', () => {
  it('a failover while jobs run: every job completes and none runs twice', async () => {
    // A runner in its own process, given the Sentinel address on its command line.
    await startWrit(
      [
        'runner',
        '--node',
        'node-p',
        '--redis',
        group.url,
        '--coord',
        s.url,
        '--admin-key',
        path.join(dir, 'admin.pub'),
        '--cluster',
        s.clusterId,
        '--state',
        path.join(dir, 'node-p'),
        '--heartbeat-ms',
        '500',
        '--concurrency',
        '2',
      ],
      {},
    );
    await s.waitForNode('node-p', ['inspected', 'active']);
    if ((await s.ledger.nodeStore.getNode('node-p'))?.state === 'inspected')
      await s.service.nodes.apply('node-p', 'accept', { actor: 'test', reason: 'test', byOperator: true });
    await s.waitForNode('node-p', ['active']);

    const jobs: { id: string; i: number }[] = [];
    const submit = async (i: number) => {
      const { envelope, id } = s.sign(SCRIPT, { caps: ['time.sleep'], args: { i }, target: { node: i % 2 ? 'node-p' : 'node-a' } });
      await post(envelope);
      jobs.push({ id, i });
    };
    for (let i = 0; i < 8; i++) await submit(i);
    await Promise.all(jobs.slice(0, 2).map((j) => s.waitFor(j.id, ['running', 'succeeded'])));

    const oldPrimary = await group.currentPrimaryPort();
    const killedAt = Date.now();
    await group.kill(oldPrimary);
    const newPrimary = await group.waitForFailover(oldPrimary);
    const failoverMs = Date.now() - killedAt;
    expect(newPrimary).toBe(group.replicaPort);
    for (let i = 8; i < 14; i++) await submit(i); // work submitted after the failover goes to the new primary

    const done = await Promise.all(jobs.map((j) => s.waitFor(j.id, ['succeeded', 'failed', 'refused'], 45_000)));
    const recoveredMs = Date.now() - killedAt;
    expect(done.map((j) => j.status)).toEqual(jobs.map(() => 'succeeded'));
    expect(done.map((j) => j.result)).toEqual(jobs.map((j) => j.i));
    // None twice: each script logs "ran i" once per run.
    const runs = await Promise.all(
      jobs.map(async (j) => (await s.ledger.listJobEvents(j.id, 0, 1000)).filter((e) => e.type === 'log' && e.message === `ran ${j.i}`).length),
    );
    expect(runs).toEqual(jobs.map(() => 1));
    console.log(
      `sentinel failover: new primary after ${failoverMs} ms; all ${jobs.length} jobs done ${recoveredMs} ms after the primary was killed; attempts ${done.map((j) => j.attempts).join(',')}`,
    );
  }, 90_000);
});
