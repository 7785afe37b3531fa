// supervisorConfig: flags and env in, defaulted and frozen out; every value it can refuse is refused with
// CONFIG_INVALID (USAGE for what is missing, as `writ supervisor` always said) naming the flag or env var.
import { describe, expect, it } from 'vitest';
import { supervisorConfig, type SupervisorGiven } from '../src/config.ts';

const ADMIN = { keyid: 'ed25519:' + 'A'.repeat(43), publicKey: 'B'.repeat(43) };
const HOME = '/home/op/.writ';
const GIVEN: SupervisorGiven = { home: HOME, redis: 'redis://127.0.0.1:6379', coord: 'http://127.0.0.1:7340', adminKeys: [ADMIN] };
const ENV = { WRIT_SUPERVISOR_TOKEN: 'sup-token' };

function refusal(given: Partial<SupervisorGiven>, env: Record<string, string | undefined> = {}): { code: string; message: string } {
  try {
    supervisorConfig({ ...GIVEN, ...given }, { ...ENV, ...env });
  } catch (e) {
    return { code: (e as { code: string }).code, message: (e as Error).message };
  }
  throw new Error('expected the config to be refused');
}

describe('supervisorConfig', () => {
  it('applies the defaults for everything not given', () => {
    expect(supervisorConfig(GIVEN, ENV)).toEqual({
      // Without --pool: no federation (the supervisor is the coord's start-up one) and the default claim idle time.
      federation: null,
      claimIdleMs: 30_000,
      id: 'sup-1',
      apiToken: 'sup-token',
      redisUrl: 'redis://127.0.0.1:6379',
      coordUrl: 'http://127.0.0.1:7340',
      clusterId: 'writ-dev',
      listen: { host: '127.0.0.1', port: 7341 },
      stateDir: `${HOME}/supervisor`,
      signingKeyFile: `${HOME}/supervisor/supervisor.key`,
      publicKeyFile: `${HOME}/supervisor/supervisor.key.pub`,
      admins: { threshold: 1, keys: [ADMIN] },
      production: false,
      logLevel: 'info',
      shutdownGraceMs: 10_000,
    });
  });

  it('takes Redis, coord, cluster and production from the env when no flag gives them, and a flag over the env', () => {
    const env = { ...ENV, REDIS_URL: 'redis://r:6379', WRIT_COORD: 'https://c', WRIT_CLUSTER: 'prod', WRIT_PRODUCTION: '1' };
    expect(supervisorConfig({ home: HOME, adminKeys: [ADMIN] }, env)).toMatchObject({
      redisUrl: 'redis://r:6379',
      coordUrl: 'https://c',
      clusterId: 'prod',
      production: true,
    });
    expect(supervisorConfig({ ...GIVEN, cluster: 'mine' }, env).clusterId).toBe('mine');
  });

  it('is frozen all the way down', () => {
    const c = supervisorConfig(GIVEN, ENV);
    expect([c, c.listen, c.admins, c.admins.keys, c.admins.keys[0]].map(Object.isFrozen)).toEqual([true, true, true, true, true]);
  });

  it('refuses a missing token, Redis, coord or admin key as a usage error, as the CLI always has', () => {
    expect(refusal({}, { WRIT_SUPERVISOR_TOKEN: undefined })).toEqual({ code: 'USAGE', message: 'WRIT_SUPERVISOR_TOKEN is required' });
    expect(refusal({ redis: undefined })).toEqual({ code: 'USAGE', message: '--redis URL (or REDIS_URL) is required' });
    expect(refusal({ coord: undefined })).toEqual({ code: 'USAGE', message: '--coord URL (or WRIT_COORD) is required' });
    expect(refusal({ adminKeys: [] }).code).toBe('USAGE');
  });

  it.each([
    ['--listen without a port', { listen: 'localhost' }, {}, /^--listen localhost: expected HOST:PORT$/],
    ['--listen with a port past 65535', { listen: '127.0.0.1:70000' }, {}, /^--listen .*0 to 65535/],
    ['--redis without a scheme', { redis: '127.0.0.1:6379' }, {}, /^--redis 127.0.0.1:6379: not a URL/],
    [
      '--redis that is not redis://',
      { redis: 'http://r:6379' },
      {},
      /^--redis .*expected a redis:, rediss:, redis\+sentinel:, redis\+cluster: or rediss\+cluster: URL/,
    ],
    ['REDIS_URL that is not redis://', { redis: undefined }, { REDIS_URL: 'http://r' }, /^REDIS_URL /],
    ['--coord that is not http(s)://', { coord: 'redis://c' }, {}, /^--coord .*http: or https: URL/],
    ['WRIT_COORD that is not a URL', { coord: undefined }, { WRIT_COORD: '10.0.0.1:7340' }, /^WRIT_COORD 10.0.0.1:7340: not a URL/],
    ['--admin-threshold above the number of keys', { adminThreshold: '2' }, {}, /^--admin-threshold must be 1 to 1$/],
    ['--admin-threshold that is not a whole number', { adminThreshold: '1.5' }, {}, /^--admin-threshold /],
    ['an empty --id', { id: '' }, {}, /^--id /],
    ['an empty --cluster', { cluster: '' }, {}, /^--cluster /],
    ['an empty WRIT_CLUSTER', {}, { WRIT_CLUSTER: '' }, /^WRIT_CLUSTER /],
    ['WRIT_PRODUCTION other than 0 or 1', {}, { WRIT_PRODUCTION: 'true' }, /^WRIT_PRODUCTION true/],
    ['an unknown WRIT_LOG_LEVEL', {}, { WRIT_LOG_LEVEL: 'loud' }, /^WRIT_LOG_LEVEL loud/],
    ['a shutdown grace that is not positive', { shutdownGraceMs: 0 }, {}, /^shutdownGraceMs 0/],
  ] as const)('refuses %s with CONFIG_INVALID naming it', (_what, given, env, message) => {
    const r = refusal(given, env);
    expect(r.code).toBe('CONFIG_INVALID');
    expect(r.message).toMatch(message);
  });

  it('tells runners a Redis address without credentials, for Sentinel and Cluster addresses too (several hosts)', () => {
    const runnerRedis = (redis: string) => supervisorConfig({ ...GIVEN, redis, pools: ['a'] }, ENV).federation?.runnerRedis;
    expect(runnerRedis('redis://u:p@127.0.0.1:6379/2')).toBe('redis://127.0.0.1:6379/2');
    expect(runnerRedis('redis+sentinel://u:p@h1:26379,h2:26380/mymaster?db=1&sentinelPassword=sp')).toBe('redis+sentinel://h1:26379,h2:26380/mymaster?db=1');
    expect(runnerRedis('redis+sentinel://h1:26379/m?sentinelPassword=sp&db=2')).toBe('redis+sentinel://h1:26379/m?db=2');
    expect(runnerRedis('redis+cluster://a:1,b:2')).toBe('redis+cluster://a:1,b:2');
  });
});
