// JSON values as the ledger stores them (jsonb) and as the audit chain hashes them. The hash itself is over
// @writ/protocol's canonicalJson of the storable form (see audit.ts).

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

/** Cuts a string to at most `maxBytes` of UTF-8 without splitting a character. */
export function truncateUtf8(s: string, maxBytes: number, marker = '…[truncated]'): string {
  if (Buffer.byteLength(s, 'utf8') <= maxBytes) return s;
  const room = Math.max(0, maxBytes - Buffer.byteLength(marker, 'utf8'));
  const cut = Buffer.from(s, 'utf8').subarray(0, room).toString('utf8');
  // A character cut in half decodes to U+FFFD at the end; drop it.
  return cut.replace(/\uFFFD$/, '') + marker;
}
