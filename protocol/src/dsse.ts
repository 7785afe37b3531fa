// DSSE envelopes: {payloadType, payload, signatures:[{keyid, sig}]}; each signature covers
// PAE(payloadType, payloadBytes). Verification works on the raw envelope bytes; the payload is parsed
// only after a signature verified, by the caller, with the strict parser.
import { b64, fromB64 } from './encoding.ts';
import { signDetached, signDetachedPortable, verifyStrict } from './ed25519.ts';
import { WritError } from './errors.ts';
import type { KeyPair, KeyRing, TrustedKey } from './keys.ts';
import { payloadKindOf, type PayloadType } from './payload-types.ts';
import { parseStrictJson } from './strict-json.ts';

export interface Signature {
  keyid: string;
  sig: string;
}
export interface Envelope {
  payloadType: string;
  payload: string;
  signatures: Signature[];
}

export const DEFAULT_MAX_ENVELOPE_BYTES = 1024 * 1024;
export const MAX_SIGNATURES = 16;
/** Signature checks one envelope may cost, whatever its key ids say. */
const MAX_VERIFY_ATTEMPTS = 32;

/** Pre-Authentication Encoding: "DSSEv1" SP len(type) SP type SP len(body) SP body, lengths in ASCII decimal bytes. */
export function pae(payloadType: string, payload: Uint8Array): Uint8Array {
  const typeLen = Buffer.byteLength(payloadType, 'utf8');
  const head = `DSSEv1 ${typeLen} ${payloadType} ${payload.length} `;
  const headLen = Buffer.byteLength(head, 'utf8');
  const out = Buffer.allocUnsafe(headLen + payload.length);
  out.write(head, 0, 'utf8');
  out.set(payload, headLen);
  return out;
}

/** Signs payload bytes with one or more keys (node:crypto; `portable` uses tweetnacl, same bytes). */
export function signEnvelope(payloadType: PayloadType, payload: Uint8Array, keys: KeyPair[], opts: { portable?: boolean } = {}): Envelope {
  const msg = pae(payloadType, payload);
  return {
    payloadType,
    payload: b64(payload),
    signatures: keys.map((k) => ({ keyid: k.keyid, sig: b64(opts.portable ? signDetachedPortable(k.signing.seed, msg) : signDetached(k.signing, msg)) })),
  };
}

/** Adds one more signature to an existing envelope (co-signing), after checking it is not already signed by that key. */
export function addSignature(env: Envelope, key: KeyPair): Envelope {
  const payload = fromB64(env.payload);
  if (!payload) throw new WritError('ENVELOPE_MALFORMED', 'payload is not base64');
  if (env.signatures.some((s) => s.keyid === key.keyid)) return env;
  const sig = signDetached(key.signing, pae(env.payloadType, payload));
  return { ...env, signatures: [...env.signatures, { keyid: key.keyid, sig: b64(sig) }] };
}

export function encodeEnvelope(env: Envelope): string {
  return JSON.stringify({ payloadType: env.payloadType, payload: env.payload, signatures: env.signatures.map((s) => ({ keyid: s.keyid, sig: s.sig })) });
}

export interface VerifiedEnvelope {
  payloadType: PayloadType;
  payload: Uint8Array;
  /** Distinct public keys whose signatures verified, in envelope order. */
  signers: TrustedKey[];
  envelope: Envelope;
}

export interface VerifyEnvelopeOptions {
  /** The only payload type accepted. */
  payloadType: PayloadType;
  keys: KeyRing;
  maxBytes?: number;
}

