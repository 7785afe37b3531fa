// Signed key sets (T6): users, their keys, roles (capabilities over target scopes) and per-capability
// thresholds, as one versioned document signed by k-of-n admin keys, with an expiry. Verifiers keep the
// highest version they have accepted and refuse an older one (rollback) or an expired one (freeze).
import { capability, grantCovers } from './capabilities/index.ts';
import { verifyEnvelope, type Envelope } from './dsse.ts';
import { fromB64url, utf8 } from './encoding.ts';
import { WritError } from './errors.ts';
import { KeyRing, keyIdOf, trustKeyB64url, type TrustedKey } from './keys.ts';
import { PAYLOAD_TYPES } from './payload-types.ts';
import { assertSchema, compileSchema } from './schema.ts';
import { parseStrictJson } from './strict-json.ts';
import type { KeyGrant } from './acl.ts';

export interface KeyRef {
  keyid: string;
  /** base64url public key. */
  publicKey: string;
}

export interface Role {
  name: string;
  caps: string[];
  nodes: string[];
  labels: Record<string, string>;
}

export interface User {
  name: string;
  keys: KeyRef[];
  roles: string[];
}

/** A supervisor admins allow to exist: its key(s) and the node pools it may serve (federation). */
export interface SupervisorEntry {
  id: string;
  keys: KeyRef[];
  pools: string[];
}

export interface KeySet {
  cluster: string;
  version: number;
  issuedAt: number;
  expiresAt: number;
  /** Who may sign the next version, and how many of them must. */
  admins: { threshold: number; keys: KeyRef[] };
  users: User[];
  roles: Role[];
  /** Distinct signers needed per capability (only meaningful for dangerous ones; default 1). */
  thresholds: Record<string, number>;
  /** Key ids refused outright (KEY_REVOKED), whether or not a user still lists them. */
  revoked: string[];
  /** Supervisors that may announce themselves and carry reports (optional: older sets have none). */
  supervisors?: SupervisorEntry[];
}

const NAME = { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,62}$' };
const KEYREF = {
  type: 'object',
  additionalProperties: false,
  required: ['keyid', 'publicKey'],
  properties: { keyid: { type: 'string', maxLength: 60 }, publicKey: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$' } },
};
const keySetSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['cluster', 'version', 'issuedAt', 'expiresAt', 'admins', 'users', 'roles', 'thresholds', 'revoked'],
  properties: {
    cluster: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' },
    version: { type: 'integer', minimum: 1 },
    issuedAt: { type: 'integer', minimum: 0 },
    expiresAt: { type: 'integer', minimum: 0 },
    admins: {
      type: 'object',
      additionalProperties: false,
      required: ['threshold', 'keys'],
      properties: { threshold: { type: 'integer', minimum: 1, maximum: 16 }, keys: { type: 'array', minItems: 1, maxItems: 64, items: KEYREF } },
    },
    users: {
      type: 'array',
      maxItems: 10_000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'keys', 'roles'],
        properties: { name: NAME, keys: { type: 'array', maxItems: 16, items: KEYREF }, roles: { type: 'array', maxItems: 64, items: NAME } },
      },
    },
    roles: {
      type: 'array',
      maxItems: 1000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'caps', 'nodes', 'labels'],
        properties: {
          name: NAME,
          caps: { type: 'array', maxItems: 256, items: { type: 'string', pattern: '^(\\*|[a-z][a-z0-9-]*(\\.[a-z][a-z0-9-]*)*(\\.\\*)?)$' } },
          nodes: { type: 'array', maxItems: 4096, items: { type: 'string', pattern: '^(\\*|[a-z0-9][a-z0-9.-]{0,62})$' } },
          labels: { type: 'object', maxProperties: 16, additionalProperties: { type: 'string', maxLength: 63 } },
        },
      },
    },
    thresholds: { type: 'object', additionalProperties: { type: 'integer', minimum: 1, maximum: 16 } },
    revoked: { type: 'array', maxItems: 100_000, items: { type: 'string', maxLength: 60 } },
    supervisors: {
      type: 'array',
      maxItems: 1000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['id', 'keys', 'pools'],
        properties: {
          id: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' },
          keys: { type: 'array', minItems: 1, maxItems: 16, items: KEYREF },
          pools: { type: 'array', minItems: 1, maxItems: 64, uniqueItems: true, items: NAME },
        },
      },
    },
  },
} as const;
const validateKeySet = compileSchema<KeySet>(keySetSchema as unknown as Record<string, unknown>);

