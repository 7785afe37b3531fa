// The node agent's loops with a controllable clock: registration against the real coord, heartbeats that
// fire exactly when the clock says, jittered exponential backoff (capped) while the coord is away, and
// re-registration when the coord has forgotten the node's key.
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '@writ/cli';
import { NodeAgent, backoffDelay, loadNodeIdentity, type Clock } from '@writ/runner';
import { startTestStack, type TestStack } from './helpers/stack.ts';

class ManualClock implements Clock {
  sleeps: number[] = [];
  private waiters: (() => void)[] = [];
  now(): number {
    return Date.now();
  }
  sleep(ms: number, signal: AbortSignal): Promise<void> {
    this.sleeps.push(ms);
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      signal.addEventListener('abort', () => resolve(), { once: true });
    });
  }
  /** Lets every pending sleep end. */
  tick(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const r of w) r();
  }
  async until(pred: () => boolean, timeoutMs = 10_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > end) throw new Error('condition not reached');
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

let s: TestStack;
beforeAll(async () => {
  s = await startTestStack({ nodes: [] });
}, 60_000);
afterAll(async () => {
  await s?.close();
});

const health = async () => ({ healthy: true, problems: [], load1: 0, memAvailableBytes: 1, diskFreeBytes: 1, runningJobs: 0 });

async function agent(node: string, coordUrl: string, clock: ManualClock) {
  const identity = await loadNodeIdentity(await mkdtemp(path.join(os.tmpdir(), 'writ-agent-')), node);
  return new NodeAgent({
    coordUrl,
    identity,
    labels: {},
    version: 't',
    heartbeatMs: 30_000,
    backoffBaseMs: 1000,
    backoffMaxMs: 8000,
    clock,
    random: () => 1,
    inventory: async () => ({ cpu: 1 }),
    health,
  });
}

describe('node agent loops', () => {
  it('backs off exponentially and capped while the coord is away, and nothing fires until the clock moves', async () => {
    const clock = new ManualClock();
    const a = await agent('n-away', `http://127.0.0.1:${await freePort()}`, clock);
    a.start();
    for (let i = 1; i <= 6; i++) {
      await clock.until(() => clock.sleeps.length === i);
      // Without a tick the loop must stay asleep: no second attempt sneaks in.
      await new Promise((r) => setTimeout(r, 30));
      expect(clock.sleeps.length).toBe(i);
      clock.tick();
    }
    await a.stop();
    expect(clock.sleeps).toEqual([1000, 2000, 4000, 8000, 8000, 8000]);
    expect(a.lastError?.code).toBe('LEDGER_UNAVAILABLE');
    expect(a.registrations).toBe(0);
  });

  it('jitter stays within half to all of the capped delay', () => {
    for (let f = 0; f < 12; f++) {
      for (const r of [0, 0.3, 0.999]) {
        const d = backoffDelay(f, 1000, 60_000, () => r);
        const cap = Math.min(60_000, 1000 * 2 ** f);
        expect(d).toBeGreaterThanOrEqual(cap / 2);
        expect(d).toBeLessThanOrEqual(cap);
      }
    }
  });

  it('registers, then heartbeats once per clock period, and re-registers when the coord forgot its key', async () => {
    const clock = new ManualClock();
    const a = await agent('n-live', s.url, clock);
    a.start();
    await clock.until(() => a.heartbeatsSent === 1);
    expect(a.registrations).toBe(1);
    expect((await s.ledger.nodeStore.getNode('n-live'))?.state).toBe('inspected');
    await new Promise((r) => setTimeout(r, 50));
    expect(a.heartbeatsSent).toBe(1);
    expect(clock.sleeps).toEqual([30_000]);
    clock.tick();
    await clock.until(() => a.heartbeatsSent === 2);
    // An operator rekeys the node: its next heartbeat is unknown, so the agent registers again.
    await s.service.nodes.rekey('n-live', 'test', 'test');
    clock.tick();
    await clock.until(() => clock.sleeps.length === 3); // the failed heartbeat's backoff
    clock.tick();
    await clock.until(() => a.registrations === 2 && a.heartbeatsSent === 3);
    expect((await s.ledger.nodeStore.getNode('n-live'))?.keyid).toBe(a.opts.identity.key.keyid);
    await a.stop();
  });
});
