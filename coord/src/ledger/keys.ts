// Authorised user keys: the interim trust store until signed key sets (T6) replace it. A revoked key keeps
// its row, so the fact and time of revocation stay on record, and it is never silently re-authorised.
import { WritError } from '@writ/protocol';
import type { Db, Queryable } from './db.ts';
import { storableText } from './json.ts';

export interface KeyInput {
  keyid: string;
  /** ed25519 public key, base64url. */
  publicKey: string;
  /** Grant patterns, e.g. `vm.*`. */
  caps: string[];
  /** Node ids, or `*` for any. */
  nodes: string[];
  labels: Record<string, string>;
  comment?: string;
}

export interface AuthorizedKey {
  keyid: string;
  publicKey: string;
  caps: string[];
  nodes: string[];
  labels: Record<string, string>;
  comment: string;
  createdAt: Date;
  updatedAt: Date;
  revokedAt: Date | null;
  revokeReason: string | null;
}

interface KeyRow {
  keyid: string;
  public_key: string;
  caps: string[];
  nodes: string[];
  labels: Record<string, string>;
  comment: string;
  created_at: Date;
  updated_at: Date;
  revoked_at: Date | null;
  revoke_reason: string | null;
}

const KEY_COLUMNS = 'keyid, public_key, caps, nodes, labels, comment, created_at, updated_at, revoked_at, revoke_reason';
const NOW_MS = "date_trunc('milliseconds', clock_timestamp())";

function keyFromRow(r: KeyRow): AuthorizedKey {
  return {
    keyid: r.keyid,
    publicKey: r.public_key,
    caps: r.caps,
    nodes: r.nodes,
    labels: r.labels,
    comment: r.comment,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
    revokedAt: r.revoked_at ? new Date(r.revoked_at) : null,
    revokeReason: r.revoke_reason,
  };
}

function assertStrings(name: string, v: unknown): asserts v is string[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new WritError('BAD_REQUEST', `${name} must be a list of strings`);
}

/**
 * Adds a key or replaces its grants. Refuses a revoked key (KEY_REVOKED: authorise a new key instead) and a
 * key id already bound to another public key (KEY_INVALID).
 */
export async function upsertKey(db: Db, k: KeyInput): Promise<AuthorizedKey> {
  assertStrings('caps', k.caps);
  assertStrings('nodes', k.nodes);
  if (!k.labels || typeof k.labels !== 'object' || Array.isArray(k.labels) || !Object.values(k.labels).every((v) => typeof v === 'string')) {
    throw new WritError('BAD_REQUEST', 'labels must map strings to strings');
  }
  return db.transaction(async (tx) => {
    const [cur] = await tx.query<KeyRow>(`SELECT ${KEY_COLUMNS} FROM authorized_keys WHERE keyid = $1 FOR UPDATE`, [k.keyid]);
    if (cur?.revoked_at) throw new WritError('KEY_REVOKED', `key ${k.keyid} was revoked and cannot be authorised again`, { keyid: k.keyid });
    if (cur && cur.public_key !== k.publicKey) throw new WritError('KEY_INVALID', `key id ${k.keyid} is already bound to another public key`, { keyid: k.keyid });
    const [row] = await tx.query<KeyRow>(
      `INSERT INTO authorized_keys (keyid, public_key, caps, nodes, labels, comment, created_at, updated_at)
       VALUES ($1, $2, $3::text[], $4::text[], $5::jsonb, $6, ${NOW_MS}, ${NOW_MS})
       ON CONFLICT (keyid) DO UPDATE SET caps = EXCLUDED.caps, nodes = EXCLUDED.nodes, labels = EXCLUDED.labels, comment = EXCLUDED.comment, updated_at = EXCLUDED.updated_at
       RETURNING ${KEY_COLUMNS}`,
      [k.keyid, k.publicKey, k.caps.map(storableText), k.nodes.map(storableText), JSON.stringify(k.labels), storableText(k.comment ?? '')],
    );
    return keyFromRow(row!);
  });
}

/** Revokes a key, keeping its row. Revoking twice keeps the first time and reason. Null for an unknown key. */
export async function revokeKey(db: Queryable, keyid: string, reason: string): Promise<AuthorizedKey | null> {
  const [row] = await db.query<KeyRow>(
    `UPDATE authorized_keys SET
       revoked_at = COALESCE(revoked_at, ${NOW_MS}),
       revoke_reason = CASE WHEN revoked_at IS NULL THEN $2 ELSE revoke_reason END,
       updated_at = CASE WHEN revoked_at IS NULL THEN ${NOW_MS} ELSE updated_at END
     WHERE keyid = $1
     RETURNING ${KEY_COLUMNS}`,
    [keyid, storableText(reason)],
  );
  return row ? keyFromRow(row) : null;
}

export async function getKey(db: Queryable, keyid: string): Promise<AuthorizedKey | null> {
  const [row] = await db.query<KeyRow>(`SELECT ${KEY_COLUMNS} FROM authorized_keys WHERE keyid = $1`, [keyid]);
  return row ? keyFromRow(row) : null;
}

export async function listKeys(db: Queryable, q: { includeRevoked?: boolean } = {}): Promise<AuthorizedKey[]> {
  const rows = await db.query<KeyRow>(
    `SELECT ${KEY_COLUMNS} FROM authorized_keys WHERE $1 OR revoked_at IS NULL ORDER BY created_at, keyid`,
    [q.includeRevoked ?? false],
  );
  return rows.map(keyFromRow);
}
