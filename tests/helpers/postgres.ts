// A throwaway PostgreSQL for tests: TEST_DATABASE_URL when set, else a private PostgreSQL 15 server started
// from /usr/lib/postgresql/15/bin (initdb into a temp dir, run as the `postgres` system user because initdb
// refuses root, listening on 127.0.0.1 on a free port only). Each test gets its own fresh database.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const PG_BIN = '/usr/lib/postgresql/15/bin';
const run = promisify(execFile);

interface PgClient {
  connect(): Promise<void>;
  query(sql: string): Promise<unknown>;
  end(): Promise<void>;
}
const { Client } = createRequire(import.meta.url)('pg') as { Client: new (cfg: { connectionString: string; connectionTimeoutMillis?: number }) => PgClient };

export interface TestPostgres {
  /** Where the server came from, for test output. */
  origin: string;
  /** A new, empty database on the server; dropped by stop(). */
  freshDatabaseUrl(): Promise<string>;
  stop(): Promise<void>;
}

export type TestPostgresResult = { ok: true; pg: TestPostgres } | { ok: false; reason: string };

async function adminQuery(url: string, sql: string): Promise<void> {
  const c = new Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

function databaseFactory(adminUrl: string, origin: string, onStop: () => Promise<void>): TestPostgres {
  const created: string[] = [];
  return {
    origin,
    async freshDatabaseUrl() {
      const name = `writ_test_${randomBytes(6).toString('hex')}`;
      await adminQuery(adminUrl, `CREATE DATABASE ${name}`);
      created.push(name);
      return withDatabase(adminUrl, name);
    },
    async stop() {
      for (const name of created.splice(0)) {
        await adminQuery(adminUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
      }
      await onStop();
    },
  };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

async function waitReady(url: string, child: ChildProcess, log: () => string, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`postgres exited early:\n${log()}`);
    try {
      await adminQuery(url, 'SELECT 1');
      return;
    } catch (e) {
      if (Date.now() > until) throw new Error(`postgres did not become ready: ${(e as Error).message}\n${log()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function startLocalServer(): Promise<TestPostgres> {
  const root = mkdtempSync(join(tmpdir(), 'writ-pg-'));
  const data = join(root, 'data');
  const sockets = join(root, 'sockets');
  mkdirSync(data, { mode: 0o700 });
  mkdirSync(sockets, { mode: 0o700 });
  const asPostgres = userInfo().uid === 0;
  const prefix = asPostgres ? ['runuser', '-u', 'postgres', '--'] : [];
  if (asPostgres) {
    const uid = Number((await run('id', ['-u', 'postgres'])).stdout.trim());
    const gid = Number((await run('id', ['-g', 'postgres'])).stdout.trim());
    for (const p of [root, data, sockets]) chownSync(p, uid, gid);
  }
  const cmd = (argv: string[]) => [...prefix, ...argv];
  try {
    const init = cmd([join(PG_BIN, 'initdb'), '-D', data, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--no-locale', '--no-sync']);
    await run(init[0]!, init.slice(1), { timeout: 60_000 });
  } catch (e) {
    rmSync(root, { recursive: true, force: true });
    throw new Error(`initdb failed: ${(e as { stderr?: string }).stderr ?? (e as Error).message}`);
  }
  const port = await freePort();
  // fsync off: a throwaway server whose durability is PostgreSQL's business, not these tests'; it makes
  // CREATE DATABASE per test cheap. Every other setting is the server's default.
  const argv = cmd([
    join(PG_BIN, 'postgres'),
    '-D',
    data,
    '-p',
    String(port),
    '-k',
    sockets,
    '-c',
    'listen_addresses=127.0.0.1',
    '-c',
    'fsync=off',
    '-c',
    'max_connections=60',
  ]);
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-4000)));
  child.stderr!.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-4000)));
  const adminUrl = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const stopServer = async () => {
    // runuser may not pass signals on; the postmaster's own pid is in postmaster.pid.
    const pidFile = join(data, 'postmaster.pid');
    const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').split('\n')[0]) : NaN;
    const exited = new Promise<void>((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r())));
    try {
      if (Number.isInteger(pid) && pid > 0) process.kill(pid, 'SIGINT');
      else child.kill('SIGINT');
    } catch {
      /* already gone */
    }
    const timer = setTimeout(() => {
      try {
        if (Number.isInteger(pid) && pid > 0) process.kill(pid, 'SIGKILL');
        child.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }, 10_000);
    await exited;
    clearTimeout(timer);
    rmSync(root, { recursive: true, force: true });
  };
  try {
    await waitReady(adminUrl, child, () => output);
  } catch (e) {
    await stopServer();
    throw e;
  }
  return databaseFactory(adminUrl, `PostgreSQL 15 at 127.0.0.1:${port} (${data})`, stopServer);
}

/**
 * Starts (or connects to) PostgreSQL for a test file. Never throws: when neither TEST_DATABASE_URL nor a
 * local server works, the reason says why, for a printed skip.
 */
export async function startTestPostgres(): Promise<TestPostgresResult> {
  const given = process.env.TEST_DATABASE_URL;
  if (given) {
    try {
      await adminQuery(given, 'SELECT 1');
      return { ok: true, pg: databaseFactory(given, `TEST_DATABASE_URL (${new URL(given).host})`, async () => {}) };
    } catch (e) {
      return { ok: false, reason: `TEST_DATABASE_URL is set but not usable: ${(e as Error).message}` };
    }
  }
  if (!existsSync(join(PG_BIN, 'postgres'))) return { ok: false, reason: `no PostgreSQL 15 at ${PG_BIN} and TEST_DATABASE_URL is not set` };
  try {
    return { ok: true, pg: await startLocalServer() };
  } catch (e) {
    return { ok: false, reason: `could not start a local PostgreSQL 15: ${(e as Error).message}` };
  }
}
