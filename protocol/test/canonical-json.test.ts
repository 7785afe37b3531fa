// Canonical JSON (RFC 8785 form) has one owner, protocol/src/canonical-json.ts. Two copies used to differ on
// values that are not JSON; these tests pin what the one copy does there, and the RFC's own examples.
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../src/index.ts';

describe('canonical JSON', () => {
  it("sorts members by UTF-16 code units (RFC 8785's sorting example)", () => {
    const v = {
      '\u20ac': 'Euro Sign',
      '\r': 'Carriage Return',
      '\ufb33': 'Hebrew Letter Dalet With Dagesh',
      '1': 'One',
      '\ud83d\ude00': 'Emoji: Grinning Face',
      '\u0080': 'Control',
      '\u00f6': 'Latin Small Letter O With Diaeresis',
    };
    expect(Object.values(JSON.parse(canonicalJson(v)) as Record<string, string>)).toEqual([
      'One',
      'Carriage Return',
      'Control',
      'Latin Small Letter O With Diaeresis',
      'Euro Sign',
      'Emoji: Grinning Face',
      'Hebrew Letter Dalet With Dagesh',
    ]);
    // (JSON.parse puts the integer-like key first again; the bytes keep the code-unit order.)
    expect(canonicalJson(v).indexOf('"\r"')).toBeLessThan(canonicalJson(v).indexOf('"1"'));
    expect(canonicalJson({ '9': 0, '10': 0, b: 0, B: 0 })).toBe('{"10":0,"9":0,"B":0,"b":0}');
  });

  it("writes numbers, strings and literals as RFC 8785's example does", () => {
    const v = {
      numbers: [333333333.33333329, 1e30, 4.5, 2e-3, 0.000000000000000000000000001],
      string: '\u20ac$\u000F\u000aA\'\u0042\u0022\u005c\\"/',
      literals: [null, true, false],
    };
    expect(canonicalJson(v)).toBe(
      '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
    );
    expect(canonicalJson(-0)).toBe('0');
  });

  it('is the same for a value and for what it becomes on the wire', () => {
    const values: unknown[] = [{ a: [1, { c: 'x', b: null }], z: { __proto__: 1 } }, [], {}, 'é', 0.1, Object.assign(Object.create(null), { k: 1 })];
    for (const v of values) {
      const text = canonicalJson(v);
      expect(canonicalJson(JSON.parse(text))).toBe(text);
      expect(JSON.parse(text)).toEqual(JSON.parse(JSON.stringify(v)));
    }
    expect(canonicalJson(JSON.parse('{"__proto__":{"x":1},"a":2}'))).toBe('{"__proto__":{"x":1},"a":2}');
  });

  // Where the two copies differed. protocol/src/node.ts's wrote null for NaN, "[1,]" for an undefined element
  // and `{"f":undefined}` for a function; coord/src/ledger/json.ts's refused an undefined member; both wrote
  // "{}" for a Date or a Map.
  it('leaves out an undefined member, as JSON.stringify does on the wire', () => {
    expect(canonicalJson({ b: 2, a: undefined, c: { d: undefined } })).toBe('{"b":2,"c":{}}');
    expect(canonicalJson({ b: 2, a: undefined })).toBe(canonicalJson(JSON.parse(JSON.stringify({ b: 2, a: undefined }))));
  });

  it.each([
    ['NaN', { n: NaN }],
    ['Infinity', [Infinity]],
    ['an undefined array element', [1, undefined]],
    ['undefined', undefined],
    ['a function', { f: () => 1 }],
    ['a symbol', Symbol('s')],
    ['a bigint', { n: 1n }],
    ['a Date', { at: new Date(0) }],
    ['a Map', new Map([['a', 1]])],
    [
      'a class instance',
      new (class Point {
        x = 1;
      })(),
    ],
  ])('refuses %s instead of hashing it like another value', (_what, v) => {
    expect(() => canonicalJson(v)).toThrow(TypeError);
  });
});
