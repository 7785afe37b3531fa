// writ coord | writ supervisor: each service in its own process (production shape).
import path from 'node:path';
import pino from 'pino';
import { WritError, b64url, decodeKeyFile } from '@writ/protocol';
import { buildApp, CoordService, HttpSupervisorClient, openLedger } from '@writ/coord';
import { Supervisor, buildSupervisorApp, httpReportSink } from '@writ/supervisor';
import { readFile } from 'node:fs/promises';
import { parse } from '../args.ts';
import { resolvePublicKey, writHome, writeNewFile } from '../keyfiles.ts';
import { EXIT, type Io } from '../output.ts';
import { loadOrCreateKey } from '../stack.ts';
import type { CliContext, Command } from './types.ts';

function splitListen(s: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(s);
  if (!m) throw new WritError('USAGE', `--listen ${s}: expected HOST:PORT`);
  return { host: m[1]!, port: Number(m[2]) };
}

function need(v: string | undefined, what: string): string {
  if (!v) throw new WritError('USAGE', `${what} is required`);
  return v;
}

async function pinnedAdmins(files: string[] | undefined, threshold: string | undefined, env: NodeJS.ProcessEnv) {
  if (!files?.length) throw new WritError('USAGE', '--admin-key FILE is required: the admin public key(s) trusted to sign the first key set');
  const keys = await Promise.all(files.map((f) => resolvePublicKey(f, env)));
  const k = Number(threshold ?? '1');
  if (!Number.isInteger(k) || k < 1 || k > keys.length) throw new WritError('USAGE', `--admin-threshold must be 1 to ${keys.length}`);
  return { threshold: k, keys: keys.map((x) => ({ keyid: x.keyid, publicKey: b64url(x.publicKey) })) };
}

async function untilSignal(): Promise<string> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
}

const SUP_HELP = `usage: writ supervisor --coord URL --admin-key FILE [--admin-threshold K] [--production] [--id ID] [--redis URL] [--cluster ID] [--listen HOST:PORT] [--state DIR]

Runs a supervisor: admission, per-node queues in Redis, and signed reports to the coord. Its signing key
is created in the state dir; give the coord its .pub file (--supervisor-key). The coord authenticates to
it with the bearer token in $WRIT_SUPERVISOR_TOKEN (required). With --production (or WRIT_PRODUCTION=1) a
Redis that evicts keys is refused (REDIS_MISCONFIGURED) instead of only warned about.

example:
  WRIT_SUPERVISOR_TOKEN=... writ supervisor --coord http://127.0.0.1:7340 --redis redis://127.0.0.1:6379`;

async function supervisor(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values } = parse(argv, { id: { type: 'string', default: 'sup-1' }, redis: { type: 'string' }, coord: { type: 'string' }, cluster: { type: 'string' }, listen: { type: 'string', default: '127.0.0.1:7341' }, state: { type: 'string' }, 'admin-key': { type: 'string', multiple: true }, 'admin-threshold': { type: 'string' }, production: { type: 'boolean', default: false } }, { min: 0, max: 0, usage: 'writ supervisor --coord URL --admin-key FILE' });
  if (values.help) return io.out(SUP_HELP), EXIT.ok;
  const token = need(ctx.env.WRIT_SUPERVISOR_TOKEN, 'WRIT_SUPERVISOR_TOKEN');
  const redisUrl = need(values.redis ?? ctx.env.REDIS_URL, '--redis URL (or REDIS_URL)');
  const coordUrl = need(values.coord ?? ctx.env.WRIT_COORD, '--coord URL (or WRIT_COORD)');
  const stateDir = values.state ?? path.join(writHome(ctx.env), 'supervisor');
  const logger = pino({ level: ctx.env.WRIT_LOG_LEVEL ?? 'info' }, pino.destination(2));
  const key = await loadOrCreateKey(path.join(stateDir, 'supervisor.key'));
  await writeNewFile(path.join(stateDir, 'supervisor.key.pub'), JSON.stringify({ type: 'writ.ed25519.public.v1', keyid: key.keyid, publicKey: b64url(key.publicKey) }, null, 2) + '\n', 0o644, true);
  const admins = await pinnedAdmins(values['admin-key'], values['admin-threshold'], ctx.env);
  const sup = await Supervisor.start({ admins, production: values.production === true || ctx.env.WRIT_PRODUCTION === '1', id: values.id!, clusterId: values.cluster ?? ctx.env.WRIT_CLUSTER ?? 'writ-dev', redisUrl, signingKey: key, sink: httpReportSink(coordUrl), logger });
  const app = await buildSupervisorApp(sup, token);
  const { host, port } = splitListen(values.listen!);
  const url = await app.listen({ host, port });
  io.out(JSON.stringify({ ready: true, url, keyid: key.keyid, publicKeyFile: path.join(stateDir, 'supervisor.key.pub') }));
  const sig = await untilSignal();
  logger.info({ sig }, 'stopping');
  await app.close();
  await sup.close();
  return EXIT.ok;
}

