// Key ids, key files and trusted-key records. A key id is a fingerprint of the public key and only ever a
// hint: identity is the public key a signature verified against.
import { randomBytes } from 'node:crypto';
import { b64url, fromB64url, sha256 } from './encoding.ts';
import { importVerifyKey, publicKeyProblem, signingKeyFromSeed, type SigningKey, type VerifyKey } from './ed25519.ts';
import { WritError } from './errors.ts';
import { parseStrictJson } from './strict-json.ts';

export const KEY_ID_PREFIX = 'ed25519:';

/** `ed25519:` + base64url(sha256(public key)). */
export function keyIdOf(publicKey: Uint8Array): string {
  return KEY_ID_PREFIX + b64url(sha256(publicKey));
}

export const KEY_ID_PATTERN = '^ed25519:[A-Za-z0-9_-]{43}$';
export function isKeyId(s: string): boolean {
  return new RegExp(KEY_ID_PATTERN).test(s);
}

export interface PrivateKeyFile {
  type: 'writ.ed25519.private.v1';
  keyid: string;
  publicKey: string;
  seed: string;
  comment?: string;
}
export interface PublicKeyFile {
  type: 'writ.ed25519.public.v1';
  keyid: string;
  publicKey: string;
  comment?: string;
}

/** A signing identity held in memory. */
export interface KeyPair {
  readonly keyid: string;
  readonly publicKey: Uint8Array;
  readonly signing: SigningKey;
}

export function generateKeyPair(): KeyPair {
  return keyPairFromSeed(randomBytes(32));
}

export function keyPairFromSeed(seed: Uint8Array): KeyPair {
  const signing = signingKeyFromSeed(seed);
  return { keyid: keyIdOf(signing.publicKey), publicKey: signing.publicKey, signing };
}

export function encodePrivateKeyFile(kp: KeyPair, comment?: string): string {
  const file: PrivateKeyFile = {
    type: 'writ.ed25519.private.v1',
    keyid: kp.keyid,
    publicKey: b64url(kp.publicKey),
    seed: b64url(kp.signing.seed),
    ...(comment ? { comment } : {}),
  };
  return JSON.stringify(file, null, 2) + '\n';
}

export function encodePublicKeyFile(publicKey: Uint8Array, comment?: string): string {
  const file: PublicKeyFile = { type: 'writ.ed25519.public.v1', keyid: keyIdOf(publicKey), publicKey: b64url(publicKey), ...(comment ? { comment } : {}) };
  return JSON.stringify(file, null, 2) + '\n';
}

/** Parses a key file's text: a private key file yields a key pair, a public one only its key. */
export function decodeKeyFile(text: string | Uint8Array, source = 'key file'): { keyPair?: KeyPair; publicKey: Uint8Array; keyid: string } {
  let doc: Record<string, unknown>;
  try {
    doc = parseStrictJson(text, { maxBytes: 64 * 1024 }) as Record<string, unknown>;
  } catch (e) {
    throw new WritError('KEY_FILE_INVALID', `${source} is not JSON: ${(e as Error).message}`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new WritError('KEY_FILE_INVALID', `${source} is not a Writ key file`);
  const pub = typeof doc.publicKey === 'string' ? fromB64url(doc.publicKey) : null;
  if (doc.type === 'writ.ed25519.private.v1') {
    const seed = typeof doc.seed === 'string' ? fromB64url(doc.seed) : null;
    if (!seed || seed.length !== 32) throw new WritError('KEY_FILE_INVALID', `${source}: seed must be 32 bytes of base64url`);
    const kp = keyPairFromSeed(seed);
    if (pub && Buffer.compare(Buffer.from(pub), Buffer.from(kp.publicKey)) !== 0) {
      throw new WritError('KEY_FILE_INVALID', `${source}: publicKey does not match the seed`);
    }
    return { keyPair: kp, publicKey: kp.publicKey, keyid: kp.keyid };
  }
  if (doc.type === 'writ.ed25519.public.v1') {
    if (!pub) throw new WritError('KEY_FILE_INVALID', `${source}: publicKey must be base64url`);
    const problem = publicKeyProblem(pub);
    if (problem) throw new WritError('KEY_INVALID', `${source}: ${problem}`);
    return { publicKey: pub, keyid: keyIdOf(pub) };
  }
  throw new WritError('KEY_FILE_INVALID', `${source} has type ${JSON.stringify(doc.type)}; expected writ.ed25519.private.v1 or writ.ed25519.public.v1`);
}

/** A public key trusted by a verifier, with its cached key object. */
export interface TrustedKey {
  readonly keyid: string;
  readonly publicKey: Uint8Array;
  readonly verifyKey: VerifyKey;
}

export function trustKey(publicKey: Uint8Array): TrustedKey {
  let verifyKey: VerifyKey;
  try {
    verifyKey = importVerifyKey(publicKey);
  } catch (e) {
    throw new WritError('KEY_INVALID', (e as Error).message);
  }
  return { keyid: keyIdOf(publicKey), publicKey: verifyKey.raw, verifyKey };
}

export function trustKeyB64url(publicKey: string): TrustedKey {
  const raw = fromB64url(publicKey);
  if (!raw) throw new WritError('KEY_INVALID', 'public key must be base64url');
  return trustKey(raw);
}

/** A lookup of trusted keys by key id (the hint) with a bounded fallback over all keys. */
export class KeyRing {
  private readonly byId = new Map<string, TrustedKey>();
  constructor(keys: Iterable<TrustedKey> = []) {
    for (const k of keys) this.add(k);
  }
  add(key: TrustedKey): void {
    this.byId.set(key.keyid, key);
  }
  delete(keyid: string): void {
    this.byId.delete(keyid);
  }
  get(keyid: string): TrustedKey | undefined {
    return this.byId.get(keyid);
  }
  get size(): number {
    return this.byId.size;
  }
  all(): IterableIterator<TrustedKey> {
    return this.byId.values();
  }
}
