// The supervisor's configuration, read in one place: flags (as parsed) and env in; checked, defaulted and
// frozen out. A wrong value is refused here, before anything opens, with the flag or env var to fix.
import path from 'node:path';
import {
  checkGraceMs, checkLogLevel, checkUrl, configInvalid, parseListen, checkRedisUrl, WritError, pinnedAdmins, requiredInput, type ConfigEnv, type KeyRef, type LogLevel,
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
}


export const SUPERVISOR_DEFAULTS = Object.freeze({ id: 'sup-1', listen: '127.0.0.1:7341', clusterId: 'writ-dev', logLevel: 'info' as LogLevel, shutdownGraceMs: 10_000 });

export function supervisorConfig(given: SupervisorGiven, env: ConfigEnv): SupervisorConfig {
  const apiToken = requiredInput(env.WRIT_SUPERVISOR_TOKEN, 'WRIT_SUPERVISOR_TOKEN');
  const redisUrl = checkRedisUrl(requiredInput(given.redis ?? env.REDIS_URL, '--redis URL (or REDIS_URL)'), given.redis !== undefined ? '--redis' : 'REDIS_URL');
  const coordUrl = checkUrl(requiredInput(given.coord ?? env.WRIT_COORD, '--coord URL (or WRIT_COORD)'), given.coord !== undefined ? '--coord' : 'WRIT_COORD', ['http:', 'https:']);
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
