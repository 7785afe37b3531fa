// One strict ed25519 verification mode for every tier (T4), in the spirit of libsodium:
// refuse small-order public keys and R, non-canonical point encodings, and S >= L, then check the
// equation. node:crypto accepts small-order keys and tweetnacl accepts some S >= L, so both paths go
// through the same pre-checks here and must give identical verdicts (tested on edge-case vectors).
import { createPrivateKey, createPublicKey, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import nacl from 'tweetnacl';

const P = (1n << 255n) - 19n;
const L = (1n << 252n) + 27742317777372353535851937790883648493n;
const D = (P - ((121665n * modInverse(121666n)) % P)) % P; // d = -121665/121666 mod p

function mod(a: bigint): bigint {
  const r = a % P;
  return r < 0n ? r + P : r;
}
function modPow(b: bigint, e: bigint): bigint {
  let r = 1n;
  b = mod(b);
  while (e > 0n) {
    if (e & 1n) r = (r * b) % P;
    b = (b * b) % P;
    e >>= 1n;
  }
  return r;
}
function modInverse(a: bigint): bigint {
  return modPow(a, P - 2n);
}

function toLE(n: bigint): Uint8Array {
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

/**
 * y-coordinates of the eight points of small order (the 8-torsion): the identity (y=1), the point of
 * order 2 (y=-1), the two of order 4 (y=0) and the four of order 8, whose y satisfies
 * y^2 = (1 ± sqrt(1+d)) ... computed here rather than trusted as constants: for order 8, 2P has y = 0,
 * which gives the quartic d*y^4 + 2*y^2 - 1 = 0 (from the doubling formula); solve it in the field.
 */
function smallOrderYs(): bigint[] {
  // Doubling on -x^2 + y^2 = 1 + d x^2 y^2 gives y(2P) = (y^2 + x^2) / (2 - y^2 + x^2); y(2P) = 0 <=> x^2 = -y^2.
  // Substituting into the curve: y^2 + y^2 = 1 - d y^4  =>  d y^4 + 2 y^2 - 1 = 0  =>  y^2 = (-1 ± sqrt(1 + d)) / d.
  const ys = [0n, 1n, P - 1n];
  const disc = mod(1n + D);
  const r = sqrtMod(disc);
  if (r === null) return ys;
  for (const s of [r, mod(-r)]) {
    const y2 = mod(mod(-1n + s) * modInverse(D));
    const y = sqrtMod(y2);
    if (y !== null) ys.push(y, mod(-y));
  }
  return [...new Set(ys)];
}

function sqrtMod(a: bigint): bigint | null {
  // p = 5 mod 8: Atkin-style square root.
  a = mod(a);
  if (a === 0n) return 0n;
  let x = modPow(a, (P + 3n) / 8n);
  if (mod(x * x - a) !== 0n) x = mod(x * modPow(2n, (P - 1n) / 4n));
  return mod(x * x - a) === 0n ? x : null;
}

const SMALL_ORDER_ENCODINGS: Uint8Array[] = smallOrderYs().map(toLE);
const L_BYTES = toLE(L);

/** Is the 32-byte encoding's y (sign bit masked) >= p? Such encodings are non-canonical. */
function isNonCanonicalPoint(e: Uint8Array): boolean {
  if ((e[31]! & 0x7f) !== 0x7f) return false;
  for (let i = 30; i >= 1; i--) if (e[i] !== 0xff) return false;
  return e[0]! >= 0xed;
}

function hasSmallOrder(e: Uint8Array): boolean {
  outer: for (const so of SMALL_ORDER_ENCODINGS) {
    for (let i = 0; i < 31; i++) if (e[i] !== so[i]) continue outer;
    if ((e[31]! & 0x7f) === so[31]) return true;
  }
  return false;
}

/** S must be canonical: 0 <= S < L. */
function isCanonicalScalar(s: Uint8Array): boolean {
  for (let i = 31; i >= 0; i--) {
    if (s[i]! < L_BYTES[i]!) return true;
    if (s[i]! > L_BYTES[i]!) return false;
  }
  return false; // equal to L
}

/** Why a public key is unacceptable, or null when it passes the strict checks. */
export function publicKeyProblem(pub: Uint8Array): string | null {
  if (pub.length !== 32) return `public key must be 32 bytes, got ${pub.length}`;
  if (isNonCanonicalPoint(pub)) return 'public key is a non-canonical point encoding';
  if (hasSmallOrder(pub)) return 'public key is a point of small order';
  if (!decodesToPoint(pub)) return 'public key is not a point on the curve';
  return null;
}

function decodesToPoint(e: Uint8Array): boolean {
  let y = 0n;
  for (let i = 31; i >= 0; i--) y = (y << 8n) | BigInt(i === 31 ? e[i]! & 0x7f : e[i]!);
  const y2 = mod(y * y);
  const x2 = mod((y2 - 1n) * modInverse(mod(D * y2 + 1n)));
  const x = sqrtMod(x2);
  if (x === null) return false;
  if (x === 0n && (e[31]! & 0x80) !== 0) return false;
  return true;
}

/** Checks on the signature bytes that neither backend makes on its own. */
function signatureProblem(sig: Uint8Array): string | null {
  if (sig.length !== 64) return `signature must be 64 bytes, got ${sig.length}`;
  const R = sig.subarray(0, 32);
  if (isNonCanonicalPoint(R)) return 'R is a non-canonical point encoding';
  if (hasSmallOrder(R)) return 'R is a point of small order';
  if (!isCanonicalScalar(sig.subarray(32))) return 'S is not below the group order L';
  return null;
}

/** A verified-once public key with its cached node:crypto key object. */
export interface VerifyKey {
  readonly raw: Uint8Array;
  readonly keyObject: KeyObject;
}

const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** Builds a verify key after the strict public-key checks; throws a plain Error with the problem. */
export function importVerifyKey(pub: Uint8Array): VerifyKey {
  const problem = publicKeyProblem(pub);
  if (problem) throw new Error(problem);
  const keyObject = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, pub]), format: 'der', type: 'spki' });
  return { raw: Uint8Array.from(pub), keyObject };
}

