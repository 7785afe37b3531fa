// X3: the bounded-JSON codec each side of the boundary runs on text from the other side.
import { describe, expect, it } from 'vitest';
import { checkShape, decodeBounded, encodeBounded } from '../src/sandbox/boundary.ts';

const limits = { maxBytes: 1000, maxDepth: 8, maxNodes: 50 };

function codeOf(f: () => unknown): string {
  try {
    f();
    return 'ok';
  } catch (err) {
    return String((err as { code?: unknown }).code);
  }
}

const nested = (depth: number): unknown => (depth === 0 ? 0 : [nested(depth - 1)]);

describe('decodeBounded', () => {
  it('accepts plain JSON within the caps', () => {
    expect(decodeBounded('{"a":[1,"two",null,true,{"b":1.5}]}', limits, 'x')).toEqual({ a: [1, 'two', null, true, { b: 1.5 }] });
    expect(decodeBounded(JSON.stringify(nested(8)), limits, 'x')).toEqual(nested(8));
  });

  it('refuses text over the byte cap, counting UTF-8 bytes, before parsing it', () => {
    expect(codeOf(() => decodeBounded(JSON.stringify('x'.repeat(1000)), limits, 'x'))).toBe('OUTPUT_TOO_LARGE');
    // 400 characters but 1200 bytes
    expect(codeOf(() => decodeBounded(JSON.stringify('€'.repeat(400)), limits, 'x'))).toBe('OUTPUT_TOO_LARGE');
  });

  it('refuses nesting past the depth cap and more values than the node cap', () => {
    expect(codeOf(() => decodeBounded(JSON.stringify(nested(9)), limits, 'x'))).toBe('BOUNDARY_INVALID');
    expect(codeOf(() => decodeBounded(JSON.stringify(new Array(50).fill(0)), limits, 'x'))).toBe('BOUNDARY_INVALID');
    expect(codeOf(() => decodeBounded(JSON.stringify(new Array(49).fill(0)), limits, 'x'))).toBe('ok');
  });

  it('refuses text that is not JSON', () => {
    expect(codeOf(() => decodeBounded('{a:1}', limits, 'x'))).toBe('BOUNDARY_INVALID');
    expect(codeOf(() => decodeBounded('', limits, 'x'))).toBe('BOUNDARY_INVALID');
  });
});

describe('encodeBounded', () => {
  it('serialises plain values; undefined at the top becomes null', () => {
    expect(encodeBounded({ a: [1] }, limits, 'x')).toBe('{"a":[1]}');
    expect(encodeBounded(undefined, limits, 'x')).toBe('null');
  });

  it('refuses what is not plain JSON: functions, symbols, bigints, non-finite numbers, class instances, cycles', () => {
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    for (const bad of [() => 1, Symbol('s'), 1n, NaN, Infinity, new Date(0), new Map(), Buffer.from('x'), cycle, [undefined]]) {
      expect(codeOf(() => encodeBounded({ v: bad }, limits, 'x'))).toBe('BOUNDARY_INVALID');
    }
  });

  it('refuses values over the byte, depth and node caps', () => {
    expect(codeOf(() => encodeBounded('x'.repeat(1000), limits, 'x'))).toBe('OUTPUT_TOO_LARGE');
    expect(codeOf(() => encodeBounded(nested(9), limits, 'x'))).toBe('BOUNDARY_INVALID');
    expect(codeOf(() => checkShape(new Array(50).fill(0), limits, 'x'))).toBe('BOUNDARY_INVALID');
  });
});
