// The ledger's only view of a database: parameterised queries and transactions, over either an embedded
// PGlite (Postgres in WebAssembly, data in a folder or in memory) or a PostgreSQL server through a pg Pool.
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { PGlite } from '@electric-sql/pglite';
import { WritError, errorCodeOf } from '@writ/protocol';
import { LedgerHealth, PGLITE_START_FREE_BYTES, faultKindOf, isFatalFault, ledgerFault, probeFolder, type LedgerPlace } from './faults.ts';
import { openPgliteThread } from './pglite-channel.ts';
import { createPglite } from './pglite-open.ts';

export interface Queryable {
  /** Runs one parameterised statement ($1, $2, …) and returns its rows. */
  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<T[]>;
  /** Runs a fixed multi-statement script without parameters: for migrations only, never with outside input. */
  exec(script: string): Promise<void>;
}

/** What a coord ran on its ledger: the work of coordinating, counted the same on any machine (GET /metrics). */
export interface LedgerCounters {
  /** Statements (`query`), in and out of transactions. */
  statements: number;
  transactions: number;
}

export interface Db extends Queryable {
  readonly engine: 'pglite' | 'postgres';
  /** Counted by the Db openDb returns. */
  readonly counters?: LedgerCounters;
  /** Storage faults as the ledger met them: readiness reports this, and the coord stops on a fatal one. */
  readonly health: LedgerHealth;
  /** Runs `fn` in one transaction: committed when it resolves, rolled back when it throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface OpenDbOptions {
  /** A PostgreSQL connection string; when set, PGlite is not used. */
  databaseUrl?: string;
  /** PGlite data folder; undefined keeps the database in memory (lost on close). */
  dataDir?: string;
  /** pg Pool size (default 10). */
  poolMax?: number;
  /**
   * Run PGlite on the calling thread. By default it runs on a thread of its own: PGlite executes each
   * statement synchronously, and on the coord's thread that would hold up HTTP, the supervisor and the runner.
   */
  pgliteInProcess?: boolean;
}

export async function openDb(opts: OpenDbOptions): Promise<Db> {
  if (opts.databaseUrl) return counted(await openPostgres(opts.databaseUrl, opts.poolMax ?? 10));
  return counted(opts.pgliteInProcess ? await openPglite(opts.dataDir) : await openPgliteOnItsThread(opts.dataDir));
}

/** The same Db, counting its statements and transactions (LedgerCounters). */
function counted(db: Db): Db {
  const counters: LedgerCounters = { statements: 0, transactions: 0 };
  const counting = (q: Queryable): Queryable => ({
    query: <T>(sql: string, params?: readonly unknown[]) => {
      counters.statements++;
      return q.query<T>(sql, params);
    },
    exec: (script) => q.exec(script),
  });
  return {
    engine: db.engine,
    health: db.health,
    counters,
    ...counting(db),
    transaction: (fn) => {
      counters.transactions++;
      return db.transaction((tx) => fn(counting(tx)));
    },
    close: () => db.close(),
  };
}

async function openPgliteOnItsThread(dataDir: string | undefined): Promise<Db> {
  const health = new LedgerHealth();
  if (!dataDir) return openPgliteThread({ dataDir, health, onClosed: () => {} });
  const hadLedger = await prepareFolder(dataDir);
  const unlock = lockDataDir(dataDir);
  try {
    return await openPgliteThread({ dataDir, health, onClosed: unlock });
  } catch (e) {
    unlock();
    throw await openFailure(e, dataDir, hadLedger);
  }
}

// ---------------------------------------------------------------- PGlite

export const LOCK_FILE = '.writ-ledger.lock';

/**
 * Before PGlite sees the folder: it exists (made if missing), its disk takes writes, and it holds a ledger or
 * nothing. Returns whether it holds a ledger. PGlite's own failures here are "failed to initialize properly",
 * or a spin on its thread that never ends (a read-only or full disk): these checks answer first, plainly.
 */
