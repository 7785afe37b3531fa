// REDIS_URL forms (plain, TLS, Sentinel) into ioredis options, and the refusals with their stable reasons.
import { describe, expect, it } from 'vitest';
import { checkRedisUrl, describeRedisTarget, newRedisClient, parseRedisUrl, redactRedisUrl, type RedisUrlProblem } from '../src/index.ts';

describe('parseRedisUrl', () => {
  it('reads a plain address with the default port, a database and an ACL user', () => {
    expect(parseRedisUrl('redis://127.0.0.1')).toEqual({ host: '127.0.0.1', port: 6379 });
    expect(parseRedisUrl('redis://writ-runner-n1:s3cr%40t%2Fx@redis.example:6380/2')).toEqual({
      host: 'redis.example',
      port: 6380,
      db: 2,
      username: 'writ-runner-n1',
      password: 's3cr@t/x',
    });
    expect(parseRedisUrl('redis://:only-a-password@h')).toEqual({ host: 'h', port: 6379, password: 'only-a-password' });
    expect(parseRedisUrl('redis://h:1?db=3')).toEqual({ host: 'h', port: 1, db: 3 });
    expect(parseRedisUrl('rediss://[::1]:6390')).toEqual({ host: '::1', port: 6390, tls: {} });
  });

  it('reads a Sentinel address: several sentinels, the master group, db and sentinel credentials', () => {
    expect(parseRedisUrl('redis+sentinel://u:p@10.0.0.1:26380,10.0.0.2,[fe80::1]:26381/mymaster?db=1&sentinelUsername=s&sentinelPassword=sp%26')).toEqual({
      sentinels: [
        { host: '10.0.0.1', port: 26380 },
        { host: '10.0.0.2', port: 26379 },
        { host: 'fe80::1', port: 26381 },
      ],
      name: 'mymaster',
      username: 'u',
      password: 'p',
      db: 1,
      sentinelUsername: 's',
      sentinelPassword: 'sp&',
    });
  });

  it('reads a Redis Cluster address: some of its nodes, no database', () => {
    expect(parseRedisUrl('redis+cluster://127.0.0.1:7000,127.0.0.1:7001')).toEqual({
      cluster: [
        { host: '127.0.0.1', port: 7000 },
        { host: '127.0.0.1', port: 7001 },
      ],
    });
    expect(parseRedisUrl('rediss+cluster://u:p%40@a,[::1]:7002')).toEqual({
      cluster: [
        { host: 'a', port: 6379 },
        { host: '::1', port: 7002 },
      ],
      username: 'u',
      password: 'p@',
      tls: {},
    });
    expect(describeRedisTarget(parseRedisUrl('redis+cluster://u:pw@a:1,b:2'))).toBe('redis cluster via a:1,b:2 as u');
  });

  it('builds a Cluster for the cluster form and a Redis for the others, with the options given', () => {
    class R {
      constructor(readonly o: Record<string, unknown>) {}
    }
    class C {
      constructor(
        readonly nodes: unknown,
        readonly o: Record<string, unknown>,
      ) {}
    }
    const plain = newRedisClient({ Redis: R, Cluster: C }, 'redis://h:1', { lazyConnect: true, maxRetriesPerRequest: null });
    expect(plain).toBeInstanceOf(R);
    expect((plain as R).o).toEqual({ host: 'h', port: 1, lazyConnect: true, maxRetriesPerRequest: null });
    const cluster = newRedisClient({ Redis: R, Cluster: C }, 'redis+cluster://u:p@a:1,b:2', {
      lazyConnect: true,
      maxRetriesPerRequest: null,
      retryStrategy: null,
    });
    expect(cluster).toBeInstanceOf(C);
    expect((cluster as unknown as C).nodes).toEqual([
      { host: 'a', port: 1 },
      { host: 'b', port: 2 },
    ]);
    expect((cluster as unknown as C).o).toEqual({
      redisOptions: { username: 'u', password: 'p', maxRetriesPerRequest: null },
      lazyConnect: true,
      clusterRetryStrategy: null,
      maxRetriesPerRequest: null,
    });
  });

  const refused: [string, RedisUrlProblem][] = [
    ['127.0.0.1:6379', 'syntax'],
    ['redis://h:1/0#frag', 'syntax'],
    ['http://h:1', 'scheme'],
    ['redis://', 'host'],
    ['redis://a:1,b:2', 'host'],
    ['redis://bad_host!:1', 'host'],
    ['redis://h:0', 'port'],
    ['redis://h:70000', 'port'],
    ['redis://h:x', 'port'],
    ['redis://h/abc', 'db'],
    ['redis://h/1?db=2', 'db'],
    ['redis+sentinel://h:26379', 'master'],
    ['redis+sentinel://h:26379/', 'master'],
    ['redis+sentinel://h:26379/my master', 'master'],
    ['redis+sentinel://h:26379/m?db=x', 'db'],
    ['redis://h?family=6', 'query'],
    ['redis+sentinel://h/m?db=1&db=2', 'query'],
    ['redis://u:%E0%A4%A@h', 'credentials'],
    ['redis://:@h', 'credentials'],
    ['redis+cluster://a:1,b:2/0', 'db'],
    ['redis+cluster://a:1?db=1', 'query'],
    ['redis+cluster://a:1,b:x', 'port'],
  ];
  it.each(refused)('refuses %s with REDIS_URL_INVALID (%s)', (url, reason) => {
    expect(() => parseRedisUrl(url, '--redis')).toThrow(
      expect.objectContaining({ code: 'REDIS_URL_INVALID', details: { reason }, message: expect.stringMatching(/^--redis /) }),
    );
  });

  it('never repeats a password in a refusal', () => {
    let message = '';
    try {
      parseRedisUrl('redis://u:hunter2hunter2@h:99999');
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toContain('redis://u:***@h:99999');
    expect(message).not.toContain('hunter2');
    expect(redactRedisUrl('redis+sentinel://a:b@h/m?sentinelPassword=zz&db=1')).toBe('redis+sentinel://a:***@h/m?sentinelPassword=***&db=1');
  });

  it('is refused as CONFIG_INVALID, with the same reason, where a service reads its config', () => {
    expect(checkRedisUrl('redis+sentinel://a,b/m', '--redis')).toBe('redis+sentinel://a,b/m');
    expect(() => checkRedisUrl('redis://h:0', 'REDIS_URL')).toThrow(
      expect.objectContaining({ code: 'CONFIG_INVALID', details: { reason: 'port' }, message: expect.stringMatching(/^REDIS_URL redis:\/\/h:0: /) }),
    );
  });

  it('describes a target without credentials', () => {
    expect(describeRedisTarget(parseRedisUrl('redis://u:pw@h:1/2'))).toBe('redis://h:1/2 as u');
    expect(describeRedisTarget(parseRedisUrl('redis+sentinel://a:1,[::1]:2/m'))).toBe('sentinel master m via a:1,[::1]:2');
  });
});
