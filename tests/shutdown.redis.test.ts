// Every service stops within its shutdown grace on SIGTERM and on SIGINT although its Redis is gone (issue 9:
// a runner whose Redis was gone logged "stopping", then looped on ECONNREFUSED until SIGKILL). `writ`
// processes on one Redis: two runners and two supervisors (one of each per signal) and the coord; Redis is
// stopped under them, then each gets its signal. (The coord uses no Redis: its SIGTERM path is the one
// tests/restarts.redis.test.ts restarts it with.)
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedRedis, type EmbeddedRedis } from '@writ/cli';
import { freePort, killAllWrit, processCluster, type WritProcess } from './helpers/processes.ts';

let dir: string;
let redis: EmbeddedRedis;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-shutdown-'));
  redis = await startEmbeddedRedis({ dataDir: path.join(dir, 'redis') });
});
afterAll(async () => {
  killAllWrit();
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Resolves once `p` logged something matching `re` on stderr. */
async function logged(p: WritProcess, re: RegExp): Promise<void> {
  while (!re.test(p.stderr())) await new Promise((r) => setTimeout(r, 50));
}

const GRACE_MS = { runner: 30_000, supervisor: 10_000, coord: 10_000 }; // each service's default (its config.ts)

describe('with Redis gone', () => {
  it('runners, supervisors and the coord each exit by themselves within their shutdown grace, on SIGTERM and on SIGINT', async () => {
    const c = await processCluster(dir, redis.url);
    const supervisor = await c.startSupervisor();
    const [supervisor2, coord, runner, runner2] = await Promise.all([
      c.startSupervisor({ id: 'sup-2', port: await freePort() }),
      c.startCoord(),
      c.startRunner('sd-1'),
      c.startRunner('sd-2'),
    ]);
    const services: { name: keyof typeof GRACE_MS; p: WritProcess; sig: NodeJS.Signals }[] = [
      { name: 'runner', p: runner, sig: 'SIGTERM' },
      { name: 'runner', p: runner2, sig: 'SIGINT' },
      { name: 'supervisor', p: supervisor, sig: 'SIGTERM' },
      { name: 'supervisor', p: supervisor2, sig: 'SIGINT' },
      { name: 'coord', p: coord, sig: 'SIGINT' },
    ];
    await redis.stop();
    // Every Redis user noticed: runners keep trying to reach Redis (where the old runner got stuck).
    await Promise.all(services.filter((s) => s.name !== 'coord').map((s) => logged(s.p, /redis connection error|ECONNREFUSED/)));
    const t0 = Date.now();
    for (const s of services) s.p.child.kill(s.sig);
    const exits = await Promise.all(services.map(async (s) => ({ ...s, ...(await s.p.exited(t0)) })));
    console.log(`with Redis gone: ${exits.map((e) => `${e.name} (${e.sig}) exited after ${e.afterMs} ms`).join(', ')}`);
    for (const e of exits) {
      // By itself (not by the signal's default action), cleanly, within its grace, without the CLI's last resort.
      expect([e.name, e.sig, e.code, e.signal], e.p.stderr().slice(-3000)).toEqual([e.name, e.sig, 0, null]);
      expect(e.afterMs, `${e.name} on ${e.sig}`).toBeLessThan(GRACE_MS[e.name]);
      expect(e.p.stderr()).not.toMatch(/still running .* after the shutdown grace/);
    }
  }, 150_000);
});

describe('past the shutdown grace', () => {
  it("the CLI's last resort ends a service whose stop hangs, 1 s after its grace", async () => {
    // A stand-in service that never finishes stopping and holds the process, as a client reconnecting for
    // ever would; a regression in any service's stop would otherwise leave it running.
    const script = path.join(dir, 'hangs.mts');
    const services = path.resolve(import.meta.dirname, '../cli/src/commands/services.ts');
    // 'ready' goes out from inside the run, once the signal handlers are in place (as a service's ready line).
    await writeFile(
      script,
      `import { runUntilProcessSignal } from ${JSON.stringify(services)};
setInterval(() => {}, 1000);
await runUntilProcessSignal(() => new Promise(() => process.stdout.write('ready\\n')), { graceMs: 500 });
`,
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: path.resolve(import.meta.dirname, '..'), stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += String(d)));
    await new Promise<void>((r) => child.stdout.on('data', (d) => String(d).includes('ready') && r()));
    const t0 = Date.now();
    child.kill('SIGTERM');
    const [code, signal] = await new Promise<[number | null, string | null]>((r) => child.once('exit', (c, s) => r([c, s])));
    expect([code, signal]).toEqual([1, null]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1500);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(err).toContain('writ: still running 1000 ms after the shutdown grace (500 ms) since SIGTERM; exiting');
  }, 60_000);
});
