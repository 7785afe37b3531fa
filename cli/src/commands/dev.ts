// writ dev [--keep]: coord, supervisor and one runner in one process on embedded defaults.
import { once } from 'node:events';
import { chmod } from 'node:fs/promises';
import path from 'node:path';
import { b64url, redactRedisUrl } from '@writ/protocol';
import { parse } from '../args.ts';
import { api, followEvents, type CoordTarget } from '../client.ts';
import { keyringDir, writHome, writeNewFile } from '../keyfiles.ts';
import { EXIT, serviceLogger, type Io } from '../output.ts';
import { loadOrCreateKey, startStack, type Stack } from '../stack.ts';
import { loadNodeConfig } from '@writ/runner';
import { checkBootImageDir } from '@writ/coord';
import { signScriptFile } from './sign.ts';
import { runUntilProcessSignal } from './services.ts';
import { printEvent } from './submit.ts';
import type { CliContext, Command } from './types.ts';

const HELP = `usage: writ dev [--keep] [--port N] [--state DIR] [--node ID] [--config node.json] [--boot-image DIR] [--json]

Runs coord, supervisor and a runner in one process. It starts its own redis-server unless REDIS_URL is
set, and keeps the ledger in PGlite under the state dir unless DATABASE_URL is set. An admin key is
created at $WRIT_HOME/keys/admin.key; it signs the cluster's first key set, in which it holds every capability.

Without --keep: signs scripts/examples/hello.js, submits it, streams its log lines, prints the result
and exits (0 when the job succeeded). With --keep: stays up until Ctrl-C and records the coord URL and
API token in $WRIT_HOME/dev.json so that other writ commands find it.

  --port N     coord port (default 7340 with --keep, a free one otherwise)
  --state DIR  state dir (default $WRIT_HOME/dev)
  --node ID    the runner's node id (default dev-1)
  --config F   the node's config file: its labels (added to env=dev) and the SAL areas its runner offers
               scripts (btrfs, net, vm, mycelium, nix) with their roots; checked at start (docs/sal.md).
               Without it the runner offers host facts, time and randomness only
  --boot-image DIR  serve this folder (from writ image ipxe) at /boot/* for iPXE (default: $WRIT_BOOT_IMAGE)

example:
  writ dev --keep
  writ submit scripts/examples/hello.js --target node=dev-1 --caps host.facts --follow`;

const HELLO = path.resolve(import.meta.dirname, '../../../scripts/examples/hello.js');

