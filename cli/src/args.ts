// Command-line parsing on node:util parseArgs, with usage errors as WritError('USAGE').
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { WritError } from '@writ/protocol';

export type Options = NonNullable<ParseArgsConfig['options']>;

export const COMMON_OPTIONS = {
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const satisfies Options;

export function parse<O extends Options>(argv: string[], options: O, positionals: { min: number; max: number; usage: string }) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...COMMON_OPTIONS, ...options }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new WritError('USAGE', `${(e as Error).message.replace(/^TypeError \[[A-Z_]+\]: /, '')}\nusage: ${positionals.usage}`);
  }
  const help = (parsed.values as { help?: unknown }).help === true;
  if (!help && (parsed.positionals.length < positionals.min || parsed.positionals.length > positionals.max)) {
    throw new WritError('USAGE', `expected ${positionals.min === positionals.max ? positionals.min : `${positionals.min}–${positionals.max}`} argument(s), got ${parsed.positionals.length}\nusage: ${positionals.usage}`);
  }
  return parsed;
}

/** Parses `30s`, `10m`, `2h`, `1d` or a number of seconds into seconds. */
export function parseDurationS(s: string, what: string): number {
  const m = /^(\d+)(s|m|h|d)?$/.exec(s.trim());
  if (!m) throw new WritError('USAGE', `${what} must look like 30s, 10m, 2h or 1d; got ${JSON.stringify(s)}`);
  const n = Number(m[1]);
  const mult = { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? 's') as 's' | 'm' | 'h' | 'd'];
  return n * mult;
}

export function humanDuration(s: number): string {
  const a = Math.abs(Math.round(s));
  if (a < 90) return `${a}s`;
  if (a < 5400) return `${Math.floor(a / 60)}m ${a % 60}s`;
  if (a < 172800) return `${Math.floor(a / 3600)}h ${Math.floor((a % 3600) / 60)}m`;
  return `${Math.floor(a / 86400)}d`;
}
