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
    const message = (e as Error).message.replace(/^TypeError \[[A-Z_]+\]: /, '');
    const unknown = /^Unknown option '(--?[^']+)'/.exec(message)?.[1];
    const hint = unknown ? didYouMean(unknown.replace(/^--?/, ''), Object.keys({ ...COMMON_OPTIONS, ...options }), (o) => `--${o}`) : '';
    throw new WritError('USAGE', `${unknown ? `unknown option ${unknown}` : message}${hint}\nusage: ${positionals.usage}`);
  }
  const help = (parsed.values as { help?: unknown }).help === true;
  if (!help && (parsed.positionals.length < positionals.min || parsed.positionals.length > positionals.max)) {
    throw new WritError(
      'USAGE',
      `expected ${positionals.min === positionals.max ? positionals.min : `${positionals.min}–${positionals.max}`} argument(s), got ${parsed.positionals.length}\nusage: ${positionals.usage}`,
    );
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

/** Edit distance (insertions, deletions, substitutions and swaps of neighbours), for "did you mean". */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/** The candidates closest to `given` (at most a third of its length away, and at least 1), nearest first. */
export function closestMatches(given: string, candidates: Iterable<string>): string[] {
  const limit = Math.max(1, Math.floor(given.length / 3));
  return [...new Set(candidates)]
    .map((c) => ({ c, d: editDistance(given.toLowerCase(), c.toLowerCase()) }))
    .filter((x) => x.d <= limit)
    .sort((x, y) => x.d - y.d || x.c.localeCompare(y.c))
    .map((x) => x.c);
}

/** "; did you mean --target?" for the nearest candidates, or '' when none is near. */
export function didYouMean(given: string, candidates: Iterable<string>, show: (c: string) => string = (c) => c): string {
  const near = closestMatches(given, candidates).slice(0, 3);
  return near.length ? `; did you mean ${near.map(show).join(' or ')}?` : '';
}