export async function prepareFolder(dataDir: string): Promise<boolean> {
  const place: LedgerPlace = { dataDir };
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw ledgerFault(
      faultKindOf(e) === 'disk-full' ? 'disk-full' : faultKindOf(e) === 'read-only' ? 'read-only' : 'vanished',
      place,
      `it cannot be created: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      e,
    );
  }
  const st = await probeFolder(dataDir, { write: true });
  if (!st.ok) throw ledgerFault(st.kind, place, st.detail);
  if (existsSync(join(dataDir, 'PG_VERSION'))) return true;
  // lost+found: the folder is the root of its own file system (a disk of its own for the ledger).
  const others = readdirSync(dataDir).filter((n) => n !== LOCK_FILE && n !== 'lost+found' && !n.startsWith('.writ-probe-'));
  if (others.length > 0)
    throw ledgerFault(
      'corrupt',
      place,
      `it holds ${others.length} entries (${others.slice(0, 4).join(', ')}${others.length > 4 ? ', …' : ''}) but no PG_VERSION, so it is not a whole ledger`,
    );
  return false;
}

/** Why PGlite could not open a folder that passed prepareFolder, in Writ's terms. */
export async function openFailure(e: unknown, dataDir: string, hadLedger: boolean): Promise<WritError> {
  if (errorCodeOf(e)) return e as WritError;
  const place: LedgerPlace = { dataDir };
  const message = (e as Error).message ?? String(e);
  const st = await probeFolder(dataDir, { write: true, ...(hadLedger ? { minFreeBytes: PGLITE_START_FREE_BYTES } : {}) });
  if (!st.ok) return ledgerFault(st.kind, place, `${st.detail}; PGlite said: ${message}`, e);
  const kind = faultKindOf(e);
  if (kind && kind !== 'engine' && kind !== 'vanished') return ledgerFault(kind, place, message, e);
  if (hadLedger) return ledgerFault('corrupt', place, `PGlite could not open it: ${message}`, e);
  return new WritError('LEDGER_UNAVAILABLE', `PGlite could not create a ledger in ${dataDir}: ${message}`, { dataDir }, { cause: e });
}

/**
 * PGlite is single-user Postgres: two processes opening the same folder would corrupt it, and PGlite itself
 * does not stop them. A pid file taken with O_EXCL does; a file left by a dead process is taken over.
 * Returns the unlock; it never throws (a read-only or vanished folder keeps the file, which the next opener
 * takes over once this process is gone).
 */
export function lockDataDir(dataDir: string): () => void {
  const path = join(dataDir, LOCK_FILE);
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    for (let tries = 0; tries < 2; tries++) {
      try {
        const fd = openSync(path, 'wx', 0o600);
        writeSync(fd, String(process.pid));
        closeSync(fd);
        return () => {
          try {
            rmSync(path, { force: true });
          } catch {
            /* see above */
          }
        };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const holder = Number(readFileSync(path, 'utf8').trim());
        if (Number.isInteger(holder) && holder > 0 && processAlive(holder)) {
          throw new WritError('CONFIG_INVALID', `the ledger folder ${dataDir} is in use by process ${holder}${holder === process.pid ? ' (this one)' : ''}`, {
            dataDir,
            pid: holder,
          });
        }
        rmSync(path, { force: true });
      }
    }
  } catch (e) {
    if (errorCodeOf(e)) throw e;
    const kind = faultKindOf(e);
    throw ledgerFault(
      kind === 'disk-full' || kind === 'read-only' || kind === 'io' ? kind : 'vanished',
      { dataDir },
      `its lock file cannot be taken: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      e,
    );
  }
  throw new WritError('CONFIG_INVALID', `could not lock the ledger folder ${dataDir}`, { dataDir });
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * PGlite on the calling thread (tests and benchmarks): storage faults are classified as on the ledger thread,
 * but a PGlite that spins on a sick disk holds this thread too, and nothing can watch it.
 */
