import { readFileSync } from 'node:fs';
import { createPublicKey, verify as rawVerify } from 'node:crypto';
import nacl from 'tweetnacl';
import { describe, expect, it } from 'vitest';
import {
  generateKeyPair,
  signDetached,
  signDetachedPortable,
  verifyStrictPortable,
  verifyStrictRaw,
  publicKeyProblem,
  ED25519_INTERNALS_FOR_TESTS,
} from '@writ/protocol';

const vectors = JSON.parse(readFileSync(new URL('./fixtures/ed25519-speccheck.json', import.meta.url), 'utf8')) as {
  libsodiumAccepts: number[];
  cases: { message: string; pub_key: string; signature: string }[];
};
const hex = (s: string) => new Uint8Array(Buffer.from(s, 'hex'));
const spki = (pub: Uint8Array) => createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), pub]), format: 'der', type: 'spki' });

describe('strict ed25519 (T4)', () => {
  it('accepts exactly the edge-case vectors libsodium accepts, through node:crypto and through tweetnacl', () => {
    const acceptedNode: number[] = [];
    const acceptedNacl: number[] = [];
    vectors.cases.forEach((c, i) => {
      if (verifyStrictRaw(hex(c.pub_key), hex(c.message), hex(c.signature))) acceptedNode.push(i);
      if (verifyStrictPortable(hex(c.pub_key), hex(c.message), hex(c.signature))) acceptedNacl.push(i);
    });
    expect(acceptedNode).toEqual(vectors.libsodiumAccepts);
    expect(acceptedNacl).toEqual(vectors.libsodiumAccepts);
  });

  it('needs its pre-checks: bare node:crypto accepts small-order keys and bare tweetnacl accepts S >= L on the same vectors', () => {
    const bareNode = vectors.cases.map((c, i) => (rawVerify(null, hex(c.message), spki(hex(c.pub_key)), hex(c.signature)) ? i : -1)).filter((i) => i >= 0);
    const bareNacl = vectors.cases.map((c, i) => (nacl.sign.detached.verify(hex(c.message), hex(c.signature), hex(c.pub_key)) ? i : -1)).filter((i) => i >= 0);
    // If these ever equal libsodium's verdicts the backends changed; the strict checks must still hold.
    expect(bareNode.length).toBeGreaterThan(vectors.libsodiumAccepts.length);
    expect(bareNacl.some((i) => !bareNode.includes(i))).toBe(true);
  });

  it('rejects S + L (a malleated signature) that tweetnacl alone accepts', () => {
    const kp = generateKeyPair();
    const msg = new TextEncoder().encode('writ');
    const sig = signDetached(kp.signing, msg);
    let s = 0n;
    for (let i = 31; i >= 0; i--) s = (s << 8n) | BigInt(sig[32 + i]!);
    let t = s + ED25519_INTERNALS_FOR_TESTS.L;
    const mal = Uint8Array.from(sig);
    for (let i = 0; i < 32; i++) {
      mal[32 + i] = Number(t & 0xffn);
      t >>= 8n;
    }
    expect(t).toBe(0n); // still fits 32 bytes
    expect(nacl.sign.detached.verify(msg, mal, kp.publicKey)).toBe(true);
    expect(verifyStrictPortable(kp.publicKey, msg, mal)).toBe(false);
    expect(verifyStrictRaw(kp.publicKey, msg, mal)).toBe(false);
    expect(verifyStrictRaw(kp.publicKey, msg, sig)).toBe(true);
  });

  it('refuses non-canonical and small-order public keys', () => {
    const p = Buffer.alloc(32, 0xff);
    p[0] = 0xed;
    p[31] = 0x7f; // y = p: non-canonical
    expect(publicKeyProblem(p)).toMatch(/non-canonical/);
    for (const so of ED25519_INTERNALS_FOR_TESTS.smallOrderEncodings) expect(publicKeyProblem(so)).toMatch(/small order/);
  });

  it('signs byte-identically through node:crypto and tweetnacl', () => {
    for (let i = 0; i < 20; i++) {
      const kp = generateKeyPair();
      const msg = new Uint8Array(Buffer.from(`message ${i} ${'x'.repeat(i * 37)}`));
      expect(Buffer.from(signDetached(kp.signing, msg)).equals(Buffer.from(signDetachedPortable(kp.signing.seed, msg)))).toBe(true);
    }
  });
});
