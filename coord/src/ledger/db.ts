// The ledger's only view of a database: parameterised queries and transactions, over either an embedded
// PGlite (Postgres in WebAssembly, data in a folder or in memory) or a PostgreSQL server through a pg Pool.
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { WritError, errorCodeOf } from '@writ/protocol';
import { openPgliteThread } from './pglite-channel.ts';

export interface Queryable {
  /** Runs one parameterised statement ($1, $2, …) and returns its rows. */
  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<T[]>;
  /** Runs a fixed multi-statement script without parameters: for migrations only, never with outside input. */
  exec(script: string): Promise<void>;
}

export interface Db extends Queryable {
  readonly engine: 'pglite' | 'postgres';
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
  if (opts.databaseUrl) return openPostgres(opts.databaseUrl, opts.poolMax ?? 10);
  return opts.pgliteInProcess ? openPglite(opts.dataDir) : openPgliteOnItsThread(opts.dataDir);
}

async function openPgliteOnItsThread(dataDir: string | undefined): Promise<Db> {
  const unlock = dataDir ? lockDataDir(dataDir) : () => {};
  try {
    if (dataDir && !existsSync(dataDir)) mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    return await openPgliteThread(dataDir, unlock);
  } catch (e) {
    unlock();
    throw errorCodeOf(e) ? e : new WritError('LEDGER_UNAVAILABLE', `PGlite could not open ${dataDir ?? 'an in-memory database'}: ${(e as Error).message}`, undefined, { cause: e });
  }
}

// ---------------------------------------------------------------- PGlite

const LOCK_FILE = '.writ-ledger.lock';

/**
 * PGlite is single-user Postgres: two processes opening the same folder would corrupt it, and PGlite itself
 * does not stop them. A pid file taken with O_EXCL does; a file left by a dead process is taken over.
 */
function lockDataDir(dataDir: string): () => void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const path = join(dataDir, LOCK_FILE);
  for (let tries = 0; tries < 2; tries++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(path, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const holder = Number(readFileSync(path, 'utf8').trim());
      if (Number.isInteger(holder) && holder > 0 && processAlive(holder)) {
        throw new WritError('CONFIG_INVALID', `the ledger folder ${dataDir} is in use by process ${holder}${holder === process.pid ? ' (this one)' : ''}`, { dataDir, pid: holder });
      }
      rmSync(path, { force: true });
    }
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

async function openPglite(dataDir: string | undefined): Promise<Db> {
  const unlock = dataDir ? lockDataDir(dataDir) : () => {};
  let pg: PGlite;
  try {
    if (dataDir && !existsSync(dataDir)) mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    // relaxedDurability stays false: a query's promise resolves only after PGlite has synced its file system.
    pg = await PGlite.create({ ...(dataDir ? { dataDir } : {}), relaxedDurability: false });
  } catch (e) {
    unlock();
    throw new WritError('LEDGER_UNAVAILABLE', `PGlite could not open ${dataDir ?? 'an in-memory database'}: ${(e as Error).message}`, undefined, { cause: e });
  }
  let closed = false;
  type PgliteQueryable = Pick<PGlite, 'query' | 'exec'>;
  const open = () => {
    if (closed) throw new WritError('LEDGER_UNAVAILABLE', 'the ledger is closed');
  };
  const on = (q: PgliteQueryable): Queryable => ({
    query: async <T>(sql: string, params?: readonly unknown[]) => {
      open();
      return (await q.query<T>(sql, params ? [...params] : undefined)).rows;
    },
    exec: async (script) => {
      open();
      await q.exec(script);
    },
  });
  return {
    engine: 'pglite',
    ...on(pg),
    transaction: async (fn) => {
      open();
      // PGlite serialises transactions with an internal mutex; statements inside must use `tx`.
      const out = await pg.transaction((tx) => fn(on(tx as unknown as PgliteQueryable)));
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

/** Connection-level failures become LEDGER_UNAVAILABLE (retryable); SQL errors keep their own identity. */
function mapPgError(e: unknown): unknown {
  const err = e as { code?: unknown; message?: string };
  const code = typeof err?.code === 'string' ? err.code : '';
  const sqlState = /^[0-9A-Z]{5}$/.test(code);
  const connectionLost = !sqlState || code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03';
  if (connectionLost && !(e instanceof WritError)) {
    return new WritError('LEDGER_UNAVAILABLE', `PostgreSQL is not reachable: ${err?.message ?? String(e)}`, code ? { cause: code } : undefined, { cause: e });
  }
  return e;
}

async function openPostgres(databaseUrl: string, poolMax: number): Promise<Db> {
  const pg = createRequire(import.meta.url)('pg') as PgModule;
  const pool = new pg.Pool({ connectionString: databaseUrl, max: poolMax, connectionTimeoutMillis: 5000, idleTimeoutMillis: 30_000 });
  // An idle client losing its server emits 'error' on the pool; unhandled, it would crash the process.
  // The next query then gets a fresh connection or a LEDGER_UNAVAILABLE error.
  pool.on('error', () => {});
  const wrap = async <T>(p: Promise<{ rows: unknown[] }>): Promise<T[]> => {
    try {
      return (await p).rows as T[];
    } catch (e) {
      throw mapPgError(e);
    }
  };
  try {
    await pool.query('SELECT 1');
  } catch (e) {
    await pool.end().catch(() => {});
    throw mapPgError(e);
  }
  return {
    engine: 'postgres',
    query: (sql, params) => wrap(pool.query(sql, params ? [...params] : undefined)),
    // Without parameters pg uses the simple protocol, which accepts several statements.
    exec: async (script) => void (await wrap(pool.query(script))),
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
        await wrap(client.query('COMMIT'));
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
