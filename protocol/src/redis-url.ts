// REDIS_URL, read in one place: a plain Redis address, a Sentinel group or a Redis Cluster, turned into the
// options ioredis takes. Pure (no I/O, no ioredis import: newRedisClient is handed ioredis's classes);
// refusals carry REDIS_URL_INVALID and a stable `reason`, and never repeat a password.
//
//   redis://[USER[:PASSWORD]@]HOST[:PORT][/DB]                    (rediss:// for TLS)
//   redis+sentinel://[USER[:PASSWORD]@]HOST[:PORT][,HOST[:PORT]...]/MASTER[?db=N&sentinelUsername=U&sentinelPassword=P]
//   redis+cluster://[USER[:PASSWORD]@]HOST[:PORT][,HOST[:PORT]...]   (rediss+cluster:// for TLS; some of the
//                                                                    cluster's nodes: the client learns the rest)
//
// USER/PASSWORD authenticate to the Redis servers (the role's ACL user); sentinelUsername/sentinelPassword to
// the sentinels, when they require it. Percent-encode reserved characters in all of them.
import { WritError } from './errors.ts';

export const REDIS_DEFAULT_PORT = 6379;
export const SENTINEL_DEFAULT_PORT = 26379;
export const REDIS_URL_SCHEMES = ['redis:', 'rediss:', 'redis+sentinel:', 'redis+cluster:', 'rediss+cluster:'] as const;

/** What ioredis's `new Redis(options)` accepts, for a plain address or Sentinel; `cluster` for a Redis Cluster. */
export interface RedisConnectionOptions {
  /** Cluster form: the nodes to start from (ioredis `new Cluster(cluster, { redisOptions })`). */
  cluster?: { host: string; port: number }[];
  host?: string;
  port?: number;
  /** Sentinel form: where to ask for the current primary of `name`. */
  sentinels?: { host: string; port: number }[];
  /** Sentinel form: the master group name the sentinels monitor. */
  name?: string;
  username?: string;
  password?: string;
  sentinelUsername?: string;
  sentinelPassword?: string;
  db?: number;
  /** rediss://: TLS with Node's default verification. */
  tls?: Record<string, never>;
}

/** Why a URL was refused; stable, for scripts and tests. */
export type RedisUrlProblem = 'syntax' | 'scheme' | 'host' | 'port' | 'db' | 'master' | 'query' | 'credentials';

function refuse(source: string, shown: string, reason: RedisUrlProblem, why: string): never {
  throw new WritError('REDIS_URL_INVALID', `${source} ${shown}: ${why}`, { reason });
}

