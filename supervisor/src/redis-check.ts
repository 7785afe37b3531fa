// Redis is Writ's dispatch cache: a Redis that evicts keys under memory pressure would silently drop queued
// jobs, locks and the key set; one reached as any user but the supervisor's own ACL user is not confined the
// way production expects (R7). Checked when a supervisor starts (runners check their own user in the node
// daemon).
import type { Redis } from 'ioredis';
import { REDIS_OPEN_DEFAULT_USER_PROBLEM, WritError, redisUserProblem } from '@writ/protocol';

export interface RedisCheckResult {
  policy: string | null;
  ok: boolean;
  problem?: string;
}

export async function checkRedisEviction(redis: Redis): Promise<RedisCheckResult> {
  let policy: string | null = null;
  try {
    // INFO rather than CONFIG GET: managed Redis and the supervisor's ACL user allow INFO, not CONFIG.
    policy = /^maxmemory_policy:(\S+)/m.exec(await redis.info('memory'))?.[1] ?? null;
  } catch (e) {
    return { policy: null, ok: false, problem: `cannot read maxmemory-policy (${(e as Error).message}); make sure it is noeviction` };
  }
  if (policy === null) return { policy, ok: false, problem: 'Redis did not say its maxmemory-policy (INFO memory); make sure it is noeviction' };
  if (policy === 'noeviction') return { policy, ok: true };
  return { policy, ok: false, problem: `Redis evicts keys (maxmemory-policy ${policy}); queued jobs and locks could vanish. Set maxmemory-policy noeviction` };
}

/** Whether a client with no credentials gets in (the default user on, without a password). */
async function defaultUserOpen(redis: Redis): Promise<boolean> {
  // A Cluster client duplicates with other arguments, and each node has its own users: not probed there
  // (docs/operations.md, Redis Cluster).
  if ((redis as { isCluster?: boolean }).isCluster) return false;
  const probe = redis.duplicate({
    username: undefined,
    password: undefined,
    lazyConnect: true,
    enableReadyCheck: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    reconnectOnError: null,
  });
  probe.on('error', () => {});
  try {
    await probe.connect();
    return (await probe.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}

/**
 * In production mode an unsafe Redis is refused (REDIS_MISCONFIGURED): eviction on, or this connection not
 * made as the supervisor's ACL user (`writ redis acl --role supervisor`). Otherwise `warn` is told why.
 */
export async function assertRedisSafe(redis: Redis, production: boolean, warn: (msg: string) => void): Promise<void> {
  const r = await checkRedisEviction(redis);
  if (!r.ok) {
    if (production && r.policy !== null) throw new WritError('REDIS_MISCONFIGURED', r.problem!, { policy: r.policy });
    warn(r.problem!);
  }
  if (!production) return;
  let whoami: string;
  try {
    whoami = String(await redis.call('ACL', 'WHOAMI'));
  } catch (e) {
    throw new WritError(
      'REDIS_MISCONFIGURED',
      `cannot ask Redis which ACL user this is (${(e as Error).message}); production mode needs Redis 6 or later with ACL users`,
    );
  }
  const problem = redisUserProblem({ role: 'supervisor' }, whoami);
  if (problem) throw new WritError('REDIS_MISCONFIGURED', problem, { user: whoami });
  if (await defaultUserOpen(redis)) warn(REDIS_OPEN_DEFAULT_USER_PROBLEM);
}
