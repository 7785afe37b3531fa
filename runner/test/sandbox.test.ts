// The sandbox as a script sees it: results, logs, host calls through the real broker, failure codes, the
// JSON-only boundary with its caps in both directions (X3), no ambient authority (X4), and the first of the two
// capability checks (X5), which happens in the worker before a call reaches the main thread.
import { readFileSync } from 'node:fs';
import { WritError, type JsonValue } from '@writ/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  HostBroker,
  SandboxPool,
  defaultHostTable,
  type HostCallJob,
  type HostTable,
  type LogLevel,
  type SandboxJob,
  type SandboxOutcome,
} from '../src/sandbox/index.ts';

const suffix = Math.random().toString(16).slice(2, 6);
let seq = 0;

interface HostCallSeen {
  name: string;
  args: JsonValue;
}

const hostCalls: HostCallSeen[] = [];
const logs: { jobId: string; level: LogLevel; message: string }[] = [];

// The real default table plus a few host functions whose results exercise the boundary in the host → guest direction.
const nested = (depth: number): JsonValue => (depth === 0 ? 'bottom' : { down: nested(depth - 1) });
let hostReply: () => unknown = () => null;
const table: HostTable = defaultHostTable();
table.set('host.facts', {
  async run() {
    return hostReply() as JsonValue;
  },
});
const broker = new HostBroker(table);

const pool = new SandboxPool({
  size: 2,
  hostCall: (job: HostCallJob, name, args) => {
    hostCalls.push({ name, args });
    return broker.call(job, name, args);
  },
  onLog: (job, level, message) => logs.push({ jobId: job.jobId, level, message }),
});

function job(source: string, opts: Partial<SandboxJob> = {}): SandboxJob {
  return { jobId: `sbx-${suffix}-${++seq}`, attempt: 1, source, args: null, caps: [], limits: { timeoutMs: 3000, memoryMiB: 32 }, ...opts };
}

/** Wraps a function body as a script module. */
const script = (body: string) => `export default async function (args, ctx) {\n${body}\n}`;

function code(outcome: SandboxOutcome): string {
  return outcome.ok ? 'ok' : outcome.error.code;
}

beforeAll(async () => {
  await Promise.all([pool.run(job(script('return 1'))), pool.run(job(script('return 1')))]);
});
afterAll(() => pool.close());

