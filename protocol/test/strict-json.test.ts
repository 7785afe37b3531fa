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

  it('treats "__proto__" as a plain key, never a prototype switch', () => {
    const v = parseStrictJson('{"__proto__":{"polluted":true}}') as Record<string, unknown>;
    expect(Object.keys(v)).toEqual(['__proto__']);
    expect((v as { polluted?: unknown }).polluted).toBeUndefined();
  });
});
