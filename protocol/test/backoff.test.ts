import { describe, expect, it } from 'vitest';
import { backoffDelay } from '../src/index.ts';

describe('backoffDelay', () => {
  it('doubles from the base with each failure and stops at the cap', () => {
    expect([0, 1, 2, 3, 4, 5].map((f) => backoffDelay(f, 200, 2000))).toEqual([200, 400, 800, 1600, 2000, 2000]);
    expect(backoffDelay(-3, 1000, 60_000)).toBe(1000); // the coord's first retry (attempt 2) and before it
    expect(backoffDelay(10_000, 100, 5000)).toBe(5000); // no overflow however long the outage
  });

  it('jitters to between half and all of the capped delay when given a random source', () => {
    expect(backoffDelay(3, 1000, 60_000, () => 0)).toBe(4000);
    expect(backoffDelay(3, 1000, 60_000, () => 0.999999)).toBe(8000);
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(2, 1000, 60_000, Math.random);
      expect(d).toBeGreaterThanOrEqual(2000);
      expect(d).toBeLessThanOrEqual(4000);
    }
  });
});
