// Storage faults under the embedded ledger, on real file systems (root: a tmpfs to fill, an ext4 loop device
// that goes read-only, a mount that vanishes). A full disk fails writes with LEDGER_UNAVAILABLE and is ridden
// out, including PGlite stuck on its thread (it spins when a full disk cannot take a new WAL segment), with
// nothing committed lost; a read-only or vanished disk fails the ledger at once, naming the folder.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { WritError } from '@writ/protocol';
import { openLedger, type Ledger } from '../src/ledger/index.ts';
import { fillDisk, freeDisk, mountExt4, mountSupport, mountTmpfs, unmountAll } from '../../tests/helpers/mounts.ts';

const support = mountSupport();
if (!support.ok) console.warn(`[ledger faults] skipped: ${support.reason}`);
const dir = mkdtempSync(path.join(os.tmpdir(), 'writ-ledger-faults-'));
afterAll(() => {
  unmountAll();
  rmSync(dir, { recursive: true, force: true });
});

/** Retries `write` while it fails with LEDGER_UNAVAILABLE; resolves with how long it took to go through. */
async function untilWritable(write: () => Promise<unknown>, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    try {
      await write();
      return Date.now() - t0;
    } catch (e) {
      if ((e as WritError).code !== 'LEDGER_UNAVAILABLE' || Date.now() - t0 > timeoutMs) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function until(what: string, ok: () => boolean, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`${what} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now() - t0;
}

// Incompressible, so that PostgreSQL has to add pages for it.
const bulky = () => randomBytes(96 * 1024).toString('hex');

describe.skipIf(!support.ok)('ledger storage faults (PGlite on its thread)', () => {
  it('a full disk: writes fail with LEDGER_UNAVAILABLE and readiness drops; a thread stuck on it is replaced once space returns, and nothing committed is lost', async () => {
    const m = mountTmpfs(path.join(dir, 'full'), 96);
    const ledger: Ledger = await openLedger({ dataDir: path.join(m.dir, 'ledger') });
    try {
      await ledger.db.exec('CREATE TABLE kept (id int PRIMARY KEY, pad text NOT NULL)');
      for (let i = 0; i < 5; i++) await ledger.db.query('INSERT INTO kept VALUES ($1, $2)', [i, bulky()]);
      await ledger.appendAudit({ kind: 'test', actor: 'test', subject: 'before the disk filled' });
      const filler = fillDisk(m.dir);

      await expect(ledger.db.query('INSERT INTO kept VALUES ($1, $2)', [100, bulky()])).rejects.toMatchObject({
        code: 'LEDGER_UNAVAILABLE',
        details: { fault: 'disk-full', dataDir: path.join(m.dir, 'ledger') },
        message: expect.stringContaining('disk is full'),
      });
      expect(ledger.db.health.problem?.code).toBe('LEDGER_UNAVAILABLE');
      expect(ledger.db.health.fatal).toBeNull();

      // After a WAL switch PostgreSQL needs a new 16 MiB segment; on a full disk PGlite spins on its thread
      // instead of failing. The watch notices, fails the call, and replaces the thread once there is space.
      await ledger.db.query('SELECT pg_switch_wal()');
      const t0 = Date.now();
      await expect(ledger.appendAudit({ kind: 'test', actor: 'test', subject: 'while full' })).rejects.toMatchObject({ code: 'LEDGER_UNAVAILABLE' });
      const failedAfterMs = Date.now() - t0;
      // Well before the 60 s after which any unanswered thread is replaced: it is the full disk that was noticed.
      expect(failedAfterMs).toBeLessThan(30_000);
      freeDisk(filler);
      const recoveredAfterMs = await untilWritable(() => ledger.appendAudit({ kind: 'test', actor: 'test', subject: 'after space came back' }), 60_000);
      console.log(`[ledger faults] stuck write failed after ${failedAfterMs} ms; writable again ${recoveredAfterMs} ms after space came back`);

      expect(await ledger.db.query('SELECT count(*)::int AS n FROM kept')).toEqual([{ n: 5 }]);
      const audit = await ledger.verifyAudit();
      expect(audit.ok).toBe(true);
      expect((await ledger.tailAudit(10)).map((e) => e.subject).filter((s) => s !== 'while full')).toEqual(
        expect.arrayContaining(['before the disk filled', 'after space came back']),
      );
      // Readiness comes back once a write went through on a disk with room again.
      await until('the ledger reporting healthy again', () => ledger.db.health.problem === null, 10_000);
    } finally {
      await ledger.close();
    }
  }, 180_000);

  it('a disk that turns read-only under the ledger fails it at once, naming the folder, and nothing waits on a spinning thread', async () => {
    const m = mountExt4(path.join(dir, 'ro'), path.join(dir, 'ro.img'), 128);
    const dataDir = path.join(m.dir, 'ledger');
    const ledger = await openLedger({ dataDir });
    const fatal: WritError[] = [];
    ledger.db.health.onFatal((e) => fatal.push(e));
    try {
      await ledger.appendAudit({ kind: 'test', actor: 'test', subject: 'before' });
      m.makeReadOnly();
      // Nothing is asked of the ledger: its watch finds the fault by itself.
      const foundMs = await until('the read-only disk being noticed', () => fatal.length > 0, 10_000);
      console.log(`[ledger faults] read-only disk noticed after ${foundMs} ms`);
      expect(fatal[0]).toMatchObject({ code: 'LEDGER_UNAVAILABLE', details: { fault: 'read-only', dataDir }, message: expect.stringContaining(dataDir) });
      const t0 = Date.now();
      await expect(ledger.appendAudit({ kind: 'test', actor: 'test', subject: 'after' })).rejects.toMatchObject({
        code: 'LEDGER_UNAVAILABLE',
        details: { fault: 'read-only' },
      });
      await expect(ledger.ping()).rejects.toMatchObject({ code: 'LEDGER_UNAVAILABLE' });
      expect(Date.now() - t0).toBeLessThan(1000);
    } finally {
      await ledger.close();
    }
  }, 120_000);

  it('a ledger disk that vanishes (unmounted under it) fails it at once as gone, naming the folder', async () => {
    const m = mountTmpfs(path.join(dir, 'gone'), 96);
    const dataDir = path.join(m.dir, 'ledger');
    const ledger = await openLedger({ dataDir });
    const fatal: WritError[] = [];
    ledger.db.health.onFatal((e) => fatal.push(e));
    try {
      await ledger.appendAudit({ kind: 'test', actor: 'test', subject: 'before' });
      m.unmount();
      await until('the vanished disk being noticed', () => fatal.length > 0, 10_000);
      expect(fatal[0]).toMatchObject({ code: 'LEDGER_UNAVAILABLE', details: { fault: 'vanished', dataDir }, message: expect.stringContaining('is gone') });
      await expect(ledger.appendAudit({ kind: 'test', actor: 'test', subject: 'after' })).rejects.toMatchObject({ code: 'LEDGER_UNAVAILABLE' });
    } finally {
      await ledger.close();
    }
  }, 120_000);
});
