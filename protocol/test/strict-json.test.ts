import { describe, expect, it } from 'vitest';
import { parseStrictJson, errorCodeOf } from '@writ/protocol';

const codeOf = (input: string | Uint8Array, opts = {}) => {
  try {
    parseStrictJson(input, opts);
    return 'OK';
  } catch (e) {
    return errorCodeOf(e) ?? String(e);
  }
};

describe('strict JSON parser (T2)', () => {
  it.each([
    ['duplicate keys', '{"a":1,"a":2}', 'JSON_DUPLICATE_KEY'],
    ['nested duplicate keys', '{"x":{"a":1,"b":{"c":1,"c":1}}}', 'JSON_DUPLICATE_KEY'],
    ['duplicate keys spelled with escapes', '{"a":1,"\\u0061":2}', 'JSON_DUPLICATE_KEY'],
    ['1e400', '{"n":1e400}', 'JSON_NUMBER_OUT_OF_RANGE'],
    ['-1e400', '[-1e400]', 'JSON_NUMBER_OUT_OF_RANGE'],
    ['2^53 + 1', '{"n":9007199254740993}', 'JSON_UNSAFE_INTEGER'],
    ['2^53 as exponent', '{"n":9.007199254740993e15}', 'JSON_UNSAFE_INTEGER'],
    ['lone high surrogate escape', '{"s":"\\ud800"}', 'JSON_LONE_SURROGATE'],
    ['lone low surrogate escape', '{"s":"\\udc00x"}', 'JSON_LONE_SURROGATE'],
    ['high surrogate followed by non-surrogate escape', '{"s":"\\ud800\\u0041"}', 'JSON_LONE_SURROGATE'],
    ['trailing comma', '{"a":1,}', 'JSON_SYNTAX'],
    ['leading zero', '{"a":01}', 'JSON_SYNTAX'],
    ['raw control character', '{"a":"x\ny"}', 'JSON_SYNTAX'],
    ['raw control character after escapes', '{"a":"\\"x\\ty\u0001z"}', 'JSON_SYNTAX'],
    ['raw control character before the first escape', '{"a":"x\u0001y\\n"}', 'JSON_SYNTAX'],
    ['unterminated string ending in an escaped quote', '{"a":"x\\"', 'JSON_SYNTAX'],
    ['unterminated string after escapes', '["\\n\\t abc', 'JSON_SYNTAX'],
    ['invalid escape after valid ones', '{"a":"\\n\\"\\q"}', 'JSON_SYNTAX'],
    ['trailing data', '{} {}', 'JSON_SYNTAX'],
    ['NaN', '{"a":NaN}', 'JSON_SYNTAX'],
  ])('rejects %s', (_name, input, code) => {
    expect(codeOf(input)).toBe(code);
    expect(codeOf(new TextEncoder().encode(input))).toBe(code);
  });

  it('rejects a raw lone surrogate in a JS string and invalid UTF-8 bytes', () => {
    expect(codeOf('{"s":"\ud800"}')).toBe('JSON_LONE_SURROGATE');
    expect(codeOf(new Uint8Array([0x22, 0xed, 0xa0, 0x80, 0x22]))).toBe('JSON_INVALID_UTF8');
    expect(codeOf(new Uint8Array([0x22, 0xff, 0x22]))).toBe('JSON_INVALID_UTF8');
  });

  it('rejects oversize input and deep nesting', () => {
    expect(codeOf(`"${'a'.repeat(100)}"`, { maxBytes: 50 })).toBe('JSON_TOO_LARGE');
    expect(codeOf(new Uint8Array(51).fill(0x20), { maxBytes: 50 })).toBe('JSON_TOO_LARGE');
    expect(codeOf('['.repeat(70) + ']'.repeat(70))).toBe('JSON_TOO_DEEP');
  });

  it('parses what JSON.parse parses, identically, when nothing is ambiguous', () => {
    const samples = [
      '{"a":[1,2.5,-3e-2,true,false,null,"x\\"y\\\\z\\n\\u00e9\\ud83d\\ude00"],"b":{}}',
      '[]',
      '"plain"',
      '9007199254740991',
      '{"__proto__":{"x":1}}',
      ' { "k" : [ ] } ',
    ];
    for (const s of samples) expect(JSON.stringify(parseStrictJson(s))).toBe(JSON.stringify(JSON.parse(s)));
  });

  it('reads strings with escapes as JSON.parse does, long ones and envelopes carried as strings included', () => {
    // A fixed pseudo-random sequence (the same strings on every run).
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const pieces = ['a', 'Z', ' ', '"', '\\', '/', '\n', '\t', '\r', '\b', '\f', '\u0001', '\u001f', 'é', '\u2028', '😀', '\ud83d\ude00', 'x'.repeat(500)];
    for (let n = 0; n < 400; n++) {
      let str = '';
      for (let k = rnd(60); k > 0; k--) str += pieces[rnd(pieces.length)];
      const doc = JSON.stringify({ s: str, inner: JSON.stringify({ payload: str, sigs: [{ k: str }] }), t: [str, `${str}q`] });
      expect(parseStrictJson(doc)).toEqual(JSON.parse(doc));
      expect(parseStrictJson(new TextEncoder().encode(doc))).toEqual(JSON.parse(doc));
    }
  });

  it('treats "__proto__" as a plain key, never a prototype switch', () => {
    const v = parseStrictJson('{"__proto__":{"polluted":true}}') as Record<string, unknown>;
    expect(Object.keys(v)).toEqual(['__proto__']);
    expect((v as { polluted?: unknown }).polluted).toBeUndefined();
  });
});
