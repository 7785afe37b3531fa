// Warm instances: a sandbox thread keeps its WebAssembly instance across jobs, and a job still finds nothing of
// the job before it in the same instance: no global, built-in or prototype change, and no byte of its freed
// memory (scanned from the host side and searched from inside the guest). Every isolation test proves that
// its jobs shared one instance (stats().instancesCreated unchanged), else it would prove nothing.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { SandboxPool, type SandboxJob, type SandboxOutcome } from '../src/sandbox/index.ts';

const suffix = Math.random().toString(16).slice(2, 6);
let seq = 0;

function job(body: string, limits: Partial<SandboxJob['limits']> = {}): SandboxJob {
  return {
    jobId: `warm-${suffix}-${++seq}`,
    attempt: 1,
    source: `export default async function (args, ctx) {\n${body}\n}`,
    args: null,
    caps: [],
    limits: { timeoutMs: 3000, memoryMiB: 64, ...limits },
  };
}

const quick = (memoryMiB = 64) => job('return 1', { memoryMiB });

function valueOf(outcome: SandboxOutcome): unknown {
  if (!outcome.ok) throw new Error(`the job failed: ${outcome.error.code} ${outcome.error.message}`);
  return outcome.value;
}

function code(outcome: SandboxOutcome): string {
  return outcome.ok ? 'ok' : outcome.error.code;
}

// The secret: 64 bytes that appear in no source text (job sources compute them), repeated.
const SECRET = Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 73 + 41) & 255));
const SECRET_IN_GUEST = 'const secret = []; for (let i = 0; i < 64; i++) secret.push((i * 73 + 41) & 255);';

// A worker entry that is the real sandbox worker, except that a guest log line "probe" is answered by scanning
// the instance's whole linear memory for the secret from the host side. It is written to a temporary file
// because it must import the worker by absolute URL.
const entryDir = mkdtempSync(path.join(tmpdir(), 'writ-warm-'));
const scanningEntry = pathToFileURL(path.join(entryDir, 'scanning-worker.mjs'));
{
  const tsxApi = pathToFileURL(path.join(path.dirname(createRequire(import.meta.url).resolve('tsx/esm/api')), 'index.mjs')).href;
  const sandboxDir = new URL('../src/sandbox/', import.meta.url);
  writeFileSync(
    scanningEntry,
    `import { parentPort } from 'node:worker_threads';
import { register } from ${JSON.stringify(tsxApi)};
register();
const { currentInstanceMemory } = await import(${JSON.stringify(new URL('quickjs.ts', sandboxDir).href)});
const secret = Buffer.from(${JSON.stringify([...SECRET])});
const post = parentPort.postMessage.bind(parentPort);
parentPort.postMessage = (msg) => {
  if (msg.type === 'log' && msg.message === 'probe') {
    const memory = currentInstanceMemory();
    const seen = memory === undefined ? 'no instance' : Buffer.from(memory).includes(secret) ? 'found' : 'absent';
    msg = { ...msg, message: 'probe: ' + seen };
  }
  post(msg);
};
await import(${JSON.stringify(new URL('worker.ts', sandboxDir).href)});
`,
  );
}

const logs: { jobId: string; message: string }[] = [];
const probesOf = (j: SandboxJob) => logs.filter((l) => l.jobId === j.jobId && l.message.startsWith('probe')).map((l) => l.message);

/**
 * Runs the jobs one after another on a one-thread pool; `sameInstance` says whether they all ran in one
 * instance (no instance was created between the first job's end and the last one's).
 */
async function runInSequence(pool: SandboxPool, jobs: SandboxJob[]): Promise<{ outcomes: SandboxOutcome[]; sameInstance: boolean }> {
  const outcomes: SandboxOutcome[] = [];
  let instances: number | undefined;
  for (const j of jobs) {
    outcomes.push(await pool.run(j));
    instances ??= pool.stats().instancesCreated;
  }
  return { outcomes, sameInstance: pool.stats().instancesCreated === instances };
}

