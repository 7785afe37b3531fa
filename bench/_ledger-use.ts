// What the ledger runs during a phase of a benchmark: statements and transactions by kind (a transaction is
// named by its statements), with the wall time each took. Shared by the benchmarks; not a benchmark itself.
import type { Ledger } from '@writ/coord';

export type LedgerUse = Map<string, { n: number; ms: number }>;
type Db = Ledger['db'];
type Queryable = Parameters<Parameters<Db['transaction']>[0]>[0];

/**
 * Counts and times the ledger's statements and transactions until stop(). The time is wall time seen by the
 * coord: with PGlite on its thread it includes waiting for that thread (transactions there run one at a time).
 */
export function trackLedger(db: Db): { stop(): LedgerUse } {
  const use: LedgerUse = new Map();
  const add = (kind: string, ms: number) => {
    const k = use.get(kind) ?? { n: 0, ms: 0 };
    k.n++;
    k.ms += ms;
    use.set(kind, k);
  };
  const kindOf = (sql: string) => sql.replace(/\s+/g, ' ').trim().slice(0, 40);
  const { query, transaction } = db;
  db.query = async <T>(sql: string, params?: readonly unknown[]) => {
    const t = performance.now();
    try {
      return (await query.call(db, sql, params)) as T[];
    } finally {
      add(kindOf(sql), performance.now() - t);
    }
  };
  db.transaction = async <T>(fn: (tx: Queryable) => Promise<T>) => {
    const t = performance.now();
    const kinds: string[] = [];
    try {
      return (await transaction.call(db, (tx) =>
        fn({ query: (sql, params) => (kinds.push(kindOf(sql).slice(0, 20)), tx.query(sql, params)), exec: (script) => tx.exec(script) }),
      )) as T;
    } finally {
      add(`tx[${kinds.join('; ')}]`, performance.now() - t);
    }
  };
  return {
    stop() {
      db.query = query;
      db.transaction = transaction;
      return use;
    },
  };
}

export function printLedgerUse(use: LedgerUse): void {
  for (const [kind, k] of [...use].sort((a, b) => b[1].ms - a[1].ms).slice(0, 6)) {
    console.log(`  ledger: ${String(k.n).padStart(6)} x ${(k.ms / k.n).toFixed(2).padStart(6)} ms = ${(k.ms / 1000).toFixed(1).padStart(5)} s  ${kind}`);
  }
}
