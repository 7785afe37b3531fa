// The production shape: coord, supervisor and runner each in its own process (`writ coord`, `writ supervisor`,
// `writ runner`), talking HTTP and Redis; a signed job runs end to end, and SIGTERM stops each cleanly.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, runCli, startEmbeddedRedis, type EmbeddedRedis } from '@writ/cli';
import {
  PAYLOAD_TYPES,
  buildJobPayload,
  encodeEnvelope,
  encodeJobPayload,
  encodePrivateKeyFile,
  encodePublicKeyFile,
  generateKeyPair,
  signEnvelope,
} from '@writ/protocol';

const BIN = path.resolve(import.meta.dirname, '../bin/writ.mjs');
let dir: string;
let redis: EmbeddedRedis;
const procs: ChildProcess[] = [];
const admin = generateKeyPair();
const token = 'test-api-token-' + Math.random().toString(36).slice(2);
const supToken = 'test-sup-token-' + Math.random().toString(36).slice(2);
let coordUrl = '';
let coordArgs: string[] = [];
let coordProc: ChildProcess | undefined;

function start(args: string[]): Promise<{ child: ChildProcess; ready: Record<string, unknown> }> {
  const child = spawn(process.execPath, [BIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, WRIT_HOME: dir, WRIT_TOKEN: token, WRIT_SUPERVISOR_TOKEN: supToken, WRIT_LOG_LEVEL: 'warn' },
  });
  procs.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => {
      out += String(d);
      const line = out.split('\n').find((l) => l.includes('"ready":true'));
      if (line) resolve({ child, ready: JSON.parse(line) });
    });
    child.stderr!.on('data', (d) => (err += String(d)));
    child.once('exit', (code) => reject(new Error(`${args[0]} exited (${code}): ${err}`)));
  });
}
const exited = (c: ChildProcess) => new Promise<number | null>((r) => (c.exitCode !== null ? r(c.exitCode) : c.once('exit', (code) => r(code))));

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-procs-'));
  redis = await startEmbeddedRedis({ dataDir: path.join(dir, 'redis') });
  await writeFile(path.join(dir, 'admin.key'), encodePrivateKeyFile(admin), { mode: 0o600 });
  await writeFile(path.join(dir, 'admin.pub'), encodePublicKeyFile(admin.publicKey));
  const coordPort = await freePort();
  const supPort = await freePort();
  coordUrl = `http://127.0.0.1:${coordPort}`;
  const sup = await start([
    'supervisor',
    '--coord',
    coordUrl,
    '--redis',
    redis.url,
    '--listen',
    `127.0.0.1:${supPort}`,
    '--state',
    path.join(dir, 'sup'),
    '--admin-key',
    path.join(dir, 'admin.pub'),
  ]);
  coordArgs = [
    'coord',
    '--supervisor',
    `http://127.0.0.1:${supPort}`,
    '--supervisor-key',
    String(sup.ready.publicKeyFile),
    '--listen',
    `127.0.0.1:${coordPort}`,
    '--state',
    path.join(dir, 'coord'),
    '--admin-key',
    path.join(dir, 'admin.pub'),
  ];
  coordProc = (await start(coordArgs)).child;
}, 60_000);

afterAll(async () => {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  await redis?.stop();
  await rm(dir, { recursive: true, force: true });
});