/** Strict verification through node:crypto with a cached key object (the server path). */
export function verifyStrict(key: VerifyKey, message: Uint8Array, sig: Uint8Array): boolean {
  if (signatureProblem(sig) !== null) return false;
  return cryptoVerify(null, message, key.keyObject, sig);
}

/** Strict verification through tweetnacl (the portable path); same verdicts as verifyStrict. */
export function verifyStrictPortable(pub: Uint8Array, message: Uint8Array, sig: Uint8Array): boolean {
  if (publicKeyProblem(pub) !== null) return false;
  if (signatureProblem(sig) !== null) return false;
  return nacl.sign.detached.verify(message, sig, pub);
}

/** Strict verification of raw bytes through node:crypto, without a cached key (tests, one-offs). */
export function verifyStrictRaw(pub: Uint8Array, message: Uint8Array, sig: Uint8Array): boolean {
  if (publicKeyProblem(pub) !== null) return false;
  return verifyStrict(importVerifyKey(pub), message, sig);
}

const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

export interface SigningKey {
  readonly seed: Uint8Array;
  readonly publicKey: Uint8Array;
  readonly keyObject: KeyObject;
}

export function signingKeyFromSeed(seed: Uint8Array): SigningKey {
  if (seed.length !== 32) throw new Error(`seed must be 32 bytes, got ${seed.length}`);
  const keyObject = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  const spki = createPublicKey(keyObject).export({ format: 'der', type: 'spki' });
  return { seed: Uint8Array.from(seed), publicKey: new Uint8Array(spki.subarray(SPKI_PREFIX.length)), keyObject };
}

/** Signs through node:crypto. */
export function signDetached(key: SigningKey, message: Uint8Array): Uint8Array {
  return new Uint8Array(cryptoSign(null, message, key.keyObject));
}

/** Signs through tweetnacl (portable: browsers, the SDK); byte-identical to signDetached. */
export function signDetachedPortable(seed: Uint8Array, message: Uint8Array): Uint8Array {
  const kp = nacl.sign.keyPair.fromSeed(seed);
  return nacl.sign.detached(message, kp.secretKey);
}

export const ED25519_INTERNALS_FOR_TESTS = { P, L, smallOrderEncodings: SMALL_ORDER_ENCODINGS, isNonCanonicalPoint, hasSmallOrder };
