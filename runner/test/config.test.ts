// runnerConfig: flags and env in, defaulted and frozen out; every value it can refuse is refused with
// CONFIG_INVALID (USAGE for what is missing, as `writ runner` always said) naming the flag or env var.
import { describe, expect, it } from 'vitest';
import { runnerConfig, type RunnerGiven } from '../src/config.ts';

const ADMIN = { keyid: 'ed25519:' + 'A'.repeat(43), publicKey: 'B'.repeat(43) };
const HOME = '/home/op/.writ';
const GIVEN: RunnerGiven = { home: HOME, node: 'node-7', redis: 'redis://127.0.0.1:6379', coord: 'http://127.0.0.1:7340', adminKeys: [ADMIN] };

function refusal(given: Partial<RunnerGiven>, env: Record<string, string | undefined> = {}): { code: string; message: string } {
  try {
    runnerConfig({ ...GIVEN, ...given }, env);
  } catch (e) {
    return { code: (e as { code: string }).code, message: (e as Error).message };
  }
  throw new Error('expected the config to be refused');
}

describe('runnerConfig', () => {
  it('applies the defaults, leaving the job-loop timings to the Runner that owns them', () => {
    expect(runnerConfig(GIVEN, {})).toEqual({
      nodeId: 'node-7',
      labels: {},
      redisUrl: 'redis://127.0.0.1:6379',
      redisCredentials: null,
      coordUrl: 'http://127.0.0.1:7340',
      clusterId: 'writ-dev',
      stateDir: `${HOME}/runner-node-7`,
      admins: { threshold: 1, keys: [ADMIN] },
      concurrency: undefined,
      heartbeatMs: undefined,
      lockDurationMs: undefined,
      stalledIntervalMs: undefined,
      logLevel: 'info',
      shutdownGraceMs: 30_000,
      production: false,
    });
  });

  it('reads labels, numbers in ms, and Redis, coord and cluster from the env when no flag gives them', () => {
    const c = runnerConfig(
      { ...GIVEN, redis: undefined, coord: undefined, labels: ['rack=r1', 'env='], concurrency: '4', heartbeatMs: '500', lockMs: '2000', stalledMs: '1000' },
      { REDIS_URL: 'rediss://r', WRIT_COORD: 'https://c', WRIT_CLUSTER: 'prod' },
    );
    expect(c).toMatchObject({
      labels: { rack: 'r1', env: '' },
      concurrency: 4,
      heartbeatMs: 500,
      lockDurationMs: 2000,
      stalledIntervalMs: 1000,
      redisUrl: 'rediss://r',
      coordUrl: 'https://c',
      clusterId: 'prod',
    });
  });

  it('is frozen all the way down', () => {
    const c = runnerConfig({ ...GIVEN, labels: ['rack=r1'] }, {});
    expect([c, c.labels, c.admins, c.admins.keys, c.admins.keys[0]].map(Object.isFrozen)).toEqual([true, true, true, true, true]);
  });

  it("without --redis or REDIS_URL, learns its pool's Redis at registration, with --redis-credentials added", () => {
    expect(runnerConfig({ ...GIVEN, redis: undefined }, {})).toMatchObject({ redisUrl: null, redisCredentials: null });
    expect(runnerConfig({ ...GIVEN, redis: undefined, redisCredentials: 'writ-runner-n1:s3cr3t\n' }, {}).redisCredentials).toEqual({
      username: 'writ-runner-n1',
      password: 's3cr3t',
    });
    expect(refusal({ redis: undefined, redisCredentials: 'no-colon' })).toEqual({
      code: 'CONFIG_INVALID',
      message: '--redis-credentials: the file must hold one line USER:PASSWORD (writ redis acl --role runner --node ID prints both)',
    });
    expect(refusal({ redisCredentials: 'u:p' }).code).toBe('CONFIG_INVALID'); // with --redis, credentials go in its URL
  });

  it('refuses a missing node, coord or admin key as a usage error, as the CLI always has', () => {
    expect(refusal({ node: undefined })).toEqual({ code: 'USAGE', message: '--node ID is required' });
    expect(refusal({ coord: undefined })).toEqual({ code: 'USAGE', message: '--coord URL (or WRIT_COORD) is required: the node registers there' });
    expect(refusal({ adminKeys: [] }).code).toBe('USAGE');
  });

  it.each([
    ['a --node id registration would refuse', { node: 'Node_7' }, {}, /^--node Node_7: /],
    [
      '--redis that is not redis://',
      { redis: 'http://r' },
      {},
      /^--redis .*expected a redis:, rediss:, redis\+sentinel:, redis\+cluster: or rediss\+cluster: URL/,
    ],
    ['REDIS_URL without a scheme', { redis: undefined }, { REDIS_URL: '127.0.0.1:6379' }, /^REDIS_URL 127.0.0.1:6379: not a URL/],
    ['--coord that is not http(s)://', { coord: 'ftp://c' }, {}, /^--coord .*http: or https: URL/],
    ['WRIT_COORD without a scheme', { coord: undefined }, { WRIT_COORD: '10.0.0.1:7340' }, /^WRIT_COORD 10.0.0.1:7340: not a URL/],
    ['a --label without =', { labels: ['rack'] }, {}, /^--label rack: expected key=value$/],
    ['a --label key registration would refuse', { labels: ['Rack=r1'] }, {}, /^--label Rack=r1: the key must match/],
    ['a --label value longer than 63', { labels: ['rack=' + 'r'.repeat(64)] }, {}, /^--label rack=r+: the value must be at most 63/],
    ['--admin-threshold above the number of keys', { adminThreshold: '2' }, {}, /^--admin-threshold must be 1 to 1$/],
    ['--concurrency of 0', { concurrency: '0' }, {}, /^--concurrency must be a positive whole number$/],
    ['--heartbeat-ms that is not a number', { heartbeatMs: '1s' }, {}, /^--heartbeat-ms must be a positive whole number$/],
    ['--lock-ms that is not whole', { lockMs: '1.5' }, {}, /^--lock-ms must be a positive whole number$/],
    ['--stalled-ms below 0', { stalledMs: '-1' }, {}, /^--stalled-ms must be a positive whole number$/],
    ['an empty WRIT_CLUSTER', {}, { WRIT_CLUSTER: '' }, /^WRIT_CLUSTER /],
    ['an unknown WRIT_LOG_LEVEL', {}, { WRIT_LOG_LEVEL: 'chatty' }, /^WRIT_LOG_LEVEL chatty/],
    ['a shutdown grace that is not positive', { shutdownGraceMs: -5 }, {}, /^shutdownGraceMs -5/],
  ] as const)('refuses %s with CONFIG_INVALID naming it', (_what, given, env, message) => {
    const r = refusal(given, env);
    expect(r.code).toBe('CONFIG_INVALID');
    expect(r.message).toMatch(message);
  });
});
