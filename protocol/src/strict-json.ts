// The one strict JSON parser every tier uses on signed bytes (T2). JSON.parse silently keeps the last of
// duplicate keys, rounds 9007199254740993 and turns 1e400 into Infinity; two tiers that disagree on what a
// payload says is how signed data gets reinterpreted, so this parser refuses all of those instead.
import { WritError } from './errors.ts';

export interface StrictParseOptions {
  /** Maximum input size in bytes (UTF-8). */
  maxBytes?: number;
  /** Maximum nesting depth of arrays and objects. */
  maxDepth?: number;
}

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

const DEFAULT_MAX_BYTES = 1024 * 1024;
const DEFAULT_MAX_DEPTH = 64;
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
// Control characters, quote-breaking backslashes: everything that forces the slow string path.
const NEEDS_SLOW_PATH = /[\u0000-\u001f\\]/;
const CONTROL_CHAR = /[\u0000-\u001f]/;
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

/** Parses UTF-8 bytes or a string strictly. Throws WritError with a JSON_* code. */
export function parseStrictJson(input: Uint8Array | string, options: StrictParseOptions = {}): JsonValue {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
  let text: string;
  if (typeof input === 'string') {
    if (input.length > maxBytes || Buffer.byteLength(input, 'utf8') > maxBytes) {
      throw new WritError('JSON_TOO_LARGE', `input is larger than ${maxBytes} bytes`, { limit: maxBytes });
    }
    text = input;
    // A JS string may hold raw lone surrogates; UTF-8 bytes never can (the fatal decoder refuses them).
    if (!isWellFormed(text)) throw new WritError('JSON_LONE_SURROGATE', 'input holds a lone UTF-16 surrogate');
  } else {
    if (input.byteLength > maxBytes)
      throw new WritError('JSON_TOO_LARGE', `input is ${input.byteLength} bytes, over the ${maxBytes}-byte limit`, { limit: maxBytes, size: input.byteLength });
    try {
      text = decoder.decode(input);
    } catch {
      throw new WritError('JSON_INVALID_UTF8', 'input is not valid UTF-8');
    }
  }
  const p = new Parser(text, options.maxDepth ?? DEFAULT_MAX_DEPTH);
  p.ws();
  const value = p.value(0);
  p.ws();
  if (p.i !== text.length) p.fail('unexpected data after the JSON value');
  return value;
}

function isWellFormed(s: string): boolean {
  const f = (s as unknown as { isWellFormed?: () => boolean }).isWellFormed;
  if (f) return f.call(s);
  return !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);
}

class Parser {
  i = 0;
  constructor(
    readonly s: string,
    readonly maxDepth: number,
  ) {}

  fail(what: string): never {
    throw new WritError('JSON_SYNTAX', `${what} at offset ${this.i}`, { offset: this.i });
  }

  ws(): void {
    const s = this.s;
    let i = this.i;
    for (;;) {
      const c = s.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else break;
    }
    this.i = i;
  }

  value(depth: number): JsonValue {
    const c = this.s.charCodeAt(this.i);
    switch (c) {
      case 0x7b:
        return this.object(depth + 1);
      case 0x5b:
        return this.array(depth + 1);
      case 0x22:
        return this.string();
      case 0x74:
        return this.literal('true', true);
      case 0x66:
        return this.literal('false', false);
      case 0x6e:
        return this.literal('null', null);
      default:
        if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
        return this.fail(Number.isNaN(c) ? 'unexpected end of input' : 'unexpected character');
    }
  }

  literal<T extends JsonValue>(word: string, v: T): T {
    if (!this.s.startsWith(word, this.i)) this.fail('invalid literal');
    this.i += word.length;
    return v;
  }

  number(): number {
    NUMBER.lastIndex = this.i;
    const m = NUMBER.exec(this.s);
    if (!m) return this.fail('invalid number');
    const raw = m[0];
    const start = this.i;
    this.i += raw.length;
    const n = Number(raw);
    if (!Number.isFinite(n))
      throw new WritError('JSON_NUMBER_OUT_OF_RANGE', `number ${raw.slice(0, 40)} at offset ${start} does not fit a 64-bit float`, { offset: start });
    // Integers written without fraction or exponent must be exact; so must fraction-free values that land on integers beyond 2^53.
    if (Number.isInteger(n) && !Number.isSafeInteger(n)) {
      throw new WritError('JSON_UNSAFE_INTEGER', `number ${raw.slice(0, 40)} at offset ${start} is beyond 2^53 and cannot be represented exactly`, {
        offset: start,
      });
    }
    return n;
  }

  string(): string {
    const s = this.s;
    const start = this.i + 1;
    const end = s.indexOf('"', start);
    if (end < 0) return this.fail('unterminated string');
    const fast = s.slice(start, end);
    if (!NEEDS_SLOW_PATH.test(fast)) {
      this.i = end + 1;
      return fast;
    }
    return this.slowString(start);
  }

