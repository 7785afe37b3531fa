import { describe, expect, it } from 'vitest';
import {
  KeyRing,
  PAYLOAD_TYPES,
  buildJobPayload,
  encodeEnvelope,
  encodeJobPayload,
  errorCodeOf,
  generateKeyPair,
  keyIdOf,
  pae,
  parseJobPayload,
  signEnvelope,
  trustKey,
  verifyEnvelope,
  type Envelope,
} from '@writ/protocol';

const alice = generateKeyPair();
const bob = generateKeyPair();
const ring = new KeyRing([trustKey(alice.publicKey), trustKey(bob.publicKey)]);
const job = buildJobPayload({ source: 'export default async () => 1', target: { node: 'n1' }, aud: 'test' });
const payload = encodeJobPayload(job);
const env = signEnvelope(PAYLOAD_TYPES.job, payload, [alice]);
const raw = encodeEnvelope(env);

const codeOf = (fn: () => unknown) => {
  try {
    fn();
    return 'OK';
  } catch (e) {
    return errorCodeOf(e) ?? String(e);
  }
};
const verifyJob = (r: string | Uint8Array) => verifyEnvelope(r, { payloadType: PAYLOAD_TYPES.job, keys: ring });

describe('DSSE envelopes (T1)', () => {
  it('round-trips and names the signer by public key', () => {
    const v = verifyJob(raw);
    expect(v.signers.map((s) => s.keyid)).toEqual([alice.keyid]);
    expect(parseJobPayload(v.payload)).toEqual(job);
  });

  it('PAE matches the DSSE v1 definition byte for byte', () => {
    expect(Buffer.from(pae('t', new Uint8Array(Buffer.from('hi')))).toString()).toBe('DSSEv1 1 t 2 hi');
    expect(Buffer.from(pae('é', new Uint8Array(0))).toString()).toBe('DSSEv1 2 é 0 ');
  });

  it('rejects a flip of any single bit of the payload', () => {
    const bytes = Buffer.from(payload);
    for (let i = 0; i < bytes.length; i++) {
      const mutated = Buffer.from(bytes);
      mutated[i]! ^= 0x01;
      const e: Envelope = { ...env, payload: mutated.toString('base64') };
      expect(codeOf(() => verifyJob(encodeEnvelope(e)))).toBe('SIGNATURE_INVALID');
    }
  });

  it('rejects a flip of any byte of the signature', () => {
    const sig = Buffer.from(env.signatures[0]!.sig, 'base64');
    for (let i = 0; i < sig.length; i++) {
      const mutated = Buffer.from(sig);
      mutated[i]! ^= 0x80;
      const e: Envelope = { ...env, signatures: [{ keyid: alice.keyid, sig: mutated.toString('base64') }] };
      expect(codeOf(() => verifyJob(encodeEnvelope(e)))).toBe('SIGNATURE_INVALID');
    }
  });

  it('rejects any change of the payload type, including to another valid kind', () => {
    for (const t of Object.values(PAYLOAD_TYPES)) {
      if (t === PAYLOAD_TYPES.job) continue;
      // Presented as that kind to a verifier of that kind: the signature covers the job type, so it fails.
      const e = { ...env, payloadType: t };
      expect(codeOf(() => verifyEnvelope(encodeEnvelope(e), { payloadType: t, keys: ring }))).toBe('SIGNATURE_INVALID');
      // Presented unchanged to a verifier of another kind: refused by type before any signature work.
      expect(codeOf(() => verifyEnvelope(raw, { payloadType: t, keys: ring }))).toBe('PAYLOAD_TYPE_MISMATCH');
    }
    const typeBytes = Buffer.from(PAYLOAD_TYPES.job);
    for (let i = 0; i < typeBytes.length; i++) {
      const mutated = Buffer.from(typeBytes);
      mutated[i]! ^= 0x01;
      const e = { ...env, payloadType: mutated.toString('latin1') };
      expect(codeOf(() => verifyEnvelope(encodeEnvelope(e), { payloadType: e.payloadType as typeof PAYLOAD_TYPES.job, keys: ring }))).toBe('SIGNATURE_INVALID');
    }
  });

  it('a job signature presented as a heartbeat is rejected', () => {
    const asHeartbeat = { ...env, payloadType: PAYLOAD_TYPES.heartbeat };
    expect(codeOf(() => verifyEnvelope(encodeEnvelope(asHeartbeat), { payloadType: PAYLOAD_TYPES.heartbeat, keys: ring }))).toBe('SIGNATURE_INVALID');
  });

  it('treats keyid as a hint: a wrong keyid still verifies by key, an unknown signer is UNKNOWN_KEY', () => {
    const hinted = { ...env, signatures: [{ keyid: 'ed25519:nonsense', sig: env.signatures[0]!.sig }] };
    expect(verifyJob(encodeEnvelope(hinted)).signers[0]!.keyid).toBe(alice.keyid);
    const mallory = generateKeyPair();
    const byMallory = encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, payload, [mallory]));
    expect(codeOf(() => verifyJob(byMallory))).toBe('UNKNOWN_KEY');
  });

  it('counts distinct public keys, not signatures or key ids (T7)', () => {
    const twice = signEnvelope(PAYLOAD_TYPES.job, payload, [alice, alice]);
    twice.signatures[1]!.keyid = 'ed25519:another-name-for-alice';
    expect(verifyJob(encodeEnvelope(twice)).signers).toHaveLength(1);
    const both = signEnvelope(PAYLOAD_TYPES.job, payload, [alice, bob]);
    expect(
      verifyJob(encodeEnvelope(both))
        .signers.map((s) => s.keyid)
        .sort(),
    ).toEqual([alice.keyid, bob.keyid].sort());
  });

  it('rejects malformed envelopes with precise codes', () => {
    expect(codeOf(() => verifyJob('{"payloadType":"x","payload":"","signatures":[],"extra":1}'))).toBe('UNKNOWN_FIELD');
    expect(codeOf(() => verifyJob(raw.replace('"signatures"', '"payload":"AA==","signatures"')))).toBe('JSON_DUPLICATE_KEY');
    expect(codeOf(() => verifyJob(JSON.stringify({ ...env, signatures: [] })))).toBe('ENVELOPE_MALFORMED');
    expect(codeOf(() => verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.job, keys: ring, maxBytes: 100 }))).toBe('ENVELOPE_TOO_LARGE');
    expect(codeOf(() => verifyJob(JSON.stringify({ ...env, payload: env.payload + ' ' })))).toBe('ENVELOPE_MALFORMED');
  });

  it('key ids are fingerprints of the public key, never signature bytes', () => {
    expect(alice.keyid).toBe(keyIdOf(alice.publicKey));
    expect(alice.keyid).toMatch(/^ed25519:[A-Za-z0-9_-]{43}$/);
    expect(env.signatures[0]!.keyid).not.toContain(env.signatures[0]!.sig.slice(0, 10));
  });
});
