// writ runner --node ID: the node daemon on its own (production shape: one per node).
import pino from 'pino';
import { startNodeDaemon } from '@writ/runner';
import path from 'node:path';
import { WritError, b64url } from '@writ/protocol';
import { resolvePublicKey, writHome } from '../keyfiles.ts';
import { parse } from '../args.ts';
import { EXIT, type Io } from '../output.ts';
import type { CliContext, Command } from './types.ts';

const HELP = `usage: writ runner --node ID --coord URL --admin-key FILE [--admin-threshold K] [--cluster ID] [--label k=v ...] [--redis URL]
                   [--state DIR] [--concurrency N] [--lock-ms N] [--stalled-ms N]

Runs the node daemon: makes (once) and keeps the node's own ed25519 identity in the state dir, registers
with the coord by signing a fresh challenge, sends signed heartbeats with its health, and runs the job
loop: a BullMQ worker on the node's queue that re-verifies every job from its signed envelope and runs it
in a pool of QuickJS sandbox threads. The node gets work once an operator accepts it (writ nodes accept). Stops cleanly on SIGTERM/SIGINT:
takes no new jobs and lets running ones finish.

  --admin-key FILE  a pinned admin public key (repeat for several): the first key set this node accepts
                    must carry K of their signatures; later sets chain from the one held
  --state DIR       keeps the highest accepted key set across restarts (default $WRIT_HOME/runner-ID)
  --redis URL       Redis (default $REDIS_URL)

example:
  writ runner --node node-7 --label rack=r1 --coord http://10.0.0.1:7340 --redis redis://10.0.0.2:6379 --admin-key admin.key.pub`;

async function runner(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values } = parse(argv, {
    node: { type: 'string' }, label: { type: 'string', multiple: true }, redis: { type: 'string' }, concurrency: { type: 'string' },
    'admin-key': { type: 'string', multiple: true }, coord: { type: 'string' }, 'heartbeat-ms': { type: 'string' }, 'admin-threshold': { type: 'string', default: '1' }, cluster: { type: 'string' }, state: { type: 'string' },
    'lock-ms': { type: 'string' }, 'stalled-ms': { type: 'string' },
  }, { min: 0, max: 0, usage: 'writ runner --node ID' });
  if (values.help) return io.out(HELP), EXIT.ok;
  if (!values.node) throw new WritError('USAGE', '--node ID is required');
  const redisUrl = values.redis ?? ctx.env.REDIS_URL;
  if (!redisUrl) throw new WritError('USAGE', '--redis URL or REDIS_URL is required');
  const labels: Record<string, string> = {};
  for (const l of values.label ?? []) {
    const m = /^([^=]+)=(.*)$/.exec(l);
    if (!m) throw new WritError('USAGE', `--label ${l}: expected key=value`);
    labels[m[1]!] = m[2]!;
  }
  const num = (v: string | undefined, what: string) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new WritError('USAGE', `${what} must be a positive whole number`);
    return n;
  };
  if (!values['admin-key']?.length) throw new WritError('USAGE', '--admin-key FILE is required: the admin public key(s) this node trusts to sign key sets');
  const adminKeys = await Promise.all(values['admin-key'].map((f) => resolvePublicKey(f, ctx.env)));
  const admins = { threshold: num(values['admin-threshold'], '--admin-threshold') ?? 1, keys: adminKeys.map((k) => ({ keyid: k.keyid, publicKey: b64url(k.publicKey) })) };
  const logger = pino({ level: ctx.env.WRIT_LOG_LEVEL ?? 'info' }, pino.destination(2));
  const concurrency = num(values.concurrency, '--concurrency');
  const lockDurationMs = num(values['lock-ms'], '--lock-ms');
  const stalledIntervalMs = num(values['stalled-ms'], '--stalled-ms');
  const coordUrl = values.coord ?? ctx.env.WRIT_COORD;
  if (!coordUrl) throw new WritError('USAGE', '--coord URL (or WRIT_COORD) is required: the node registers there');
  const heartbeatMs = num(values['heartbeat-ms'], '--heartbeat-ms');
  const d = await startNodeDaemon({
    coordUrl,
    ...(heartbeatMs ? { heartbeatMs } : {}),
    nodeId: values.node, labels, redisUrl, logger, admins,
    clusterId: values.cluster ?? ctx.env.WRIT_CLUSTER ?? 'writ-dev',
    stateDir: values.state ?? path.join(writHome(ctx.env), `runner-${values.node}`),
    ...(concurrency ? { concurrency } : {}),
    ...(lockDurationMs ? { lockDurationMs } : {}),
    ...(stalledIntervalMs ? { stalledIntervalMs } : {}),
  });
  io.out(JSON.stringify({ ready: true, node: values.node, keyid: d.identity.key.keyid, newIdentity: d.identity.created, pid: process.pid }));
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  logger.info({ node: values.node }, 'stopping: no new jobs; letting running ones finish');
  await d.stop(30_000);
  logger.info({ node: values.node }, 'stopped cleanly');
  return EXIT.ok;
}

export const runnerCommand: Command = { name: 'runner', summary: "run a node's job loop (the node daemon)", help: HELP, run: runner };
