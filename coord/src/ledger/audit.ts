// The append-only, hash-chained audit log (R8). Each entry's hash covers its own fields and the previous
// entry's hash, so editing, removing or reordering an entry breaks every hash from there on.
import { canonicalJson, sha256Hex } from '@writ/protocol';
import type { Db, Queryable } from './db.ts';
import { storableJson, storableText } from './json.ts';

export const GENESIS_HASH = '0'.repeat(64);

export interface AuditInput {
  /** What happened, e.g. `job.admit`, `key.revoke`, `security`. */
  kind: string;
  /** Who did it: a key id, `node:<id>`, `api`, … */
  actor: string;
  /** What it happened to: a job id, a key id, or ''. */
  subject: string;
  data?: Record<string, unknown>;
}

export interface AuditEntry {
  seq: number;
  at: Date;
  kind: string;
  actor: string;
  subject: string;
  data: unknown;
  prevHash: string;
  hash: string;
}

export interface AuditVerification {
  ok: boolean;
  /** Entries checked and found consistent before the first problem (all of them when ok). */
  count: number;
  firstBadSeq?: number;
  reason?: string;
  /** The head the chain should end at; publishing it elsewhere anchors the log against wholesale rewrite. */
  head: { seq: number; hash: string };
}

/**
 * The hashed bytes of an entry: canonical JSON (RFC 8785 form, @writ/protocol's canonicalJson) of these seven
 * fields, as UTF-8. Stored chains depend on these exact bytes: coord/test/audit-hash.test.ts pins one entry's
 * preimage and hash, so a change to the encoding that would break existing chains fails there first.
 */
export function auditPreimage(e: Omit<AuditEntry, 'hash'>): string {
  return canonicalJson({ seq: e.seq, prev_hash: e.prevHash, time: e.at.toISOString(), kind: e.kind, actor: e.actor, subject: e.subject, data: e.data });
}

export function auditHash(e: Omit<AuditEntry, 'hash'>): string {
  return sha256Hex(auditPreimage(e));
}

interface AuditRow {
  seq: number | string;
  at: Date;
  kind: string;
  actor: string;
  subject: string;
  data: unknown;
  prev_hash: string;
  hash: string;
}

const COLUMNS = 'seq, at, kind, actor, subject, data, prev_hash, hash';

function fromRow(r: AuditRow): AuditEntry {
  return { seq: Number(r.seq), at: new Date(r.at), kind: r.kind, actor: r.actor, subject: r.subject, data: r.data, prevHash: r.prev_hash, hash: r.hash };
}

export async function appendAudit(db: Db, input: AuditInput): Promise<AuditEntry> {
  return db.transaction(async (tx) => (await appendAuditIn(tx, [input]))[0]!);
}

/**
 * Appends entries in the caller's transaction under one lock of the chain head: the hashes are chained in
 * this process and the rows written in one multi-row INSERT, so a group of jobs costs one lock, not one each.
 */
export async function appendAuditIn(tx: Queryable, inputs: readonly AuditInput[]): Promise<AuditEntry[]> {
  if (inputs.length === 0) return [];
  // The head row lock serialises appends across connections and coords: the second waits, then reads
  // the head the first one wrote, so the chain never forks. The time is taken after the lock so times follow seq order.
  const [head] = await tx.query<{ seq: number | string; hash: string; at: Date }>(
    "SELECT seq, hash, date_trunc('milliseconds', clock_timestamp()) AS at FROM audit_head WHERE id FOR UPDATE",
  );
  if (!head) throw new Error('audit_head is missing: the ledger schema is damaged');
  const at = new Date(head.at);
  let seq = Number(head.seq);
  let prevHash = head.hash;
  const entries: AuditEntry[] = inputs.map((input) => {
    const entry: Omit<AuditEntry, 'hash'> = {
      seq: ++seq,
      at,
      kind: storableText(input.kind),
      actor: storableText(input.actor),
      subject: storableText(input.subject),
      data: storableJson(input.data ?? {}),
      prevHash,
    };
    prevHash = auditHash(entry);
    return { ...entry, hash: prevHash };
  });
  await tx.query(
    `INSERT INTO audit_log (${COLUMNS})
     SELECT e.seq, e.at, e.kind, e.actor, e.subject, e.data, e.prev_hash, e.hash
     FROM jsonb_to_recordset($1::jsonb) AS e(seq bigint, at timestamptz, kind text, actor text, subject text, data jsonb, prev_hash text, hash text)`,
    [
      JSON.stringify(
        entries.map((e) => ({
          seq: e.seq,
          at: e.at.toISOString(),
          kind: e.kind,
          actor: e.actor,
          subject: e.subject,
          data: e.data,
          prev_hash: e.prevHash,
          hash: e.hash,
        })),
      ),
    ],
  );
  await tx.query('UPDATE audit_head SET seq = $1, hash = $2 WHERE id', [seq, prevHash]);
  return entries;
}

/** The last `n` entries, oldest first. */
export async function tailAudit(db: Queryable, n: number): Promise<AuditEntry[]> {
  const limit = Math.max(0, Math.min(Math.floor(n), 10_000));
  const rows = await db.query<AuditRow>(`SELECT ${COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT $1`, [limit]);
  return rows.map(fromRow).reverse();
}

/**
 * Walks the whole chain in seq order and recomputes every hash. Detects an edited entry (hash mismatch),
 * a removed one (gap in seq, or prev_hash not the previous hash), reordered ones (an entry hashed under
 * another seq), and entries cut off the end (head beyond the last entry).
 */
export async function verifyAudit(db: Queryable, batchSize = 1000): Promise<AuditVerification> {
  const [headRow] = await db.query<{ seq: number | string; hash: string }>('SELECT seq, hash FROM audit_head WHERE id');
  const head = { seq: Number(headRow?.seq ?? 0), hash: headRow?.hash ?? GENESIS_HASH };
  let expectedSeq = 1;
  let prevHash = GENESIS_HASH;
  let count = 0;
  const bad = (seq: number, reason: string): AuditVerification => ({ ok: false, count, firstBadSeq: seq, reason, head });
  for (;;) {
    const rows = await db.query<AuditRow>(`SELECT ${COLUMNS} FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2`, [expectedSeq, batchSize]);
    for (const row of rows) {
      const e = fromRow(row);
      if (e.seq !== expectedSeq) return bad(expectedSeq, `entry ${expectedSeq} is missing (next is ${e.seq})`);
      if (e.prevHash !== prevHash) return bad(e.seq, `entry ${e.seq} does not link to the entry before it`);
      if (auditHash(e) !== e.hash) return bad(e.seq, `entry ${e.seq} does not match its hash (edited or moved)`);
      prevHash = e.hash;
      expectedSeq++;
      count++;
    }
    if (rows.length < batchSize) break;
  }
  if (head.seq !== count || head.hash !== prevHash) {
    return bad(count + 1, head.seq > count ? `entries ${count + 1}..${head.seq} are missing from the end` : 'the audit head does not match the last entry');
  }
  const [first] = await db.query<{ n: number | string }>('SELECT count(*) AS n FROM audit_log WHERE seq < 1 OR seq > $1', [count]);
  if (Number(first?.n ?? 0) > 0) return bad(count + 1, 'entries exist outside the chain');
  return { ok: true, count, head };
}
