// The flow suite (tests/helpers/flow-scenarios.ts, also run on a plain Redis by flows.redis.test.ts) on a
// Redis Cluster of three primaries on loopback (tests/helpers/redis-cluster.ts): the supervisor and the three
// runners reach it as redis+cluster://; each node's queue lives under its own hash tag, so the fan-out's
// queues spread over the primaries while the event stream and the cancel marks keep their {writ} slot.
import { afterAll, describe, expect, it } from 'vitest';
import { redisKeys } from '@writ/protocol';
import { FLOW_NODES, flowSuite } from './helpers/flow-scenarios.ts';
import { haveRedisCluster, startRedisCluster, type RedisCluster } from './helpers/redis-cluster.ts';

if (!haveRedisCluster) console.warn('skipping the Redis Cluster flow tests: redis-server or redis-cli is not installed');
let cluster: RedisCluster | undefined;
if (haveRedisCluster) {
  cluster = await startRedisCluster(3);
  // Registered first, so it runs after the suite's own afterAll (hooks unwind as a stack).
  afterAll(async () => {
    await cluster?.stop();
  });
}

describe.skipIf(!haveRedisCluster)('on a Redis Cluster', () => {
  flowSuite('flows', { redisUrl: () => cluster!.url });

  it('ran on the cluster: the step queues of the three nodes and the event stream are there, each queue on one primary by its hash tag', async () => {
    const c = cluster!;
    // Every node's BullMQ queue has keys on the cluster (the scenarios ran steps on all three), all of them on
    // one primary: the hash tag keeps a queue in one slot, as BullMQ's multi-key scripts need.
    for (const node of FLOW_NODES) {
      const perPrimary = await Promise.all(
        c.ports.map(async (p) => (await c.cli(p, '--scan', '--pattern', `writ-bull:{node.${node}}:*`)).split('\n').filter(Boolean).length),
      );
      expect(
        perPrimary.filter((n) => n > 0),
        `${node}: queue keys per primary ${perPrimary.join(', ')}`,
      ).toHaveLength(1);
    }
    expect(Number(await c.cli(c.ports[0]!, '-c', 'xlen', redisKeys.events()))).toBeGreaterThan(0);
    const sizes = await Promise.all(c.ports.map(async (p) => Number(await c.cli(p, 'dbsize'))));
    expect(sizes.filter((n) => n > 0).length, `keys per primary ${sizes.join(', ')}`).toBeGreaterThan(1);
    console.log(`redis cluster (flows): keys per primary ${sizes.join(', ')}`);
  });
});