describe('happy path', () => {
  it('runs the default export with args and ctx, streams logs in order, makes granted host calls and returns JSON', async () => {
    hostCalls.length = 0;
    const j = job(
      script(`
        ctx.log.info('starting with ' + args.name);
        const clock = await ctx.sal.time.now();
        const random = await ctx.sal.random.bytes({ n: 4 });
        await ctx.sal.time.sleep({ ms: 5 });
        ctx.log.warn('slept');
        ctx.log.error({ toString() { return 'an object' } });
        return { hello: args.name, clockIsNumber: typeof clock.ms === 'number', randomHex: random.hex, nested: [1, 'two', null, true, { x: 1.5 }] };
      `),
      { args: { name: 'writ' }, caps: ['time.now', 'time.sleep', 'random.bytes'] },
    );
    const outcome = await pool.run(j);
    expect(outcome).toMatchObject({ ok: true, value: { hello: 'writ', clockIsNumber: true, nested: [1, 'two', null, true, { x: 1.5 }] } });
    expect(outcome.ok && (outcome.value as { randomHex: string }).randomHex).toMatch(/^[0-9a-f]{8}$/);
    expect(logs.filter((l) => l.jobId === j.jobId)).toEqual([
      { jobId: j.jobId, level: 'info', message: 'starting with writ' },
      { jobId: j.jobId, level: 'warn', message: 'slept' },
      { jobId: j.jobId, level: 'error', message: 'an object' },
    ]);
    expect(hostCalls.map((c) => c.name)).toEqual(['time.now', 'random.bytes', 'time.sleep']);
    expect(hostCalls[1]!.args).toEqual({ n: 4 });
    expect(outcome.durationMs).toBeGreaterThanOrEqual(5);
  });

  it('returns undefined as null', async () => {
    expect(await pool.run(job(script('return undefined')))).toMatchObject({ ok: true, value: null });
  });

  it('caps log line length and line count', async () => {
    const j = job(script(`ctx.log.info('y'.repeat(20000)); for (let i = 0; i < 1500; i++) ctx.log.info('line ' + i); return 1`));
    expect(code(await pool.run(j))).toBe('ok');
    const mine = logs.filter((l) => l.jobId === j.jobId);
    expect(mine[0]!.message.length).toBeLessThanOrEqual(8 * 1024 + 32);
    expect(mine[0]!.message).toMatch(/\[truncated\]$/);
    expect(mine).toHaveLength(1001);
    expect(mine[1000]).toMatchObject({ level: 'warn', message: expect.stringMatching(/log limit/) });
  });

  it('past the line cap, log calls stop inside the guest: the message is not even converted, so a flood costs the host nothing', async () => {
    const j = job(
      script(`
        let conversions = 0;
        const counted = { toString() { conversions++; return 'counted' } };
        for (let i = 0; i < 1000; i++) ctx.log.info('line ' + i);
        ctx.log.info(counted);
        for (let i = 0; i < 100; i++) ctx.log.warn(counted);
        return conversions;
      `),
    );
    // Line 1001 still crosses (the host answers it with its one notice); the 100 after it never leave the guest.
    expect(await pool.run(j)).toMatchObject({ ok: true, value: 1 });
    const mine = logs.filter((l) => l.jobId === j.jobId);
    expect(mine).toHaveLength(1001);
    expect(mine[1000]).toMatchObject({ level: 'warn', message: expect.stringMatching(/log limit/) });
  });
});

