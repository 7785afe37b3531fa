// One dedicated PostgreSQL connection per coord for coordinating with the other coords on the same database:
// the session-level advisory locks behind leases (leases.ts) and LISTEN/NOTIFY for live events
// (../events/relay.ts). Pooled connections cannot carry either: a session lock or a LISTEN belongs to the
// connection, and the pool hands connections to whoever asks next.
//
// The session is the lease's lifetime. It pings every `keepAliveMs`, and the server ends it after
// `expireAfterMs` without a statement (idle_session_timeout), so a coord that is killed, or stopped, or cut off
// from the database loses its locks: at once when its socket closes (SIGKILL, a crash), or after
// `expireAfterMs` when it does not (SIGSTOP, a partition). When the session ends the holder hears of it
// (onReset) before any new one opens, and starts from nothing held.
import { createRequire } from 'node:module';
import { WritError } from '@writ/protocol';

interface PgNotification {
  channel: string;
  payload?: string;
}
interface PgClient {
  connect(): Promise<void>;
  query(sql: string, params?: unknown[]): Promise<{ rows: unknown[] }>;
  end(): Promise<void>;
  on(event: 'error', listener: (err: Error) => void): void;
  on(event: 'end', listener: () => void): void;
  on(event: 'notification', listener: (n: PgNotification) => void): void;
}
interface PgModule {
  Client: new (config: { connectionString: string; application_name: string; connectionTimeoutMillis: number; keepAlive: boolean }) => PgClient;
}

export interface PgSessionOptions {
  databaseUrl: string;
  /** Shown in pg_stat_activity.application_name, so operators and tests can see who holds what. */
  name: string;
  /** The server ends the session (and releases its locks) after this long without a statement (default 20 s). */
  expireAfterMs?: number;
  /** How often the session pings (default a quarter of expireAfterMs). */
  keepAliveMs?: number;
  onError?: (err: Error) => void;
}

export class PgSession {
  private client: PgClient | null = null;
  private opening: Promise<PgClient> | null = null;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  /** Bumped every time a connection is lost: a caller that saw another generation lost what it held. */
  generation = 0;
  private readonly resetListeners: (() => void)[] = [];
  private readonly channels = new Map<string, ((payload: string) => void)[]>();

  constructor(readonly opts: PgSessionOptions) {}

  get expireAfterMs(): number {
    return this.opts.expireAfterMs ?? 20_000;
  }

  /** Called when the connection was lost: everything the session held is gone. */
  onReset(fn: () => void): void {
    this.resetListeners.push(fn);
  }

  /** Subscribes to a NOTIFY channel (LISTENed again on every new connection). */
  async listen(channel: string, fn: (payload: string) => void): Promise<void> {
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(channel)) throw new WritError('BAD_REQUEST', `not a channel name: ${channel}`);
    const first = !this.channels.has(channel);
    this.channels.set(channel, [...(this.channels.get(channel) ?? []), fn]);
    if (first && this.client) await this.client.query(`LISTEN ${channel}`);
    else if (first) await this.connection();
  }

  /** Runs one statement on the session's connection (opening one when there is none). */
  async query<T>(sql: string, params?: readonly unknown[]): Promise<T[]> {
    const c = await this.connection();
    try {
      return (await c.query(sql, params ? [...params] : undefined)).rows as T[];
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && !code.startsWith('08') && !code.startsWith('57')) throw e;
      this.lost(c);
      throw new WritError('LEDGER_UNAVAILABLE', `the coordination session to PostgreSQL was lost: ${(e as Error).message}`, undefined, { cause: e });
    }
  }

  private connection(): Promise<PgClient> {
    if (this.closed) return Promise.reject(new WritError('LEDGER_UNAVAILABLE', 'the coordination session is closed'));
    if (this.client) return Promise.resolve(this.client);
    this.opening ??= this.open().finally(() => {
      this.opening = null;
    });
    return this.opening;
  }

  private async open(): Promise<PgClient> {
    const pg = createRequire(import.meta.url)('pg') as PgModule;
    const c = new pg.Client({
      connectionString: this.opts.databaseUrl,
      application_name: this.opts.name.slice(0, 63),
      connectionTimeoutMillis: 5000,
      keepAlive: true,
    });
    c.on('error', (e) => {
      this.opts.onError?.(e);
      this.lost(c);
    });
    c.on('end', () => this.lost(c));
    c.on('notification', (n) => {
      for (const fn of this.channels.get(n.channel) ?? []) fn(n.payload ?? '');
    });
    try {
      await c.connect();
      // The server, not this process, decides when a silent holder's locks go: PostgreSQL 14 and later.
      await c.query(`SET idle_session_timeout = ${Math.max(1000, Math.floor(this.expireAfterMs))}`).catch(() => {});
      for (const ch of this.channels.keys()) await c.query(`LISTEN ${ch}`);
    } catch (e) {
      await c.end().catch(() => {});
      throw new WritError('LEDGER_UNAVAILABLE', `cannot open the coordination session to PostgreSQL: ${(e as Error).message}`, undefined, { cause: e });
    }
    if (this.closed) {
      await c.end().catch(() => {});
      throw new WritError('LEDGER_UNAVAILABLE', 'the coordination session is closed');
    }
    this.client = c;
    clearInterval(this.timer);
    this.timer = setInterval(() => void this.query('SELECT 1').catch(() => {}), this.opts.keepAliveMs ?? Math.max(250, Math.floor(this.expireAfterMs / 4)));
    this.timer.unref();
    return c;
  }

  private lost(c: PgClient): void {
    if (this.client !== c) return;
    this.client = null;
    clearInterval(this.timer);
    this.generation++;
    void c.end().catch(() => {});
    for (const fn of this.resetListeners) fn();
    // Listeners must hear what happens while no connection is open: open the next one soon.
    if (!this.closed && this.channels.size > 0) {
      const retry = () => void this.connection().catch(() => !this.closed && setTimeout(retry, 1000).unref());
      setTimeout(retry, 200).unref();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    const c = this.client ?? (await this.opening?.catch(() => null)) ?? null;
    this.client = null;
    if (c) await c.end().catch(() => {});
  }
}
