// Operator tools for the embedded ledger (`writ ledger check|backup|restore`): they never modify the ledger
// folder they read. A folder is copied while its lock is held (so no coord writes meanwhile) and the copy is
// opened, recovered and examined; a backup is that copy, checked, as PGlite's own tarball.
import { cp, mkdtemp, open, readdir, rename, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { amcheck } from '@electric-sql/pglite/contrib/amcheck';
import { WritError, errorCodeOf, toErrorJSON, type ErrorCode, type ErrorJSON } from '@writ/protocol';
import { verifyAudit } from './audit.ts';
import { LOCK_FILE, lockDataDir, openDb, type Queryable } from './db.ts';
import { ledgerFault, probeFolder } from './faults.ts';
import { MIGRATIONS, checksumOf } from './migrations.ts';
import { createPglite } from './pglite-open.ts';

/** One thing `writ ledger check` looked at. */
export interface LedgerCheckItem {
  name: string;
  ok: boolean;
  detail: string;
  /** Set when not ok: the error code this finding maps to. */
  code?: ErrorCode;
}

export interface LedgerCheckReport {
  ok: boolean;
  /** What was checked: a folder, a backup file, or PostgreSQL. */
  ledger: string;
  checks: LedgerCheckItem[];
  /** The first finding's error, when not ok. */
  error?: ErrorJSON;
}

export type LedgerSource = { dataDir: string } | { backupFile: string } | { databaseUrl: string };

function describe(src: LedgerSource): string {
  if ('dataDir' in src) return `folder ${src.dataDir}`;
  return 'backupFile' in src ? `backup ${src.backupFile}` : 'PostgreSQL at DATABASE_URL';
}

function report(ledger: string, checks: LedgerCheckItem[], place: { dataDir: string } | { engine: 'postgres' } | { inMemory: true }): LedgerCheckReport {
  const bad = checks.find((c) => !c.ok);
  if (!bad) return { ok: true, ledger, checks };
  const error =
    bad.code === 'LEDGER_CORRUPT' || !bad.code
      ? ledgerFault('corrupt', place, `${bad.name}: ${bad.detail}`)
      : new WritError(bad.code, `${ledger}: ${bad.name}: ${bad.detail}`);
  return { ok: false, ledger, checks, error: toErrorJSON(error) };
}

/**
 * Examines a ledger: its schema against this code's migrations, every table read to its last byte, every
 * btree index against its table (amcheck, where the engine has it), and the audit log's hash chain.
 * Findings are reported, not thrown; a ledger that cannot be reached at all throws LEDGER_UNAVAILABLE.
 */
export async function checkLedger(src: LedgerSource): Promise<LedgerCheckReport> {
  const ledger = describe(src);
  if ('databaseUrl' in src) {
    const db = await openDb({ databaseUrl: src.databaseUrl, poolMax: 1 });
    try {
      const hasAmcheck = await db.exec('CREATE EXTENSION IF NOT EXISTS amcheck').then(
        () => true,
        () => false,
      );
      return report(ledger, await examine(db, hasAmcheck), { engine: 'postgres' });
    } finally {
      await db.close();
    }
  }
  const opened = 'dataDir' in src ? await openCopy(src.dataDir) : await openBackup(src.backupFile);
  if ('failed' in opened) return report(ledger, [opened.failed], 'dataDir' in src ? { dataDir: src.dataDir } : { inMemory: true });
  try {
    return report(ledger, await examine(opened.q, true), 'dataDir' in src ? { dataDir: src.dataDir } : { inMemory: true });
  } finally {
    await opened.close();
  }
}

/**
 * Writes a consistent backup of a PGlite ledger folder to `dest` (a .tar.gz PGlite's `loadDataDir` and
 * `writ ledger restore` read): the folder is copied while its lock is held (the coord must be stopped: a
 * running one holds the lock and is refused with CONFIG_INVALID), the copy is recovered and checkpointed,
 * checked, and dumped. `dest` appears only complete and synced (written beside it, then renamed).
 */
export async function backupLedger(
  dataDir: string,
  dest: string,
  opts: { force?: boolean } = {},
): Promise<{ dest: string; bytes: number; report: LedgerCheckReport }> {
  if (!opts.force && existsSync(dest)) throw new WritError('CONFIG_INVALID', `${dest} exists already; choose another name or pass --force`, { dest });
  const opened = await openCopy(dataDir);
  if ('failed' in opened) throw ledgerFault('corrupt', { dataDir }, `${opened.failed.name}: ${opened.failed.detail}`);
  try {
    const checks = await examine(opened.q, true);
    const r = report(`folder ${dataDir}`, checks, { dataDir });
    if (!r.ok) throw new WritError(r.error!.code, `no backup written: ${r.error!.message}`, r.error!.details);
    await opened.pg.exec('CHECKPOINT');
    const tar = await opened.pg.dumpDataDir('gzip');
    const bytes = Buffer.from(await tar.arrayBuffer());
    await writeDurably(dest, bytes);
    return { dest, bytes: bytes.length, report: r };
  } finally {
    await opened.close();
  }
}

/**
 * Restores a backup written by backupLedger into `dataDir`, which must not exist or be empty (move a
 * damaged ledger aside first: it is evidence). The backup is checked before anything is written.
 */
export async function restoreLedger(backupFile: string, dataDir: string): Promise<LedgerCheckReport> {
  const r = await checkLedger({ backupFile });
  if (!r.ok) throw new WritError(r.error!.code, `not restored: ${r.error!.message}`, r.error!.details);
  const entries = await readdir(dataDir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return [] as string[];
    throw ledgerFault('vanished', { dataDir }, e.code ?? e.message, e);
  });
  if (entries.length > 0)
    throw new WritError('CONFIG_INVALID', `${dataDir} is not empty; move it aside first (e.g. mv ${dataDir} ${dataDir}.damaged), then restore`, { dataDir });
  const unlock = lockDataDir(dataDir);
  try {
    const pg = await PGlite.create({ dataDir, loadDataDir: new Blob([await readBytes(backupFile)]) });
    await pg.close();
  } finally {
    unlock();
  }
  return r;
}

