// R7 (eviction part): a supervisor in production mode refuses a Redis that evicts keys; in development it
// starts and warns. The embedded Redis Writ starts is configured with noeviction.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedRedis, type EmbeddedRedis } from '@writ/cli';
import { b64url, generateKeyPair, redisAclSetUser } from '@writ/protocol';
import { Supervisor, checkRedisEviction } from '@writ/supervisor';

let dir: string;
let lru: EmbeddedRedis;
let safe: EmbeddedRedis;
const admin = generateKeyPair();
const base = (redisUrl: string, warnings: string[]) => ({
  id: 'sup-check',
  clusterId: 'c',
  redisUrl,
  signingKey: generateKeyPair(),
  admins: { threshold: 1, keys: [{ keyid: admin.keyid, publicKey: b64url(admin.publicKey) }] },
  sink: { deliver: async () => {} },
  logger: { info() {}, warn: (_o: object, m?: string) => void warnings.push(m ?? ''), error() {} },
});

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-redis-check-'));
  lru = await startEmbeddedRedis({ dataDir: path.join(dir, 'lru'), maxmemoryPolicy: 'allkeys-lru' });
  safe = await startEmbeddedRedis({ dataDir: path.join(dir, 'safe') });
});
afterAll(async () => {
  await lru?.stop();
  await safe?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('Redis checked at start (R7, eviction)', () => {
  it('refuses an evicting Redis in production mode with REDIS_MISCONFIGURED', async () => {
    await expect(Supervisor.start({ ...base(lru.url, []), production: true })).rejects.toMatchObject({
      code: 'REDIS_MISCONFIGURED',
      message: expect.stringContaining('allkeys-lru'),
    });
  });

  it('starts with a warning outside production mode, and silently on a noeviction Redis', async () => {
    const warnings: string[] = [];
    const dev = await Supervisor.start(base(lru.url, warnings));
    await dev.close();
    expect(warnings.some((w) => w.includes('maxmemory-policy allkeys-lru'))).toBe(true);
    const quiet: string[] = [];
    // Production also wants the supervisor's own ACL user (R7; tests/redis-acl.redis.test.ts covers that part).
    const root = new Redis(safe.url);
    const [cmd, ...args] = redisAclSetUser({ role: 'supervisor' }, 'a-supervisor-password-for-this-test');
    await root.call(cmd!, ...args);
    root.disconnect();
    const prod = await Supervisor.start({
      ...base(`redis://writ-supervisor:a-supervisor-password-for-this-test@127.0.0.1:${safe.port}`, quiet),
      production: true,
    });
    await prod.close();
    expect(quiet.filter((w) => w.includes('maxmemory-policy'))).toEqual([]);
  });

  it("reports the embedded Redis's policy as noeviction", async () => {
    const r = new Redis(safe.url);
    expect(await checkRedisEviction(r)).toEqual({ policy: 'noeviction', ok: true });
    r.disconnect();
  });
});