/** Parses and checks a key set's internal consistency (key ids match keys, roles exist, thresholds name dangerous capabilities). */
export function parseKeySet(bytes: Uint8Array): KeySet {
  const doc = parseStrictJson(bytes, { maxBytes: 8 * 1024 * 1024 });
  assertSchema(validateKeySet, doc, 'key set', 'KEYSET_INVALID');
  const ks = doc as KeySet;
  const refs = [...ks.admins.keys, ...ks.users.flatMap((u) => u.keys), ...(ks.supervisors ?? []).flatMap((s) => s.keys)];
  for (const r of refs) {
    const raw = fromB64url(r.publicKey);
    if (!raw || keyIdOf(raw) !== r.keyid) throw new WritError('KEYSET_INVALID', `key id ${r.keyid} does not match its public key`);
  }
  if (ks.admins.threshold > new Set(ks.admins.keys.map((k) => k.keyid)).size)
    throw new WritError('KEYSET_INVALID', `admin threshold ${ks.admins.threshold} exceeds the number of distinct admin keys`);
  const roleNames = new Set(ks.roles.map((r) => r.name));
  if (roleNames.size !== ks.roles.length) throw new WritError('KEYSET_INVALID', 'two roles share a name');
  for (const u of ks.users) for (const r of u.roles) if (!roleNames.has(r)) throw new WritError('KEYSET_INVALID', `user ${u.name} has unknown role ${r}`);
  for (const cap of Object.keys(ks.thresholds)) if (!capability(cap)) throw new WritError('KEYSET_INVALID', `threshold for unknown capability ${cap}`);
  if (ks.expiresAt <= ks.issuedAt) throw new WritError('KEYSET_INVALID', 'expiresAt must be after issuedAt');
  const supervisorKeys = new Map<string, string>();
  for (const sup of ks.supervisors ?? []) {
    for (const k of sup.keys) {
      const other = supervisorKeys.get(k.keyid);
      if (other !== undefined && other !== sup.id)
        throw new WritError('KEYSET_INVALID', `key ${k.keyid} is listed for supervisors ${other} and ${sup.id}: each supervisor key names one supervisor`);
      supervisorKeys.set(k.keyid, sup.id);
    }
  }
  if (new Set((ks.supervisors ?? []).map((x) => x.id)).size !== (ks.supervisors ?? []).length)
    throw new WritError('KEYSET_INVALID', 'two supervisors share an id');
  return ks;
}

export function encodeKeySet(ks: KeySet): Uint8Array {
  return utf8.encode(JSON.stringify(ks));
}

/** What a verifier trusts to sign key sets: the admins of the set it holds, or pinned bootstrap admins. */
export interface KeySetTrust {
  cluster: string;
  admins: { threshold: number; keys: KeyRef[] };
  /** Highest version accepted so far (0 = none). */
  version: number;
}

export interface AcceptedKeySet {
  keySet: KeySet;
  signers: TrustedKey[];
  /** The envelope exactly as verified, to store and to pass on. */
  raw: string;
}

/**
 * Verifies a key set envelope: signed by at least `threshold` distinct keys of the currently trusted admins
 * (T6, T7), for this cluster, newer than what is held (KEYSET_ROLLBACK) and not expired (KEYSET_EXPIRED).
 * Nothing is stored by this function: callers store only what it returns.
 */
export function verifyKeySet(raw: string, trust: KeySetTrust, nowS: number): AcceptedKeySet {
  const ring = new KeyRing(trust.admins.keys.map((k) => trustKeyB64url(k.publicKey)));
  let v;
  try {
    v = verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.keySet, keys: ring, maxBytes: 16 * 1024 * 1024 });
  } catch (e) {
    throw new WritError('KEYSET_INVALID', `key set signature: ${(e as Error).message}`);
  }
  if (v.signers.length < trust.admins.threshold) {
    throw new WritError('THRESHOLD_NOT_MET', `key set is signed by ${v.signers.length} distinct admin key(s); ${trust.admins.threshold} needed`);
  }
  const ks = parseKeySet(v.payload);
  if (ks.cluster !== trust.cluster) throw new WritError('KEYSET_INVALID', `key set is for cluster ${ks.cluster}, this is ${trust.cluster}`);
  if (ks.version <= trust.version)
    throw new WritError('KEYSET_ROLLBACK', `key set version ${ks.version} is not newer than the accepted version ${trust.version}`);
  if (ks.expiresAt <= nowS) throw new WritError('KEYSET_EXPIRED', `key set version ${ks.version} expired at ${new Date(ks.expiresAt * 1000).toISOString()}`);
  return { keySet: ks, signers: v.signers, raw };
}

/** Flattens a key set into per-key grants for authorizeJob: one grant per (key, role). */
export function grantsFromKeySet(ks: KeySet): Map<string, KeyGrant[]> {
  const roles = new Map(ks.roles.map((r) => [r.name, r]));
  const revoked = new Set(ks.revoked);
  const out = new Map<string, KeyGrant[]>();
  for (const u of ks.users) {
    for (const k of u.keys) {
      const list = out.get(k.keyid) ?? [];
      for (const rn of u.roles) {
        const r = roles.get(rn)!;
        list.push({
          keyid: k.keyid,
          publicKey: k.publicKey,
          caps: r.caps,
          nodes: r.nodes,
          labels: r.labels,
          revoked: revoked.has(k.keyid),
          comment: `${u.name}/${r.name}`,
        });
      }
      if (u.roles.length === 0)
        list.push({ keyid: k.keyid, publicKey: k.publicKey, caps: [], nodes: [], labels: {}, revoked: revoked.has(k.keyid), comment: u.name });
      out.set(k.keyid, list);
    }
  }
  for (const id of revoked) if (!out.has(id)) out.set(id, [{ keyid: id, publicKey: '', caps: [], nodes: [], labels: {}, revoked: true }]);
  return out;
}

