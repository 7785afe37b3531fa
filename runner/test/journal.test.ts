// The effect journal on its own, on a real folder: replay of journaled calls, re-execution of an intent
// without a result, fencing by a newer start (also from another journal object on the same folder, as a
// second runner process would be), torn last lines, mismatch detection and pruning.
import { appendFile, mkdtemp, readFile, readdir, rm, utimes } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EffectJournal, parseFailpoint } from '../src/journal.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-journal-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const exp = Math.floor(Date.now() / 1000) + 3600;

describe('effect journal', () => {
  it('journals intent before an effect and its result after, and replays both reads and effects on a re-run', async () => {
    const j = await EffectJournal.open({ dir });
    const calls: string[] = [];
    const invoke = (op: string, value: unknown) => async () => {
      calls.push(op);
      return value as never;
    };
    const first = await j.begin('job-1', 1, exp);
    expect(await first.call('time.now', {}, invoke('time.now', { ms: 1 }))).toEqual({ ms: 1 });
    expect(await first.call('net.netns.ensure', { name: 'a' }, invoke('net.netns.ensure', { created: true }))).toEqual({ created: true });
    const recs = (await j.read('job-1')).records.map((r) => `${r.t}${'step' in r ? r.step : ''}`);
    // A read has no intent; an effect has one before its result.
    expect(recs).toEqual(['start', 'done1', 'intent2', 'done2']);
    // Attempt 2 replays both steps from the journal (the same clock value, the same effect result) and
    // calls only what comes after them.
    const second = await j.begin('job-1', 2, exp);
    expect(await second.call('time.now', {}, invoke('time.now', { ms: 2 }))).toEqual({ ms: 1 });
    expect(await second.call('net.netns.ensure', { name: 'a' }, invoke('net.netns.ensure', { created: false }))).toEqual({ created: true });
    expect(await second.call('net.netns.ensure', { name: 'b' }, invoke('net.netns.ensure', { created: true }))).toEqual({ created: true });
    expect(calls).toEqual(['time.now', 'net.netns.ensure', 'net.netns.ensure']);
    expect(second.replayed).toBe(2);
  });

  it('calls again a step journaled with an intent and no result (the process died around the effect)', async () => {
    const j = await EffectJournal.open({ dir });
    const first = await j.begin('job-2', 1, exp);
    await j.append('job-2', { t: 'intent', attempt: 1, exec: first.exec, step: 1, op: 'net.netns.ensure', args: 'x', ts: 0 });
    const history = await j.read('job-2');
    expect(history.openIntents()).toEqual([1]);
    const second = await j.begin('job-2', 2, exp);
    let called = 0;
    // The hash of { name: 'a' } differs from 'x': a different call at that step is a mismatch, not a replay.
    await expect(second.call('net.netns.ensure', { name: 'a' }, async () => ++called)).rejects.toMatchObject({ code: 'JOURNAL_MISMATCH' });
    expect(called).toBe(0);
  });

  it('calls a step journaled with an intent and no result again, once, and replays it after that', async () => {
    // The process "dies" right after the intent: the failpoint hook throws instead of killing the test.
    const crashing = await EffectJournal.open({
      dir,
      failpoint: parseFailpoint('after-intent:1'),
      onFailpoint: () => {
        throw new Error('killed after the intent');
      },
    });
    let applied = 0;
    const first = await crashing.begin('job-3', 1, exp);
    await expect(first.call('net.netns.ensure', { name: 'a' }, async () => ++applied)).rejects.toThrow('killed after the intent');
    expect(applied).toBe(0);
    const j = await EffectJournal.open({ dir });
    expect((await j.read('job-3')).openIntents()).toEqual([1]);
    const second = await j.begin('job-3', 2, exp);
    expect(await second.call('net.netns.ensure', { name: 'a' }, async () => ++applied)).toBe(1);
    const third = await j.begin('job-3', 3, exp);
    expect(await third.call('net.netns.ensure', { name: 'a' }, async () => ++applied)).toBe(1);
    expect(applied).toBe(1);
  });

  it('replays a failure the script went on from, and calls again the failure that ended an attempt', async () => {
    const j = await EffectJournal.open({ dir });
    const first = await j.begin('job-7', 1, exp);
    await expect(
      first.call('net.netns.ensure', { name: 'a' }, async () => {
        throw new Error('transient');
      }),
    ).rejects.toThrow('transient');
    await first.call('net.netns.ensure', { name: 'b' }, async () => 'b made');
    await expect(
      first.call('net.netns.ensure', { name: 'c' }, async () => {
        throw new Error('transient again');
      }),
    ).rejects.toThrow();
    const second = await j.begin('job-7', 2, exp);
    const live: string[] = [];
    // Step 1 failed and the script went on: the same failure again. Step 2 is replayed. Step 3 ended the attempt: called.
    await expect(second.call('net.netns.ensure', { name: 'a' }, async () => (live.push('a'), 'a'))).rejects.toMatchObject({ code: 'INTERNAL' });
    expect(await second.call('net.netns.ensure', { name: 'b' }, async () => (live.push('b'), 'b again'))).toBe('b made');
    expect(await second.call('net.netns.ensure', { name: 'c' }, async () => (live.push('c'), 'c made'))).toBe('c made');
    expect(live).toEqual(['c']);
  });

  it('fences an older execution as soon as a newer attempt starts, also one started by another process', async () => {
    const a = await EffectJournal.open({ dir });
    const b = await EffectJournal.open({ dir }); // a second runner process on the same node
    const older = await a.begin('job-4', 1, exp);
    expect(await older.call('net.netns.ensure', { name: 'a' }, async () => 'made')).toBe('made');
    await b.begin('job-4', 2, exp);
    let applied = 0;
    await expect(older.call('net.netns.ensure', { name: 'b' }, async () => ++applied)).rejects.toMatchObject({ code: 'EFFECT_FENCED' });
    // Once fenced, every later call is refused, reads included.
    await expect(older.call('time.now', {}, async () => ({ ms: 1 }))).rejects.toMatchObject({ code: 'EFFECT_FENCED' });
    expect(applied).toBe(0);
    expect(older.fenced?.code).toBe('EFFECT_FENCED');
  });

  it('knows what a node started and finished: the highest attempt, and an end that no retry changes', async () => {
    const j = await EffectJournal.open({ dir });
    const r1 = await j.begin('job-5', 1, exp);
    await r1.end({ ok: false, error: { code: 'COMMAND_FAILED', message: 'x', retryable: true } }, 5);
    expect((await j.read('job-5')).finished).toBeNull();
    const r2 = await j.begin('job-5', 2, exp);
    await r2.end({ ok: true, value: 42 }, 5);
    const h = await j.read('job-5');
    expect([h.highestAttempt, h.finished?.attempt, h.finished?.outcome]).toEqual([2, 2, { ok: true, value: 42 }]);
  });

  it('ignores a torn last line (a write the process did not finish) and refuses a corrupt record inside the file', async () => {
    const j = await EffectJournal.open({ dir });
    await j.begin('job-6', 1, exp);
    await appendFile(path.join(dir, 'job-6.jsonl'), '{"t":"intent","att');
    expect((await j.read('job-6')).records.map((r) => r.t)).toEqual(['start']);
    await appendFile(path.join(dir, 'job-6.jsonl'), '\n{"t":"end"}\n');
    await expect(j.read('job-6')).rejects.toMatchObject({ code: 'JOURNAL_UNAVAILABLE' });
  });

  it('prunes the files of jobs whose envelopes expired a day ago, and keeps the others', async () => {
    const j = await EffectJournal.open({ dir });
    const nowS = Math.floor(Date.now() / 1000);
    await j.begin('old', 1, nowS - 2 * 86400);
    await j.begin('fresh', 1, nowS + 60);
    await appendFile(path.join(dir, 'torn.jsonl'), '{"t":"sta');
    const old = new Date(Date.now() - 3 * 86400_000);
    await utimes(path.join(dir, 'torn.jsonl'), old, old);
    expect(await j.prune(nowS)).toBe(2);
    expect((await readdir(dir)).sort()).toEqual(['fresh.jsonl']);
    expect(JSON.parse((await readFile(path.join(dir, 'fresh.jsonl'), 'utf8')).split('\n')[0]!)).toMatchObject({ t: 'start', attempt: 1 });
  });

  it('parses failpoints strictly', () => {
    expect(parseFailpoint(undefined)).toBeNull();
    expect(parseFailpoint('after-effect:2')).toEqual({ point: 'after-effect', step: 2 });
    expect(parseFailpoint('after-start')).toEqual({ point: 'after-start', step: null });
    for (const bad of ['nowhere', 'after-effect:0', 'after-effect:x'])
      expect(() => parseFailpoint(bad), bad).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
  });
});
