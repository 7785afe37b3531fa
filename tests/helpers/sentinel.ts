// A Redis Sentinel group on loopback for failover tests: one primary, one replica and three sentinels
// (Debian's redis-server and redis-sentinel), on free ports, with timings short enough for a test.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from '@writ/cli';

export const SENTINEL_MASTER = 'writmaster';

export interface SentinelGroup {
  /** REDIS_URL for Writ: redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/writmaster */
  url: string;
  primaryPort: number;
  replicaPort: number;
  sentinelPorts: number[];
  /** The port the sentinels name as primary now. */
  currentPrimaryPort(): Promise<number>;
  /** SIGKILLs the process serving `port` (primary or replica). */
  kill(port: number): Promise<void>;
  /** Resolves once the sentinels name another primary than `oldPort` and it answers as master. */
  waitForFailover(oldPort: number, timeoutMs?: number): Promise<number>;
  stop(): Promise<void>;
}

async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > end) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function ask<T>(port: number, fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, enableReadyCheck: false });
  r.on('error', () => {});
  try {
    await r.connect();
    return await fn(r);
  } finally {
    r.disconnect();
  }
}

export async function startSentinelGroup(dir: string, opts: { downAfterMs?: number } = {}): Promise<SentinelGroup> {
  const procs = new Map<number, ChildProcess>();
  const stderr = new Map<number, string>();
  const spawnLogged = (port: number, cmd: string, args: string[]) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (d) => stderr.set(port, ((stderr.get(port) ?? '') + String(d)).slice(-2000)));
    procs.set(port, child);
  };
  const primaryPort = await freePort();
  const replicaPort = await freePort();
  const sentinelPorts = [await freePort(), await freePort(), await freePort()];
  for (const [port, replicaOf] of [
    [primaryPort, null],
    [replicaPort, primaryPort],
  ] as const) {
    const data = path.join(dir, `redis-${port}`);
    await mkdir(data, { recursive: true });
    spawnLogged(port, 'redis-server', [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      data,
      '--appendonly',
      'yes',
      '--save',
      '',
      '--maxmemory-policy',
      'noeviction',
      '--loglevel',
      'warning',
      ...(replicaOf ? ['--replicaof', '127.0.0.1', String(replicaOf)] : []),
    ]);
  }
  await waitUntil(
    'the replica syncing with the primary',
    () => ask(replicaPort, async (r) => /master_link_status:up/.test(await r.info('replication'))),
    15_000,
  );
  const downAfterMs = opts.downAfterMs ?? 1000;
  for (const port of sentinelPorts) {
    const conf = path.join(dir, `sentinel-${port}.conf`);
    // Sentinel rewrites its own config file as it learns the group, so each gets a writable one.
    await writeFile(
      conf,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor ${SENTINEL_MASTER} 127.0.0.1 ${primaryPort} 2`,
        `sentinel down-after-milliseconds ${SENTINEL_MASTER} ${downAfterMs}`,
        `sentinel failover-timeout ${SENTINEL_MASTER} 10000`,
        `sentinel parallel-syncs ${SENTINEL_MASTER} 1`,
        '',
      ].join('\n'),
    );
    spawnLogged(port, 'redis-sentinel', [conf, '--loglevel', 'warning']);
  }
  // Failover needs every sentinel to know the replica and a majority of the others (they find each other
  // through the primary's hello channel).
  for (const port of sentinelPorts) {
    await waitUntil(
      `sentinel ${port} knowing the replica and the other sentinels`,
      () =>
        ask(port, async (r) => {
          const replicas = (await r.call('SENTINEL', 'REPLICAS', SENTINEL_MASTER)) as unknown[];
          const others = (await r.call('SENTINEL', 'SENTINELS', SENTINEL_MASTER)) as unknown[];
          return replicas.length === 1 && others.length === 2;
        }),
      20_000,
    );
  }
  const currentPrimaryPort = async () => {
    for (const port of sentinelPorts) {
      try {
        const addr = await ask(port, (r) => r.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', SENTINEL_MASTER) as Promise<[string, string]>);
        return Number(addr[1]);
      } catch {
        /* try the next sentinel */
      }
    }
    throw new Error('no sentinel answered');
  };
  return {
    url: `redis+sentinel://${sentinelPorts.map((p) => `127.0.0.1:${p}`).join(',')}/${SENTINEL_MASTER}`,
    primaryPort,
    replicaPort,
    sentinelPorts,
    currentPrimaryPort,
    async kill(port) {
      const child = procs.get(port);
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
    async waitForFailover(oldPort, timeoutMs = 30_000) {
      let port = oldPort;
      await waitUntil(
        'a sentinel failover',
        async () => {
          port = await currentPrimaryPort();
          return port !== oldPort && (await ask(port, async (r) => /role:master/.test(await r.info('replication'))));
        },
        timeoutMs,
      );
      return port;
    },
    async stop() {
      await Promise.all(
        [...procs.values()].map(async (c) => {
          if (c.exitCode !== null || c.signalCode !== null) return;
          const exited = new Promise((r) => c.once('exit', r));
          c.kill('SIGKILL');
          await exited;
        }),
      );
    },
  };
}