describe('failure codes', () => {
  it('SCRIPT_INVALID for a syntax error, a missing default export, and imports (static or dynamic)', async () => {
    expect(code(await pool.run(job('export default (')))).toBe('SCRIPT_INVALID');
    // The message and details say where: line and column, as `writ sign` reports them before signing.
    const placed = await pool.run(job('export default async function (args, ctx) {\n  const x = { a: 1 b: 2 };\n}'));
    expect(placed).toMatchObject({
      ok: false,
      error: { code: 'SCRIPT_INVALID', message: "the script does not parse at line 2, column 20: expecting '}'", details: { line: 2, column: 20 } },
    });
    expect(code(await pool.run(job('export const notDefault = 1')))).toBe('SCRIPT_INVALID');
    expect(code(await pool.run(job('export default 42')))).toBe('SCRIPT_INVALID');
    expect(code(await pool.run(job(`import fs from 'fs';\n${script('return 1')}`)))).toBe('SCRIPT_INVALID');
    expect(code(await pool.run(job(script(`return await import('node:fs')`))))).toBe('SCRIPT_INVALID');
  });

  it('SCRIPT_ERROR with the message and the guest stack for a thrown error', async () => {
    const outcome = await pool.run(job(script(`function inner() { throw new RangeError('bad range') }\ninner()`)));
    expect(outcome).toMatchObject({ ok: false, error: { code: 'SCRIPT_ERROR', message: 'bad range', details: { name: 'RangeError' } } });
    expect(!outcome.ok && String(outcome.error.details?.stack)).toMatch(/inner/);
  });

  it('SCRIPT_ERROR for a thrown non-error and for a promise that can never settle, without waiting for the deadline', async () => {
    expect(await pool.run(job(script(`throw 'plain string'`)))).toMatchObject({ ok: false, error: { code: 'SCRIPT_ERROR', message: 'plain string' } });
    const started = Date.now();
    expect(code(await pool.run(job(script('await new Promise(() => {})'), { limits: { timeoutMs: 5000, memoryMiB: 32 } })))).toBe('SCRIPT_ERROR');
    expect(Date.now() - started).toBeLessThan(2000);
  });

  // Reading name, message and stack runs guest getters: one that never returns is the script running out of time,
  // one that throws is the script's error, reported as such rather than as a missing message or a memory failure.
  for (const key of ['name', 'message', 'stack']) {
    const withGetter = (getter: string) => script(`const e = new Error('original'); Object.defineProperty(e, '${key}', { get() { ${getter} } }); throw e`);

    it(`TIMEOUT when the thrown error's ${key} getter never returns`, async () => {
      const outcome = await pool.run(job(withGetter('for (;;) {}')));
      expect(outcome).toMatchObject({ ok: false, error: { code: 'TIMEOUT', message: expect.stringMatching(/getter on it did not return/) } });
    });

    it(`SCRIPT_ERROR naming the ${key} getter and what it threw when that getter throws`, async () => {
      const outcome = await pool.run(job(withGetter(`throw new TypeError('getter says no')`)));
      expect(outcome).toMatchObject({
        ok: false,
        error: { code: 'SCRIPT_ERROR', message: `the thrown error's ${key} getter threw TypeError: getter says no` },
      });
    });
  }

  it('a guest cannot pass off its own error as a host error code', async () => {
    const outcome = await pool.run(job(script(`const e = new Error('fake'); e.code = 'HOST_CALL_DENIED'; throw e`)));
    expect(code(outcome)).toBe('SCRIPT_ERROR');
  });

  it('TIMEOUT for a time.sleep that would outlast the deadline, at once', async () => {
    const started = Date.now();
    const outcome = await pool.run(
      job(script('await ctx.sal.time.sleep({ ms: 60000 })'), { caps: ['time.sleep'], limits: { timeoutMs: 1000, memoryMiB: 32 } }),
    );
    expect(code(outcome)).toBe('TIMEOUT');
    expect(Date.now() - started).toBeLessThan(500);
  });

  it('TIMEOUT at the deadline while the script waits on a slow host call', async () => {
    hostReply = () => new Promise((resolve) => setTimeout(() => resolve('late'), 3000));
    const started = Date.now();
    const outcome = await pool.run(job(script('return await ctx.sal.host.facts()'), { caps: ['host.facts'], limits: { timeoutMs: 300, memoryMiB: 32 } }));
    expect(code(outcome)).toBe('TIMEOUT');
    expect(Date.now() - started).toBeLessThan(1300);
    hostReply = () => null;
  });
});

describe('host errors cross as plain guest errors carrying code (X3)', () => {
  it('a host WritError reaches the guest as an Error with code and message; uncaught, it is the outcome code', async () => {
    hostReply = () => {
      throw new WritError('RESOURCE_CONFLICT', 'vm web-1 exists with another definition', { name: 'web-1' });
    };
    const caught = await pool.run(
      job(
        script(
          `try { await ctx.sal.host.facts() } catch (e) { return { isError: e instanceof Error, proto: Object.getPrototypeOf(e) === Error.prototype, code: e.code, message: e.message, details: e.details } }`,
        ),
        { caps: ['host.facts'] },
      ),
    );
    expect(caught).toMatchObject({
      ok: true,
      value: { isError: true, proto: true, code: 'RESOURCE_CONFLICT', message: 'vm web-1 exists with another definition', details: { name: 'web-1' } },
    });
    const uncaught = await pool.run(job(script('await ctx.sal.host.facts()'), { caps: ['host.facts'] }));
    expect(uncaught).toMatchObject({ ok: false, error: { code: 'RESOURCE_CONFLICT', message: 'vm web-1 exists with another definition' } });
  });

  it('an unexpected host failure reaches the guest as INTERNAL without its message', async () => {
    hostReply = () => {
      throw new Error('secret path /var/lib/writ/key');
    };
    const outcome = await pool.run(
      job(script(`try { await ctx.sal.host.facts() } catch (e) { return { code: e.code, message: e.message } }`), { caps: ['host.facts'] }),
    );
    expect(outcome).toMatchObject({ ok: true, value: { code: 'INTERNAL' } });
    expect(JSON.stringify(outcome)).not.toMatch(/secret/);
  });
});

