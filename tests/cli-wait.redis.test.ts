// A mistyped target node is refused at admission (NODE_UNKNOWN); a known node that takes no work makes the job
// wait, and `writ submit --wait` says why it waits instead of waiting silently (issue 13).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '@writ/cli';
import { NOOP, startTestStack, type TestStack } from './helpers/stack.ts';

let s: TestStack;
let dir: string;

beforeAll(async () => {
  s = await startTestStack({ nodes: [{ id: 'node-a', labels: { rack: 'r1' } }] });
  // Registered and inspected, never accepted: known to the coord, but it takes no work.
  await s.startRunner('node-idle', { rack: 'r5' }, { accept: false });
  await s.waitForNode('node-idle', ['inspected'], 30_000);
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-cli-wait-'));
}, 180_000);
afterAll(async () => {
  await s?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function submitFile(envelope: string, args: string[]) {
  const file = path.join(dir, `${Math.random().toString(36).slice(2)}.env.json`);
  await writeFile(file, envelope);
  const out: string[] = [];
  const err: string[] = [];
  const env = { WRIT_HOME: path.join(dir, 'home'), WRIT_COORD: s.url, WRIT_TOKEN: s.token };
  const code = await runCli(['submit', file, ...args], { out: (l) => out.push(l), err: (l) => err.push(l) }, { env, now: () => Math.floor(Date.now() / 1000) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('target nodes at admission', () => {
  it('a node the coord has never registered is refused at once with NODE_UNKNOWN, over HTTP and in the CLI', async () => {
    const { envelope, id } = s.sign(NOOP, { target: { node: 'nosuch-9' } });
    const r = await s.post(envelope);
    expect([r.status, r.body.error.code]).toEqual([400, 'NODE_UNKNOWN']);
    expect(r.body.error.message).toMatch(/no node nosuch-9 is registered/);
    expect(await s.ledger.getJob(id)).toMatchObject({ status: 'refused', errorCode: 'NODE_UNKNOWN' });
    const again = s.sign(NOOP, { target: { node: 'nosuch-10' } });
    const started = Date.now();
    const cli = await submitFile(again.envelope, ['--wait']);
    expect([cli.code, cli.err]).toEqual([1, expect.stringContaining('NODE_UNKNOWN: no node nosuch-10 is registered')]);
    expect(Date.now() - started).toBeLessThan(15_000); // answered, not waited on until the envelope expires
  });

  it('a known node that takes no work keeps the job waiting, and submit --wait says why', async () => {
    const { envelope, id } = s.sign(NOOP, { target: { node: 'node-idle' } });
    const cli = await submitFile(envelope, ['--wait', '--wait-timeout', '15s']);
    expect(cli.code).toBe(1);
    expect(cli.out).toContain(`job ${id} accepted: admitted`);
    expect(cli.err).toMatch(new RegExp(`writ: job ${id} is waiting for a node: node node-idle is inspected; the job waits until it is active and reachable`));
    expect(cli.err).toContain('WAIT_TIMEOUT');
    expect((await s.ledger.getJob(id))?.status).toBe('admitted');
  }, 90_000);

  it('labels no node has, or only nodes that take no work: the job waits and the wait says which', async () => {
    const none = s.sign(NOOP, { target: { selector: { rack: 'r9' } } });
    const a = await submitFile(none.envelope, ['--wait', '--wait-timeout', '15s']);
    expect(a.err).toContain(`job ${none.id} is waiting for a node: no node has the labels rack=r9; the job waits until one registers`);
    const idle = s.sign(NOOP, { target: { selector: { rack: 'r5' } } });
    const b = await submitFile(idle.envelope, ['--wait', '--wait-timeout', '15s']);
    expect(b.err).toContain(`job ${idle.id} is waiting for a node: no active, reachable node has the labels rack=r5 (node-idle is inspected)`);
  }, 90_000);
});
