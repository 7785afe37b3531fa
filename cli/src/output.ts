// Human output to stdout, JSON with --json, errors to stderr as `writ: CODE: message`; service logs to stderr.
import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';
import { WritError, toErrorJSON, type ErrorJSON } from '@writ/protocol';

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

export interface LogOutput {
  /** Whether stderr is a terminal (default: process.stderr.isTTY). */
  tty?: boolean;
  /** Where lines go (default: stderr). */
  destination?: NodeJS.WritableStream;
}

/**
 * The logger of a service the CLI runs (`writ dev`, `writ coord`, `writ supervisor`, `writ runner`): readable,
 * coloured lines on a terminal, JSON lines otherwise (for journald and log shippers). WRIT_LOG_FORMAT=json|pretty
 * overrides the choice. A field named `msg` in a line's object is renamed `detail`: it would repeat the key of
 * the message and make the JSON line ambiguous.
 */
export function serviceLogger(level: string, env: NodeJS.ProcessEnv, out: LogOutput = {}): Logger {
  const tty = out.tty ?? process.stderr.isTTY === true;
  const format = env.WRIT_LOG_FORMAT ?? (tty ? 'pretty' : 'json');
  if (format !== 'json' && format !== 'pretty') throw new WritError('USAGE', `WRIT_LOG_FORMAT must be json or pretty; got ${JSON.stringify(format)}`);
  const options = {
    level,
    formatters: {
      log(fields: Record<string, unknown>) {
        if (!Object.prototype.hasOwnProperty.call(fields, 'msg')) return fields;
        const { msg, ...rest } = fields;
        return { ...rest, detail: msg };
      },
    },
  };
  if (format === 'pretty') {
    return pino(
      options,
      pretty({ destination: out.destination ?? 2, colorize: tty && !out.destination, sync: true, ignore: 'pid,hostname', translateTime: 'SYS:HH:MM:ss.l' }),
    );
  }
  return pino(options, out.destination ?? pino.destination(2));
}
