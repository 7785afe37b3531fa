// `writ flow` against a real stack: the example flow in scripts/examples/flows/hello as docs/flows.md runs
// it (sign, run --follow, show, list), and flow files with mistakes refused before anything is signed.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '@writ/cli';
import { encodePrivateKeyFile } from '@writ/protocol';
import { startTestStack, type TestStack } from './helpers/stack.ts';

let s: TestStack;
let home: string;
const EXAMPLE = path.resolve(import.meta.dirname, '../scripts/examples/flows/hello/flow.json');

beforeAll(async () => {
  // The node of `writ dev`: dev-1, labelled env=dev.
  s = await startTestStack({ nodes: [{ id: 'dev-1', labels: { env: 'dev' } }] });
  home = await mkdtemp(path.join(os.tmpdir(), 'writ-flow-cli-'));
  await writeFile(path.join(home, 'admin.key'), encodePrivateKeyFile(s.admin), { mode: 0o600 });
}, 180_000);
afterAll(async () => {
  await s?.close();
  if (home) await rm(home, { recursive: true, force: true });
});

async function cli(...args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(
    args,
    { out: (l) => out.push(l), err: (l) => err.push(l) },
    { env: { ...process.env, WRIT_HOME: home, WRIT_COORD: s.url, WRIT_TOKEN: s.token }, now: () => Math.floor(Date.now() / 1000) },
  );
  return { code, out, err };
}

