// Composes coord, supervisor and runners in one process (`writ dev`, the quickstart, integration tests and
// benchmarks), on embedded defaults: its own redis-server when REDIS_URL is unset, PGlite when DATABASE_URL is.
// Resources are released in reverse order of acquisition.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import {
  PAYLOAD_TYPES,
  b64url,
  errorCodeOf,
  bootstrapKeySet,
  decodeKeyFile,
  encodeEnvelope,
  encodeKeySet,
  encodePrivateKeyFile,
  generateKeyPair,
  signEnvelope,
  type KeyPair,
} from '@writ/protocol';
import { buildApp, CoordService, InProcessSupervisorClient, openLedger, type Ledger } from '@writ/coord';
import { Supervisor, type Logger } from '@writ/supervisor';
import { salHostTable, startNodeDaemon, type NodeDaemon, type Runner, type RunnerOptions, type SalHostConfig } from '@writ/runner';
import { startEmbeddedRedis, type EmbeddedRedis } from './embedded-redis.ts';
import { writeNewFile } from './keyfiles.ts';

export interface StackOptions {
  stateDir: string;
  /** The cluster's bootstrap admin: pinned by every tier; signs key set v1 when the ledger has none. */
  admin: KeyPair;
  redisUrl?: string;
  databaseUrl?: string;
  /** 0 picks a free port. */
  port?: number;
  host?: string;
  clusterId?: string;
  /** Runners to start in-process; [] for none. */
  nodes?: { id: string; labels?: Record<string, string> }[];
  runner?: Partial<Omit<RunnerOptions, 'nodeId' | 'labels' | 'redisUrl'>>;
  /** Node heartbeat interval (default 5 s in one-process stacks). */
  heartbeatMs?: number;
  /** Accept the stack's own nodes as an operator would (default true: they run on this machine). */
  autoAccept?: boolean;
  /** Attempts per job and the first retry's backoff (the ledger assigns every attempt; the coord retries). */
  supervisor?: { attempts?: number; backoffMs?: number };
  reconcileAfterMs?: number;
  reconcileEveryMs?: number;
  logger?: Logger;
  apiToken?: string;
  redisAppendOnly?: boolean;
  /** SAL areas the runners offer scripts (each validated when a runner starts); none: host facts, time and randomness only. */
  sal?: SalHostConfig;
  /** The boot image folder the coord serves at /boot/* (checked by the caller); none: $WRIT_BOOT_IMAGE per request. */
  bootImage?: string;
}