async function openPglite(dataDir: string | undefined): Promise<Db> {
  const health = new LedgerHealth();
  const place: LedgerPlace = dataDir ? { dataDir } : { inMemory: true };
  const hadLedger = dataDir ? await prepareFolder(dataDir) : false;
  const unlock = dataDir ? lockDataDir(dataDir) : () => {};
  let pg: PGlite;
  try {
    // relaxedDurability stays false: a query's promise resolves only after PGlite has synced its file system.
    pg = await createPglite({ ...(dataDir ? { dataDir } : {}), relaxedDurability: false });
  } catch (e) {
    unlock();
    throw dataDir
      ? await openFailure(e, dataDir, hadLedger)
      : new WritError('LEDGER_UNAVAILABLE', `PGlite could not open an in-memory database: ${(e as Error).message}`, undefined, { cause: e });
  }
  let closed = false;
  type PgliteQueryable = Pick<PGlite, 'query' | 'exec'>;
  const open = () => {
    if (closed) throw new WritError('LEDGER_UNAVAILABLE', 'the ledger is closed');
    if (health.fatal) throw health.fatal;
  };
  const guard = async <T>(p: Promise<T>, write: boolean): Promise<T> => {
    try {
      const v = await p;
      if (write) health.writeSucceeded();
      return v;
    } catch (e) {
      let kind = faultKindOf(e);
      if (!kind) throw e;
      if (kind === 'vanished' && dataDir) {
        // A file gone from a folder that is still there is damage, not a vanished disk.
        const st = await probeFolder(dataDir, { expectLedger: true });
        kind = st.ok ? 'corrupt' : st.kind;
      }
      const err = ledgerFault(kind, place, (e as Error).message, e);
      if (isFatalFault(kind)) health.failed(err);
      else health.degraded(err);
      throw err;
    }
  };
  const on = (q: PgliteQueryable, inTx: boolean): Queryable => ({
    query: async <T>(sql: string, params?: readonly unknown[]) => {
      open();
      return (await guard(q.query<T>(sql, params ? [...params] : undefined), !inTx && !/^\s*(select|show)\b/i.test(sql))).rows;
    },
    exec: async (script) => {
      open();
      await guard(q.exec(script), !inTx);
    },
  });
  return {
    engine: 'pglite',
    health,
    ...on(pg, false),
    transaction: async (fn) => {
      open();
      // PGlite serialises transactions with an internal mutex; statements inside must use `tx`.
      const out = await guard(
        pg.transaction((tx) => fn(on(tx as unknown as PgliteQueryable, true))),
        true,
      );
      // PGlite 0.5 syncs its file system after each query outside a transaction but skips it for the
      // COMMIT inside transaction(). A no-op for a Node folder (NODEFS writes through); it matters for
      // backends that buffer (IndexedDB, OPFS), so the commit is synced before the caller hears of it.
      await pg.syncToFs();
      return out;
    },
    close: async () => {
      if (closed) return;
      closed = true;
      try {
        await pg.close();
      } finally {
        unlock();
      }
    },
  };
}

// ---------------------------------------------------------------- PostgreSQL (pg)

// The slice of the pg API used here; pg ships no type declarations and @types/pg is not installed.
interface PgClient {
  query(sql: string, params?: unknown[]): Promise<{ rows: unknown[] }>;
  release(destroy?: boolean | Error): void;
}
interface PgPool {
  query(sql: string, params?: unknown[]): Promise<{ rows: unknown[] }>;
  connect(): Promise<PgClient>;
  end(): Promise<void>;
  on(event: 'error', listener: (err: Error) => void): void;
}
interface PgModule {
  Pool: new (config: { connectionString: string; max: number; connectionTimeoutMillis: number; idleTimeoutMillis: number }) => PgPool;
}

