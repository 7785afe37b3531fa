// writ supervisors list: the supervisors the coord knows (federation), as GET /v1/supervisors shows them.
import { parseSupervisorList } from '@writ/protocol';
import { humanDuration, parse } from '../args.ts';
import { api, resolveCoord } from '../client.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import { dispatchSubcommand, type CliContext, type Command } from './types.ts';

const HELP = `usage: writ supervisors list [--coord URL] [--json]

  list   every supervisor the coord knows: its pools, whether it is live or gone (silent for three of its
         heartbeat intervals), healthy (live, its Redis answering, its key listed in the key set in force),
         queue depth, capacity (live runners in its Redis) and its last heartbeat

A supervisor joins by sending signed heartbeats (writ supervisor --pool NAME) once an admin listed its key
(writ keyset supervisor add). The one wired in at start-up (writ dev, writ coord --supervisor) is shown as
pinned. Jobs go to a healthy supervisor serving the target node's pool.

example:
  writ supervisors list --json`;

async function list(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values } = parse(argv, { coord: { type: 'string' } }, { min: 0, max: 0, usage: 'writ supervisors list' });
  if (values.help) return (io.out(HELP), EXIT.ok);
  const { supervisors } = parseSupervisorList((await api<unknown>(await resolveCoord(values.coord, ctx.env), 'GET', '/v1/supervisors')).body);
  if (values.json) return (printJson(io, { supervisors }), EXIT.ok);
  io.out(
    `${'SUPERVISOR'.padEnd(16)} ${'STATE'.padEnd(6)} ${'HEALTHY'.padEnd(8)} ${'POOLS'.padEnd(20)} ${'QUEUED'.padEnd(7)} ${'RUNNERS'.padEnd(8)} ${'LAST HEARTBEAT'.padEnd(15)} API`,
  );
  const now = Date.now();
  for (const s of supervisors) {
    const hb = s.pinned ? 'pinned' : `${humanDuration((now - Date.parse(s.lastHeartbeatAt)) / 1000)} ago`;
    const why = s.healthy
      ? ''
      : !s.listed && !s.pinned
        ? '  (key not listed in the key set)'
        : !s.redisOk
          ? `  (Redis: ${s.redisError ?? 'not answering'})`
          : '';
    io.out(
      `${s.id.padEnd(16)} ${s.state.padEnd(6)} ${(s.healthy ? 'yes' : 'NO').padEnd(8)} ${s.pools.join(',').padEnd(20)} ${String(s.queueDepth).padEnd(7)} ${String(s.capacity).padEnd(8)} ${hb.padEnd(15)} ${s.apiUrl}${why}`,
    );
  }
  return EXIT.ok;
}

export const supervisorsCommand: Command = {
  name: 'supervisors',
  summary: 'list the supervisors the coord knows (federation)',
  help: HELP,
  subcommands: { list },
  run(a, io, c) {
    return dispatchSubcommand(this, a, io, c);
  },
};
