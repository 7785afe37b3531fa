// Byte encodings used on the wire.
import { createHash } from 'node:crypto';

export const utf8 = new TextEncoder();

export function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}
export function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}

const B64_BODY_INVALID = /[^A-Za-z0-9+/]/;
const B64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64URL = /^[A-Za-z0-9_-]*$/;

/** Strict standard base64 (padding required, no whitespace); null when malformed. */
export function fromB64(s: string): Uint8Array | null {
  if (s.length % 4 !== 0) return null;
  const pad = s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0;
  const body = pad ? s.slice(0, s.length - pad) : s;
  if (B64_BODY_INVALID.test(body)) return null;
  // Canonical: the bits after the last whole byte must be zero (else two strings decode to the same bytes).
  if (pad) {
    const last = B64_ALPHABET.indexOf(body[body.length - 1]!);
    if ((pad === 2 ? last & 0x0f : last & 0x03) !== 0) return null;
  }
  const b = Buffer.from(s, 'base64');
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}
/** Strict unpadded base64url; null when malformed or not canonical. */
export function fromB64url(s: string): Uint8Array | null {
  if (!B64URL.test(s) || s.length % 4 === 1) return null;
  const b = Buffer.from(s, 'base64url');
  if (b.toString('base64url') !== s) return null;
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}
export function sha256(data: Uint8Array | string): Uint8Array {
  return new Uint8Array(createHash('sha256').update(data).digest());
}