/**
 * Connection-level failures become LEDGER_UNAVAILABLE (retryable), and so do the server's own storage and
 * resource faults (disk full, I/O errors, a read-only standby); data corruption becomes LEDGER_CORRUPT.
 * Other SQL errors keep their own identity. PostgreSQL manages its own disk, so none of these stops the coord.
 */
function mapPgError(e: unknown): unknown {
  if (errorCodeOf(e)) return e;
  const err = e as { code?: unknown; message?: string };
  const code = typeof err?.code === 'string' ? err.code : '';
  const message = err?.message ?? String(e);
  const sqlState = /^[0-9A-Z]{5}$/.test(code);
  const connectionLost = !sqlState || code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03';
  if (connectionLost) {
    return new WritError('LEDGER_UNAVAILABLE', `PostgreSQL is not reachable: ${message}`, code ? { cause: code } : undefined, { cause: e });
  }
  if (code === 'XX001' || code === 'XX002') return ledgerFault('corrupt', { engine: 'postgres' }, message, e);
  if (code.startsWith('53') || code.startsWith('58') || code === '25006') {
    return new WritError('LEDGER_UNAVAILABLE', `PostgreSQL cannot take writes: ${message}`, { sqlState: code }, { cause: e });
  }
  return e;
}

async function openPostgres(databaseUrl: string, poolMax: number): Promise<Db> {
  const pg = createRequire(import.meta.url)('pg') as PgModule;
  const health = new LedgerHealth();
  const pool = new pg.Pool({ connectionString: databaseUrl, max: poolMax, connectionTimeoutMillis: 5000, idleTimeoutMillis: 30_000 });
  // An idle client losing its server emits 'error' on the pool; unhandled, it would crash the process.
  // The next query then gets a fresh connection or a LEDGER_UNAVAILABLE error.
  pool.on('error', () => {});
  const wrap = async <T>(p: Promise<{ rows: unknown[] }>): Promise<T[]> => {
    try {
      return (await p).rows as T[];
    } catch (e) {
      const mapped = mapPgError(e);
      // The server's own storage faults hold readiness until a write goes through; a lost connection does not
      // (readiness asks the server itself, and a coord with nothing to write would otherwise stay unready).
      const code = errorCodeOf(mapped);
      if (code === 'LEDGER_CORRUPT' || (code === 'LEDGER_UNAVAILABLE' && (mapped as WritError).details?.sqlState)) health.degraded(mapped as WritError);
      throw mapped;
    }
  };
  const noteWrite = <T>(p: Promise<T>): Promise<T> => p.then((v) => (health.writeSucceeded(), v));
  try {
    await pool.query('SELECT 1');
  } catch (e) {
    await pool.end().catch(() => {});
    throw mapPgError(e);
  }
  return {
    engine: 'postgres',
    health,
    query: <T>(sql: string, params?: readonly unknown[]) => {
      const p = wrap<T>(pool.query(sql, params ? [...params] : undefined));
      return /^\s*(select|show)\b/i.test(sql) ? p : noteWrite(p);
    },
    // Without parameters pg uses the simple protocol, which accepts several statements.
    exec: async (script) => void (await noteWrite(wrap(pool.query(script)))),
    transaction: async (fn) => {
      let client: PgClient;
      try {
        client = await pool.connect();
      } catch (e) {
        throw mapPgError(e);
      }
      let broken: Error | undefined;
      try {
        await wrap(client.query('BEGIN'));
        const out = await fn({
          query: (sql, params) => wrap(client.query(sql, params ? [...params] : undefined)),
          exec: async (script) => void (await wrap(client.query(script))),
        });
        await noteWrite(wrap(client.query('COMMIT')));
        return out;
      } catch (e) {
        try {
          await client.query('ROLLBACK');
        } catch (rollbackError) {
          // A connection that cannot roll back is not returned to the pool.
          broken = rollbackError as Error;
        }
        throw e;
      } finally {
        client.release(broken ?? false);
      }
    },
    close: () => pool.end(),
  };
}