/** The URL with its passwords replaced, for messages and logs. */
export function redactRedisUrl(url: string): string {
  return url.replace(/^([^:/?#]+:\/\/[^:@/?#]*:)[^@/?#]*@/, '$1***@').replace(/([?&]sentinelPassword=)[^&#]*/g, '$1***');
}

function decode(part: string, source: string, shown: string, what: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return refuse(source, shown, 'credentials', `the ${what} is not valid percent-encoding`);
  }
}

const HOSTNAME_RE = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const IPV6_RE = /^\[([0-9A-Fa-f:.]+)\]$/;
const MASTER_RE = /^[A-Za-z0-9._-]{1,128}$/;

function parseAddress(text: string, defaultPort: number, source: string, shown: string): { host: string; port: number } {
  // [v6]:port | [v6] | host:port | host
  const m = /^(\[[^\]]*\]|[^:[\]]*)(?::([^:]*))?$/.exec(text);
  if (!m || m[1] === '') return refuse(source, shown, 'host', `expected HOST[:PORT], got ${JSON.stringify(text)}`);
  const rawHost = m[1]!;
  const v6 = IPV6_RE.exec(rawHost);
  const host = v6 ? v6[1]! : rawHost;
  if (!v6 && !HOSTNAME_RE.test(host)) refuse(source, shown, 'host', `${JSON.stringify(rawHost)} is not a host name or address`);
  if (m[2] === undefined) return { host, port: defaultPort };
  if (!/^\d{1,5}$/.test(m[2]) || Number(m[2]) < 1 || Number(m[2]) > 65535) refuse(source, shown, 'port', `the port ${JSON.stringify(m[2])} is not 1 to 65535`);
  return { host, port: Number(m[2]) };
}

function parseDb(text: string, source: string, shown: string): number {
  if (!/^\d{1,5}$/.test(text)) refuse(source, shown, 'db', `the database ${JSON.stringify(text)} is not a whole number`);
  return Number(text);
}

/**
 * Reads a Redis URL (see the top of this file) into ioredis options. `source` names the flag or env var it
 * came from, for the message. Throws REDIS_URL_INVALID with `details.reason` (a RedisUrlProblem).
 */
export function parseRedisUrl(url: string, source = 'REDIS_URL'): RedisConnectionOptions {
  const shown = redactRedisUrl(url);
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)(\/[^?#]*)?(?:\?([^#]*))?$/.exec(url);
  if (!m) {
    if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(url) && url.includes('#'))
      refuse(source, shown, 'syntax', 'a Redis URL has no #fragment (percent-encode # in a password as %23)');
    return refuse(
      source,
      shown,
      'syntax',
      'not a URL (expected redis://HOST:PORT, redis+sentinel://HOST:PORT,HOST:PORT/MASTER or redis+cluster://HOST:PORT,HOST:PORT)',
    );
  }
  const scheme = `${m[1]!.toLowerCase()}:`;
  if (!(REDIS_URL_SCHEMES as readonly string[]).includes(scheme))
    refuse(source, shown, 'scheme', 'expected a redis:, rediss:, redis+sentinel:, redis+cluster: or rediss+cluster: URL');
  const sentinel = scheme === 'redis+sentinel:';
  const cluster = scheme === 'redis+cluster:' || scheme === 'rediss+cluster:';
  const authority = m[2]!;
  const path = m[3] ?? '';
  const at = authority.lastIndexOf('@');
  const userinfo = at >= 0 ? authority.slice(0, at) : null;
  const hostlist = at >= 0 ? authority.slice(at + 1) : authority;

  const out: RedisConnectionOptions = {};
  if (userinfo !== null) {
    const colon = userinfo.indexOf(':');
    const user = decode(colon >= 0 ? userinfo.slice(0, colon) : userinfo, source, shown, 'user name');
    const password = colon >= 0 ? decode(userinfo.slice(colon + 1), source, shown, 'password') : '';
    // redis://:PASSWORD@host authenticates the default user (requirepass); redis://USER@host has no password.
    if (user !== '') out.username = user;
    if (password !== '') out.password = password;
    if (user === '' && password === '') refuse(source, shown, 'credentials', "an empty user name and password before '@'");
  }

  if (hostlist === '') refuse(source, shown, 'host', 'no host');
  const hosts = hostlist.split(',');
  if (!sentinel && !cluster && hosts.length > 1)
    refuse(
      source,
      shown,
      'host',
      'several hosts are a Sentinel group or a Redis Cluster: use redis+sentinel://HOST:PORT,HOST:PORT/MASTER or redis+cluster://HOST:PORT,HOST:PORT',
    );
  const addresses = hosts.map((h) => parseAddress(h, sentinel ? SENTINEL_DEFAULT_PORT : REDIS_DEFAULT_PORT, source, shown));

  const query = new Map<string, string>();
  for (const pair of (m[4] ?? '').split('&').filter((p) => p !== '')) {
    const eq = pair.indexOf('=');
    const key = eq >= 0 ? pair.slice(0, eq) : pair;
    const allowed = sentinel ? ['db', 'sentinelUsername', 'sentinelPassword'] : cluster ? [] : ['db'];
    if (!allowed.includes(key)) refuse(source, shown, 'query', `unknown parameter ${JSON.stringify(key)} (accepted: ${allowed.join(', ') || 'none'})`);
    if (query.has(key)) refuse(source, shown, 'query', `the parameter ${key} is given twice`);
    query.set(key, decode(eq >= 0 ? pair.slice(eq + 1) : '', source, shown, key));
  }

  if (sentinel) {
    const master = decode(path.replace(/^\//, ''), source, shown, 'master name');
    if (master === '') refuse(source, shown, 'master', 'no master name: redis+sentinel://HOST:PORT,HOST:PORT/MASTER');
    if (!MASTER_RE.test(master)) refuse(source, shown, 'master', `the master name ${JSON.stringify(master)} must be letters, digits, '.', '_' or '-'`);
    out.sentinels = addresses;
    out.name = master;
    const su = query.get('sentinelUsername');
    const sp = query.get('sentinelPassword');
    if (su !== undefined && su !== '') out.sentinelUsername = su;
    if (sp !== undefined && sp !== '') out.sentinelPassword = sp;
  } else if (cluster) {
    // A cluster has database 0 only (SELECT is refused there).
    if (path.replace(/^\//, '') !== '') refuse(source, shown, 'db', 'a Redis Cluster has no databases but 0: redis+cluster://HOST:PORT,HOST:PORT');
    out.cluster = addresses;
    if (scheme === 'rediss+cluster:') out.tls = {};
  } else {
    out.host = addresses[0]!.host;
    out.port = addresses[0]!.port;
    const dbPath = path.replace(/^\//, '');
    if (dbPath !== '') {
      if (query.has('db')) refuse(source, shown, 'db', 'the database is given both as /DB and as ?db=');
      out.db = parseDb(dbPath, source, shown);
    }
    if (scheme === 'rediss:') out.tls = {};
  }
  const db = query.get('db');
  if (db !== undefined) out.db = parseDb(db, source, shown);
  return out;
}

/**
 * The same check where a service reads its configuration: refused as CONFIG_INVALID like every other flag or
 * env var (the parser's `reason` kept in the details), before anything opens. Returns the URL unchanged.
 */
export function checkRedisUrl(url: string, source: string): string {
  try {
    parseRedisUrl(url, source);
  } catch (e) {
    const w = e as WritError;
    throw new WritError('CONFIG_INVALID', w.message, w.details);
  }
  return url;
}

/** A short description of where the options point, without credentials (for logs and errors). */
export function describeRedisTarget(o: RedisConnectionOptions): string {
  const db = o.db ? `/${o.db}` : '';
  const user = o.username ? ` as ${o.username}` : '';
  if (o.cluster)
    return `${o.tls ? 'rediss' : 'redis'} cluster via ${o.cluster.map((s) => `${s.host.includes(':') ? `[${s.host}]` : s.host}:${s.port}`).join(',')}${user}`;
  if (o.sentinels)
    return `sentinel master ${o.name} via ${o.sentinels.map((s) => `${s.host.includes(':') ? `[${s.host}]` : s.host}:${s.port}`).join(',')}${db}${user}`;
  return `${o.tls ? 'rediss' : 'redis'}://${o.host?.includes(':') ? `[${o.host}]` : o.host}:${o.port}${db}${user}`;
}

/** The ioredis classes newRedisClient builds with (protocol does not import ioredis itself). */
export interface RedisClientClasses<R> {
  Redis: new (options: Record<string, unknown>) => R;
  Cluster: new (startupNodes: { host: string; port: number }[], options: Record<string, unknown>) => unknown;
}

/**
 * An ioredis client for REDIS_URL in any form: a Redis (plain or Sentinel) or, for redis+cluster://, a Cluster,
 * which answers the same commands and which BullMQ takes as a connection (the keys Writ uses are hash-tagged,
 * queues.ts, so each queue's keys and each multi-key command stay in one slot). `extra` are ioredis options
 * (lazyConnect, maxRetriesPerRequest, retryStrategy, ...): for a cluster they apply to every node's
 * connection, and lazyConnect and retryStrategy (as clusterRetryStrategy) to the cluster itself.
 */
export function newRedisClient<R>(classes: RedisClientClasses<R>, url: string, extra: Record<string, unknown> = {}, source = 'REDIS_URL'): R {
  const o = parseRedisUrl(url, source);
  if (!o.cluster) return new classes.Redis({ ...o, ...extra });
  const { cluster: startupNodes, ...perNode } = o;
  const { lazyConnect, retryStrategy, ...nodeExtra } = extra;
  return new classes.Cluster(startupNodes, {
    redisOptions: { ...perNode, ...nodeExtra },
    ...(lazyConnect !== undefined ? { lazyConnect } : {}),
    ...(retryStrategy !== undefined ? { clusterRetryStrategy: retryStrategy } : {}),
    ...(nodeExtra.maxRetriesPerRequest !== undefined ? { maxRetriesPerRequest: nodeExtra.maxRetriesPerRequest } : {}),
    ...(nodeExtra.enableReadyCheck !== undefined ? { enableReadyCheck: nodeExtra.enableReadyCheck } : {}),
  }) as R;
}