const COORD_HELP = `usage: writ coord --supervisor URL --supervisor-key FILE.pub --admin-key FILE [--admin-threshold K] [--listen HOST:PORT] [--cluster ID] [--state DIR]

Runs the coordinator: HTTP API, ledger (PostgreSQL at $DATABASE_URL, else PGlite in the state dir) and
reconciler. API clients authenticate with $WRIT_TOKEN (required); the coord reaches the supervisor with
$WRIT_SUPERVISOR_TOKEN and accepts only reports signed by --supervisor-key.

example:
  WRIT_TOKEN=... WRIT_SUPERVISOR_TOKEN=... writ coord --supervisor http://127.0.0.1:7341 --supervisor-key sup.pub`;

async function coord(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values } = parse(argv, { supervisor: { type: 'string' }, 'supervisor-key': { type: 'string' }, listen: { type: 'string', default: '127.0.0.1:7340' }, cluster: { type: 'string' }, state: { type: 'string' }, 'admin-key': { type: 'string', multiple: true }, 'admin-threshold': { type: 'string' } }, { min: 0, max: 0, usage: 'writ coord --supervisor URL --supervisor-key FILE --admin-key FILE' });
  if (values.help) return io.out(COORD_HELP), EXIT.ok;
  const token = need(ctx.env.WRIT_TOKEN, 'WRIT_TOKEN');
  const supToken = need(ctx.env.WRIT_SUPERVISOR_TOKEN, 'WRIT_SUPERVISOR_TOKEN');
  const supUrl = need(values.supervisor, '--supervisor URL');
  const supKeyFile = need(values['supervisor-key'], '--supervisor-key FILE');
  const supKey = decodeKeyFile(await readFile(supKeyFile, 'utf8'), supKeyFile);
  const stateDir = values.state ?? path.join(writHome(ctx.env), 'coord');
  const logger = pino({ level: ctx.env.WRIT_LOG_LEVEL ?? 'info' }, pino.destination(2));
  const ledger = await openLedger(ctx.env.DATABASE_URL ? { databaseUrl: ctx.env.DATABASE_URL } : { dataDir: path.join(stateDir, 'ledger') });
  const admins = await pinnedAdmins(values['admin-key'], values['admin-threshold'], ctx.env);
  const service = new CoordService({ admins, clusterId: values.cluster ?? ctx.env.WRIT_CLUSTER ?? 'writ-dev', ledger, supervisor: new HttpSupervisorClient('sup-1', supUrl, supToken), supervisorKeys: [supKey.publicKey], nodeStore: ledger.nodeStore, logger });
  await service.start();
  const app = await buildApp({ service, apiToken: token });
  const { host, port } = splitListen(values.listen!);
  const url = await app.listen({ host, port });
  io.out(JSON.stringify({ ready: true, url }));
  const sig = await untilSignal();
  logger.info({ sig }, 'stopping');
  await app.close();
  await service.stop();
  await ledger.close();
  return EXIT.ok;
}

export const supervisorCommand: Command = { name: 'supervisor', summary: 'run a supervisor (admission, queues, reports)', help: SUP_HELP, run: supervisor };
export const coordCommand: Command = { name: 'coord', summary: 'run the coordinator (API, ledger, reconciler)', help: COORD_HELP, run: coord };
