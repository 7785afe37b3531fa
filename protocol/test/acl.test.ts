import { describe, expect, it } from 'vitest';
import { authorizeJob, b64url, errorCodeOf, generateKeyPair, trustKey, type KeyGrant, type JobTarget } from '@writ/protocol';

const alice = generateKeyPair();
const bob = generateKeyPair();
const grant = (kp: typeof alice, g: Partial<KeyGrant>): KeyGrant => ({
  keyid: kp.keyid,
  publicKey: b64url(kp.publicKey),
  caps: [],
  nodes: ['*'],
  labels: {},
  ...g,
});
const codeOf = (fn: () => void) => {
  try {
    fn();
    return 'OK';
  } catch (e) {
    return errorCodeOf(e) ?? String(e);
  }
};
const job = (caps: string[], target: JobTarget = { node: 'n1' }) => ({ caps, target });
const n1 = { id: 'n1', labels: { rack: 'r1' } };

describe('authorizeJob', () => {
  it('grants exact names and patterns, refuses the rest', () => {
    const grants = new Map([[alice.keyid, grant(alice, { caps: ['host.facts', 'vm.*'] })]]);
    const signers = [trustKey(alice.publicKey)];
    expect(codeOf(() => authorizeJob(job(['host.facts', 'vm.create']), signers, grants, n1))).toBe('OK');
    expect(codeOf(() => authorizeJob(job(['time.sleep']), signers, grants, n1))).toBe('CAPABILITY_NOT_GRANTED');
  });

  it('confines by node list and by labels', () => {
    const signers = [trustKey(alice.publicKey)];
    const byNode = new Map([[alice.keyid, grant(alice, { caps: ['*'], nodes: ['n2'] })]]);
    expect(codeOf(() => authorizeJob(job([]), signers, byNode, n1))).toBe('TARGET_OUT_OF_SCOPE');
    const byLabel = new Map([[alice.keyid, grant(alice, { caps: ['*'], labels: { rack: 'r2' } })]]);
    expect(codeOf(() => authorizeJob(job([]), signers, byLabel, n1))).toBe('TARGET_OUT_OF_SCOPE');
    expect(codeOf(() => authorizeJob(job([], { selector: { rack: 'r2' } }), signers, byLabel, { id: 'n9', labels: { rack: 'r2' } }))).toBe('OK');
    expect(codeOf(() => authorizeJob(job([], { selector: { env: 'x' } }), signers, byLabel, { id: 'n9', labels: { rack: 'r2', env: 'x' } }))).toBe(
      'TARGET_OUT_OF_SCOPE',
    );
  });

  it('refuses a revoked signer with KEY_REVOKED', () => {
    const grants = new Map([[alice.keyid, grant(alice, { caps: ['*'], revoked: true })]]);
    expect(codeOf(() => authorizeJob(job([]), [trustKey(alice.publicKey)], grants, n1))).toBe('KEY_REVOKED');
  });

  it('needs distinct signers for dangerous capabilities when the threshold asks (T7, T8)', () => {
    const grants = new Map([
      [alice.keyid, grant(alice, { caps: ['vm.delete'] })],
      [bob.keyid, grant(bob, { caps: ['vm.delete'] })],
    ]);
    const threshold = { dangerousThreshold: () => 2 };
    expect(codeOf(() => authorizeJob(job(['vm.delete']), [trustKey(alice.publicKey)], grants, n1, threshold))).toBe('THRESHOLD_NOT_MET');
    expect(codeOf(() => authorizeJob(job(['vm.delete']), [trustKey(alice.publicKey), trustKey(bob.publicKey)], grants, n1, threshold))).toBe('OK');
  });
});
