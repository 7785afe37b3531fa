// JSON values as the ledger stores them (jsonb) and as the audit chain hashes them.

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** PostgreSQL text and jsonb refuse NUL and lone surrogates; both become U+FFFD rather than losing the write. */
export function storableText(s: string): string {
  return s.replace(/\u0000/g, '\uFFFD').replace(LONE_SURROGATE, '\uFFFD');
}

/**
 * The value exactly as jsonb will give it back: what JSON.stringify keeps (no undefined, functions, NaN;
 * Dates as strings), with storable strings and keys. Hashing this form means a value read back from the
 * database hashes the same as the value that was written.
 */
export function storableJson(value: unknown): unknown {
  const text = JSON.stringify(value);
  if (text === undefined) return null;
  return clean(JSON.parse(text) as unknown);
}

function clean(v: unknown): unknown {
  if (typeof v === 'string') return storableText(v);
  if (v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(clean);
  const out: Record<string, unknown> = {};
  // defineProperty, so a "__proto__" key stays a plain member instead of setting the prototype.
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    Object.defineProperty(out, storableText(k), { value: clean(x), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/**
 * Canonical JSON for hashing (specified in docs/ledger.md): no whitespace; object members sorted by key in
 * UTF-16 code-unit order; strings and numbers written as ECMAScript JSON.stringify writes them.
 * Kept here rather than shared so the audit hash can never change under the ledger's feet.
 */
export function canonicalJson(v: unknown): string {
  if (v === null) return 'null';
  switch (typeof v) {
    case 'boolean':
    case 'string':
      return JSON.stringify(v);
    case 'number':
      if (!Number.isFinite(v)) throw new TypeError('canonical JSON has no non-finite numbers');
      return JSON.stringify(v);
    case 'object': {
      if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
      const o = v as Record<string, unknown>;
      const keys = Object.keys(o).sort();
      return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
    }
    default:
      throw new TypeError(`canonical JSON has no ${typeof v}`);
  }
}

/** Cuts a string to at most `maxBytes` of UTF-8 without splitting a character. */
export function truncateUtf8(s: string, maxBytes: number, marker = '…[truncated]'): string {
  if (Buffer.byteLength(s, 'utf8') <= maxBytes) return s;
  const room = Math.max(0, maxBytes - Buffer.byteLength(marker, 'utf8'));
  const cut = Buffer.from(s, 'utf8').subarray(0, room).toString('utf8');
  // A character cut in half decodes to U+FFFD at the end; drop it.
  return cut.replace(/\uFFFD$/, '') + marker;
}
