// The lifecycle every service's main.ts runs through: ready line, wait for the signal, release in reverse
// order within the grace; a failed start releases what it had opened; an overrunning release is left behind.
import { describe, expect, it } from 'vitest';
import { serveUntilAborted } from '../src/index.ts';

function harness() {
  const lines: string[] = [];
  const errors: string[] = [];
  const ac = new AbortController();
  const run = {
    logger: { info() {}, error: (o: object) => void errors.push(JSON.stringify(o)) },
    io: { out: (l: string) => void lines.push(l) },
    signal: ac.signal,
  };
  return { lines, errors, ac, run };
}

describe('serveUntilAborted', () => {
  it('announces ready, waits for the signal, then releases in reverse order', async () => {
    const { lines, ac, run } = harness();
    const released: string[] = [];
    const done = serveUntilAborted(run, 1000, async (r) => {
      r.push({ name: 'a', release: async () => void released.push('a') }, { name: 'b', release: async () => void released.push('b') });
      return { url: 'http://x' };
    });
    await new Promise((r) => setImmediate(r));
    expect(lines).toEqual(['{"ready":true,"url":"http://x"}']);
    expect(released).toEqual([]);
    ac.abort('SIGTERM');
    expect(await done).toBe(true);
    expect(released).toEqual(['b', 'a']);
  });

  it('releases what was opened when opening fails, and rethrows', async () => {
    const { lines, run } = harness();
    const released: string[] = [];
    await expect(
      serveUntilAborted(run, 1000, async (r) => {
        r.push({ name: 'ledger', release: async () => void released.push('ledger') });
        throw new Error('port in use');
      }),
    ).rejects.toThrow('port in use');
    expect(released).toEqual(['ledger']);
    expect(lines).toEqual([]);
  });

  it('leaves a release that overruns the grace, still releases the rest, and says so', async () => {
    const { errors, ac, run } = harness();
    const released: string[] = [];
    ac.abort();
    const clean = await serveUntilAborted(run, 50, async (r) => {
      r.push({ name: 'first', release: async () => void released.push('first') }, { name: 'stuck', release: () => new Promise<void>(() => {}) });
      return {};
    });
    expect(clean).toBe(false);
    expect(released).toEqual(['first']);
    expect(errors.join()).toContain('"resource":"stuck"');
  });
});