describe('isolation between jobs in one instance', () => {
  const pool = new SandboxPool({
    size: 1,
    hostCall: async () => null,
    workerEntry: scanningEntry,
    onLog: (j, _level, message) => logs.push({ jobId: j.jobId, message }),
  });
  afterAll(async () => {
    await pool.close();
    rmSync(entryDir, { recursive: true, force: true });
  });

  // What a job can observe of its global object and the built-ins; every entry is something the polluter changes.
  const FINGERPRINT = `
    let fnCall = 'intact';
    try { fnCall = (function () { return this }).call(7) === 7 ? 'intact' : 'changed' } catch { fnCall = 'throws' }
    return {
      globals: Object.getOwnPropertyNames(globalThis).sort().join(','),
      leftover: typeof globalThis.leftover,
      sloppyGlobal: typeof globalThis.sloppyLeak,
      objectProto: Object.getOwnPropertyNames(Object.prototype).sort().join(','),
      polluted: typeof ({}).polluted,
      arrayPush: [].push(1),
      arrayFrozen: Object.isFrozen(Array.prototype),
      fnCall,
      fnProto: typeof Function.prototype.leaked,
      trim: ' a '.trim(),
      jsonStringify: JSON.stringify({ a: 1 }),
      mathMax: Math.max(1, 2),
      errorToString: String(new Error('e')),
      promiseFinally: typeof Promise.prototype.finally,
      map: typeof Map,
      symbolRegistry: typeof globalThis[Symbol.for('writ.leak')],
      iterator: typeof Array.prototype[Symbol.iterator],
      dateUtc: Date.UTC(2020, 0, 1),
    };`;
  const POLLUTE = `
    globalThis.leftover = 'from job 1';
    (0, Function)('sloppyLeak = 1')();
    Object.prototype.polluted = 1;
    Object.defineProperty(Object.prototype, 'sneaky', { get() { return 'from job 1' }, configurable: false });
    Array.prototype.push = function () { return 'hijacked' };
    Function.prototype.call = function () { return 'hijacked' };
    Function.prototype.leaked = 1;
    String.prototype.trim = function () { return 'hijacked' };
    JSON.stringify = function () { return 'hijacked' };
    Math.max = function () { return -1 };
    Error.prototype.toString = function () { return 'hijacked' };
    Promise.prototype.finally = 1;
    delete globalThis.Map;
    globalThis[Symbol.for('writ.leak')] = {};
    Array.prototype[Symbol.iterator] = 1;
    Date.UTC = function () { return 0 };
    Object.freeze(Array.prototype);
    ${FINGERPRINT}`;

  it('a job sees no global, built-in or prototype change left by the previous job in the same instance', async () => {
    await pool.run(quick());
    const { outcomes, sameInstance } = await runInSequence(pool, [job(FINGERPRINT), job(POLLUTE), job(FINGERPRINT)]);
    const [before, polluted, after] = outcomes;
    const clean = valueOf(before!) as Record<string, unknown>;
    const dirty = valueOf(polluted!) as Record<string, unknown>;
    // The polluter's own view proves each change took effect and that the fingerprint would see it.
    for (const key of Object.keys(clean)) expect({ key, value: dirty[key] }).not.toEqual({ key, value: clean[key] });
    expect(valueOf(after!)).toEqual(clean);
    expect(sameInstance).toBe(true);
  });

  it("no byte of the previous job's freed memory is left in the instance, seen from the host or from inside the guest", async () => {
    // Job 1 spreads the secret over ArrayBuffers, typed arrays and strings, checks from the host that it is in
    // the instance's memory, then drops it all. It stays under the 16 MiB a fresh instance starts with, so
    // the instance is not replaced for having grown.
    const leaver = job(`
      ${SECRET_IN_GUEST}
      const fill = (bytes) => { const b = new Uint8Array(bytes); b.set(secret); for (let n = 64; n < bytes; n *= 2) b.copyWithin(n, 0, n); return b };
      const kept = [fill(2 * 1024 * 1024), new Float64Array(fill(512 * 1024).buffer), new Int32Array(fill(256 * 1024).buffer)];
      for (let i = 0; i < 8; i++) kept.push(fill(64 * 1024 + i * 4096));
      const text = String.fromCharCode(...secret).repeat(16 * 1024);
      kept.push(text, text.slice(64) + text.slice(0, 64));
      ctx.log.info('probe');
      return kept.length;
    `);
    // Job 2 checks from the host first, then allocates the same sizes and more and searches them.
    const finder = job(`
      ctx.log.info('probe');
      ${SECRET_IN_GUEST}
      const needle = String.fromCharCode(...secret);
      const zeroed = (view) => { const v = new Int32Array(view.buffer, view.byteOffset, view.byteLength >> 2).slice(); v.sort(); return v[0] === 0 && v[v.length - 1] === 0 };
      const found = [];
      const sizes = [2 * 1024 * 1024, 512 * 1024, 256 * 1024, 1024 * 1024];
      for (let i = 0; i < 8; i++) sizes.push(64 * 1024 + i * 4096);
      for (const bytes of sizes) {
        if (!zeroed(new Uint8Array(new ArrayBuffer(bytes)))) found.push('ArrayBuffer ' + bytes);
        if (!zeroed(new Float64Array(bytes / 8))) found.push('Float64Array ' + bytes);
        if (!zeroed(new Uint8Array(bytes).subarray(64))) found.push('Uint8Array ' + bytes);
        const s = 'x'.repeat(bytes) + ' '.padEnd(bytes) + new Array(bytes >> 4).join();
        if (s.includes(needle)) found.push('string ' + bytes);
      }
      return found;
    `);
    await pool.run(quick());
    const { outcomes, sameInstance } = await runInSequence(pool, [leaver, finder]);
    const [left, searched] = outcomes;
    expect(code(left!)).toBe('ok');
    expect(probesOf(leaver)).toEqual(['probe: found']);
    expect(probesOf(finder)).toEqual(['probe: absent']);
    expect(valueOf(searched!)).toEqual([]);
    expect(sameInstance).toBe(true);
  });
});