describe('boundary caps (X3)', () => {
  const deep = (levels: number) => `let v = 1; for (let i = 0; i < ${levels}; i++) v = { v };`;

  it('result: too deep, too many values, too many bytes, functions, cycles and non-finite numbers are refused', async () => {
    expect(code(await pool.run(job(script(`${deep(100)} return v`))))).toBe('BOUNDARY_INVALID');
    expect(code(await pool.run(job(script(`${deep(60)} return v`))))).toBe('ok');
    expect(code(await pool.run(job(script('return new Array(200000).fill(0)'))))).toBe('BOUNDARY_INVALID');
    expect(code(await pool.run(job(script(`return 'x'.repeat(2 * 1024 * 1024)`))))).toBe('OUTPUT_TOO_LARGE');
    expect(code(await pool.run(job(script('return { f() {} }'))))).toBe('BOUNDARY_INVALID');
    expect(code(await pool.run(job(script('const a = {}; a.self = a; return a'))))).toBe('BOUNDARY_INVALID');
    expect(code(await pool.run(job(script('return [NaN]'))))).toBe('BOUNDARY_INVALID');
    expect(code(await pool.run(job(script('return new Map()'))))).toBe('BOUNDARY_INVALID');
    expect(code(await pool.run(job(script('return 1n'))))).toBe('BOUNDARY_INVALID');
  });

  it('guest → host: oversize or non-JSON arguments are refused in the sandbox and never reach the host', async () => {
    hostCalls.length = 0;
    const tryCall = (arg: string) => script(`try { await ctx.sal.random.bytes(${arg}); return 'sent' } catch (e) { return e.code }`);
    const opts = { caps: ['random.bytes'] };
    let d = '1';
    for (let i = 0; i < 100; i++) d = `{ v: ${d} }`;
    expect(await pool.run(job(tryCall(d), opts))).toMatchObject({ value: 'BOUNDARY_INVALID' });
    expect(await pool.run(job(tryCall(`{ n: 1, many: new Array(200000).fill(0) }`), opts))).toMatchObject({ value: 'BOUNDARY_INVALID' });
    expect(await pool.run(job(tryCall(`{ n: 1, s: 'x'.repeat(2 * 1024 * 1024) }`), opts))).toMatchObject({ value: 'OUTPUT_TOO_LARGE' });
    expect(await pool.run(job(tryCall(`{ n: () => 1 }`), opts))).toMatchObject({ value: 'BOUNDARY_INVALID' });
    expect(hostCalls).toEqual([]);
  });

  it('host → guest: a host result too deep, with too many values or too many bytes reaches the guest as an error', async () => {
    const tryFacts = script(`try { await ctx.sal.host.facts(); return 'received' } catch (e) { return e.code }`);
    const opts = { caps: ['host.facts'] };
    hostReply = () => nested(100);
    expect(await pool.run(job(tryFacts, opts))).toMatchObject({ value: 'BOUNDARY_INVALID' });
    hostReply = () => new Array(200_000).fill(0);
    expect(await pool.run(job(tryFacts, opts))).toMatchObject({ value: 'BOUNDARY_INVALID' });
    hostReply = () => 'x'.repeat(2 * 1024 * 1024);
    expect(await pool.run(job(tryFacts, opts))).toMatchObject({ value: 'OUTPUT_TOO_LARGE' });
    hostReply = () => ({ when: new Date(0) });
    expect(await pool.run(job(tryFacts, opts))).toMatchObject({ value: 'BOUNDARY_INVALID' });
    hostReply = () => nested(10);
    expect(await pool.run(job(tryFacts, opts))).toMatchObject({ value: 'received' });
  });

  it('job arguments enter under the same caps', async () => {
    expect(code(await pool.run(job(script('return 1'), { args: nested(100) })))).toBe('BOUNDARY_INVALID');
    expect(code(await pool.run(job(script('return 1'), { args: 'x'.repeat(2 * 1024 * 1024) })))).toBe('OUTPUT_TOO_LARGE');
  });
});

