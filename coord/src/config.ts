// The coord's configuration, read in one place: flags (as parsed) and env in; checked, defaulted and frozen
// out. A wrong value is refused here, before the ledger opens, with the flag or env var to fix.
import { existsSync } from 'node:fs';
import path from 'node:path';
import {
  WritError,
  checkGraceMs,
  checkLogLevel,
  checkUrl,
  parseListen,
  pinnedAdmins,
  requiredInput,
  type ConfigEnv,
  type KeyRef,
  type LogLevel,
} from '@writ/protocol';

/** What the caller hands over: flag values as parsed (unchecked strings), admin keys already read from --admin-key. */
export interface CoordGiven {
  /** Where state dirs default to ($WRIT_HOME, resolved by the caller). */
  home: string;
  supervisor?: string | undefined;
  supervisorKey?: string | undefined;
  listen?: string | undefined;
  cluster?: string | undefined;
  state?: string | undefined;
  adminKeys?: readonly KeyRef[] | undefined;
  adminThreshold?: string | undefined;
  shutdownGraceMs?: number | undefined;
  /** `--boot-image DIR`: the boot image folder served at /boot/*. */
  bootImage?: string | undefined;
}

export interface CoordConfig {
  /** Bearer token API clients present ($WRIT_TOKEN). */
  readonly apiToken: string;
  /** Bearer token the coord presents to supervisors ($WRIT_SUPERVISOR_TOKEN). */
  readonly supervisorToken: string;
  /**
   * The supervisor wired in at start-up (--supervisor), serving pool `default`; null when every supervisor
   * joins by signed heartbeats (listed in the key set).
   */
  readonly supervisorUrl: string | null;
  /** Public key file of the start-up supervisor, whose reports are accepted (null without one). */
  readonly supervisorKeyFile: string | null;
  readonly listen: { readonly host: string; readonly port: number };
  readonly clusterId: string;
  readonly stateDir: string;
  /** PostgreSQL when $DATABASE_URL is set, else PGlite in the state dir. */
  readonly ledger: { readonly databaseUrl: string } | { readonly dataDir: string };
  readonly admins: { readonly threshold: number; readonly keys: readonly KeyRef[] };
  readonly logLevel: LogLevel;
  readonly shutdownGraceMs: number;
  /** The boot image folder served at /boot/* (absolute); null: $WRIT_BOOT_IMAGE at each request, if set. */
  readonly bootImage: string | null;
}

export const COORD_DEFAULTS = Object.freeze({ listen: '127.0.0.1:7340', clusterId: 'writ-dev', logLevel: 'info' as LogLevel, shutdownGraceMs: 10_000 });

/** `--boot-image DIR`: a folder `writ image ipxe` wrote (its manifest.json is there), made absolute. */
export function checkBootImageDir(given: string): string {
  if (!given.trim()) throw new WritError('CONFIG_INVALID', '--boot-image must name a folder');
  const dir = path.resolve(given);
  if (!existsSync(path.join(dir, 'manifest.json')))
    throw new WritError('CONFIG_INVALID', `--boot-image ${dir} has no manifest.json: give the folder writ image ipxe --out DIR wrote`, { dir });
  return dir;
}

export function coordConfig(given: CoordGiven, env: ConfigEnv): CoordConfig {
  const apiToken = requiredInput(env.WRIT_TOKEN, 'WRIT_TOKEN');
  const supervisorToken = requiredInput(env.WRIT_SUPERVISOR_TOKEN, 'WRIT_SUPERVISOR_TOKEN');
  // A start-up supervisor is optional: supervisors listed in the key set join by signed heartbeats.
  const supervisorUrl = given.supervisor === undefined ? null : checkUrl(given.supervisor, '--supervisor', ['http:', 'https:']);
  const supervisorKeyFile = given.supervisorKey ?? null;
  if (supervisorUrl !== null && supervisorKeyFile === null)
    throw new WritError('USAGE', '--supervisor-key FILE is required with --supervisor: the public key its reports are signed with');
  if (supervisorUrl === null && supervisorKeyFile !== null) throw new WritError('USAGE', '--supervisor-key goes with --supervisor URL');
  if (!given.adminKeys?.length) throw new WritError('USAGE', '--admin-key FILE is required: the admin public key(s) trusted to sign the first key set');
  const admins = pinnedAdmins(given.adminKeys, given.adminThreshold);
  const clusterId = given.cluster ?? env.WRIT_CLUSTER ?? COORD_DEFAULTS.clusterId;
  if (!clusterId) throw new WritError('CONFIG_INVALID', `${given.cluster !== undefined ? '--cluster' : 'WRIT_CLUSTER'} must not be empty`);
  const stateDir = given.state ?? path.join(given.home, 'coord');
  // pg takes more than URLs (socket paths, key=value strings), so DATABASE_URL is passed on as given.
  const ledger = env.DATABASE_URL ? { databaseUrl: env.DATABASE_URL } : { dataDir: path.join(stateDir, 'ledger') };
  return Object.freeze({
    apiToken,
    supervisorToken,
    supervisorUrl,
    supervisorKeyFile,
    listen: Object.freeze(parseListen(given.listen ?? COORD_DEFAULTS.listen)),
    clusterId,
    stateDir,
    ledger: Object.freeze(ledger),
    admins,
    logLevel: checkLogLevel(env, COORD_DEFAULTS.logLevel),
    shutdownGraceMs: checkGraceMs(given.shutdownGraceMs ?? COORD_DEFAULTS.shutdownGraceMs),
    bootImage: given.bootImage === undefined ? null : checkBootImageDir(given.bootImage),
  });
}