describe('when an instance is replaced', () => {
  const pools: SandboxPool[] = [];
  const newPool = (opts: { recycleAfterJobs?: number; warmMemoryMiB?: number } = {}) => {
    const pool = new SandboxPool({ size: 1, hostCall: async () => null, ...opts });
    pools.push(pool);
    return pool;
  };
  afterAll(() => Promise.all(pools.map((p) => p.close())));

  /** Instances created between a quick job before `j` and a quick job after it. */
  async function instancesAcross(pool: SandboxPool, j: SandboxJob): Promise<{ code: string; created: number }> {
    await pool.run(quick());
    const before = pool.stats().instancesCreated;
    const outcome = await pool.run(j);
    await pool.run(quick());
    return { code: code(outcome), created: pool.stats().instancesCreated - before };
  }

  it('after recycleAfterJobs jobs', async () => {
    const pool = newPool({ recycleAfterJobs: 3 });
    const created: number[] = [];
    for (let i = 0; i < 7; i++) {
      await pool.run(quick());
      created.push(pool.stats().instancesCreated);
    }
    // The first instance serves jobs 1–3, the second 4–6, the third starts with job 7.
    expect(created.map((n) => n - created[0]!)).toEqual([0, 0, 0, 1, 1, 1, 2]);
  });

  it('recycleAfterJobs: 1 gives every job its own instance', async () => {
    const pool = newPool({ recycleAfterJobs: 1 });
    const created: number[] = [];
    for (let i = 0; i < 3; i++) {
      await pool.run(quick());
      created.push(pool.stats().instancesCreated);
    }
    expect(created.map((n) => n - created[0]!)).toEqual([0, 1, 2]);
  });

  it('after a job that hit a time, stack or memory limit, and after one that grew the memory; not after a script error', async () => {
    const pool = newPool();
    expect(await instancesAcross(pool, job(`throw new Error('plain failure')`))).toEqual({ code: 'SCRIPT_ERROR', created: 0 });
    expect(await instancesAcross(pool, job('for (;;) {}', { timeoutMs: 200 }))).toEqual({ code: 'TIMEOUT', created: 1 });
    expect(await instancesAcross(pool, job('function down(n) { return down(n + 1) + 1 } return down(0)'))).toEqual({ code: 'STACK_LIMIT', created: 1 });
    expect(await instancesAcross(pool, job(`let s = 'x'; for (;;) { s = s + s; s.charCodeAt(s.length - 1) }`))).toEqual({ code: 'MEMORY_LIMIT', created: 1 });
    // Allocated at module level: a runtime that grew the memory from inside the default export cannot be freed
    // cleanly (a QuickJS assertion), which would replace the instance for that reason alone.
    const grower = { ...job(''), source: 'const big = new Uint8Array(24 * 1024 * 1024);\nexport default async function () { return big.length }' };
    expect(await instancesAcross(pool, grower)).toEqual({ code: 'ok', created: 1 });
  });

  it('a job with another memory limit gets an instance sized for it, whose cap bounds it', async () => {
    const pool = newPool({ warmMemoryMiB: 64 });
    const grab = (mib: number) => `const held = []; for (let i = 0; i < ${mib}; i++) held.push(new Uint8Array(1024 * 1024)); return held.length`;
    await pool.run(quick(64));
    const before = pool.stats().instancesCreated;
    expect(code(await pool.run(quick(16)))).toBe('ok');
    expect(pool.stats().instancesCreated).toBe(before + 1);
    expect(code(await pool.run(job(grab(40), { memoryMiB: 16 })))).toBe('MEMORY_LIMIT');
    expect(await pool.run(job(grab(40), { memoryMiB: 64 }))).toMatchObject({ ok: true, value: 40 });
  });
});
