// The supervisor's configuration, read in one place: flags (as parsed) and env in; checked, defaulted and
// frozen out. A wrong value is refused here, before anything opens, with the flag or env var to fix.
import path from 'node:path';
import {
  POOL_PATTERN,
  checkGraceMs,
  checkLogLevel,
  checkUrl,
  configInvalid,
  parseListen,
  checkRedisUrl,
  WritError,
  pinnedAdmins,
  positiveWhole,
  requiredInput,
  type ConfigEnv,
  type KeyRef,
  type LogLevel,
} from '@writ/protocol';

/** What the caller hands over: flag values as parsed (unchecked strings), admin keys already read from --admin-key. */
export interface SupervisorGiven {
  /** Where state dirs default to ($WRIT_HOME, resolved by the caller). */
  home: string;
  id?: string | undefined;
  redis?: string | undefined;
  coord?: string | undefined;
  cluster?: string | undefined;
  listen?: string | undefined;
  state?: string | undefined;
  adminKeys?: readonly KeyRef[] | undefined;
  adminThreshold?: string | undefined;
  production?: boolean | undefined;
  shutdownGraceMs?: number | undefined;
  /** Federation: the pools it serves (--pool, repeatable); given, it announces itself to the coord. */
  pools?: readonly string[] | undefined;
  /** The API URL the coord reaches it at (--advertise; default http://<listen>). */
  advertise?: string | undefined;
  heartbeatMs?: string | undefined;
  /** The Redis address its pools' runners use (--runner-redis; default --redis without credentials). */
  runnerRedis?: string | undefined;
  claimIdleMs?: string | undefined;
}

export interface SupervisorConfig {
  readonly id: string;
  /** Bearer token the coord presents ($WRIT_SUPERVISOR_TOKEN). */
  readonly apiToken: string;
  readonly redisUrl: string;
  readonly coordUrl: string;
  readonly clusterId: string;
  readonly listen: { readonly host: string; readonly port: number };
  readonly stateDir: string;
  readonly signingKeyFile: string;
  /** The signing key's public half, for the coord's --supervisor-key. */
  readonly publicKeyFile: string;
  readonly admins: { readonly threshold: number; readonly keys: readonly KeyRef[] };
  readonly production: boolean;
  readonly logLevel: LogLevel;
  /** How long stopping may take before what is still open is reported and left. */
  readonly shutdownGraceMs: number;
  /** Runner events a peer left unacknowledged this long are claimed (ms). */
  readonly claimIdleMs: number;
  /** Federation (with --pool): what its signed heartbeats to the coord say; null: it sends none. */
  readonly federation: {
    readonly pools: readonly string[];
    readonly apiUrl: string | null;
    readonly intervalMs: number;
    readonly runnerRedis: string | null;
  } | null;
}

export const SUPERVISOR_DEFAULTS = Object.freeze({
  id: 'sup-1',
  listen: '127.0.0.1:7341',
  clusterId: 'writ-dev',
  logLevel: 'info' as LogLevel,
  shutdownGraceMs: 10_000,
  heartbeatMs: 5000,
  claimIdleMs: 30_000,
});

/** The Redis URL runners are told, without user name or password (each node has its own credentials). */
function withoutCredentials(url: string): string {
  // Not `new URL()`: a Sentinel or Cluster address lists several hosts, which WHATWG URLs cannot hold.
  return url.replace(/^([^:/?#]+:\/\/)[^@/?#]*@/, '$1').replace(/([?&])sentinelPassword=[^&#]*(&|$)/, (_m, pre: string, post: string) => (post ? pre : ''));
}

export function supervisorConfig(given: SupervisorGiven, env: ConfigEnv): SupervisorConfig {
  const apiToken = requiredInput(env.WRIT_SUPERVISOR_TOKEN, 'WRIT_SUPERVISOR_TOKEN');
  const redisUrl = checkRedisUrl(
    requiredInput(given.redis ?? env.REDIS_URL, '--redis URL (or REDIS_URL)'),
    given.redis !== undefined ? '--redis' : 'REDIS_URL',
  );
  const coordUrl = checkUrl(requiredInput(given.coord ?? env.WRIT_COORD, '--coord URL (or WRIT_COORD)'), given.coord !== undefined ? '--coord' : 'WRIT_COORD', [
    'http:',
    'https:',
  ]);
  if (!given.adminKeys?.length) throw new WritError('USAGE', '--admin-key FILE is required: the admin public key(s) trusted to sign the first key set');
  const admins = pinnedAdmins(given.adminKeys, given.adminThreshold);
  const id = given.id ?? SUPERVISOR_DEFAULTS.id;
  if (!id) configInvalid('--id must not be empty');
  const clusterId = given.cluster ?? env.WRIT_CLUSTER ?? SUPERVISOR_DEFAULTS.clusterId;
  if (!clusterId) configInvalid(`${given.cluster !== undefined ? '--cluster' : 'WRIT_CLUSTER'} must not be empty`);
  const productionEnv = env.WRIT_PRODUCTION ?? '';
  // Anything but 1 used to mean "not production": a WRIT_PRODUCTION=true must not quietly weaken the Redis check.
  if (!['', '0', '1'].includes(productionEnv)) configInvalid(`WRIT_PRODUCTION ${productionEnv}: expected 1 (production) or 0`);
  const stateDir = given.state ?? path.join(given.home, 'supervisor');
  const pools = given.pools ?? [];
  for (const p of pools)
    if (!new RegExp(POOL_PATTERN).test(p)) configInvalid(`--pool ${p}: a pool name is lower-case letters, digits, '.', '_' and '-' (matching ${POOL_PATTERN})`);
  if (new Set(pools).size !== pools.length) configInvalid('--pool names a pool twice');
  const apiUrl = given.advertise === undefined ? null : checkUrl(given.advertise, '--advertise', ['http:', 'https:']);
  const runnerRedis = given.runnerRedis === undefined ? withoutCredentials(redisUrl) : withoutCredentials(checkRedisUrl(given.runnerRedis, '--runner-redis'));
  if (pools.length === 0 && (given.advertise !== undefined || given.heartbeatMs !== undefined || given.runnerRedis !== undefined)) {
    configInvalid('--advertise, --heartbeat-ms and --runner-redis belong to federation: name the pools it serves with --pool');
  }
  const federation =
    pools.length === 0
      ? null
      : Object.freeze({
          pools: Object.freeze([...pools]),
          apiUrl,
          intervalMs: positiveWhole(given.heartbeatMs, '--heartbeat-ms') ?? SUPERVISOR_DEFAULTS.heartbeatMs,
          runnerRedis,
        });
  return Object.freeze({
    federation,
    claimIdleMs: positiveWhole(given.claimIdleMs, '--claim-idle-ms') ?? SUPERVISOR_DEFAULTS.claimIdleMs,
    id,
    apiToken,
    redisUrl,
    coordUrl,
    clusterId,
    listen: Object.freeze(parseListen(given.listen ?? SUPERVISOR_DEFAULTS.listen)),
    stateDir,
    signingKeyFile: path.join(stateDir, 'supervisor.key'),
    publicKeyFile: path.join(stateDir, 'supervisor.key.pub'),
    admins,
    production: given.production === true || productionEnv === '1',
    logLevel: checkLogLevel(env, SUPERVISOR_DEFAULTS.logLevel),
    shutdownGraceMs: checkGraceMs(given.shutdownGraceMs ?? SUPERVISOR_DEFAULTS.shutdownGraceMs),
  });
}
