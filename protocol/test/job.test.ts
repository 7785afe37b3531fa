import { describe, expect, it } from 'vitest';
import { buildJobPayload, checkAudience, checkJobTimes, encodeJobPayload, errorCodeOf, parseJobPayload, sha256Hex, type JobPayload } from '@writ/protocol';

const base = buildJobPayload({ source: 'export default async () => 1', target: { node: 'n1' }, aud: 'test', caps: ['host.facts'] });
const enc = (j: unknown) => new Uint8Array(Buffer.from(JSON.stringify(j)));
const codeOf = (fn: () => unknown) => {
  try {
    fn();
    return 'OK';
  } catch (e) {
    return errorCodeOf(e) ?? String(e);
  }
};

describe('job payload v1 (T2, T3)', () => {
  it('parses a well-formed payload', () => {
    expect(parseJobPayload(encodeJobPayload(base))).toEqual(base);
  });

  it('rejects a source whose sha256 does not match', () => {
    const j: JobPayload = { ...base, script: { source: base.script.source + ' ', sha256: base.script.sha256 } };
    expect(codeOf(() => parseJobPayload(enc(j)))).toBe('SCRIPT_HASH_MISMATCH');
  });

  it('rejects unknown fields anywhere with UNKNOWN_FIELD', () => {
    expect(codeOf(() => parseJobPayload(enc({ ...base, extra: 1 })))).toBe('UNKNOWN_FIELD');
    expect(codeOf(() => parseJobPayload(enc({ ...base, limits: { ...base.limits, cpu: 2 } })))).toBe('UNKNOWN_FIELD');
    expect(codeOf(() => parseJobPayload(enc({ ...base, script: { ...base.script, lang: 'js' } })))).toBe('UNKNOWN_FIELD');
  });

  it('rejects missing fields, short nonces, unknown capabilities and bad lifetimes', () => {
    const { nonce: _n, ...noNonce } = base;
    expect(codeOf(() => parseJobPayload(enc(noNonce)))).toBe('SCHEMA_INVALID');
    expect(codeOf(() => parseJobPayload(enc({ ...base, nonce: 'AAAAAAAAAAAAAAAAAAAAAA' + '' })))).toBe('OK');
    expect(codeOf(() => parseJobPayload(enc({ ...base, nonce: 'AAAAAAAAAAAAAAAAAAAAA' })))).toBe('SCHEMA_INVALID');
    expect(codeOf(() => parseJobPayload(enc({ ...base, caps: ['root.shell'] })))).toBe('CAPABILITY_UNKNOWN');
    expect(codeOf(() => parseJobPayload(enc({ ...base, exp: base.iat })))).toBe('ENVELOPE_LIFETIME_INVALID');
  });

  it('rejects an oversize script with its own code', () => {
    const source = 'x'.repeat(300 * 1024);
    const j = { ...base, script: { source, sha256: sha256Hex(source) } };
    expect(codeOf(() => parseJobPayload(enc(j)))).toBe('SCRIPT_TOO_LARGE');
    expect(codeOf(() => parseJobPayload(enc(j), { maxScriptBytes: 400 * 1024 }))).toBe('OK');
  });

  it('checks the time window and audience', () => {
    expect(codeOf(() => checkJobTimes(base, base.exp))).toBe('ENVELOPE_EXPIRED');
    expect(codeOf(() => checkJobTimes(base, base.iat - 61))).toBe('ENVELOPE_NOT_YET_VALID');
    expect(codeOf(() => checkJobTimes(base, base.iat - 59))).toBe('OK');
    expect(codeOf(() => checkAudience(base, 'other'))).toBe('AUDIENCE_MISMATCH');
  });

  it('every field is inside the signed bytes (T3)', () => {
    const fields = Object.keys(base).sort();
    expect(fields).toEqual(['args', 'aud', 'caps', 'exp', 'iat', 'id', 'limits', 'nonce', 'script', 'target'].sort());
    const text = Buffer.from(encodeJobPayload(base)).toString();
    for (const f of fields) expect(text).toContain(`"${f}":`);
  });
});
