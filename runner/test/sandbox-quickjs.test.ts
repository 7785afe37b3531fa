// X2 on the QuickJS layer itself, run on this thread's small native stack: every shape of unbounded recursion
// (plain, through built-ins, getters, proxies, toJSON) ends as STACK_LIMIT from the runtime's own stack limit,
// not as a host RangeError that would leave the runtime impossible to free.
import { describe, expect, it } from 'vitest';
import { precompileQuickJS, runGuest } from '../src/sandbox/quickjs.ts';
import { DEFAULT_BOUNDARY_LIMITS, type SandboxJob } from '../src/sandbox/types.ts';

const warnings: string[] = [];
const hooks = { boundary: DEFAULT_BOUNDARY_LIMITS, log() {}, warn: (m: string) => warnings.push(m), hostCall: async () => 'null' };

function job(body: string): SandboxJob {
  return {
    jobId: 'quickjs-unit',
    attempt: 1,
    source: `export default async function () { ${body} }`,
    args: null,
    caps: [],
    limits: { timeoutMs: 3000, memoryMiB: 32 },
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
