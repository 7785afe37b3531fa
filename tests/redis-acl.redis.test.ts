// R7 on a real Redis with ACLs (default user off, users made by `writ redis acl`): a runner's user reaches
// only its own node's queue, and a real runner process under it, in production mode, still runs its jobs; in
// production a runner or supervisor connected as any other user is refused.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startEmbeddedRedis, type EmbeddedRedis } from '@writ/cli';
import { BULL_PREFIX, b64url, encodePublicKeyFile, generateKeyPair, queueNames, redisKeys } from '@writ/protocol';
import { Supervisor } from '@writ/supervisor';
import { killAllWrit, runWrit, startWrit } from './helpers/processes.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

let dir: string;
let redis: EmbeddedRedis;
let s: TestStack;
const clients: Redis[] = [];
const password = (who: string) => `${who}-${Math.random().toString(36).slice(2)}-long-enough`;
const pw = { admin: password('admin'), supervisor: password('sup'), 'acl-1': password('n1'), 'acl-2': password('n2') };
const url = (user: string, pass: string) => `redis://${user}:${pass}@127.0.0.1:${redis.port}`;
const runnerUrl = (node: 'acl-1' | 'acl-2') => url(`writ-runner-${node}`, pw[node]);

/** Applies what `writ redis acl` prints (--json) on the test Redis. */
async function createUser(root: Redis, args: string[], pass: string): Promise<string> {
  const file = path.join(dir, `${args.join('-')}.pw`);
  await writeFile(file, pass + '\n', { mode: 0o600 });
  const out: string[] = [];
  const code = await runCli(
    ['redis', 'acl', ...args, '--password-file', file, '--json'],
    { out: (l) => out.push(l), err: (l) => out.push(l) },
    { env: process.env, now: () => 0 },
  );
  expect(code).toBe(0);
  const answer = JSON.parse(out.join('\n')) as { user: string; command: string[]; password?: string };
  expect(answer.password).toBeUndefined(); // given in a file: never printed
  await root.call(answer.command[0]!, ...answer.command.slice(1));
  return answer.user;
}

function client(u: string): Redis {
  const c = new Redis(u, { maxRetriesPerRequest: 1 });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-acl-'));
  redis = await startEmbeddedRedis({ dataDir: path.join(dir, 'redis') });
  const root = new Redis(redis.url);
  await root.call('ACL', 'SETUSER', 'acl-admin', 'on', `>${pw.admin}`, '~*', '&*', '+@all');
  expect(await createUser(root, ['--role', 'supervisor'], pw.supervisor)).toBe('writ-supervisor');
  expect(await createUser(root, ['--role', 'runner', '--node', 'acl-1'], pw['acl-1'])).toBe('writ-runner-acl-1');
  expect(await createUser(root, ['--role', 'runner', '--node', 'acl-2'], pw['acl-2'])).toBe('writ-runner-acl-2');
  await root.call('ACL', 'SETUSER', 'default', 'off'); // as production should: nobody gets in without a user
  root.disconnect();
  // The coord and supervisor of this stack reach Redis only as writ-supervisor.
  s = await startTestStack({ redisUrl: url('writ-supervisor', pw.supervisor), nodes: [] });
  await writeFile(path.join(dir, 'admin.pub'), encodePublicKeyFile(s.admin.publicKey));
}, 60_000);

