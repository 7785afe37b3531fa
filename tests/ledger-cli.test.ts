// `writ ledger check|backup|restore` as an operator runs them (the real `writ` process) on a PGlite ledger
// folder: a sound ledger checks clean, a backup is consistent and restores into a ledger that opens with its
// history; a damaged page, a broken audit chain and a folder held by a running coord are each refused with
// their own error code. Nothing needs Redis or root.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLedger } from '@writ/coord';
import { sha256Hex } from '@writ/protocol';
import { killAllWrit, runWrit } from './helpers/processes.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'writ-ledger-cli-'));
const env = { WRIT_HOME: path.join(dir, 'home') };
afterAll(() => {
  killAllWrit();
  rmSync(dir, { recursive: true, force: true });
});

/** A ledger folder holding `jobs` jobs and one audit entry per job; returns the jobs table's file. */
async function makeLedger(dataDir: string, jobs: number): Promise<string> {
  const ledger = await openLedger({ dataDir });
  try {
    for (let i = 0; i < jobs; i++) {
      const envelope = JSON.stringify({ n: i });
      await ledger.insertJob({
        id: `job-${i}`,
        envelope,
        envelopeSha256: sha256Hex(envelope),
        signerKeyids: ['k'],
        target: { node: 'n1' },
        caps: [],
        exp: new Date(Date.now() + 3600_000),
      });
      await ledger.appendAudit({ kind: 'job.admit', actor: 'k', subject: `job-${i}` });
    }
    const [row] = await ledger.db.query<{ f: string }>("SELECT pg_relation_filepath('jobs') AS f");
    return path.join(dataDir, row!.f);
  } finally {
    await ledger.close();
  }
}

const json = (out: string) => JSON.parse(out) as any;

/** Every file under `root` with its size and modification time: what a read-only check must not change. */
function snapshot(root: string): string[] {
  return readdirSync(root, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => {
      const p = path.join(e.parentPath, e.name);
      const st = statSync(p);
      return `${path.relative(root, p)} ${st.size} ${st.mtimeMs}`;
    })
    .sort();
}