  slowString(start: number): string {
    const s = this.s;
    let out = '';
    let i = start;
    // The next quote and backslash at or after i, found with indexOf (native) rather than char by char: a long
    // string with a few escapes (a signed envelope carried as a string) costs a few scans, not a JS loop per char.
    let quote = -1;
    let slash = -1;
    for (;;) {
      if (quote < i) {
        quote = s.indexOf('"', i);
        if (quote < 0) quote = s.length;
      }
      if (slash < i) {
        slash = s.indexOf('\\', i);
        if (slash < 0) slash = s.length;
      }
      const stop = Math.min(quote, slash);
      const chunk = s.slice(i, stop);
      const bad = CONTROL_CHAR.exec(chunk);
      if (bad) {
        this.i = i + bad.index;
        this.fail('control character in string');
      }
      out += chunk;
      if (stop === s.length) {
        this.i = stop;
        this.fail('unterminated string');
      }
      if (stop === quote) {
        this.i = quote + 1;
        return out;
      }
      const e = s.charCodeAt(stop + 1);
      i = stop + 2;
      switch (e) {
        case 0x22:
          out += '"';
          break;
        case 0x5c:
          out += '\\';
          break;
        case 0x2f:
          out += '/';
          break;
        case 0x62:
          out += '\b';
          break;
        case 0x66:
          out += '\f';
          break;
        case 0x6e:
          out += '\n';
          break;
        case 0x72:
          out += '\r';
          break;
        case 0x74:
          out += '\t';
          break;
        case 0x75: {
          const unit = this.hex4(i);
          i += 4;
          if (unit >= 0xd800 && unit <= 0xdbff) {
            // A high surrogate must be followed by an escaped low surrogate.
            if (s.charCodeAt(i) !== 0x5c || s.charCodeAt(i + 1) !== 0x75) this.lone(i);
            const low = this.hex4(i + 2);
            if (low < 0xdc00 || low > 0xdfff) this.lone(i);
            out += String.fromCharCode(unit, low);
            i += 6;
          } else if (unit >= 0xdc00 && unit <= 0xdfff) {
            this.lone(i);
          } else {
            out += String.fromCharCode(unit);
          }
          break;
        }
        default:
          this.i = i - 1;
          this.fail('invalid escape');
      }
    }
  }

  lone(at: number): never {
    throw new WritError('JSON_LONE_SURROGATE', `lone UTF-16 surrogate escape at offset ${at}`, { offset: at });
  }

  hex4(at: number): number {
    const h = this.s.slice(at, at + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) {
      this.i = at;
      this.fail('invalid \\u escape');
    }
    return parseInt(h, 16);
  }

  depthCheck(depth: number): void {
    if (depth > this.maxDepth) throw new WritError('JSON_TOO_DEEP', `nesting deeper than ${this.maxDepth} at offset ${this.i}`, { limit: this.maxDepth });
  }

  object(depth: number): { [key: string]: JsonValue } {
    this.depthCheck(depth);
    this.i++;
    // A null-prototype object: "__proto__" is an ordinary key, never a prototype switch.
    const out: { [key: string]: JsonValue } = Object.create(null);
    this.ws();
    if (this.s.charCodeAt(this.i) === 0x7d) {
      this.i++;
      return out;
    }
    for (;;) {
      if (this.s.charCodeAt(this.i) !== 0x22) this.fail('expected a string key');
      const keyAt = this.i;
      const key = this.string();
      if (Object.prototype.hasOwnProperty.call(out, key)) {
        throw new WritError('JSON_DUPLICATE_KEY', `duplicate key ${JSON.stringify(key.slice(0, 64))} at offset ${keyAt}`, {
          key: key.slice(0, 64),
          offset: keyAt,
        });
      }
      this.ws();
      if (this.s.charCodeAt(this.i) !== 0x3a) this.fail("expected ':'");
      this.i++;
      this.ws();
      out[key] = this.value(depth);
      this.ws();
      const c = this.s.charCodeAt(this.i);
      if (c === 0x2c) {
        this.i++;
        this.ws();
        continue;
      }
      if (c === 0x7d) {
        this.i++;
        return out;
      }
      this.fail("expected ',' or '}'");
    }
  }

  array(depth: number): JsonValue[] {
    this.depthCheck(depth);
    this.i++;
    const out: JsonValue[] = [];
    this.ws();
    if (this.s.charCodeAt(this.i) === 0x5d) {
      this.i++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth));
      this.ws();
      const c = this.s.charCodeAt(this.i);
      if (c === 0x2c) {
        this.i++;
        this.ws();
        continue;
      }
      if (c === 0x5d) {
        this.i++;
        return out;
      }
      this.fail("expected ',' or ']'");
    }
  }
}
