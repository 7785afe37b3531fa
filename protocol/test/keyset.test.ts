import { describe, expect, it } from 'vitest';
import {
  PAYLOAD_TYPES,
  authorizeJob,
  b64url,
  encodeEnvelope,
  encodeKeySet,
  errorCodeOf,
  generateKeyPair,
  grantsFromKeySet,
  signEnvelope,
  thresholdFor,
  trustKey,
  verifyKeySet,
  type KeyPair,
  type KeySet,
} from '@writ/protocol';

const [a1, a2, a3] = [generateKeyPair(), generateKeyPair(), generateKeyPair()];
const alice = generateKeyPair();
const bob = generateKeyPair();
const ref = (k: KeyPair) => ({ keyid: k.keyid, publicKey: b64url(k.publicKey) });
const now = 1_800_000_000;
const base: KeySet = {
  cluster: 'c1',
  version: 2,
  issuedAt: now - 10,
  expiresAt: now + 3600,
  admins: { threshold: 2, keys: [ref(a1!), ref(a2!), ref(a3!)] },
  users: [
    { name: 'alice', keys: [ref(alice)], roles: ['operator'] },
    { name: 'bob', keys: [ref(bob)], roles: ['operator'] },
  ],
  roles: [{ name: 'operator', caps: ['host.facts', 'vm.*'], nodes: ['*'], labels: {} }],
  thresholds: { 'vm.delete': 2 },
  revoked: [],
};
const trust = { cluster: 'c1', admins: base.admins, version: 1 };
const sign = (ks: KeySet, keys: KeyPair[]) => encodeEnvelope(signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(ks), keys));
const codeOf = (fn: () => unknown) => {
  try {
    fn();
    return 'OK';
  } catch (e) {
    return errorCodeOf(e) ?? String(e);
  }
};

describe('signed key sets (T6, T7, T8)', () => {
  it('accepts a newer set signed by k distinct admins', () => {
    const acc = verifyKeySet(sign(base, [a1!, a2!]), trust, now);
    expect(acc.keySet.version).toBe(2);
    expect(acc.signers).toHaveLength(2);
  });

  it('one admin key signing twice does not meet a 2-of-n threshold (T7)', () => {
    const env = signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(base), [a1!, a1!]);
    env.signatures[1]!.keyid = a2!.keyid; // claims to be another admin: key ids are only hints
    expect(codeOf(() => verifyKeySet(encodeEnvelope(env), trust, now))).toBe('THRESHOLD_NOT_MET');
  });

  it('refuses rollback to an older or equal version, and an expired set (freeze)', () => {
    expect(codeOf(() => verifyKeySet(sign(base, [a1!, a2!]), { ...trust, version: 2 }, now))).toBe('KEYSET_ROLLBACK');
    expect(codeOf(() => verifyKeySet(sign(base, [a1!, a2!]), { ...trust, version: 5 }, now))).toBe('KEYSET_ROLLBACK');
    expect(codeOf(() => verifyKeySet(sign(base, [a1!, a2!]), trust, base.expiresAt))).toBe('KEYSET_EXPIRED');
  });

  it('refuses sets from non-admins, for another cluster, or with inconsistent content', () => {
    expect(codeOf(() => verifyKeySet(sign(base, [alice, bob]), trust, now))).toBe('KEYSET_INVALID');
    expect(codeOf(() => verifyKeySet(sign({ ...base, cluster: 'c2' }, [a1!, a2!]), trust, now))).toBe('KEYSET_INVALID');
    const badRef = { ...base, users: [{ name: 'alice', keys: [{ keyid: bob.keyid, publicKey: b64url(alice.publicKey) }], roles: ['operator'] }] };
    expect(codeOf(() => verifyKeySet(sign(badRef, [a1!, a2!]), trust, now))).toBe('KEYSET_INVALID');
    expect(codeOf(() => verifyKeySet(sign({ ...base, users: [{ name: 'x', keys: [], roles: ['nope'] }] }, [a1!, a2!]), trust, now))).toBe('KEYSET_INVALID');
    const typed = encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeKeySet(base), [a1!, a2!]));
    expect(codeOf(() => verifyKeySet(typed, trust, now))).toBe('KEYSET_INVALID');
  });

  it('derives grants and per-capability thresholds: a dangerous capability needs k distinct signers (T8)', () => {
    const grants = grantsFromKeySet(base);
    const th = { dangerousThreshold: thresholdFor(base) };
    const node = { id: 'n1', labels: {} };
    expect(codeOf(() => authorizeJob({ caps: ['vm.delete'], target: { node: 'n1' } }, [trustKey(alice.publicKey)], grants, node, th))).toBe(
      'THRESHOLD_NOT_MET',
    );
    expect(
      codeOf(() => authorizeJob({ caps: ['vm.delete'], target: { node: 'n1' } }, [trustKey(alice.publicKey), trustKey(bob.publicKey)], grants, node, th)),
    ).toBe('OK');
    expect(codeOf(() => authorizeJob({ caps: ['vm.create'], target: { node: 'n1' } }, [trustKey(alice.publicKey)], grants, node, th))).toBe('OK');
    const revoked = grantsFromKeySet({ ...base, revoked: [alice.keyid] });
    expect(codeOf(() => authorizeJob({ caps: [], target: { node: 'n1' } }, [trustKey(alice.publicKey)], revoked, node, th))).toBe('KEY_REVOKED');
  });
});
