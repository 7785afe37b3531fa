// The supervisor's configuration, read in one place: flags (as parsed) and env in; checked, defaulted and
// frozen out. A wrong value is refused here, before anything opens, with the flag or env var to fix.
import path from 'node:path';
import { WritError, type KeyRef } from '@writ/protocol';

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
}

export type ConfigEnv = Readonly<Record<string, string | undefined>>;

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
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const SUPERVISOR_DEFAULTS = Object.freeze({ id: 'sup-1', listen: '127.0.0.1:7341', clusterId: 'writ-dev', logLevel: 'info' as LogLevel, shutdownGraceMs: 10_000 });

function invalid(message: string): never {
  throw new WritError('CONFIG_INVALID', message);
}

/** A flag or env var the service cannot start without: a usage error, as `writ` has always reported it. */
export function requiredInput(value: string | undefined, what: string): string {
  if (!value) throw new WritError('USAGE', `${what} is required`);
  return value;
}

/** HOST:PORT, as `--listen` takes it; port 0 asks for a free one. */
export function parseListen(value: string, flag = '--listen'): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(value);
  if (!m) invalid(`${flag} ${value}: expected HOST:PORT`);
  const port = Number(m[2]);
  if (port > 65535) invalid(`${flag} ${value}: the port must be 0 to 65535`);
  return { host: m[1]!, port };
}

/** A URL with one of the given schemes; `source` names the flag or env var it came from. */
export function checkUrl(value: string, source: string, schemes: readonly string[]): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return invalid(`${source} ${value}: not a URL (expected e.g. ${schemes[0]}//HOST:PORT)`);
  }
  if (!schemes.includes(url.protocol)) invalid(`${source} ${value}: expected a ${schemes.join(' or ')} URL`);
  return value;
}

/** K of the pinned admin keys; K defaults to 1. */
export function pinnedAdmins(keys: readonly KeyRef[], threshold: string | undefined): SupervisorConfig['admins'] {
  const k = Number(threshold ?? '1');
  if (!Number.isInteger(k) || k < 1 || k > keys.length) invalid(`--admin-threshold must be 1 to ${keys.length}`);
  return Object.freeze({ threshold: k, keys: Object.freeze(keys.map((x) => Object.freeze({ keyid: x.keyid, publicKey: x.publicKey }))) });
}

export function checkLogLevel(env: ConfigEnv, fallback: LogLevel): LogLevel {
  const level = env.WRIT_LOG_LEVEL || fallback;
  if (!(LOG_LEVELS as readonly string[]).includes(level)) invalid(`WRIT_LOG_LEVEL ${level}: expected one of ${LOG_LEVELS.join(', ')}`);
  return level as LogLevel;
}

export function checkGraceMs(ms: number): number {
  if (!Number.isInteger(ms) || ms <= 0) invalid(`shutdownGraceMs ${ms}: expected a positive whole number of milliseconds`);
  return ms;
}

export function supervisorConfig(given: SupervisorGiven, env: ConfigEnv): SupervisorConfig {
  const apiToken = requiredInput(env.WRIT_SUPERVISOR_TOKEN, 'WRIT_SUPERVISOR_TOKEN');
  const redisUrl = checkUrl(requiredInput(given.redis ?? env.REDIS_URL, '--redis URL (or REDIS_URL)'), given.redis !== undefined ? '--redis' : 'REDIS_URL', ['redis:', 'rediss:']);
  const coordUrl = checkUrl(requiredInput(given.coord ?? env.WRIT_COORD, '--coord URL (or WRIT_COORD)'), given.coord !== undefined ? '--coord' : 'WRIT_COORD', ['http:', 'https:']);
  if (!given.adminKeys?.length) throw new WritError('USAGE', '--admin-key FILE is required: the admin public key(s) trusted to sign the first key set');
  const admins = pinnedAdmins(given.adminKeys, given.adminThreshold);
  const id = given.id ?? SUPERVISOR_DEFAULTS.id;
  if (!id) invalid('--id must not be empty');
  const clusterId = given.cluster ?? env.WRIT_CLUSTER ?? SUPERVISOR_DEFAULTS.clusterId;
  if (!clusterId) invalid(`${given.cluster !== undefined ? '--cluster' : 'WRIT_CLUSTER'} must not be empty`);
  const productionEnv = env.WRIT_PRODUCTION ?? '';
  // Anything but 1 used to mean "not production": a WRIT_PRODUCTION=true must not quietly weaken the Redis check.
  if (!['', '0', '1'].includes(productionEnv)) invalid(`WRIT_PRODUCTION ${productionEnv}: expected 1 (production) or 0`);
  const stateDir = given.state ?? path.join(given.home, 'supervisor');
  return Object.freeze({
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
