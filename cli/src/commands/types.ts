import { WritError } from '@writ/protocol';
import type { Io } from '../output.ts';

export interface CliContext {
  env: NodeJS.ProcessEnv;
  /** Unix seconds; injectable for tests. */
  now: () => number;
}

export type Subcommand = (argv: string[], io: Io, ctx: CliContext) => Promise<number>;

export interface Command {
  name: string;
  summary: string;
  help: string;
  subcommands?: Record<string, Subcommand>;
  run(argv: string[], io: Io, ctx: CliContext): Promise<number>;
}

/** Dispatches `writ <name> <sub> ...` to a table of subcommands. */
export async function dispatchSubcommand(cmd: Command, argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    io.out(cmd.help);
    return sub === undefined ? 2 : 0;
  }
  const fn = cmd.subcommands?.[sub];
  if (!fn) {
    throw new WritError('USAGE', `unknown subcommand "${cmd.name} ${sub}"; try: ${Object.keys(cmd.subcommands ?? {}).join(', ')}`);
  }
  return fn(rest, io, ctx);
}
