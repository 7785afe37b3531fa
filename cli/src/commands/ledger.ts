// writ ledger check|backup|restore: look after the embedded PGlite ledger (and check a PostgreSQL one) while
// the coord is stopped. What they guarantee and when to use them: docs/operations.md, "Ledger" and "Backups".
import { existsSync } from 'node:fs';
import path from 'node:path';
import { backupLedger, checkLedger, restoreLedger, type LedgerCheckReport, type LedgerSource } from '@writ/coord';
import { WritError } from '@writ/protocol';
import { parse } from '../args.ts';
import { writHome } from '../keyfiles.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import { dispatchSubcommand, type CliContext, type Command } from './types.ts';

const LEDGER_HELP = `usage: writ ledger <check|backup|restore> [--ledger DIR | --state DIR] [--json]

  check                   examine the ledger without changing it: schema, every table read to its last
                          byte, every index against its table, the audit log's hash chain
  check --backup FILE     the same for a backup file
  backup DEST [--force]   write a checked, consistent copy of the ledger to DEST (a .tar.gz)
  restore FILE            put a backup into an empty ledger folder (move a damaged one aside first)

The ledger is the folder --ledger DIR, or DIR/ledger with --state DIR, or by default
$WRIT_HOME/coord/ledger (writ coord), else $WRIT_HOME/dev/ledger (writ dev). Stop the coord first: a
running coord holds the folder and these commands refuse it (CONFIG_INVALID). With DATABASE_URL set and no
folder given, check examines that PostgreSQL; back it up with pg_dump.

Exit 0 when the ledger is sound; 1 with LEDGER_CORRUPT (restore a backup), AUDIT_CHAIN_BROKEN (an audit entry
was edited, removed or reordered), LEDGER_UNAVAILABLE (no ledger there, or its disk cannot be read) or
CONFIG_INVALID (in use, a schema newer than this writ, DEST exists); 2 for a usage error.

example:
  writ ledger backup ledger-$(date +%F).tar.gz && writ ledger check --backup ledger-$(date +%F).tar.gz`;

const FOLDER_OPTIONS = { ledger: { type: 'string' }, state: { type: 'string' } } as const;

/** The folder a command works on: --ledger, --state/ledger, or the first default that exists. */
function ledgerFolder(values: { ledger?: string | undefined; state?: string | undefined }, env: NodeJS.ProcessEnv): string {
  if (values.ledger && values.state) throw new WritError('USAGE', 'give --ledger DIR or --state DIR, not both');
  if (values.ledger) return path.resolve(values.ledger);
  if (values.state) return path.resolve(values.state, 'ledger');
  const home = writHome(env);
  const candidates = [path.join(home, 'coord', 'ledger'), path.join(home, 'dev', 'ledger')];
  return candidates.find((d) => existsSync(d)) ?? candidates[0]!;
}

function printReport(io: Io, r: LedgerCheckReport, json: boolean): number {
  if (json) return (printJson(io, r), r.ok ? EXIT.ok : EXIT.failure);
  for (const c of r.checks) io.out(`${c.ok ? 'ok  ' : 'FAIL'}  ${c.name.padEnd(32)} ${c.detail}`);
  if (r.ok) io.out(`${r.ledger}: sound (${r.checks.length} checks)`);
  else io.err(`writ: ${r.error!.code}: ${r.error!.message}`);
  return r.ok ? EXIT.ok : EXIT.failure;
}

async function check(argv: string[], io: Io, ctx: CliContext) {
  const { values } = parse(
    argv,
    { ...FOLDER_OPTIONS, backup: { type: 'string' } },
    { min: 0, max: 0, usage: 'writ ledger check [--ledger DIR | --backup FILE]' },
  );
  if (values.help) return (io.out(LEDGER_HELP), EXIT.ok);
  let src: LedgerSource;
  if (values.backup) {
    if (values.ledger || values.state) throw new WritError('USAGE', 'give --backup FILE or a ledger folder, not both');
    src = { backupFile: path.resolve(values.backup) };
  } else if (ctx.env.DATABASE_URL && !values.ledger && !values.state) {
    src = { databaseUrl: ctx.env.DATABASE_URL };
  } else {
    src = { dataDir: ledgerFolder(values, ctx.env) };
  }
  return printReport(io, await checkLedger(src), values.json);
}

async function backup(argv: string[], io: Io, ctx: CliContext) {
  const { values, positionals } = parse(
    argv,
    { ...FOLDER_OPTIONS, force: { type: 'boolean', default: false } },
    { min: 1, max: 1, usage: 'writ ledger backup DEST [--ledger DIR] [--force]' },
  );
  if (values.help) return (io.out(LEDGER_HELP), EXIT.ok);
  if (ctx.env.DATABASE_URL && !values.ledger && !values.state)
    throw new WritError('USAGE', 'DATABASE_URL is set: back up PostgreSQL with pg_dump (writ ledger backup copies an embedded PGlite folder)');
  const dataDir = ledgerFolder(values, ctx.env);
  const dest = path.resolve(positionals[0]!);
  const r = await backupLedger(dataDir, dest, { force: values.force });
  if (values.json) return (printJson(io, { ok: true, ledger: dataDir, dest: r.dest, bytes: r.bytes, checks: r.report.checks }), EXIT.ok);
  io.out(`backup of ${dataDir} written to ${r.dest} (${(r.bytes / 2 ** 20).toFixed(1)} MiB); it passed ${r.report.checks.length} checks`);
  return EXIT.ok;
}

async function restore(argv: string[], io: Io, ctx: CliContext) {
  const { values, positionals } = parse(argv, FOLDER_OPTIONS, { min: 1, max: 1, usage: 'writ ledger restore FILE [--ledger DIR]' });
  if (values.help) return (io.out(LEDGER_HELP), EXIT.ok);
  const dataDir = ledgerFolder(values, ctx.env);
  const file = path.resolve(positionals[0]!);
  const r = await restoreLedger(file, dataDir);
  if (values.json) return (printJson(io, { ok: true, ledger: dataDir, backup: file, checks: r.checks }), EXIT.ok);
  io.out(`restored ${file} into ${dataDir}; it passed ${r.checks.length} checks. Start the coord.`);
  return EXIT.ok;
}

export const ledgerCommand: Command = {
  name: 'ledger',
  summary: 'check, back up and restore the embedded ledger',
  help: LEDGER_HELP,
  subcommands: { check, backup, restore },
  run(a, io, c) {
    return dispatchSubcommand(this, a, io, c);
  },
};
