// Canonical JSON: the one byte form Writ hashes structured data in (a node's inventory, the coord's audit
// chain, intent diffs). It is the JSON Canonicalization Scheme of RFC 8785 for the values JSON can carry: no
// whitespace; object members sorted by key in UTF-16 code-unit order; strings and numbers written as
// ECMAScript's JSON.stringify writes them (shortest round-trip numbers, `-0` as `0`).
//
// Where a value is not JSON, this refuses it (TypeError) instead of guessing, because a guess makes two
// different values hash alike: NaN and Infinity (JSON.stringify would write null), undefined, functions,
// symbols and bigints as values, `undefined` array elements, and objects other than plain ones and arrays
// (a Date, a Map or a class instance has no own members to sort, and would all hash as `{}`).
// An object member whose value is `undefined` is left out, as JSON.stringify leaves it out on the wire: the
// sender of `{a: 1, b: undefined}` and the receiver of `{"a":1}` hash the same bytes.
//
// Strings are not checked for lone surrogates: JSON.stringify escapes them (`"\ud800"`), which RFC 8785's
// I-JSON input rules out; callers that need I-JSON pass parsed strict JSON (which refuses them) or, in the
// ledger, strings made storable (lone surrogates replaced) first.

export function canonicalJson(v: unknown): string {
  if (v === null) return 'null';
  switch (typeof v) {
    case 'boolean':
    case 'string':
      return JSON.stringify(v);
    case 'number':
      if (!Number.isFinite(v)) throw new TypeError(`canonical JSON has no ${v}`);
      return JSON.stringify(v);
    case 'object': {
      if (Array.isArray(v)) {
        return `[${v
          .map((x, i) => {
            if (x === undefined) throw new TypeError(`canonical JSON has no undefined array element (index ${i})`);
            return canonicalJson(x);
          })
          .join(',')}]`;
      }
      const proto = Object.getPrototypeOf(v) as unknown;
      if (proto !== Object.prototype && proto !== null) {
        throw new TypeError(`canonical JSON has only plain objects, not ${(v as object).constructor?.name ?? 'this object'}`);
      }
      const o = v as Record<string, unknown>;
      const members = Object.keys(o)
        .sort()
        .filter((k) => o[k] !== undefined)
        .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`);
      return `{${members.join(',')}}`;
    }
    default:
      throw new TypeError(`canonical JSON has no ${typeof v}`);
  }
}
