// The `writ` command line: one entry for every role (keys, sign, verify, services, admin).
import { readFileSync } from 'node:fs';
import { EXIT, processIo, reportError, type Io } from './output.ts';
import { didYouMean } from './args.ts';
import { keysCommand } from './commands/keys.ts';
import { signCommand } from './commands/sign.ts';
import { verifyCommand } from './commands/verify.ts';
import { devCommand } from './commands/dev.ts';
import { submitCommand } from './commands/submit.ts';
import { jobsCommand } from './commands/jobs.ts';
import { runnerCommand } from './commands/runner.ts';
import { coordCommand, supervisorCommand } from './commands/services.ts';
import { keysetCommand, rolesCommand, usersCommand } from './commands/keyset.ts';
import { auditCommand, nodesCommand } from './commands/nodes.ts';
import { ledgerCommand } from './commands/ledger.ts';
import { imageCommand } from './commands/image.ts';
import { enrollCommand } from './commands/enroll.ts';
import { redisCommand } from './commands/redis.ts';
import { supervisorsCommand } from './commands/supervisors.ts';
import { deployCommand } from './commands/deploy.ts';
import { clusterCommand } from './commands/cluster.ts';
import { flowCommand } from './commands/flow.ts';
import { planCommand } from './commands/plan.ts';
import type { CliContext, Command } from './commands/types.ts';

export const COMMANDS: Command[] = [
  devCommand,
  submitCommand,
  jobsCommand,
  flowCommand,
  coordCommand,
  supervisorCommand,
  supervisorsCommand,
  runnerCommand,
  nodesCommand,
  enrollCommand,
  imageCommand,
  deployCommand,
  clusterCommand,
  redisCommand,
  keysCommand,
  keysetCommand,
  usersCommand,
  rolesCommand,
  auditCommand,
  ledgerCommand,
  planCommand,
  signCommand,
  verifyCommand,
];

function topHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'writ: signed, sandboxed scripts on a fleet of bare-metal nodes',
    '',
    'usage: writ <command> [options]   (every command takes --help and --json; writ --version)',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'exit codes: 0 ok, 1 failure, 2 usage error',
  ].join('\n');
}

/** The version of the writ package this CLI belongs to. */
export function writVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

export async function runCli(
  argv: string[],
  io: Io = processIo,
  ctx: CliContext = { env: process.env, now: () => Math.floor(Date.now() / 1000) },
): Promise<number> {
  const [name, ...rest] = argv;
  const json = argv.includes('--json');
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    io.out(topHelp());
    return name ? EXIT.ok : EXIT.usage;
  }
  if (name === '--version' || name === '-V' || name === 'version') {
    if (json) io.out(JSON.stringify({ writ: writVersion(), node: process.version }, null, 2));
    else io.out(`writ ${writVersion()} (node ${process.version})`);
    return EXIT.ok;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    io.err(
      `writ: USAGE: unknown command "${name}"${didYouMean(
        name,
        COMMANDS.map((c) => c.name),
      )}\n\n${topHelp()}`,
    );
    return EXIT.usage;
  }
  try {
    return await cmd.run(rest, io, ctx);
  } catch (e) {
    return reportError(io, e, json);
  }
}
