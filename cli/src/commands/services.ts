// writ coord | writ supervisor: each service in its own process (production shape). Also the CLI's one handler
// of SIGINT/SIGTERM and its reading of --admin-key, which writ runner uses too.
import { EXIT_AFTER_GRACE_MS, b64url, runUntilProcessSignal, type KeyRef } from '@writ/protocol';
import { coordConfig, runCoord } from '@writ/coord';
import { runSupervisor, supervisorConfig } from '@writ/supervisor';
import { parse } from '../args.ts';
import { resolvePublicKey, writHome, writeNewFile } from '../keyfiles.ts';
import { EXIT, serviceLogger, type Io } from '../output.ts';
import { loadOrCreateKey } from '../stack.ts';
import type { CliContext, Command } from './types.ts';

/** Reads each --admin-key (a key file, a raw key or a key id in the keyring) into the key ref the config pins. */
export async function adminKeyRefs(specs: readonly string[] | undefined, env: NodeJS.ProcessEnv): Promise<KeyRef[]> {
  const keys = await Promise.all((specs ?? []).map((f) => resolvePublicKey(f, env)));
  return keys.map((k) => ({ keyid: k.keyid, publicKey: b64url(k.publicKey) }));
}

// SIGINT/SIGTERM are handled in one place, @writ/protocol's runUntilProcessSignal (the boot image's agent uses it too).
export { EXIT_AFTER_GRACE_MS, runUntilProcessSignal };

const SUP_HELP = `usage: writ supervisor --coord URL --admin-key FILE [--admin-threshold K] [--production] [--id ID] [--redis URL] [--cluster ID] [--listen HOST:PORT] [--state DIR]
                       [--pool NAME ...] [--advertise URL] [--heartbeat-ms N] [--runner-redis URL] [--claim-idle-ms N]

Runs a supervisor: admission, per-node queues in Redis, and signed reports to the coord. Its signing key
is created in the state dir; give the coord its .pub file (--supervisor-key). The coord authenticates to
it with the bearer token in $WRIT_SUPERVISOR_TOKEN (required). With --production (or WRIT_PRODUCTION=1) a
Redis that evicts keys, or one reached as any ACL user but writ-supervisor (see \`writ redis acl\`), is
refused (REDIS_MISCONFIGURED) instead of only warned about.

  --redis URL   redis://[USER:PASSWORD@]HOST:PORT[/DB], rediss://... (TLS), or a Sentinel group:
                redis+sentinel://[USER:PASSWORD@]HOST:PORT,HOST:PORT,.../MASTER[?db=N] (default $REDIS_URL)

Federation (see docs/operations.md, "Adding a second supervisor"): with --pool it announces itself to the
coord with a signed heartbeat every --heartbeat-ms (5000) and gets the jobs of nodes in those pools. An
admin must first list its key for those pools in the key set (writ keyset supervisor add ID --key
STATE/supervisor.key.pub --pool NAME), or the coord refuses it (SUPERVISOR_NOT_LISTED).
  --pool NAME          a node pool it serves (repeat for several); two supervisors of one pool share its Redis
  --advertise URL      the API URL the coord reaches it at (default http://<--listen>)
  --runner-redis URL   the Redis address nodes of its pools are told at registration (default --redis without
                       user and password)
  --claim-idle-ms N    runner events a peer of this Redis left unacknowledged this long are taken over (30000)

Stops on SIGTERM/SIGINT within its shutdown grace (10 s), Redis and coord reachable or not.

example:
  WRIT_SUPERVISOR_TOKEN=... writ supervisor --coord http://127.0.0.1:7340 --redis redis://127.0.0.1:6379`;