describe('writ ledger', () => {
  const sound = path.join(dir, 'sound');
  beforeAll(async () => {
    await makeLedger(sound, 3);
  }, 120_000);

  it('check: a sound ledger passes every check (schema, tables, indexes, audit chain) and is left as it was', async () => {
    const before = snapshot(sound);
    const r = await runWrit(['ledger', 'check', '--ledger', sound, '--json'], env);
    expect(snapshot(sound)).toEqual(before);
    expect(r.code).toBe(0);
    const report = json(r.stdout);
    expect(report).toMatchObject({ ok: true, ledger: `folder ${sound}` });
    const names = report.checks.map((c: any) => c.name);
    expect(names).toEqual(expect.arrayContaining(['schema', 'table jobs', 'index jobs_pkey', 'audit chain']));
    expect(report.checks.find((c: any) => c.name === 'audit chain').detail).toMatch(/^3 entries/);
    const human = await runWrit(['ledger', 'check', '--ledger', sound], env);
    expect([human.code, human.stdout.trim().split('\n').at(-1)]).toEqual([0, expect.stringMatching(/: sound \(\d+ checks\)$/)]);
  }, 120_000);

  it('backup and restore: the backup checks clean, restores only into an empty folder, and the restored ledger opens with its history', async () => {
    const dest = path.join(dir, 'backup.tar.gz');
    const b = await runWrit(['ledger', 'backup', dest, '--ledger', sound, '--json'], env);
    expect(b.code).toBe(0);
    expect(json(b.stdout)).toMatchObject({ ok: true, dest, bytes: expect.any(Number) });
    // Never over an existing file unless asked.
    const again = await runWrit(['ledger', 'backup', dest, '--ledger', sound], env);
    expect([again.code, again.stderr]).toEqual([1, expect.stringContaining('CONFIG_INVALID')]);
    expect((await runWrit(['ledger', 'check', '--backup', dest], env)).code).toBe(0);

    // Not over a ledger that is there (a damaged one is evidence: it is moved aside first).
    const over = await runWrit(['ledger', 'restore', dest, '--ledger', sound], env);
    expect([over.code, over.stderr]).toEqual([1, expect.stringContaining('CONFIG_INVALID')]);
    const restored = path.join(dir, 'restored');
    const r = await runWrit(['ledger', 'restore', dest, '--ledger', restored], env);
    expect(r.code).toBe(0);
    const ledger = await openLedger({ dataDir: restored });
    try {
      expect((await ledger.getJob('job-2'))?.id).toBe('job-2');
      expect(await ledger.verifyAudit()).toMatchObject({ ok: true, count: 3 });
    } finally {
      await ledger.close();
    }
  }, 180_000);

  it('refuses a folder a running coord holds (CONFIG_INVALID): a copy taken meanwhile would not be consistent', async () => {
    const ledger = await openLedger({ dataDir: sound });
    try {
      for (const args of [['check'], ['backup', path.join(dir, 'never.tar.gz')]]) {
        const r = await runWrit(['ledger', ...args, '--ledger', sound], env);
        expect([r.code, r.stderr]).toEqual([1, expect.stringMatching(/CONFIG_INVALID: the ledger folder .* is in use by process/)]);
      }
    } finally {
      await ledger.close();
    }
  }, 120_000);

  it('check: a damaged page is LEDGER_CORRUPT naming the folder, and no backup is written of it', async () => {
    const damaged = path.join(dir, 'damaged');
    const jobsFile = await makeLedger(damaged, 2);
    writeFileSync(jobsFile, randomBytes(8192), { flag: 'r+' });
    const r = await runWrit(['ledger', 'check', '--ledger', damaged, '--json'], env);
    expect(r.code).toBe(1);
    const report = json(r.stdout);
    expect(report).toMatchObject({ ok: false, error: { code: 'LEDGER_CORRUPT', details: { dataDir: damaged } } });
    expect(report.checks.find((c: any) => c.name === 'table jobs')).toMatchObject({
      ok: false,
      code: 'LEDGER_CORRUPT',
      detail: expect.stringContaining('invalid page in block 0'),
    });
    const b = await runWrit(['ledger', 'backup', path.join(dir, 'damaged.tar.gz'), '--ledger', damaged], env);
    expect([b.code, b.stderr]).toEqual([1, expect.stringContaining('LEDGER_CORRUPT')]);
  }, 180_000);

  it('check: an edited audit entry is AUDIT_CHAIN_BROKEN, naming the entry', async () => {
    const edited = path.join(dir, 'edited');
    await makeLedger(edited, 2);
    const ledger = await openLedger({ dataDir: edited });
    try {
      await ledger.db.query('ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update');
      await ledger.db.query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2");
    } finally {
      await ledger.close();
    }
    const r = await runWrit(['ledger', 'check', '--ledger', edited], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/writ: AUDIT_CHAIN_BROKEN: .*entry 2/);
  }, 180_000);

  it('a folder with no ledger is LEDGER_UNAVAILABLE; usage errors exit 2; --help explains', async () => {
    const none = await runWrit(['ledger', 'check', '--ledger', path.join(dir, 'nothing-here')], env);
    expect([none.code, none.stderr]).toEqual([1, expect.stringContaining('LEDGER_UNAVAILABLE: there is no ledger in')]);
    expect((await runWrit(['ledger', 'backup'], env)).code).toBe(2);
    expect((await runWrit(['ledger', 'check', '--ledger', 'a', '--state', 'b'], env)).code).toBe(2);
    const help = await runWrit(['ledger', 'backup', '--help'], env);
    expect([help.code, help.stdout]).toEqual([0, expect.stringContaining('usage: writ ledger <check|backup|restore>')]);
  }, 60_000);
});