const api = (method: string, route: string, body?: string) =>
  fetch(`${coordUrl}${route}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body } : {}),
  }).then(async (r) => ({ status: r.status, body: (await r.json()) as any }));

describe('separate processes', () => {
  it('publishes a key set, registers and accepts a runner, and runs a signed job across processes', async () => {
    // A new cluster's first key set, as docs/operations.md tells it: a draft of version 1 for the pinned admin,
    // signed with the admin's key and published.
    const cli = async (...args: string[]) => {
      const out: string[] = [];
      const code = await runCli(
        [...args, '--coord', coordUrl],
        { out: (l) => out.push(l), err: (l) => out.push(l) },
        { env: { ...process.env, WRIT_HOME: dir, WRIT_TOKEN: token }, now: () => Math.floor(Date.now() / 1000) },
      );
      return { code, out: out.join('\n') };
    };
    expect((await api('GET', '/v1/keyset')).status).toBe(404);
    const init = await cli('keyset', 'init', '--admin', path.join(dir, 'admin.pub'));
    expect(init.code).toBe(0);
    expect(init.out).toContain(`draft version 1 for cluster writ-dev written to ${path.join(dir, 'keyset.draft.json')}, admin ${admin.keyid}`);
    expect(await cli('keyset', 'publish', '--sign-with', path.join(dir, 'admin.key'))).toEqual({ code: 0, out: 'published key set version 1' });
    const v1 = (await api('GET', '/v1/keyset')).body;
    expect(v1.version).toBe(1);
    expect(v1.keySet.admins.keys.map((k: { keyid: string }) => k.keyid)).toEqual([admin.keyid]);
    // Once a key set is published, init refuses: the next version starts from it (propose).
    const again = await cli('keyset', 'init', '--admin', path.join(dir, 'admin.pub'));
    expect(again.code).not.toBe(0);
    expect(again.out).toContain('the coord has key set version 1 already: start the next version with `writ keyset propose`');
    const runner = await start([
      'runner',
      '--node',
      'proc-1',
      '--coord',
      coordUrl,
      '--redis',
      redis.url,
      '--admin-key',
      path.join(dir, 'admin.pub'),
      '--state',
      path.join(dir, 'r1'),
      '--heartbeat-ms',
      '500',
    ]);
    expect(runner.ready.newIdentity).toBe(true);
    for (let i = 0; i < 100 && (await api('GET', '/v1/nodes/proc-1')).body.state !== 'inspected'; i++) await new Promise((r) => setTimeout(r, 50));
    const out: string[] = [];
    const code = await runCli(
      ['nodes', 'accept', 'proc-1', '--coord', coordUrl],
      { out: (l) => out.push(l), err: (l) => out.push(l) },
      { env: { ...process.env, WRIT_TOKEN: token }, now: () => Math.floor(Date.now() / 1000) },
    );
    expect([code, out.join('')]).toEqual([0, 'node proc-1: accept → commissioned']);
    const job = buildJobPayload({
      source: 'export default async (a, ctx) => { ctx.log.info("across"); return (await ctx.sal.host.facts()).cpu.threads }',
      target: { node: 'proc-1' },
      caps: ['host.facts'],
      aud: 'writ-dev',
    });
    let res = { status: 0, body: {} as any };
    for (let i = 0; i < 100; i++) {
      res = await api('POST', '/v1/jobs', encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(job), [admin])));
      if (res.body.status === 'queued' || res.body.status === 'succeeded' || res.body.status === 'running') break;
      await new Promise((r) => setTimeout(r, 100)); // waits for the accepted node's next heartbeat to activate it
    }
    expect(res.status === 202 || res.status === 200).toBe(true);
    let view: any = {};
    for (let i = 0; i < 200 && !['succeeded', 'failed', 'refused'].includes(view.status); i++) {
      view = (await api('GET', `/v1/jobs/${job.id}`)).body;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(view).toMatchObject({ status: 'succeeded', node: 'proc-1', result: os.cpus().length });
  });

  it('a result reached while the coord is down is delivered when it is back, not lost', async () => {
    const job = buildJobPayload({
      source: 'export default async (a, ctx) => { await ctx.sal.time.sleep({ ms: 1500 }); return "finished while the coord was away" }',
      target: { node: 'proc-1' },
      caps: ['time.sleep'],
      aud: 'writ-dev',
    });
    expect((await api('POST', '/v1/jobs', encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(job), [admin])))).status).toBe(202);
    coordProc!.kill('SIGTERM');
    expect(await exited(coordProc!)).toBe(0);
    await new Promise((r) => setTimeout(r, 3000)); // the job finishes; the supervisor cannot deliver and keeps the events
    coordProc = (await start(coordArgs)).child;
    let view: any = {};
    for (let i = 0; i < 200 && view.status !== 'succeeded'; i++) {
      view = (await api('GET', `/v1/jobs/${job.id}`)).body;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(view).toMatchObject({ status: 'succeeded', result: 'finished while the coord was away' });
  }, 30_000);

  it('each service stops cleanly on SIGTERM', async () => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
    const codes = await Promise.all(procs.map(exited));
    expect(codes.every((c) => c === 0)).toBe(true);
  }, 40_000);
});
