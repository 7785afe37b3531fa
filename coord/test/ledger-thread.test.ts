// The embedded ledger runs PGlite on a thread of its own: a heavy statement leaves the coord's event loop
// free (it keeps turning), where PGlite on the calling thread holds it for the whole statement. Errors keep
// their SQLSTATE code across the thread, and a transaction's statements commit or roll back together.
import { describe, expect, it } from 'vitest';
import { openLedger } from '../src/ledger/index.ts';

const HEAVY = 'SELECT count(*)::int AS n FROM generate_series(1, 1000000) AS g WHERE g % 7 = 0';

/** Event-loop turns that happen while `work` runs. */
async function turnsDuring(work: Promise<unknown>): Promise<number> {
  let turns = 0;
  let done = false;
  void work.finally(() => (done = true));
  while (!done) {
    await new Promise((r) => setImmediate(r));
    turns++;
  }
  return turns;
}

describe('the ledger thread', () => {
  it('runs a heavy statement off the event loop (and PGlite in process does not)', async () => {
    const threaded = await openLedger();
    const inProcess = await openLedger({ pgliteInProcess: true });
    try {
      const onThread = await turnsDuring(threaded.db.query(HEAVY));
      const onLoop = await turnsDuring(inProcess.db.query(HEAVY));
      expect(onThread).toBeGreaterThan(20);
      expect(onLoop).toBeLessThan(5);
    } finally {
      await threaded.close();
      await inProcess.close();
    }
    // Two PGlite starts and the statement twice: seconds when quiet, over a minute on a 2-core machine at load 25.
  }, 240_000);

  it('keeps SQLSTATE codes and transaction boundaries across the thread', async () => {
    const ledger = await openLedger();
    try {
      await expect(ledger.recordAttempt('no-such-job', 1, 'n1', 'running')).rejects.toMatchObject({ code: 'NOT_FOUND' }); // from SQLSTATE 23503
      await ledger.db.exec('CREATE TABLE t (x int PRIMARY KEY)');
      await expect(
        ledger.db.transaction(async (tx) => {
          await tx.query('INSERT INTO t VALUES (1)');
          await tx.query('INSERT INTO t VALUES (1)');
        }),
      ).rejects.toMatchObject({ code: '23505' });
      expect(await ledger.db.query('SELECT count(*)::int AS n FROM t')).toEqual([{ n: 0 }]);
      await ledger.db.transaction(async (tx) => {
        await tx.query('INSERT INTO t VALUES (2)');
      });
      expect(await ledger.db.query('SELECT x FROM t')).toEqual([{ x: 2 }]);
    } finally {
      await ledger.close();
    }
    await expect(ledger.db.query('SELECT 1')).rejects.toMatchObject({ code: 'LEDGER_UNAVAILABLE' });
  }, 60_000);
});