afterAll(async () => {
  killAllWrit();
  for (const c of clients) c.disconnect();
  await s?.close();
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

const runnerArgs = (node: string, redisUrl: string, state: string) => [
  'runner',
  '--node',
  node,
  '--redis',
  redisUrl,
  '--coord',
  s.url,
  '--admin-key',
  path.join(dir, 'admin.pub'),
  '--cluster',
  s.clusterId,
  '--state',
  path.join(dir, state),
  '--heartbeat-ms',
  '500',
];

describe('per-role Redis ACL users (R7)', () => {
  it("a runner process under its own node's user, in production mode, runs its jobs", async () => {
    const runner = await startWrit(runnerArgs('acl-1', runnerUrl('acl-1'), 'r1'), { WRIT_PRODUCTION: '1' });
    await s.waitForNode('acl-1', ['inspected', 'active']);
    if ((await s.ledger.nodeStore.getNode('acl-1'))?.state === 'inspected')
      await s.service.nodes.apply('acl-1', 'accept', { actor: 'test', reason: 'test', byOperator: true });
    await s.waitForNode('acl-1', ['active']);
    const { envelope, id } = s.sign('export default async (a, ctx) => { ctx.log.info("under ACL"); return (await ctx.sal.host.facts()).cpu.threads }', {
      caps: ['host.facts'],
      target: { node: 'acl-1' },
    });
    expect((await s.post(envelope)).status).toBe(202);
    const job = await s.waitFor(id, ['succeeded', 'failed', 'refused'], 30_000);
    expect({ status: job.status, result: job.result }).toEqual({ status: 'succeeded', result: os.cpus().length });
    expect(runner.stderr()).not.toMatch(/NOPERM/);
  }, 60_000);

  it("a runner's user cannot add a job to another node's queue, read the event stream or change the key set", async () => {
    const r = client(runnerUrl('acl-1'));
    expect(String(await r.call('ACL', 'WHOAMI'))).toBe('writ-runner-acl-1');
    const other = new Queue(queueNames.node('acl-2'), { connection: r, prefix: BULL_PREFIX });
    await expect(other.add('job', { envelope: 'x' }, { jobId: 'forged-1' })).rejects.toThrow(/NOPERM|no permissions/);
    await other.close();
    await expect(r.set(`${BULL_PREFIX}:${queueNames.node('acl-2')}:wait`, 'x')).rejects.toThrow(/NOPERM/);
    await expect(r.xrange(redisKeys.events(), '-', '+')).rejects.toThrow(/NOPERM/);
    await expect(r.xtrim(redisKeys.events(), 'MAXLEN', 0)).rejects.toThrow(/NOPERM/);
    await expect(r.set(redisKeys.keySet(), 'x')).rejects.toThrow(/NOPERM/);
    await expect(r.hset(redisKeys.node('acl-2'), 'seen', '1')).rejects.toThrow(/NOPERM/);
    await expect(r.flushall()).rejects.toThrow(/NOPERM/);
    await expect(r.keys('*')).rejects.toThrow(/NOPERM/);
    // What the node needs stays open: its own queue, its heartbeat, XADD, and reading the key set.
    const own = new Queue(queueNames.node('acl-1'), { connection: r, prefix: BULL_PREFIX });
    expect(await own.getJobCounts('completed')).toMatchObject({ completed: expect.any(Number) });
    await own.close();
    expect(await r.get(redisKeys.keySet())).toBeTruthy();
  });

  it('in production a runner connected as another user is refused with REDIS_MISCONFIGURED, before it runs anything', async () => {
    const [asOther, asAdmin] = await Promise.all([
      runWrit(runnerArgs('acl-1', runnerUrl('acl-2'), 'r1-wrong'), { WRIT_PRODUCTION: '1' }),
      runWrit(runnerArgs('acl-1', url('acl-admin', pw.admin), 'r1-admin'), { WRIT_PRODUCTION: '1' }),
    ]);
    expect(asOther.code).toBe(1);
    expect(asOther.stderr).toMatch(/REDIS_MISCONFIGURED: connected to Redis as ACL user "writ-runner-acl-2".*must connect as "writ-runner-acl-1"/);
    expect([asAdmin.code, asAdmin.stderr]).toEqual([1, expect.stringMatching(/REDIS_MISCONFIGURED: connected to Redis as ACL user "acl-admin"/)]);
  }, 40_000);

  it('in production a supervisor starts only as writ-supervisor', async () => {
    const admin = generateKeyPair();
    const base = {
      id: 'sup-acl',
      clusterId: 'c',
      signingKey: generateKeyPair(),
      admins: { threshold: 1, keys: [{ keyid: admin.keyid, publicKey: b64url(admin.publicKey) }] },
      sink: { deliver: async () => {} },
      production: true,
    };
    await expect(Supervisor.start({ ...base, redisUrl: url('acl-admin', pw.admin) })).rejects.toMatchObject({
      code: 'REDIS_MISCONFIGURED',
      message: expect.stringContaining('"writ-supervisor"'),
    });
    const ok = await Supervisor.start({ ...base, redisUrl: url('writ-supervisor', pw.supervisor) });
    await ok.close();
  });
});
