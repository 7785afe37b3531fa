// Opening PGlite so that a failure says why. PGlite reports a failed start only as "PGlite failed to
// initialize properly" or "Aborted(). Build with -sASSERTIONS…"; PostgreSQL's own reason (a FATAL or PANIC
// line: no space for a WAL segment, a damaged page, no valid checkpoint) goes to its log, which PGlite prints
// only in debug mode. So a failed open is tried once more with the log on, and that line joins the error.
import { PGlite, type PGliteOptions } from '@electric-sql/pglite';

type Console = Pick<typeof console, 'log' | 'error' | 'warn' | 'info' | 'debug'>;
const CONSOLE_METHODS = ['log', 'error', 'warn', 'info', 'debug'] as const;

/** PGlite.create; on failure, the error carries PostgreSQL's reason when its log had one. */
export async function createPglite(options: PGliteOptions): Promise<PGlite> {
  try {
    return await PGlite.create(options);
  } catch (first) {
    const lines: string[] = [];
    const saved: Partial<Console> = {};
    // PGlite's debug log goes to console; nothing else of this thread should print while it opens.
    for (const m of CONSOLE_METHODS) {
      saved[m] = console[m];
      console[m] = (...args: unknown[]) => void lines.push(args.map(String).join(' '));
    }
    let second: PGlite | undefined;
    try {
      second = await PGlite.create({ ...options, debug: 1 });
    } catch {
      /* expected: the first attempt failed the same way */
    } finally {
      Object.assign(console, saved);
    }
    // Opened on the second try (a transient failure): open it once more with the log off for good.
    if (second) {
      await second.close();
      return PGlite.create(options);
    }
    const reasons = lines
      .flatMap((l) => l.split('\n'))
      .map((l) => /\b(FATAL|PANIC):\s+(.*)$/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => `${m[1]}: ${m[2]}`);
    if (reasons.length === 0) throw first;
    throw new Error(`PostgreSQL stopped: ${[...new Set(reasons)].join('; ')}`, { cause: first });
  }
}