async function dev(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values } = parse(
    argv,
    {
      keep: { type: 'boolean', default: false },
      port: { type: 'string' },
      state: { type: 'string' },
      node: { type: 'string', default: 'dev-1' },
      config: { type: 'string' },
      'boot-image': { type: 'string' },
    },
    { min: 0, max: 0, usage: 'writ dev [--keep]' },
  );
  if (values.help) return (io.out(HELP), EXIT.ok);
  // Checked before anything starts: a bad node config stops here with CONFIG_INVALID naming the field.
  const nodeConfig = values.config ? await loadNodeConfig(values.config) : undefined;
  const labels = { env: 'dev', ...nodeConfig?.labels };
  const areas = Object.keys(nodeConfig?.sal ?? {});
  const t0 = Date.now();
  const home = writHome(ctx.env);
  const stateDir = values.state ?? path.join(home, 'dev');
  const logger = serviceLogger(ctx.env.WRIT_LOG_LEVEL ?? (values.keep ? 'info' : 'warn'), ctx.env);
  const admin = await loadOrCreateKey(path.join(keyringDir(ctx.env), 'admin.key'));
  const stack: Stack = await startStack({
    stateDir,
    admin,
    ...(ctx.env.REDIS_URL ? { redisUrl: ctx.env.REDIS_URL } : {}),
    ...(ctx.env.DATABASE_URL ? { databaseUrl: ctx.env.DATABASE_URL } : {}),
    port: values.port ? Number(values.port) : values.keep ? 7340 : 0,
    nodes: [{ id: values.node!, labels }],
    ...(nodeConfig ? { sal: nodeConfig.sal } : {}),
    ...(values['boot-image'] !== undefined ? { bootImage: checkBootImageDir(values['boot-image']) } : {}),
    logger,
    ...(ctx.env.WRIT_TOKEN ? { apiToken: ctx.env.WRIT_TOKEN } : {}),
  });
  await writeNewFile(
    path.join(keyringDir(ctx.env), 'admin.key.pub'),
    JSON.stringify({ type: 'writ.ed25519.public.v1', keyid: admin.keyid, publicKey: b64url(admin.publicKey) }, null, 2) + '\n',
    0o644,
    true,
  );
  const coord: CoordTarget = { url: stack.url, token: stack.token };
  const startedMs = Date.now() - t0;

  if (values.keep) {
    const devFile = path.join(home, 'dev.json');
    await writeNewFile(
      devFile,
      JSON.stringify({ url: stack.url, token: stack.token, clusterId: stack.clusterId, node: values.node, pid: process.pid }, null, 2) + '\n',
      0o600,
      true,
    );
    await chmod(devFile, 0o600);
    io.out(`writ dev is up in ${startedMs} ms`);
    io.out(`  coord     ${stack.url}   (token in ${devFile}; export WRIT_TOKEN=${stack.token})`);
    io.out(`  redis     ${redactRedisUrl(stack.redisUrl)}${stack.redis ? ' (embedded)' : ''}`);
    io.out(`  ledger    ${ctx.env.DATABASE_URL ? 'DATABASE_URL' : `PGlite in ${path.join(stateDir, 'ledger')}`}`);
    io.out(
      `  runner    node ${values.node} (labels ${Object.entries(labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(',')}; SAL ${areas.length ? `host, time, random, ${areas.join(', ')}` : 'host, time, random only (--config adds areas)'})`,
    );
    io.out(`  admin key ${path.join(keyringDir(ctx.env), 'admin.key')} (${admin.keyid})`);
    io.out(`try: writ submit scripts/examples/hello.js --target node=${values.node} --caps host.facts --follow`);
    await runUntilProcessSignal(async (signal) => {
      await once(signal, 'abort');
      io.err(`writ dev: ${String(signal.reason)}: stopping…`);
    });
    await stack.stop();
    io.err('writ dev: stopped cleanly');
    return EXIT.ok;
  }

  try {
    io.out(
      `writ dev: coord, supervisor and runner ${values.node} up in ${startedMs} ms (redis ${stack.redis ? 'embedded' : redactRedisUrl(stack.redisUrl)}, ledger ${ctx.env.DATABASE_URL ? 'PostgreSQL' : 'PGlite'})`,
    );
    const signed = await signScriptFile(
      HELLO,
      [admin],
      { target: [`node=${values.node}`], caps: 'host.facts', args: '{"name":"Writ"}', aud: stack.clusterId },
      ctx,
    );
    io.out(`signed ${path.relative(process.cwd(), HELLO)} as job ${signed.jobId} with ${admin.keyid}`);
    const accepted = (await api<{ id: string; status: string }>(coord, 'POST', '/v1/jobs', signed.envelope)).body;
    io.out(`submitted: ${accepted.status}`);
    await followEvents(coord, accepted.id, (e) => printEvent(io, e));
    const job = (
      await api<{ status: string; result: unknown; attempts: number; error: { code: string; message: string } | null }>(coord, 'GET', `/v1/jobs/${accepted.id}`)
    ).body;
    if (job.status !== 'succeeded') {
      io.err(`writ dev: the job ${job.status}: ${job.error?.code}: ${job.error?.message}`);
      return EXIT.failure;
    }
    io.out(`result: ${JSON.stringify(job.result, null, 2)}`);
    io.out(`done in ${Date.now() - t0} ms. Next: \`writ dev --keep\` to keep the stack up; see README.md.`);
    return EXIT.ok;
  } finally {
    await stack.stop();
  }
}

export const devCommand: Command = { name: 'dev', summary: 'run coord, supervisor and a runner in one process', help: HELP, run: dev };