describe('capabilities, first check in the worker (X5)', () => {
  it('ctx.sal holds exactly the granted capabilities as nested functions', async () => {
    const outcome = await pool.run(
      job(
        script(`
          const shape = (o) => Object.fromEntries(Object.keys(o).map((k) => [k, typeof o[k] === 'function' ? 'fn' : shape(o[k])]));
          return { sal: shape(ctx.sal), frozen: Object.isFrozen(ctx.sal) && Object.isFrozen(ctx.sal.time) && Object.isFrozen(ctx.sal.vm), vm: Object.keys(ctx.sal).includes('vm') };
        `),
        { caps: ['time.now', 'time.sleep', 'host.facts'] },
      ),
    );
    expect(outcome).toMatchObject({ ok: true, value: { sal: { time: { now: 'fn', sleep: 'fn' }, host: { facts: 'fn' } }, frozen: true, vm: false } });
  });

  it('a capability not granted fails with CAPABILITY_NOT_GRANTED naming it and what to sign, without a host call', async () => {
    hostCalls.length = 0;
    const uncaught = await pool.run(job(script('const f = await ctx.sal.host.facts(); return f.hostname')));
    expect(uncaught).toMatchObject({ ok: false, error: { code: 'CAPABILITY_NOT_GRANTED', message: 'host.facts (sign with --caps host.facts)' } });
    // A namespace partly granted: the granted member works, the other one says what to sign.
    const partly = await pool.run(
      job(
        script(`
      const now = await ctx.sal.time.now();
      try { await ctx.sal.time.sleep({ ms: 1 }) } catch (e) { return [typeof now.ms, e.code, e.message] }
    `),
        { caps: ['time.now'] },
      ),
    );
    expect(partly).toMatchObject({ ok: true, value: ['number', 'CAPABILITY_NOT_GRANTED', 'time.sleep (sign with --caps time.sleep)'] });
    // The stand-ins cannot be replaced by the script.
    const replace = await pool.run(job(script(`try { ctx.sal.host.facts = async () => 1; return 'replaced' } catch (e) { return e.name }`)));
    expect(replace).toMatchObject({ ok: true, value: 'TypeError' });
    expect(hostCalls.map((c) => c.name)).toEqual(['time.now']);
  });

  it('arguments that do not match the schema are refused with HOST_CALL_INVALID before they leave the worker', async () => {
    hostCalls.length = 0;
    const outcome = await pool.run(
      job(script(`try { await ctx.sal.time.sleep({ ms: -1 }) } catch (e) { return [e.code, e.message] }`), { caps: ['time.sleep'] }),
    );
    expect(outcome).toMatchObject({ ok: true, value: ['HOST_CALL_INVALID', expect.stringMatching(/ms/)] });
    const extra = await pool.run(job(script(`try { await ctx.sal.time.now({ sneaky: 1 }) } catch (e) { return e.code }`), { caps: ['time.now'] }));
    expect(extra).toMatchObject({ ok: true, value: 'HOST_CALL_INVALID' });
    expect(hostCalls).toEqual([]);
  });

  it('a granted name that is no known capability is refused with HOST_CALL_DENIED in the worker', async () => {
    hostCalls.length = 0;
    const outcome = await pool.run(job(script(`try { await ctx.sal.made.up({}) } catch (e) { return e.code }`), { caps: ['made.up'] }));
    expect(outcome).toMatchObject({ ok: true, value: 'HOST_CALL_DENIED' });
    expect(hostCalls).toEqual([]);
  });
});

