// Redis is Writ's dispatch cache: a Redis that evicts keys under memory pressure would silently drop queued
// jobs, locks and the key set. Checked at start by supervisors and runners (R7, eviction part).
import type { Redis } from 'ioredis';
import { WritError } from '@writ/protocol';

export interface RedisCheckResult {
  policy: string | null;
  ok: boolean;
  problem?: string;
}

export async function checkRedisEviction(redis: Redis): Promise<RedisCheckResult> {
  let policy: string | null = null;
  try {
    const r = (await redis.call('CONFIG', 'GET', 'maxmemory-policy')) as string[];
    policy = r[1] ?? null;
  } catch (e) {
    // Managed Redis often disables CONFIG: then the operator has to vouch for the policy.
    return { policy: null, ok: false, problem: `cannot read maxmemory-policy (${(e as Error).message}); make sure it is noeviction` };
  }
  if (policy === 'noeviction') return { policy, ok: true };
  return { policy, ok: false, problem: `Redis evicts keys (maxmemory-policy ${policy}); queued jobs and locks could vanish. Set maxmemory-policy noeviction` };
}

/** In production mode an unsafe Redis is refused; otherwise `warn` is told why. */
export async function assertRedisSafe(redis: Redis, production: boolean, warn: (msg: string) => void): Promise<void> {
  const r = await checkRedisEviction(redis);
  if (r.ok) return;
  if (production && r.policy !== null) throw new WritError('REDIS_MISCONFIGURED', r.problem!, { policy: r.policy });
  warn(r.problem!);
}