export interface Stack {
  url: string;
  token: string;
  clusterId: string;
  redisUrl: string;
  redis?: EmbeddedRedis;
  ledger: Ledger;
  supervisor: Supervisor;
  service: CoordService;
  app: FastifyInstance;
  runners: Runner[];
  daemons: NodeDaemon[];
  startRunner(
    id: string,
    labels?: Record<string, string>,
    opts?: { accept?: boolean; runner?: Partial<Omit<RunnerOptions, 'nodeId' | 'labels' | 'redisUrl'>> },
  ): Promise<Runner>;
  waitForNode(id: string, states: string[], timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Loads the key at `file`, or creates it (mode 0600) when missing. Never replaces a corrupt key. */
export async function loadOrCreateKey(file: string): Promise<KeyPair> {
  try {
    const d = decodeKeyFile(await readFile(file, 'utf8'), file);
    if (!d.keyPair) throw new Error(`${file} holds no private key`);
    return d.keyPair;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const kp = generateKeyPair();
  await writeNewFile(file, encodePrivateKeyFile(kp, path.basename(file)), 0o600, false);
  return kp;
}

export async function startStack(opts: StackOptions): Promise<Stack> {
  const releasers: (() => Promise<void>)[] = [];
  const release = async () => {
    for (const r of releasers.reverse()) await r().catch(() => {});
  };
  try {
    await mkdir(opts.stateDir, { recursive: true, mode: 0o700 });
    const clusterId = opts.clusterId ?? 'writ-dev';
    let redis: EmbeddedRedis | undefined;
    let redisUrl = opts.redisUrl;
    if (!redisUrl) {
      redis = await startEmbeddedRedis({ dataDir: path.join(opts.stateDir, 'redis'), appendOnly: opts.redisAppendOnly ?? true });
      releasers.push(() => redis!.stop());
      redisUrl = redis.url;
    }
    const ledger = await openLedger(opts.databaseUrl ? { databaseUrl: opts.databaseUrl } : { dataDir: path.join(opts.stateDir, 'ledger') });
    releasers.push(() => ledger.close());
    const supKey = await loadOrCreateKey(path.join(opts.stateDir, 'supervisor.key'));
    const admins = { threshold: 1, keys: [{ keyid: opts.admin.keyid, publicKey: b64url(opts.admin.publicKey) }] };
    let service: CoordService | undefined; // eslint-disable-line prefer-const -- assigned after the supervisor that needs it exists
    const supervisor = await Supervisor.start({
      id: 'sup-1',
      clusterId,
      redisUrl,
      signingKey: supKey,
      admins,
      ...(opts.logger ? { logger: opts.logger } : {}),
      sink: {
        deliver: async (report) => {
          if (!service) throw new Error('coord not started yet');
          await service.ingestReport(report);
        },
      },
    });
    releasers.push(() => supervisor.close());
    service = new CoordService({
      clusterId,
      ledger,
      supervisor: new InProcessSupervisorClient(supervisor),
      supervisorKeys: [supKey.publicKey],
      admins,
      nodeStore: ledger.nodeStore,
      heartbeatMs: opts.heartbeatMs ?? 5000,
      maxAttempts: opts.supervisor?.attempts ?? 3,
      retryBackoffMs: opts.supervisor?.backoffMs ?? 1000,
      ...(opts.logger ? { logger: opts.logger } : {}),
      ...(opts.reconcileAfterMs !== undefined ? { reconcileAfterMs: opts.reconcileAfterMs } : {}),
      ...(opts.reconcileEveryMs !== undefined ? { reconcileEveryMs: opts.reconcileEveryMs } : {}),
    });
    await service.start();
    releasers.push(() => service!.stop());
    if (!service.currentKeySet()) {
      const v1 = bootstrapKeySet({ cluster: clusterId, admin: admins.keys[0]!, nowS: Math.floor(Date.now() / 1000) });
      await service.publishKeySet(encodeEnvelope(signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(v1), [opts.admin])), 'bootstrap');
    }
    const token = opts.apiToken ?? randomBytes(24).toString('base64url');
    const app = await buildApp({ service, apiToken: token, bootImage: opts.bootImage ?? null });
    const url = await app.listen({ port: opts.port ?? 0, host: opts.host ?? '127.0.0.1' });
    releasers.push(() => app.close());
    const runners: Runner[] = [];
    const daemons: NodeDaemon[] = [];
    const waitForNode = async (id: string, states: string[], timeoutMs = 15_000) => {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const n = await ledger.nodeStore.getNode(id);
        if (n && states.includes(n.state)) return;
        if (Date.now() > end) throw new Error(`node ${id} did not reach ${states.join('|')} within ${timeoutMs} ms (it is ${n?.state ?? 'unregistered'})`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const startRunner = async (
      id: string,
      labels: Record<string, string> = {},
      o: { accept?: boolean; runner?: Partial<Omit<RunnerOptions, 'nodeId' | 'labels' | 'redisUrl'>> } = {},
    ) => {
      const d = await startNodeDaemon({
        ...opts.runner,
        ...o.runner,
        nodeId: id,
        labels,
        clusterId,
        admins,
        stateDir: path.join(opts.stateDir, 'nodes', id),
        redisUrl: redisUrl!,
        coordUrl: url,
        heartbeatMs: opts.heartbeatMs ?? 5000,
        ...(opts.logger ? { logger: opts.logger } : {}),
        ...(opts.sal ? { hostTable: salHostTable(opts.sal) } : {}),
      });
      daemons.push(d);
      runners.push(d.runner);
      releasers.push(() => d.stop(5000));
      if (o.accept ?? opts.autoAccept ?? true) {
        await waitForNode(id, ['inspected', 'active']);
        const n = await ledger.nodeStore.getNode(id);
        if (n?.state === 'inspected') {
          await service!.nodes.apply(id, 'accept', { actor: 'writ dev', reason: 'a node of this one-process stack', byOperator: true });
          // A healthy heartbeat right after the accept activates the node by itself; losing that race is the
          // same outcome, and the wait below checks that the node did become workable.
          await service!.nodes.apply(id, 'activate', { actor: 'writ dev', reason: 'healthy at registration', byOperator: false }).catch((e: unknown) => {
            if (errorCodeOf(e) !== 'TRANSITION_NOT_ALLOWED') throw e;
          });
        }
        // Return only once the node takes work: active and heard from (its first heartbeat may trail registration).
        const end = Date.now() + 15_000;
        while (!(await service!.nodes.workable()).some((w) => w.id === id)) {
          if (Date.now() > end) throw new Error(`node ${id} did not become workable within 15 s`);
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      return d.runner;
    };
    for (const n of opts.nodes ?? [{ id: 'dev-1', labels: { env: 'dev' } }]) await startRunner(n.id, n.labels);
    return {
      url,
      token,
      clusterId,
      redisUrl,
      ...(redis ? { redis } : {}),
      ledger,
      supervisor,
      service,
      app,
      runners,
      daemons,
      startRunner,
      waitForNode,
      stop: release,
    };
  } catch (e) {
    await release();
    throw e;
  }
}