describe('writ flow', () => {
  it('signs, runs and follows the example flow to success, then shows and lists it', async () => {
    const key = path.join(home, 'admin.key');
    const envFile = path.join(home, 'hello.flow.env.json');
    const signed = await cli('flow', 'sign', EXAMPLE, '--key', key, '--out', envFile);
    expect(signed.code).toBe(0);
    expect(signed.out.join('\n')).toMatch(/signed flow hello-flow \(3 steps, 1 signature/);
    // Signing again over an existing file needs --force (ENVELOPE_FILE_EXISTS, nothing overwritten).
    const again = await cli('flow', 'sign', EXAMPLE, '--key', key, '--out', envFile);
    expect(again.code).not.toBe(0);
    expect(again.err.join('\n')).toMatch(/ENVELOPE_FILE_EXISTS: .*hello\.flow\.env\.json exists already/);

    const run = await cli('flow', 'run', envFile, '--follow');
    const text = run.out.join('\n');
    expect(run.code).toBe(0);
    expect(text).toMatch(/flow hello-flow: accepted/);
    expect(text).toMatch(/step facts runs on 1 node\(s\): dev-1/);
    expect(text).toMatch(/step facts: started on dev-1/);
    expect(text).toMatch(/\[flaky@dev-1\] warn: attempt 1 failed, will retry as attempt 2: SCRIPT_ERROR/);
    // One retry, as attempt 2: a reconciler pass that judged attempt 1 while its report was being applied once
    // started a second new attempt here (the ledger now assigns an attempt only from the state it was judged on).
    const flakyEvents = async () => (await s.ledger.listJobEvents('hello-flow.flaky', 0, 100)).map((e) => `${e.type}: ${e.message}`).join('\n');
    expect(text, await flakyEvents()).toMatch(/\[flaky@dev-1\] attempt 2 succeeds/);
    expect(text).toMatch(/\[summary@dev-1\] 1 node\(s\), \d+ threads in all; the flaky step took 2 attempts/);
    expect(text).toMatch(/flow hello-flow: succeeded$/);

    const show = await cli('flow', 'show', 'hello-flow', '--json');
    expect(show.code).toBe(0);
    const view = JSON.parse(show.out.join('\n'));
    expect(view.stepList.map((x: { name: string; status: string }) => `${x.name}:${x.status}`)).toEqual([
      'facts:succeeded',
      'flaky:succeeded',
      'summary:succeeded',
    ]);
    expect(view.stepList[1].jobs[0].attempts).toBe(2);
    expect((await s.ledger.getJob('hello-flow.summary'))?.result).toMatchObject({ nodes: ['dev-1'], flakyAttempts: 2 });

    const list = await cli('flow', 'list', '--status', 'succeeded');
    expect(list.code).toBe(0);
    expect(list.out.join('\n')).toMatch(/hello-flow\s+succeeded\s+3/);

    // Followed after the fact, the whole history is a backlog: the steps' lines still come in the order things
    // happened, each after the flow event that started its step and before the one that ended it.
    const replay = await cli('flow', 'show', 'hello-flow', '--follow');
    expect(replay.code).toBe(0);
    const lines = replay.out;
    const at = (re: RegExp) => {
      const i = lines.findIndex((l) => re.test(l));
      expect(i, `${re} in:\n${lines.join('\n')}`).toBeGreaterThanOrEqual(0);
      return i;
    };
    const order = [
      at(/^== flow admitted/),
      at(/^-- step flaky started on dev-1/),
      at(/^ {2}\[flaky@dev-1\] warn: attempt 1 failed/),
      at(/^ {2}\[flaky@dev-1\] attempt 2 succeeds/),
      at(/^-- step flaky succeeded/),
      at(/^-- step summary started on dev-1/),
      at(/^ {2}\[summary@dev-1\] 1 node/),
      at(/^-- step summary succeeded/),
      at(/^== flow succeeded/),
    ];
    expect(order, lines.join('\n')).toEqual([...order].sort((a, b) => a - b));
    expect(at(/^== flow admitted/)).toBeLessThan(lines.findIndex((l) => l.startsWith('  [')));

    // A client that resumes (Last-Event-ID) gets the log lines recorded after the last flow event it had, not
    // nothing: resuming after the event that started the summary step (which waits for facts and flaky), the
    // summary's line, and none of the lines of the steps before it.
    const auth = { authorization: `Bearer ${s.token}` };
    const events = (await (await fetch(`${s.url}/v1/flows/hello-flow/events`, { headers: auth })).text()).split('\n\n');
    const summaryStarted = events.find((b) => /^event: step$/m.test(b) && b.includes('"step":"summary"') && b.includes('"status":"running"'));
    const seq = Number(/^id: (\d+)$/m.exec(summaryStarted ?? '')?.[1]);
    expect(seq).toBeGreaterThan(0);
    const resumed = await (await fetch(`${s.url}/v1/flows/hello-flow/events`, { headers: { ...auth, 'last-event-id': String(seq) } })).text();
    const logSteps = resumed
      .split('\n\n')
      .filter((b) => /^event: log$/m.test(b))
      .map((b) => (JSON.parse(/^data: (.*)$/m.exec(b)![1]!) as { step: string }).step);
    expect(logSteps).toEqual(['summary']);
  }, 180_000);

  it('refuses flow files with mistakes before signing, each with its code', async () => {
    const write = async (name: string, doc: unknown) => {
      const f = path.join(home, name);
      await writeFile(f, JSON.stringify(doc));
      await writeFile(path.join(home, 'ok.js'), 'export default async () => 1');
      return f;
    };
    const cases: [unknown, RegExp][] = [
      [{ steps: [{ name: 'a', script: 'ok.js', target: { node: 'dev-1' }, depends: ['nope'] }] }, /FLOW_INVALID.*depends on "nope"/],
      [
        {
          steps: [
            { name: 'a', script: 'ok.js', target: { node: 'dev-1' }, depends: ['b'] },
            { name: 'b', script: 'ok.js', target: { node: 'dev-1' }, depends: ['a'] },
          ],
        },
        /FLOW_INVALID.*cycle/,
      ],
      [{ steps: [{ name: 'a', script: 'missing.js', target: { node: 'dev-1' } }] }, /FLOW_INVALID.*cannot read script missing\.js/],
      [
        {
          steps: [
            { name: 'a', script: 'ok.js', target: { node: 'dev-1' }, inputs: { x: { from: 'b' } } },
            { name: 'b', script: 'ok.js', target: { node: 'dev-1' } },
          ],
        },
        /FLOW_INVALID.*must list in "depends"/,
      ],
      [{ steps: [{ name: 'a', script: 'ok.js', target: { node: 'dev-1' }, each: true }] }, /FLOW_INVALID.*"each" needs a label selector/],
      [{ steps: [{ name: 'a', script: 'ok.js', target: { node: 'dev-1' }, colour: 'blue' }] }, /FLOW_INVALID.*unknown field "colour"/],
    ];
    for (const [i, [doc, want]] of cases.entries()) {
      const r = await cli('flow', 'sign', await write(`bad-${i}.json`, doc), '--key', path.join(home, 'admin.key'));
      expect(r.code, JSON.stringify(doc)).toBe(1);
      expect(r.err.join('\n'), JSON.stringify(doc)).toMatch(want);
    }
  }, 60_000);
});