/** Parses the outer envelope strictly (no signature check yet). */
export function parseEnvelope(raw: Uint8Array | string, maxBytes = DEFAULT_MAX_ENVELOPE_BYTES, opts: { allowUnsigned?: boolean } = {}): Envelope {
  const size = typeof raw === 'string' ? Buffer.byteLength(raw) : raw.byteLength;
  if (size > maxBytes) throw new WritError('ENVELOPE_TOO_LARGE', `envelope is ${size} bytes, over the ${maxBytes}-byte limit`, { limit: maxBytes, size });
  const doc = parseStrictJson(raw, { maxBytes, maxDepth: 4 });
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new WritError('ENVELOPE_MALFORMED', 'envelope must be a JSON object');
  for (const k of Object.keys(doc)) {
    if (k !== 'payloadType' && k !== 'payload' && k !== 'signatures')
      throw new WritError('UNKNOWN_FIELD', `envelope has unknown field ${JSON.stringify(k)}`, { field: k });
  }
  const { payloadType, payload, signatures } = doc as Record<string, unknown>;
  if (typeof payloadType !== 'string') throw new WritError('ENVELOPE_MALFORMED', 'payloadType must be a string');
  if (typeof payload !== 'string') throw new WritError('ENVELOPE_MALFORMED', 'payload must be a base64 string');
  // Drafts waiting for their first signature (key sets) may be unsigned; nothing verifies an unsigned envelope.
  if (!Array.isArray(signatures) || (signatures.length === 0 && !opts.allowUnsigned))
    throw new WritError('ENVELOPE_MALFORMED', 'signatures must be a non-empty array');
  if (signatures.length > MAX_SIGNATURES) throw new WritError('TOO_MANY_SIGNATURES', `envelope has ${signatures.length} signatures; at most ${MAX_SIGNATURES}`);
  const sigs: Signature[] = [];
  for (const s of signatures) {
    if (!s || typeof s !== 'object' || Array.isArray(s)) throw new WritError('ENVELOPE_MALFORMED', 'each signature must be an object');
    for (const k of Object.keys(s))
      if (k !== 'keyid' && k !== 'sig') throw new WritError('UNKNOWN_FIELD', `signature has unknown field ${JSON.stringify(k)}`, { field: k });
    const { keyid, sig } = s as Record<string, unknown>;
    if (typeof keyid !== 'string' || keyid.length > 200) throw new WritError('ENVELOPE_MALFORMED', 'signature keyid must be a short string');
    if (typeof sig !== 'string') throw new WritError('ENVELOPE_MALFORMED', 'signature sig must be a base64 string');
    sigs.push({ keyid, sig });
  }
  return { payloadType, payload, signatures: sigs };
}

/**
 * Verifies raw envelope bytes: strict outer parse, the expected payload type, then every signature
 * against the trusted keys. Returns the payload bytes and the distinct keys that signed (T1, T4, T7).
 */
export function verifyEnvelope(raw: Uint8Array | string, opts: VerifyEnvelopeOptions): VerifiedEnvelope {
  const env = parseEnvelope(raw, opts.maxBytes);
  if (env.payloadType !== opts.payloadType) {
    const kind = payloadKindOf(env.payloadType);
    throw new WritError(
      'PAYLOAD_TYPE_MISMATCH',
      `expected payload type ${opts.payloadType}, got ${JSON.stringify(env.payloadType.slice(0, 100))}${kind ? ` (a ${kind} message)` : ''}`,
      { expected: opts.payloadType, got: env.payloadType.slice(0, 100) },
    );
  }
  const payload = fromB64(env.payload);
  if (!payload) throw new WritError('ENVELOPE_MALFORMED', 'payload is not canonical base64');
  const msg = pae(env.payloadType, payload);
  const signers: TrustedKey[] = [];
  const seen = new Set<string>();
  let attempts = 0;
  let anyKnown = false;
  for (const s of env.signatures) {
    const sig = fromB64(s.sig);
    if (!sig || sig.length !== 64) continue;
    const hinted = opts.keys.get(s.keyid);
    const candidates: TrustedKey[] = hinted ? [hinted] : [];
    if (!hinted && opts.keys.size <= MAX_VERIFY_ATTEMPTS) candidates.push(...opts.keys.all());
    for (const key of candidates) {
      if (attempts >= MAX_VERIFY_ATTEMPTS) break;
      anyKnown = anyKnown || key === hinted;
      attempts++;
      if (verifyStrict(key.verifyKey, msg, sig)) {
        // TrustedKey.keyid is computed from the public key (never the envelope's hint), so it identifies the key.
        if (!seen.has(key.keyid)) {
          seen.add(key.keyid);
          signers.push(key);
        }
        break;
      }
    }
  }
  if (signers.length === 0) {
    if (anyKnown)
      throw new WritError(
        'SIGNATURE_INVALID',
        'no signature verifies against its key (the payload, its type or the signature was altered, or the wrong key signed)',
      );
    throw new WritError(
      'UNKNOWN_KEY',
      `no signature verifies against a trusted key (key ids: ${env.signatures
        .map((s) => s.keyid)
        .join(', ')
        .slice(0, 300)})`,
    );
  }
  return { payloadType: opts.payloadType, payload, signers, envelope: env };
}