// ---------------------------------------------------------------- opening without touching the original

interface Opened {
  pg: PGlite;
  q: Queryable;
  close(): Promise<void>;
}

function queryable(pg: PGlite): Queryable {
  return {
    query: async <T>(sql: string, params?: readonly unknown[]) => (await pg.query<T>(sql, params ? [...params] : undefined)).rows,
    exec: async (script: string) => void (await pg.exec(script)),
  };
}

async function openCopy(dataDir: string): Promise<Opened | { failed: LedgerCheckItem }> {
  const st = await probeFolder(dataDir, { expectLedger: true });
  if (!st.ok && st.kind === 'vanished') throw new WritError('LEDGER_UNAVAILABLE', `there is no ledger in ${dataDir} (${st.detail})`, { dataDir });
  let unlock = () => {};
  try {
    unlock = lockDataDir(dataDir);
  } catch (e) {
    // A read-only disk cannot take the lock, and nothing can write to it either: copy it as it is.
    if ((e as WritError).details?.fault !== 'read-only') throw e;
  }
  const copy = await mkdtemp(path.join(os.tmpdir(), 'writ-ledger-check-'));
  try {
    await cp(dataDir, copy, { recursive: true, filter: (p) => path.basename(p) !== LOCK_FILE });
  } catch (e) {
    unlock();
    await rm(copy, { recursive: true, force: true });
    throw errorCodeOf(e) ? e : new WritError('LEDGER_UNAVAILABLE', `${dataDir} cannot be read: ${(e as Error).message}`, { dataDir }, { cause: e });
  }
  unlock();
  const cleanup = () => rm(copy, { recursive: true, force: true });
  try {
    const pg = await createPglite({ dataDir: copy, extensions: { amcheck } });
    return { pg, q: queryable(pg), close: async () => void (await pg.close().catch(() => {}), await cleanup()) };
  } catch (e) {
    await cleanup();
    return { failed: { name: 'open', ok: false, code: 'LEDGER_CORRUPT', detail: `PGlite could not open it: ${(e as Error).message}` } };
  }
}

