// The whole node daemon: identity, phone-home (registration and heartbeats) and the job loop together.
import { statfs } from 'node:fs/promises';
import os from 'node:os';
import { Redis } from 'ioredis';
import { hostFacts } from '@writ/sal';
import {
  REDIS_OPEN_DEFAULT_USER_PROBLEM,
  WritError,
  describeRedisTarget,
  parseRedisUrl,
  redactRedisUrl,
  redisUserProblem,
  type JsonValue,
  type NodeHealth,
  type RegistrationAnswer,
} from '@writ/protocol';
import { NodeAgent, type Clock } from './agent.ts';
import { loadNodeIdentity, type NodeIdentity } from './identity.ts';
import { Runner, type RunnerOptions } from './runner.ts';

export interface NodeDaemonOptions extends Omit<RunnerOptions, 'nodeKey' | 'redisUrl'> {
  /**
   * The Redis to take jobs from. Without one, the daemon registers first and uses the address the coord
   * announces for the node's pool (its supervisors' Redis), with `redisCredentials` added when given.
   */
  redisUrl?: string | null;
  redisCredentials?: { username: string; password: string } | null;
  /** Aborts waiting for the coord to announce a Redis (the daemon then throws the abort reason). */
  signal?: AbortSignal;
  stateDir: string;
  coordUrl: string;
  heartbeatMs?: number;
  clock?: Clock;
  /** Production mode (R7): Redis must be reached as this node's own ACL user, or the daemon does not start. */
  production?: boolean;
}

export interface NodeDaemon {
  identity: NodeIdentity;
  agent: NodeAgent;
  runner: Runner;
  /** The Redis it takes jobs from (user and password masked), and whether the coord announced it at registration. */
  redis: { url: string; learned: boolean };
  /** Stops phone-home and the job loop within `timeoutMs` in all, whether or not the coord and Redis answer. */
  stop(timeoutMs?: number): Promise<void>;
}

/** What the node says of its health in every heartbeat, healthy or not. */
export async function nodeHealth(stateDir: string, runningJobs: number): Promise<NodeHealth> {
  const problems: string[] = [];
  let diskFreeBytes = 0;
  try {
    const st = await statfs(stateDir);
    diskFreeBytes = Number(st.bavail) * Number(st.bsize);
    if (diskFreeBytes < 512 * 1024 * 1024) problems.push(`less than 512 MiB free under ${stateDir}`);
  } catch (e) {
    problems.push(`cannot stat ${stateDir}: ${(e as Error).message}`);
  }
  const memAvailableBytes = os.freemem();
  if (memAvailableBytes < 128 * 1024 * 1024) problems.push('less than 128 MiB of memory available');
  const load1 = os.loadavg()[0] ?? 0;
  return { healthy: problems.length === 0, problems, load1, memAvailableBytes, diskFreeBytes, runningJobs };
}

/**
 * Production mode: asks Redis (ACL WHOAMI) who this connection is, and refuses to start unless it is the node's
 * own ACL user (`writ redis acl --role runner --node ID`), which reaches no other node's queue (R7). A Redis
 * that still lets anyone in as the default user is warned about: that user is not confined.
 */
