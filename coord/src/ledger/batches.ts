// Runner event batches already applied. A supervisor's report is delivered at least once: a coord that
// committed it and died before the supervisor heard back, or a peer supervisor claiming a dead one's
// entries, hands the same batch over again. Each batch (node + the runner's per-process batch id) is
// recorded in the transaction that applies it, so a batch seen before is skipped: its log lines and
// statuses land once. Rows older than a week are pruned (redelivery happens within minutes).
import type { Db, Queryable } from './db.ts';
import { NOW_MS } from './jobs.ts';

export const RUNNER_BATCHES_MIGRATION_SQL = `
  CREATE TABLE runner_batches (
    node    text NOT NULL,
    batch   text NOT NULL,
    at      timestamptz(3) NOT NULL,
    PRIMARY KEY (node, batch)
  );
  CREATE INDEX runner_batches_at ON runner_batches (at);
`;

/** Records these batches as applied; returns the keys (`node/batch`) not seen before, which the caller applies. */
export async function claimBatchesIn(tx: Queryable, batches: readonly { node: string; batch: string }[]): Promise<Set<string>> {
  if (batches.length === 0) return new Set();
  const rows = await tx.query<{ node: string; batch: string }>(
    `INSERT INTO runner_batches (node, batch, at)
     SELECT b.node, b.batch, ${NOW_MS} FROM jsonb_to_recordset($1::jsonb) AS b(node text, batch text)
     ON CONFLICT (node, batch) DO NOTHING RETURNING node, batch`,
    [JSON.stringify(batches.map((b) => ({ node: b.node, batch: b.batch })))],
  );
  return new Set(rows.map((r) => batchKey(r)));
}

export function batchKey(b: { node: string; batch: string }): string {
  return `${b.node}/${b.batch}`;
}

/** Forgets batches applied more than `olderThanMs` ago (default a week); returns how many. */
export async function pruneBatches(db: Db, olderThanMs = 7 * 24 * 3600_000): Promise<number> {
  const rows = await db.query("DELETE FROM runner_batches WHERE at < clock_timestamp() - $1::double precision * interval '1 millisecond' RETURNING 1", [
    olderThanMs,
  ]);
  return rows.length;
}
