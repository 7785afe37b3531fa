// X5, second check: the privileged broker on the main thread refuses forged host calls (an ungranted
// capability, arguments that do not match the schema) before anything in the host table runs — whether the
// call comes straight in or from a compromised sandbox worker. Also the default host table's functions.
import os from 'node:os';
import type { JsonValue } from '@writ/protocol';
import { describe, expect, it } from 'vitest';
import { HostBroker, SandboxPool, defaultHostTable, type HostCallJob, type HostTable } from '../src/sandbox/index.ts';

function job(caps: string[], extra: Partial<HostCallJob> = {}): HostCallJob {
  return {
    jobId: `broker-${Math.random().toString(16).slice(2, 6)}`,
    attempt: 1,
    source: '',
    args: null,
    caps,
    limits: { timeoutMs: 1000, memoryMiB: 16 },
    ...extra,
  };
}

function spyTable(): { table: HostTable; calls: string[] } {
  const calls: string[] = [];
  const table: HostTable = new Map();
  for (const name of ['random.bytes', 'time.sleep', 'time.now']) table.set(name, { run: async () => (calls.push(name), 'ran') });
  return { table, calls };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'resolved';
  } catch (err) {
    return String((err as { code?: unknown }).code);
  }
}

describe('HostBroker refuses forged calls', () => {
  it('an ungranted capability is HOST_CALL_DENIED and never reaches the host table', async () => {
    const { table, calls } = spyTable();
    const broker = new HostBroker(table);
    expect(await codeOf(broker.call(job(['time.now']), 'random.bytes', { n: 8 }))).toBe('HOST_CALL_DENIED');
    expect(await codeOf(broker.call(job([]), 'time.now', {}))).toBe('HOST_CALL_DENIED');
    expect(calls).toEqual([]);
    expect(await broker.call(job(['time.now']), 'time.now', {})).toBe('ran');
    expect(calls).toEqual(['time.now']);
  });

  it('arguments that do not match the capability schema are HOST_CALL_INVALID and never reach the host table', async () => {
    const { table, calls } = spyTable();
    const broker = new HostBroker(table);
    const granted = job(['random.bytes', 'time.sleep']);
    expect(await codeOf(broker.call(granted, 'random.bytes', { n: 0 }))).toBe('HOST_CALL_INVALID');
    expect(await codeOf(broker.call(granted, 'random.bytes', { n: 'eight' }))).toBe('HOST_CALL_INVALID');
    expect(await codeOf(broker.call(granted, 'random.bytes', {}))).toBe('HOST_CALL_INVALID');
    expect(await codeOf(broker.call(granted, 'random.bytes', [8] as JsonValue))).toBe('HOST_CALL_INVALID');
    const unknownField = await broker.call(granted, 'time.sleep', { ms: 1, extra: true }).catch((e: { code: string; details?: { field?: string } }) => e);
    expect(unknownField).toMatchObject({ code: 'HOST_CALL_INVALID', details: { field: 'extra' } });
    expect(calls).toEqual([]);
  });

  it('a granted but unknown capability, or one this node does not provide, is HOST_CALL_DENIED', async () => {
    const { table, calls } = spyTable();
    const broker = new HostBroker(table);
    expect(await codeOf(broker.call(job(['made.up']), 'made.up', {}))).toBe('HOST_CALL_DENIED');
    expect(await codeOf(broker.call(job(['host.facts']), 'host.facts', {}))).toBe('HOST_CALL_DENIED');
    expect(calls).toEqual([]);
  });

  it('a compromised worker that posts an ungranted host call gets HOST_CALL_DENIED from the broker', async () => {
    const { table, calls } = spyTable();
    const broker = new HostBroker(table);
    const pool = new SandboxPool({
      size: 1,
      hostCall: (j, name, args) => broker.call(j, name, args),
      workerEntry: new URL('./fixtures/forging-worker.mjs', import.meta.url),
    });
    try {
      const outcome = await pool.run(job(['time.now']));
      expect(outcome).toMatchObject({ ok: true, value: { refused: 'HOST_CALL_DENIED' } });
      expect(calls).toEqual([]);
    } finally {
      await pool.close();
    }
  });
});

describe('defaultHostTable', () => {
  const broker = new HostBroker(defaultHostTable());

  it('time.now reads the wall clock', async () => {
    const before = Date.now();
    const now = (await broker.call(job(['time.now']), 'time.now', {})) as { ms: number; iso: string };
    expect(now.ms).toBeGreaterThanOrEqual(before);
    expect(now.ms).toBeLessThanOrEqual(Date.now());
    expect(new Date(now.iso).getTime()).toBe(now.ms);
  });

  it('random.bytes returns n fresh random bytes as hex', async () => {
    const a = (await broker.call(job(['random.bytes']), 'random.bytes', { n: 16 })) as { hex: string };
    const b = (await broker.call(job(['random.bytes']), 'random.bytes', { n: 16 })) as { hex: string };
    expect(a.hex).toMatch(/^[0-9a-f]{32}$/);
    expect(a.hex).not.toBe(b.hex);
  });

  it('time.sleep sleeps, refuses to outlast the deadline, and ends when the job ends', async () => {
    let started = Date.now();
    await broker.call(job(['time.sleep'], { deadlineAt: Date.now() + 1000 }), 'time.sleep', { ms: 50 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);

    started = Date.now();
    expect(await codeOf(broker.call(job(['time.sleep'], { deadlineAt: Date.now() + 100 }), 'time.sleep', { ms: 60_000 }))).toBe('TIMEOUT');
    expect(Date.now() - started).toBeLessThan(50);

    const ended = new AbortController();
    started = Date.now();
    setTimeout(() => ended.abort(), 50);
    await broker.call(job(['time.sleep'], { deadlineAt: Date.now() + 10_000, signal: ended.signal }), 'time.sleep', { ms: 5000 });
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('host.facts returns this machine’s facts through the SAL', async () => {
    const facts = (await broker.call(job(['host.facts']), 'host.facts', {})) as { hostname: string };
    expect(facts.hostname).toBe(os.hostname());
  });
});
