// When REDIS_URL is unset, Writ starts its own redis-server child: data under the state dir, a free
// loopback port, append-only file on, eviction off (Redis is a dispatch cache but must not drop jobs).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { WritError } from '@writ/protocol';

export interface EmbeddedRedis {
  url: string;
  port: number;
  dataDir: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.setTimeout(500);
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      resolve(d.toString().startsWith('+PONG'));
      s.destroy();
    });
    s.on('error', () => resolve(false));
    s.on('timeout', () => {
      resolve(false);
      s.destroy();
    });
  });
}

export async function startEmbeddedRedis(opts: {
  dataDir: string;
  port?: number;
  appendOnly?: boolean;
  binary?: string;
  /** Tests only: Writ itself always wants noeviction. */ maxmemoryPolicy?: string;
}): Promise<EmbeddedRedis> {
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  const port = opts.port ?? (await freePort());
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    path.resolve(opts.dataDir),
    '--appendonly',
    opts.appendOnly === false ? 'no' : 'yes',
    '--appendfsync',
    'everysec',
    '--save',
    '',
    '--maxmemory-policy',
    opts.maxmemoryPolicy ?? 'noeviction',
    '--protected-mode',
    'yes',
    '--daemonize',
    'no',
    '--loglevel',
    'warning',
  ];
  const bin = opts.binary ?? 'redis-server';
  const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d) => (stderr = (stderr + String(d)).slice(-2000)));
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const deadline = Date.now() + 10_000;
  for (;;) {
    const failed = await Promise.race([spawnError, new Promise<null>((r) => setTimeout(() => r(null), 50))]);
    if (failed) {
      const missing = (failed as NodeJS.ErrnoException).code === 'ENOENT';
      throw new WritError(
        missing ? 'TOOL_MISSING' : 'REDIS_UNAVAILABLE',
        missing ? `${bin} is not installed: apt-get install redis-server, or set REDIS_URL` : `redis-server failed to start: ${failed.message}`,
      );
    }
    if (child.exitCode !== null) throw new WritError('REDIS_UNAVAILABLE', `redis-server exited with ${child.exitCode}: ${stderr.trim()}`);
    if (await ping(port)) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new WritError('REDIS_UNAVAILABLE', `redis-server did not answer on port ${port} within 10 s: ${stderr.trim()}`);
    }
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    dataDir: opts.dataDir,
    process: child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}