describe('no ambient authority (X4)', () => {
  it('the guest global object holds exactly the committed allowlist', async () => {
    const expected = JSON.parse(readFileSync(new URL('./fixtures/guest-globals.json', import.meta.url), 'utf8')) as string[];
    const outcome = await pool.run(
      job(script('return { names: Object.getOwnPropertyNames(globalThis).sort(), symbols: Object.getOwnPropertySymbols(globalThis).length }')),
    );
    expect(outcome).toMatchObject({ ok: true, value: { names: [...expected].sort(), symbols: 0 } });
  });

  it('the constructor.constructor probe reaches only the guest global, which has no process, require, postMessage or host eval', async () => {
    const outcome = await pool.run(
      job(
        script(`
          const g = ({}).constructor.constructor('return this')();
          const viaAsync = (async function () {}).constructor('return this');
          const names = ['process', 'require', 'module', 'postMessage', 'onmessage', 'self', 'console', 'print', 'std', 'os', 'eval', 'setTimeout', 'fetch', 'WebAssembly', 'SharedArrayBuffer', 'WeakRef', 'FinalizationRegistry', 'performance', 'importScripts', 'Buffer'];
          return { same: g === globalThis, found: names.filter((n) => n in g || typeof g[n] !== 'undefined'), asyncSame: (await viaAsync()) === globalThis };
        `),
      ),
    );
    expect(outcome).toMatchObject({ ok: true, value: { same: true, found: [], asyncSame: true } });
  });

  it('there is no clock: Date.now(), Date() and new Date() throw; explicit dates still work and the real Date is unreachable', async () => {
    const outcome = await pool.run(
      job(
        script(`
          const attempt = (f) => { try { f(); return 'ran' } catch (e) { return e instanceof TypeError ? 'refused' : 'other' } };
          const RealDate = Object.getPrototypeOf(new Date(0)).constructor;
          return {
            now: attempt(() => Date.now()),
            call: attempt(() => Date()),
            construct: attempt(() => new Date()),
            viaProto: attempt(() => new RealDate()),
            viaReflect: attempt(() => Reflect.construct(Date, [])),
            explicit: new Date(86400000).toISOString(),
            utc: Date.UTC(2020, 0, 1),
          };
        `),
      ),
    );
    expect(outcome).toMatchObject({
      ok: true,
      value: {
        now: 'refused',
        call: 'refused',
        construct: 'refused',
        viaProto: 'refused',
        viaReflect: 'refused',
        explicit: '1970-01-02T00:00:00.000Z',
        utc: Date.UTC(2020, 0, 1),
      },
    });
  });

  it('there is no randomness: Math.random throws; time and randomness come only through granted capabilities', async () => {
    const outcome = await pool.run(job(script(`try { Math.random(); return 'ran' } catch (e) { return e.message }`)));
    expect(outcome).toMatchObject({ ok: true, value: expect.stringMatching(/random\.bytes/) });
    hostCalls.length = 0;
    const ungranted = await pool.run(
      job(
        script(`
      const codes = [];
      for (const f of [() => ctx.sal.time.now(), () => ctx.sal.random.bytes({ n: 4 })]) { try { await f(); codes.push('ran') } catch (e) { codes.push(e.code) } }
      return [codes, Object.keys(ctx.sal)];
    `),
      ),
    );
    expect(ungranted).toMatchObject({ ok: true, value: [['CAPABILITY_NOT_GRANTED', 'CAPABILITY_NOT_GRANTED'], []] });
    expect(hostCalls).toEqual([]);
  });

  it('each job gets a fresh runtime: nothing a script leaves on its global is seen by the next', async () => {
    const solo = new SandboxPool({ size: 1, hostCall: async () => null });
    try {
      await solo.run(job(script('globalThis.leftover = 1; Object.prototype.polluted = 1; return 1')));
      const outcome = await solo.run(job(script(`return [typeof globalThis.leftover, typeof ({}).polluted]`)));
      expect(outcome).toMatchObject({ ok: true, value: ['undefined', 'undefined'] });
    } finally {
      await solo.close();
    }
  });
});
