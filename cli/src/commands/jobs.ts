// writ jobs list | show ID | logs ID [--follow]
import { JOB_STATUSES, WritError, isJobStatus, parseJobPage, parseJobView } from '@writ/protocol';
import { didYouMean, parse } from '../args.ts';
import { api, followEvents, resolveCoord } from '../client.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import { printEvent } from './submit.ts';
import { dispatchSubcommand, type CliContext, type Command } from './types.ts';

const HELP = `usage: writ jobs <list|show|logs> ... [--coord URL] [--json]

  writ jobs list [--status S] [--node ID] [--limit N] [--cursor C]   jobs, newest first
  writ jobs show ID                                               status, attempts, result or error
  writ jobs logs ID [--follow]                                    log lines and status changes

example:
  writ jobs list --status failed`;

async function list(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values } = parse(
    argv,
    { status: { type: 'string' }, node: { type: 'string' }, limit: { type: 'string' }, cursor: { type: 'string' }, coord: { type: 'string' } },
    { min: 0, max: 0, usage: 'writ jobs list [--status S] [--node ID]' },
  );
  if (values.help) return (io.out(HELP), EXIT.ok);
  if (values.status !== undefined && !isJobStatus(values.status)) {
    throw new WritError(
      'USAGE',
      `--status ${values.status} is not a job status${didYouMean(values.status, JOB_STATUSES)} (one of: ${JOB_STATUSES.join(', ')})`,
    );
  }
  const coord = await resolveCoord(values.coord, ctx.env);
  const q = new URLSearchParams();
  for (const k of ['status', 'node', 'limit', 'cursor'] as const) if (values[k]) q.set(k, String(values[k]));
  const page = parseJobPage((await api<unknown>(coord, 'GET', `/v1/jobs?${q}`)).body);
  if (values.json) return (printJson(io, page), EXIT.ok);
  io.out(`${'ID'.padEnd(28)} ${'STATUS'.padEnd(10)} ${'NODE'.padEnd(12)} ${'TRIES'.padEnd(5)} CREATED`);
  for (const j of page.jobs)
    io.out(
      `${j.id.padEnd(28)} ${j.status.padEnd(10)} ${(j.node ?? '-').padEnd(12)} ${String(j.attempts).padEnd(5)} ${j.createdAt}${j.error ? `  ${j.error.code}` : ''}`,
    );
  if (page.nextCursor) io.out(`more: writ jobs list --cursor ${page.nextCursor}`);
  return EXIT.ok;
}

async function show(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values, positionals } = parse(argv, { coord: { type: 'string' } }, { min: 1, max: 1, usage: 'writ jobs show ID' });
  if (values.help) return (io.out(HELP), EXIT.ok);
  const coord = await resolveCoord(values.coord, ctx.env);
  const j = parseJobView((await api<unknown>(coord, 'GET', `/v1/jobs/${encodeURIComponent(positionals[0]!)}`)).body);
  if (values.json) return (printJson(io, j), EXIT.ok);
  io.out(`job      ${j.id}\nstatus   ${j.status}\nnode     ${j.node ?? '-'}\nattempts ${j.attempts}\ncreated  ${j.createdAt}`);
  for (const a of j.attemptHistory ?? []) io.out(`  attempt ${a.attempt} on ${a.node}: ${a.outcome}${a.errorCode ? ` (${a.errorCode})` : ''}`);
  if (j.error) io.out(`error    ${j.error.code}: ${j.error.message}`);
  if (j.result !== undefined && j.result !== null) io.out(`result   ${JSON.stringify(j.result, null, 2)}`);
  return EXIT.ok;
}

async function logs(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values, positionals } = parse(
    argv,
    { coord: { type: 'string' }, follow: { type: 'boolean', default: false } },
    { min: 1, max: 1, usage: 'writ jobs logs ID [--follow]' },
  );
  if (values.help) return (io.out(HELP), EXIT.ok);
  const coord = await resolveCoord(values.coord, ctx.env);
  const ac = new AbortController();
  // Without --follow, print what is recorded and stop once the replay goes quiet.
  let quiet: NodeJS.Timeout | undefined;
  const arm = () => {
    if (values.follow) return;
    clearTimeout(quiet);
    quiet = setTimeout(() => ac.abort(), 300);
  };
  arm();
  await followEvents(
    coord,
    positionals[0]!,
    (e) => {
      if (values.json) io.out(JSON.stringify(e.data));
      else printEvent(io, e);
      arm();
    },
    ac.signal,
  );
  clearTimeout(quiet);
  return EXIT.ok;
}

export const jobsCommand: Command = {
  name: 'jobs',
  summary: 'list jobs, show one, read its logs',
  help: HELP,
  subcommands: { list, show, logs },
  run(argv, io, ctx) {
    return dispatchSubcommand(this, argv, io, ctx);
  },
};