async function readBytes(file: string): Promise<Buffer> {
  try {
    const fh = await open(file, 'r');
    try {
      return await fh.readFile();
    } finally {
      await fh.close();
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new WritError(code === 'ENOENT' ? 'NOT_FOUND' : 'LEDGER_UNAVAILABLE', `${file} cannot be read: ${code ?? (e as Error).message}`, { file });
  }
}

async function openBackup(file: string): Promise<Opened | { failed: LedgerCheckItem }> {
  const bytes = await readBytes(file);
  try {
    const pg = await createPglite({ loadDataDir: new Blob([bytes]), extensions: { amcheck } });
    return { pg, q: queryable(pg), close: async () => void (await pg.close().catch(() => {})) };
  } catch (e) {
    return { failed: { name: 'open', ok: false, code: 'LEDGER_CORRUPT', detail: `PGlite could not load it: ${(e as Error).message}` } };
  }
}

async function writeDurably(dest: string, bytes: Buffer): Promise<void> {
  const part = `${dest}.partial-${process.pid}`;
  try {
    const fh = await open(part, 'wx', 0o600);
    try {
      await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(part, dest);
    const dir = await open(path.dirname(path.resolve(dest)), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch (e) {
    await rm(part, { force: true });
    const code = (e as NodeJS.ErrnoException).code;
    throw new WritError('LEDGER_UNAVAILABLE', `the backup could not be written to ${dest}: ${code ?? (e as Error).message}`, { dest }, { cause: e });
  }
}

// ---------------------------------------------------------------- the checks

const quoteIdent = (name: string) => `"${name.replaceAll('"', '""')}"`;

async function examine(q: Queryable, amcheckAvailable: boolean): Promise<LedgerCheckItem[]> {
  const checks: LedgerCheckItem[] = [];
  const attempt = async (name: string, run: () => Promise<string>, code: ErrorCode = 'LEDGER_CORRUPT') => {
    try {
      checks.push({ name, ok: true, detail: await run() });
    } catch (e) {
      const known = errorCodeOf(e);
      checks.push({ name, ok: false, detail: (e as Error).message, code: known && known !== 'INTERNAL' ? known : code });
    }
  };

  await attempt('schema', async () => {
    const applied = await q.query<{ version: number; checksum: string }>('SELECT version, checksum FROM schema_migrations ORDER BY version');
    const known = MIGRATIONS.at(-1)?.version ?? 0;
    const newest = applied.at(-1)?.version ?? 0;
    if (newest > known) throw new WritError('CONFIG_INVALID', `schema version ${newest} is newer than this writ knows (${known})`);
    for (const row of applied) {
      const m = MIGRATIONS.find((x) => x.version === row.version);
      if (!m || checksumOf(m) !== row.checksum) throw new WritError('CONFIG_INVALID', `migration ${row.version} as applied differs from this writ's copy`);
    }
    return `version ${newest}${newest < known ? ` (the coord brings it to ${known} when it starts)` : ''}`;
  });

  const tables = await q.query<{ name: string }>("SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename").catch(() => []);
  for (const { name } of tables) {
    // Reads every row to its last (TOASTed) byte: a damaged page or chunk fails here.
    await attempt(`table ${name}`, async () => {
      const [r] = await q.query<{ n: number }>(`SELECT count(*)::int AS n, coalesce(sum(length(t::text)), 0)::bigint AS bytes FROM ${quoteIdent(name)} AS t`);
      return `${r?.n ?? 0} rows read`;
    });
  }

  if (amcheckAvailable) {
    await q.exec('CREATE EXTENSION IF NOT EXISTS amcheck').catch(() => {});
    const indexes = await q
      .query<{ name: string }>(
        `SELECT c.relname AS name FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
       JOIN pg_namespace n ON n.oid = c.relnamespace WHERE a.amname = 'btree' AND n.nspname = 'public' ORDER BY c.relname`,
      )
      .catch(() => []);
    for (const { name } of indexes) {
      // heapallindexed: every row of the table is in the index, not only the index's own structure.
      await attempt(`index ${name}`, async () => {
        await q.query(`SELECT bt_index_check(${`'public.${quoteIdent(name).replaceAll("'", "''")}'`}::regclass, true)`);
        return 'consistent with its table';
      });
    }
  } else {
    checks.push({ name: 'indexes', ok: true, detail: 'not checked: the amcheck extension is not available to this role' });
  }

  await attempt(
    'audit chain',
    async () => {
      const v = await verifyAudit(q);
      if (!v.ok) throw new WritError('AUDIT_CHAIN_BROKEN', `${v.reason} (first bad entry ${v.firstBadSeq})`);
      return `${v.count} entries, head ${v.head.hash.slice(0, 16)}…`;
    },
    'AUDIT_CHAIN_BROKEN',
  );

  return checks;
}
