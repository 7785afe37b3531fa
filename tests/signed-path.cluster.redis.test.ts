// The signed-path suite (signed-path.redis.test.ts) on a Redis Cluster of three primaries on loopback
// (tests/helpers/redis-cluster.ts): supervisor and runners reach it as redis+cluster://, BullMQ's queues and
// Writ's event stream, key set and heartbeats live on it under hash-tagged names (protocol/src/queues.ts).
import { afterAll, describe, expect, it } from 'vitest';
import { redisKeys } from '@writ/protocol';
import { haveRedisCluster, startRedisCluster, type RedisCluster } from './helpers/redis-cluster.ts';

if (!haveRedisCluster) console.warn('skipping the Redis Cluster tests: redis-server or redis-cli is not installed');
let cluster: RedisCluster | undefined;
if (haveRedisCluster) {
  cluster = await startRedisCluster(3);
  process.env.WRIT_TEST_REDIS_URL = cluster.url;
  // Registered first, so it runs after the suite's own afterAll (hooks unwind as a stack).
  afterAll(async () => {
    await cluster?.stop();
  });
  await import('./signed-path.redis.test.ts');
}

describe.skipIf(!haveRedisCluster)('on a Redis Cluster', () => {
  it('the keys are in the cluster, spread over its primaries by their hash tags', async () => {
    const c = cluster!;
    // Each key's slot is what its hash tag makes it: the event stream with every other {writ} key, each
    // node's queue with its own tag.
    const slot = async (key: string) => Number(await c.cli(c.ports[0]!, 'cluster', 'keyslot', key));
    expect(await slot(redisKeys.events())).toBe(await slot(redisKeys.keySet()));
    expect(await slot(redisKeys.node('node-a'))).toBe(await slot(redisKeys.nodes()));
    expect(await slot('writ-bull:{node.node-a}:wait')).toBe(await slot('writ-bull:{node.node-a}:active'));
    // What the suite wrote is on the cluster, and the events stream holds the runners' batches.
    const sizes = await Promise.all(c.ports.map(async (p) => Number(await c.cli(p, 'dbsize'))));
    expect(sizes.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    expect(Number(await c.cli(c.ports[0]!, '-c', 'xlen', redisKeys.events()))).toBeGreaterThan(0);
    console.log(`redis cluster: keys per primary ${sizes.join(', ')}`);
  });
});
