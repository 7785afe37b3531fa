// X2 on the QuickJS layer itself, run on this thread's small native stack: every shape of unbounded recursion
// (plain, through built-ins, getters, proxies, toJSON) ends as STACK_LIMIT from the runtime's own stack limit,
// not as a host RangeError that would leave the runtime impossible to free. And a job that grows the
// WebAssembly memory, or exhausts it, still leaves a runtime that frees cleanly (docs/sandbox.md, "Freeing a
// runtime after the memory grew").
import { describe, expect, it } from 'vitest';
import { currentInstanceMemory, precompileQuickJS, runGuest, sandboxCounters } from '../src/sandbox/quickjs.ts';
import { DEFAULT_BOUNDARY_LIMITS, type SandboxJob } from '../src/sandbox/types.ts';

const warnings: string[] = [];
const hooks = { boundary: DEFAULT_BOUNDARY_LIMITS, log() {}, warn: (m: string) => warnings.push(m), hostCall: async () => 'null' };

function job(body: string, memoryMiB = 32, caps: string[] = []): SandboxJob {
  return {
    jobId: 'quickjs-unit',
    attempt: 1,
    source: `export default async function (args, ctx) { ${body} }`,
    args: null,
    caps,
    limits: { timeoutMs: 3000, memoryMiB },
  };
}

const recursions: Record<string, string> = {
  plain: 'function d(n) { return d(n + 1) + 1 } return d(0)',
  'through Array.prototype.map': 'function f() { return [0].map(f) } return f()',
  'through Reflect.apply': 'function f() { return Reflect.apply(f, null, []) } return f()',
  'through toJSON': 'const o = { toJSON() { return JSON.stringify(o) } }; return JSON.stringify(o)',
  'through a getter': 'const o = {}; Object.defineProperty(o, "x", { get() { return o.x } }); return o.x',
  'through a proxy': 'const p = new Proxy({}, { get(t, k) { return p[k] } }); return p.x',
};

describe('runGuest stack limit', () => {
  precompileQuickJS();
  for (const [shape, body] of Object.entries(recursions)) {
    it(`recursion ${shape} is STACK_LIMIT and the runtime is freed cleanly`, async () => {
      warnings.length = 0;
      const result = await runGuest(job(body), Date.now() + 3000, hooks);
      expect(result).toMatchObject({ ok: false, error: { code: 'STACK_LIMIT' } });
      expect(warnings).toEqual([]);
    });
  }

  it('a normal job leaves no handle behind (the runtime frees without complaint)', async () => {
    warnings.length = 0;
    const result = await runGuest(job('const a = [1, 2, 3].map((x) => ({ x })); return a'), Date.now() + 3000, hooks);
    expect(result).toEqual({ ok: true, json: '[{"x":1},{"x":2},{"x":3}]' });
    expect(warnings).toEqual([]);
  });
});

describe('runGuest after the WebAssembly memory grew', () => {
  precompileQuickJS();
  // A fresh instance has 16 MiB of linear memory; 24 MiB of typed array cannot fit without growing it.
  const INITIAL_BYTES = 16 * 1024 * 1024;
  const grow = 'const a = new Uint8Array(24 * 1024 * 1024); a[a.length - 1] = 7;';

  it('a job whose default export grows the memory frees its runtime without complaint', async () => {
    warnings.length = 0;
    const result = await runGuest(job(`${grow} return a.length + a[a.length - 1]`), Date.now() + 3000, hooks);
    expect(result).toEqual({ ok: true, json: String(24 * 1024 * 1024 + 7) });
    // The job did grow the memory, else this would prove nothing.
    expect(currentInstanceMemory()!.byteLength).toBeGreaterThan(INITIAL_BYTES);
    expect(warnings).toEqual([]);
  });

  it('so does one that grows it and then throws from a later promise job', async () => {
    warnings.length = 0;
    const result = await runGuest(job(`${grow} await null; throw new Error('after growing')`), Date.now() + 3000, hooks);
    expect(result).toMatchObject({ ok: false, error: { code: 'SCRIPT_ERROR', message: 'after growing' } });
    expect(currentInstanceMemory()!.byteLength).toBeGreaterThan(INITIAL_BYTES);
    expect(warnings).toEqual([]);
  });

  const exhausting: Record<string, string> = {
    'typed arrays': 'const held = []; for (;;) held.push(new Uint8Array(1024 * 1024))',
    'small objects': 'const held = []; for (;;) held.push({ a: [1, 2, 3] })',
    'string doubling': `let s = 'x'; for (;;) { s = s + s; s.charCodeAt(s.length - 1) }`,
  };
  for (const [shape, body] of Object.entries(exhausting)) {
    it(`a job that exhausts its memory with ${shape} is MEMORY_LIMIT and its runtime is freed cleanly`, async () => {
      warnings.length = 0;
      const abandoned = sandboxCounters().runtimesAbandoned;
      const result = await runGuest(job(body, 16), Date.now() + 3000, hooks);
      expect(result).toMatchObject({ ok: false, error: { code: 'MEMORY_LIMIT', message: 'the script exceeded its memory limit' } });
      expect(currentInstanceMemory()!.byteLength).toBeGreaterThan(INITIAL_BYTES);
      // Freed, not dropped with the instance: a failed teardown would be a warning.
      expect(sandboxCounters().runtimesAbandoned).toBe(abandoned);
      expect(warnings).toEqual([]);
    });
  }

  it('a job that exhausts the memory through host calls ends MEMORY_LIMIT without a failed teardown', async () => {
    // At 64 MiB this reaches the instance's wasm cap before QuickJS's own limit and traps inside QuickJS; such a
    // runtime is dropped with its instance (counted), never freed half-way through a C function.
    warnings.length = 0;
    const abandoned = sandboxCounters().runtimesAbandoned;
    const flood = job('const kept = []; for (;;) kept.push(ctx.sal.host.facts().catch(() => 1))', 64, ['host.facts']);
    const result = await runGuest(flood, Date.now() + 20_000, hooks);
    expect(result).toMatchObject({ ok: false, error: { code: 'MEMORY_LIMIT' } });
    expect(sandboxCounters().runtimesAbandoned - abandoned).toBeLessThanOrEqual(1);
    expect(warnings).toEqual([]);
  });
});