/** Threshold lookup for authorizeJob. */
export function thresholdFor(ks: KeySet): (cap: string) => number {
  return (cap) => {
    let best = 1;
    for (const [pattern, k] of Object.entries(ks.thresholds)) if (grantCovers(pattern, cap)) best = Math.max(best, k);
    return best;
  };
}

export function unsignedKeySetEnvelope(ks: KeySet): Envelope {
  return { payloadType: PAYLOAD_TYPES.keySet, payload: Buffer.from(encodeKeySet(ks)).toString('base64'), signatures: [] };
}

/**
 * Holds the key set a tier currently trusts: starts from pinned bootstrap admins, accepts only newer,
 * unexpired sets signed by the admins of the set it holds, and exposes the keys, grants and thresholds
 * that admission needs. Pure: callers persist `current.raw` themselves.
 */
export class KeySetHolder {
  current: AcceptedKeySet | null = null;
  ring = new KeyRing();
  grants = new Map<string, KeyGrant[]>();
  threshold: (cap: string) => number = () => 1;
  /** The supervisors the set lists, by key id, with the ring their signatures verify against. */
  supervisors = new Map<string, SupervisorEntry>();
  supervisorRing = new KeyRing();

  constructor(readonly bootstrap: { cluster: string; admins: { threshold: number; keys: KeyRef[] } }) {}

  get version(): number {
    return this.current?.keySet.version ?? 0;
  }

  /** Verifies and, when newer, adopts a key set envelope. Returns false when it is the one already held. */
  accept(raw: string, nowS: number): boolean {
    if (this.current && raw === this.current.raw) return false;
    const trust: KeySetTrust = { cluster: this.bootstrap.cluster, admins: this.current?.keySet.admins ?? this.bootstrap.admins, version: this.version };
    const accepted = verifyKeySet(raw, trust, nowS);
    const ring = new KeyRing();
    for (const u of accepted.keySet.users) for (const k of u.keys) ring.add(this.ring.get(k.keyid) ?? trustKeyB64url(k.publicKey));
    this.current = accepted;
    this.ring = ring;
    this.grants = grantsFromKeySet(accepted.keySet);
    this.threshold = thresholdFor(accepted.keySet);
    const revoked = new Set(accepted.keySet.revoked);
    this.supervisors = new Map();
    this.supervisorRing = new KeyRing();
    for (const sup of accepted.keySet.supervisors ?? []) {
      for (const k of sup.keys) {
        if (revoked.has(k.keyid)) continue; // a revoked key is refused for every role
        this.supervisors.set(k.keyid, sup);
        this.supervisorRing.add(trustKeyB64url(k.publicKey));
      }
    }
    return true;
  }

  /** Throws unless a current, unexpired key set is held (an expired set freezes the tier: nothing runs). */
  ensureUsable(nowS: number): KeySet {
    if (!this.current)
      throw new WritError(
        'KEYSET_MISSING',
        'no key set has been accepted yet (a new cluster: writ keyset init --admin ADMIN.key.pub, then writ keyset publish)',
      );
    if (this.current.keySet.expiresAt <= nowS)
      throw new WritError(
        'KEYSET_EXPIRED',
        `the key set (version ${this.version}) expired at ${new Date(this.current.keySet.expiresAt * 1000).toISOString()}; publish a newer one`,
      );
    return this.current.keySet;
  }
}

/** A first key set for a new cluster: one admin who holds every capability. */
export function bootstrapKeySet(opts: { cluster: string; admin: KeyRef; nowS: number; ttlS?: number; adminName?: string }): KeySet {
  return {
    cluster: opts.cluster,
    version: 1,
    issuedAt: opts.nowS,
    expiresAt: opts.nowS + (opts.ttlS ?? 90 * 24 * 3600),
    admins: { threshold: 1, keys: [opts.admin] },
    users: [{ name: opts.adminName ?? 'admin', keys: [opts.admin], roles: ['admin'] }],
    roles: [{ name: 'admin', caps: ['*'], nodes: ['*'], labels: {} }],
    thresholds: {},
    revoked: [],
  };
}

/** The next version of a key set, re-dated; edits are applied by the caller. */
export function nextKeySet(ks: KeySet, nowS: number, ttlS = 90 * 24 * 3600): KeySet {
  return { ...structuredClone(ks), version: ks.version + 1, issuedAt: nowS, expiresAt: nowS + ttlS };
}