export async function assertRunnerRedisUser(redisUrl: string, nodeId: string, warn: (msg: string) => void): Promise<void> {
  const parsed = parseRedisUrl(redisUrl);
  // A Redis Cluster keeps ACL users on each node: ask the first node given, as a plain connection.
  const { cluster: _cluster, ...options } = parsed.cluster ? { ...parsed, host: parsed.cluster[0]!.host, port: parsed.cluster[0]!.port } : parsed;
  const redis = new Redis({ ...options, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
  redis.on('error', () => {});
  try {
    try {
      await redis.connect();
    } catch (e) {
      throw new WritError('REDIS_UNAVAILABLE', `cannot reach Redis (${describeRedisTarget(options)}) to check its ACL user: ${(e as Error).message}`);
    }
    let whoami: string;
    try {
      whoami = String(await redis.call('ACL', 'WHOAMI'));
    } catch (e) {
      throw new WritError(
        'REDIS_MISCONFIGURED',
        `cannot ask Redis which ACL user this is (${(e as Error).message}); production mode needs Redis 6 or later with ACL users`,
      );
    }
    const problem = redisUserProblem({ role: 'runner', node: nodeId }, whoami);
    if (problem) throw new WritError('REDIS_MISCONFIGURED', problem, { user: whoami, node: nodeId });
    const anonymous = redis.duplicate({
      username: undefined,
      password: undefined,
      lazyConnect: true,
      enableReadyCheck: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    anonymous.on('error', () => {});
    try {
      await anonymous.connect();
      if ((await anonymous.ping()) === 'PONG') warn(REDIS_OPEN_DEFAULT_USER_PROBLEM);
    } catch {
      /* refused without credentials: as it should be */
    } finally {
      anonymous.disconnect();
    }
  } finally {
    redis.disconnect();
  }
}

/** A Redis address with this node's ACL user and password put in (an announced address carries none). */
export function withRedisCredentials(url: string, creds: { username: string; password: string } | null | undefined): string {
  if (!creds) return url;
  const at = url.indexOf('://');
  if (
    at < 0 ||
    url
      .slice(at + 3)
      .split(/[/?]/)[0]!
      .includes('@')
  )
    return url;
  return `${url.slice(0, at + 3)}${encodeURIComponent(creds.username)}:${encodeURIComponent(creds.password)}@${url.slice(at + 3)}`;
}

export async function startNodeDaemon(opts: NodeDaemonOptions): Promise<NodeDaemon> {
  const identity = await loadNodeIdentity(opts.stateDir, opts.nodeId);
  let runner: Runner | undefined;
  // Every registration answer, for a daemon that waits to learn its pool's Redis from one.
  let answered: ((a: RegistrationAnswer) => void) | undefined;
  const agent = new NodeAgent({
    coordUrl: opts.coordUrl,
    identity,
    labels: opts.labels ?? {},
    version: opts.version ?? '0.1.0',
    ...(opts.heartbeatMs ? { heartbeatMs: opts.heartbeatMs } : {}),
    ...(opts.clock ? { clock: opts.clock } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
    inventory: async () => (await hostFacts()) as unknown as JsonValue,
    health: () => nodeHealth(opts.stateDir, runner?.runningJobs ?? 0),
    onRegistered: (a) => answered?.(a),
  });
  let redisUrl = opts.redisUrl ?? null;
  if (redisUrl === null) {
    // Register first: the answer names the Redis of the node's pool. Until a supervisor of that pool has
    // announced one, ask again every heartbeat interval.
    const first = new Promise<RegistrationAnswer>((resolve) => (answered = resolve));
    agent.start();
    try {
      redisUrl = await learnPoolRedis(agent, first, opts);
    } catch (e) {
      await agent.stop();
      throw e;
    }
    opts.logger?.info({ node: opts.nodeId, redis: redactRedisUrl(redisUrl) }, "takes jobs from its pool's Redis, as the coord announced it at registration");
  }
  try {
    if (opts.production) await assertRunnerRedisUser(redisUrl, opts.nodeId, (m) => opts.logger?.warn({}, m));
    runner = await Runner.start({ ...opts, redisUrl, nodeKey: identity.key });
  } catch (e) {
    await agent.stop();
    throw e;
  }
  if (opts.redisUrl) agent.start();
  const started = runner;
  return {
    identity,
    agent,
    runner: started,
    redis: { url: redactRedisUrl(redisUrl), learned: !opts.redisUrl },
    async stop(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      // A request to a coord that does not answer may hold the agent up to its own timeout: not past the grace.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([agent.stop(), new Promise((r) => (timer = setTimeout(r, timeoutMs)))]);
      clearTimeout(timer);
      await started.close(Math.max(0, deadline - Date.now()));
    },
  };
}

/**
 * Waits for a registration answer that names the Redis of this node's pool and returns it with the node's
 * credentials. The first answer comes from the agent's own registration; without a Redis in it (no healthy
 * supervisor of the pool has announced one yet, or the node has no pool yet) it registers again every
 * heartbeat interval, saying so, until one does or `opts.signal` aborts.
 */
async function learnPoolRedis(agent: NodeAgent, first: Promise<RegistrationAnswer>, opts: NodeDaemonOptions): Promise<string> {
  const aborted = new Promise<never>((_, reject) => {
    if (opts.signal?.aborted) reject(opts.signal.reason);
    opts.signal?.addEventListener('abort', () => reject(opts.signal!.reason), { once: true });
  });
  aborted.catch(() => {});
  let answer: RegistrationAnswer | null = await Promise.race([first, aborted]);
  const waitMs = opts.heartbeatMs ?? 30_000;
  for (;;) {
    if (answer?.redis) return withRedisCredentials(answer.redis, opts.redisCredentials);
    opts.logger?.warn(
      { node: opts.nodeId, pool: answer?.pool ?? null, retryInMs: waitMs },
      "no --redis, and the coord announced no Redis for this node's pool yet (no healthy supervisor of it has): asking again",
    );
    await Promise.race([new Promise((r) => setTimeout(r, waitMs)), aborted]);
    answer = await Promise.race([agent.register().catch(() => null), aborted]);
  }
}
