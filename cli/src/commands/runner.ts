// writ runner --node ID: the node daemon on its own (production shape: one per node).
import { readFile } from 'node:fs/promises';
import { WritError } from '@writ/protocol';
import { loadNodeConfig, runNodeDaemon, runnerConfig } from '@writ/runner';
import { writHome } from '../keyfiles.ts';
import { parse } from '../args.ts';
import { adminKeyRefs, runUntilProcessSignal } from './services.ts';
import { EXIT, serviceLogger, type Io } from '../output.ts';
import type { CliContext, Command } from './types.ts';

const HELP = `usage: writ runner --node ID --coord URL --admin-key FILE [--admin-threshold K] [--cluster ID] [--label k=v ...] [--redis URL | --redis-credentials FILE]
                   [--state DIR] [--concurrency N] [--heartbeat-ms N] [--lock-ms N] [--stalled-ms N] [--config node.json] [--production]

Runs the node daemon: makes (once) and keeps the node's own ed25519 identity in the state dir, registers
with the coord by signing a fresh challenge, sends signed heartbeats with its health, and runs the job
loop: a BullMQ worker on the node's queue that re-verifies every job from its signed envelope and runs it
in a pool of QuickJS sandbox threads. The node gets work once an operator accepts it (writ nodes accept). Stops cleanly on SIGTERM/SIGINT:
takes no new jobs and lets running ones finish.

  --admin-key FILE  a pinned admin public key (repeat for several): the first key set this node accepts
                    must carry K of their signatures; later sets chain from the one held
  --state DIR       keeps the node identity, the highest accepted key set and the effect journal
                    (journal/, see docs/exactly-once.md) across restarts (default $WRIT_HOME/runner-ID)
  --redis URL       Redis (default $REDIS_URL): redis://[user:pass@]host:port[/db], rediss://… (TLS), or
                    redis+sentinel://[user:pass@]host:port,host:port/MASTER[?db=N] (Sentinel). Without it
                    (and no $REDIS_URL) the node registers first and takes jobs from the Redis the coord
                    announces for its pool (its supervisors' --runner-redis); it waits, asking again every
                    heartbeat, until one is announced
  --redis-credentials FILE  USER:PASSWORD added to that announced address (the node's ACL user; see
                    writ redis acl --role runner --node ID)
  --heartbeat-ms N  send a signed heartbeat every N ms (default 30000). The coord counts a node unreachable
                    after 3 of its own intervals, so match it: \`writ dev\` expects 5000, \`writ coord\` 30000
  --config FILE     the node's config file: labels (--label adds to and overrides them) and the SAL areas
                    this runner offers scripts (btrfs, net, vm, mycelium, nix) with their roots, checked at
                    start (docs/sal.md); without it: host facts, time and randomness only
  --production      refuse a Redis with eviction on, or reached without this node's own ACL user
                    (writ redis acl --role runner --node ID prints it); also WRIT_PRODUCTION=1

example:
  writ runner --node node-7 --label rack=r1 --coord http://10.0.0.1:7340 --redis redis://10.0.0.2:6379 --admin-key admin.key.pub`;

async function runner(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values } = parse(
    argv,
    {
      node: { type: 'string' },
      label: { type: 'string', multiple: true },
      redis: { type: 'string' },
      'redis-credentials': { type: 'string' },
      concurrency: { type: 'string' },
      'admin-key': { type: 'string', multiple: true },
      coord: { type: 'string' },
      'heartbeat-ms': { type: 'string' },
      'admin-threshold': { type: 'string', default: '1' },
      cluster: { type: 'string' },
      state: { type: 'string' },
      'lock-ms': { type: 'string' },
      'stalled-ms': { type: 'string' },
      production: { type: 'boolean', default: false },
      config: { type: 'string' },
    },
    { min: 0, max: 0, usage: 'writ runner --node ID' },
  );
  if (values.help) return (io.out(HELP), EXIT.ok);
  const nodeConfig = values.config ? await loadNodeConfig(values.config) : undefined;
  const credentialsFile = values['redis-credentials'];
  const redisCredentials =
    credentialsFile === undefined
      ? undefined
      : await readFile(credentialsFile, 'utf8').catch((e: NodeJS.ErrnoException) => {
          throw new WritError('CONFIG_INVALID', `--redis-credentials ${credentialsFile}: cannot read it (${e.code ?? e.message})`);
        });
  const config = runnerConfig(
    {
      home: writHome(ctx.env),
      node: values.node,
      labels: [...Object.entries(nodeConfig?.labels ?? {}).map(([k, v]) => `${k}=${v}`), ...(values.label ?? [])],
      redis: values.redis,
      ...(redisCredentials !== undefined ? { redisCredentials } : {}),
      coord: values.coord,
      cluster: values.cluster,
      state: values.state,
      adminKeys: await adminKeyRefs(values['admin-key'], ctx.env),
      adminThreshold: values['admin-threshold'],
      concurrency: values.concurrency,
      heartbeatMs: values['heartbeat-ms'],
      lockMs: values['lock-ms'],
      stalledMs: values['stalled-ms'],
      ...(values.production ? { production: true } : {}),
    },
    ctx.env,
  );
  const logger = serviceLogger(config.logLevel, ctx.env);
  await runUntilProcessSignal((signal) => runNodeDaemon(config, { logger, io, signal }, nodeConfig ? { hostTable: nodeConfig.hostTable } : {}), {
    graceMs: config.shutdownGraceMs,
  });
  return EXIT.ok;
}

export const runnerCommand: Command = { name: 'runner', summary: "run a node's job loop (the node daemon)", help: HELP, run: runner };
