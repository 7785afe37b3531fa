// Human output to stdout, JSON with --json, errors to stderr as `writ: CODE: message`.
import { toErrorJSON, type ErrorJSON } from '@writ/protocol';

export const EXIT = Object.freeze({ ok: 0, failure: 1, usage: 2 });

export interface Io {
  out(line: string): void;
  err(line: string): void;
}

export const processIo: Io = {
  out: (l) => process.stdout.write(l + '\n'),
  err: (l) => process.stderr.write(l + '\n'),
};

export function printJson(io: Io, value: unknown): void {
  io.out(JSON.stringify(value, null, 2));
}

/** Prints an error in the requested format and returns the exit code it maps to. */
export function reportError(io: Io, err: unknown, json: boolean): number {
  const e: ErrorJSON = toErrorJSON(err);
  if (json) io.out(JSON.stringify({ ok: false, error: e }, null, 2));
  else io.err(`writ: ${e.code}: ${e.message}`);
  return e.code === 'USAGE' ? EXIT.usage : EXIT.failure;
}
