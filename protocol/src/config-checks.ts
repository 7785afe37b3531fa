// Checks every service's config.ts applies to flags and env vars, in one place: each refusal names the flag
// or variable it came from. Pure functions (no I/O): reading files and env stays with the services.
import { WritError } from './errors.ts';
import type { KeyRef } from './keyset.ts';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The env vars the services read; one type so that config functions take the same thing. */
export type ConfigEnv = Readonly<Record<string, string | undefined>>;

/** A value that is present but wrong: CONFIG_INVALID with a message naming where it came from. */
export function configInvalid(message: string): never {
  throw new WritError('CONFIG_INVALID', message);
}

/** A flag or env var the service cannot start without: a usage error, as `writ` has always reported it. */
export function requiredInput(value: string | undefined, what: string, why?: string): string {
  if (!value) throw new WritError('USAGE', `${what} is required${why ? `: ${why}` : ''}`);
  return value;
}

/** HOST:PORT, as `--listen` takes it; port 0 asks for a free one. */
export function parseListen(value: string, flag = '--listen'): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(value);
  if (!m) configInvalid(`${flag} ${value}: expected HOST:PORT`);
  const port = Number(m[2]);
  if (port > 65535) configInvalid(`${flag} ${value}: the port must be 0 to 65535`);
  return { host: m[1]!, port };
}

/** A URL with one of the given schemes; `source` names the flag or env var it came from. */
export function checkUrl(value: string, source: string, schemes: readonly string[]): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return configInvalid(`${source} ${value}: not a URL (expected e.g. ${schemes[0]}//HOST:PORT)`);
  }
  if (!schemes.includes(url.protocol)) configInvalid(`${source} ${value}: expected a ${schemes.join(' or ')} URL`);
  return value;
}

/** K of the pinned admin keys (K from --admin-threshold, default 1), frozen. */
export function pinnedAdmins(keys: readonly KeyRef[], threshold: string | undefined): { readonly threshold: number; readonly keys: readonly KeyRef[] } {
  const k = Number(threshold ?? '1');
  if (!Number.isInteger(k) || k < 1 || k > keys.length) configInvalid(`--admin-threshold must be 1 to ${keys.length}`);
  return Object.freeze({ threshold: k, keys: Object.freeze(keys.map((x) => Object.freeze({ keyid: x.keyid, publicKey: x.publicKey }))) });
}

export function checkLogLevel(env: ConfigEnv, fallback: LogLevel): LogLevel {
  const level = env.WRIT_LOG_LEVEL || fallback;
  if (!(LOG_LEVELS as readonly string[]).includes(level)) configInvalid(`WRIT_LOG_LEVEL ${level}: expected one of ${LOG_LEVELS.join(', ')}`);
  return level as LogLevel;
}

export function checkGraceMs(ms: number): number {
  if (!Number.isInteger(ms) || ms <= 0) configInvalid(`shutdownGraceMs ${ms}: expected a positive whole number of milliseconds`);
  return ms;
}

/** An optional flag that must be a positive whole number when given. */
export function positiveWhole(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) configInvalid(`${flag} must be a positive whole number`);
  return n;
}