async function supervisor(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values } = parse(
    argv,
    {
      id: { type: 'string', default: 'sup-1' },
      redis: { type: 'string' },
      coord: { type: 'string' },
      cluster: { type: 'string' },
      listen: { type: 'string', default: '127.0.0.1:7341' },
      state: { type: 'string' },
      'admin-key': { type: 'string', multiple: true },
      'admin-threshold': { type: 'string' },
      production: { type: 'boolean', default: false },
      pool: { type: 'string', multiple: true },
      advertise: { type: 'string' },
      'heartbeat-ms': { type: 'string' },
      'runner-redis': { type: 'string' },
      'claim-idle-ms': { type: 'string' },
    },
    { min: 0, max: 0, usage: 'writ supervisor --coord URL --admin-key FILE' },
  );
  if (values.help) return (io.out(SUP_HELP), EXIT.ok);
  const config = supervisorConfig(
    {
      home: writHome(ctx.env),
      id: values.id,
      redis: values.redis,
      coord: values.coord,
      cluster: values.cluster,
      listen: values.listen,
      state: values.state,
      adminKeys: await adminKeyRefs(values['admin-key'], ctx.env),
      adminThreshold: values['admin-threshold'],
      production: values.production,
      pools: values.pool,
      advertise: values.advertise,
      heartbeatMs: values['heartbeat-ms'],
      runnerRedis: values['runner-redis'],
      claimIdleMs: values['claim-idle-ms'],
    },
    ctx.env,
  );
  const signingKey = await loadOrCreateKey(config.signingKeyFile);
  await writeNewFile(
    config.publicKeyFile,
    JSON.stringify({ type: 'writ.ed25519.public.v1', keyid: signingKey.keyid, publicKey: b64url(signingKey.publicKey) }, null, 2) + '\n',
    0o644,
    true,
  );
  const logger = serviceLogger(config.logLevel, ctx.env);
  const clean = await runUntilProcessSignal((signal) => runSupervisor(config, { signingKey, logger, io, signal }), { graceMs: config.shutdownGraceMs });
  return clean ? EXIT.ok : EXIT.failure;
}

const COORD_HELP = `usage: writ coord [--supervisor URL --supervisor-key FILE.pub] --admin-key FILE [--admin-threshold K] [--listen HOST:PORT] [--cluster ID] [--state DIR] [--boot-image DIR]

Runs the coordinator: HTTP API, ledger (PostgreSQL at $DATABASE_URL, else PGlite in the state dir) and
reconciler. API clients authenticate with $WRIT_TOKEN (required); the coord reaches supervisors with
$WRIT_SUPERVISOR_TOKEN. The supervisor given with --supervisor (optional) serves pool default and its
reports are accepted when signed by --supervisor-key; every other supervisor joins with signed heartbeats
and must be listed in the key set (writ keyset supervisor add; writ supervisors list shows them).
--boot-image DIR serves the kernel and initramfs of a folder writ image ipxe wrote at /boot/* for iPXE
(default: the folder in $WRIT_BOOT_IMAGE, read at each request; none: the boot routes answer NOT_READY).

example:
  WRIT_TOKEN=... WRIT_SUPERVISOR_TOKEN=... writ coord --supervisor http://127.0.0.1:7341 --supervisor-key sup.pub`;

async function coord(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values } = parse(
    argv,
    {
      supervisor: { type: 'string' },
      'supervisor-key': { type: 'string' },
      listen: { type: 'string', default: '127.0.0.1:7340' },
      cluster: { type: 'string' },
      state: { type: 'string' },
      'admin-key': { type: 'string', multiple: true },
      'admin-threshold': { type: 'string' },
      'boot-image': { type: 'string' },
    },
    { min: 0, max: 0, usage: 'writ coord --supervisor URL --supervisor-key FILE --admin-key FILE' },
  );
  if (values.help) return (io.out(COORD_HELP), EXIT.ok);
  const config = coordConfig(
    {
      home: writHome(ctx.env),
      supervisor: values.supervisor,
      supervisorKey: values['supervisor-key'],
      listen: values.listen,
      cluster: values.cluster,
      state: values.state,
      adminKeys: await adminKeyRefs(values['admin-key'], ctx.env),
      adminThreshold: values['admin-threshold'],
      bootImage: values['boot-image'],
    },
    ctx.env,
  );
  const logger = serviceLogger(config.logLevel, ctx.env);
  const clean = await runUntilProcessSignal((signal) => runCoord(config, { logger, io, signal }), { graceMs: config.shutdownGraceMs });
  return clean ? EXIT.ok : EXIT.failure;
}

export const supervisorCommand: Command = { name: 'supervisor', summary: 'run a supervisor (admission, queues, reports)', help: SUP_HELP, run: supervisor };
export const coordCommand: Command = { name: 'coord', summary: 'run the coordinator (API, ledger, reconciler)', help: COORD_HELP, run: coord };
