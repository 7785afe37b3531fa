// Ledger storage faults with every service in its own process (`writ coord|supervisor|runner`), real Redis
// and PGlite on real file systems (root). A full ledger disk: the coord answers 503 LEDGER_UNAVAILABLE, its
// readiness drops, nothing it could not commit is acknowledged, and once space is back every event lands and
// the job completes. A disk that turns read-only, or vanishes: the coord exits non-zero within 10 s with
// LEDGER_UNAVAILABLE and the folder, and keeps refusing to start until the disk is fixed (history intact). A
// damaged ledger: LEDGER_CORRUPT, naming the folder and what to do, at start and when a page is read.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedRedis, type EmbeddedRedis } from '@writ/cli';
import { openLedger } from '@writ/coord';
import {
  PAYLOAD_TYPES,
  b64url,
  bootstrapKeySet,
  buildJobPayload,
  encodeEnvelope,
  encodeJobPayload,
  encodeKeySet,
  encodePublicKeyFile,
  generateKeyPair,
  redisKeys,
  signEnvelope,
} from '@writ/protocol';
import { fillDisk, freeDisk, mountExt4, mountSupport, mountTmpfs, unmountAll } from './helpers/mounts.ts';
import { freePort, killAllWrit, processCluster, runWrit, startWrit, until, type ProcessCluster, type WritProcess } from './helpers/processes.ts';

const support = mountSupport();
if (!support.ok) console.warn(`[ledger faults] skipped: ${support.reason}`);
const dir = mkdtempSync(path.join(os.tmpdir(), 'writ-ledger-procs-'));
afterAll(() => {
  killAllWrit();
  unmountAll();
  rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!support.ok)('a full ledger disk, then freed (coord, supervisor and runner processes)', () => {
  let redis: EmbeddedRedis;
  let r: Redis;
  let c: ProcessCluster;
  let runner: WritProcess;
  let supervisor: WritProcess;
  let ledgerDir: string;
  beforeAll(async () => {
    const home = path.join(dir, 'full');
    redis = await startEmbeddedRedis({ dataDir: path.join(dir, 'full-redis') });
    r = new Redis(redis.url, { maxRetriesPerRequest: null });
    mkdirSync(home, { recursive: true });
    c = await processCluster(home, redis.url);
    // Room for the ledger (~40 MiB) and a new 16 MiB WAL segment once the filler is gone.
    ledgerDir = mountTmpfs(path.join(home, 'coord', 'ledger'), 96).dir;
    supervisor = await c.startSupervisor();
    await c.startCoord();
    await c.publishKeySet();
    // Heartbeats every 2 s: the node stays reachable (3 intervals) while the runner is paused below.
    runner = await c.startRunner('full-1', ['--heartbeat-ms', '2000']);
    await c.acceptNode('full-1');
  }, 180_000);
  afterAll(async () => {
    r?.disconnect();
    await redis?.stop();
  });

  it('answers 503 LEDGER_UNAVAILABLE and drops readiness, acknowledges no report it could not commit, and once space is back every event lands and the job succeeds', async () => {
    const LINES = 150;
    const pad = 'the quick brown fox jumps over the lazy dog '.repeat(8);
    const job = c.sign(
      `export default async (a, ctx) => { for (let i = 0; i < ${LINES}; i++) ctx.log.info('line ' + i + ' ${pad}'); return 'landed' }`,
      'full-1',
    );
    // The runner is paused, so the job is recorded and queued while there is space, and runs after the disk filled.
    runner.child.kill('SIGSTOP');
    const admitted = await c.api('POST', '/v1/jobs', job.envelope);
    expect([admitted.status, admitted.body.status]).toEqual([202, 'queued']);
    const filler = fillDisk(ledgerDir);
    runner.child.kill('SIGCONT');

    // Its report (150 log lines need new pages) cannot be committed: the coord refuses it with 503, the supervisor
    // keeps the entries unacknowledged, and readiness is down.
    await until(
      'the coord to refuse a report',
      async () =>
        supervisor
          .stderr()
          .split('\n')
          .some((l) => l.includes('forwarding runner events failed') && l.includes('LEDGER_UNAVAILABLE'))
          ? true
          : undefined,
      90_000,
    );
    const pending = (await r.xpending(redisKeys.events(), redisKeys.eventsGroup())) as [number, ...unknown[]];
    expect(Number(pending[0])).toBeGreaterThan(0);
    expect((await c.api('GET', `/v1/jobs/${job.id}`)).body.status).not.toBe('succeeded');
    const ready = await fetch(`${c.coordUrl}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({
      ok: false,
      ledger: false,
      ledgerError: { code: 'LEDGER_UNAVAILABLE', retryable: true, details: { fault: 'disk-full' } },
    });
    // A new job needs new pages too (its script is large and does not compress): refused with 503, not recorded.
    const bulky = c.sign(`// ${randomBytes(60 * 1024).toString('hex')}\nexport default async () => 1`, 'full-1');
    const refused = await c.api('POST', '/v1/jobs', bulky.envelope);
    expect([refused.status, refused.body.error?.code, refused.body.error?.retryable]).toEqual([503, 'LEDGER_UNAVAILABLE', true]);

    const t0 = Date.now();
    freeDisk(filler);
    const done = await c.waitForJob(job.id, ['succeeded', 'failed'], 120_000);
    console.log(`[ledger faults] the job completed ${Date.now() - t0} ms after space came back`);
    expect(done).toMatchObject({ status: 'succeeded', result: 'landed' });
    expect(done.attemptHistory.map((a: any) => a.outcome)).toEqual(['succeeded']);
    // Every log line landed, once.
    const stream = await fetch(`${c.coordUrl}/v1/jobs/${job.id}/events`, { headers: { authorization: `Bearer ${c.token}` } }).then((res) => res.text());
    const logs = [...stream.matchAll(/^event: log\ndata: (.*)$/gm)].map((m) => JSON.parse(m[1]!).message as string);
    expect(logs).toHaveLength(LINES);
    expect(new Set(logs).size).toBe(LINES);
    await until(
      'the stream entries to be acknowledged',
      async () => (Number(((await r.xpending(redisKeys.events(), redisKeys.eventsGroup())) as [number])[0]) === 0 ? true : undefined),
      30_000,
    );
    await until('readiness to come back', async () => ((await fetch(`${c.coordUrl}/readyz`)).status === 200 ? true : undefined), 30_000);
    expect((await c.api('GET', '/v1/audit/verify')).body.ok).toBe(true);
  }, 300_000);
});

/** A coord alone (no supervisor is needed to record key sets and waiting jobs) on `state`. */
async function loneCoord(state: string) {
  const admin = generateKeyPair();
  const supervisorKey = generateKeyPair();
  mkdirSync(state, { recursive: true });
  await writeFile(path.join(state, 'admin.pub'), encodePublicKeyFile(admin.publicKey));
  await writeFile(path.join(state, 'sup.pub'), encodePublicKeyFile(supervisorKey.publicKey));
  const port = await freePort();
  const token = `t-${Math.random().toString(36).slice(2)}`;
  const url = `http://127.0.0.1:${port}`;
  const env = { WRIT_HOME: state, WRIT_TOKEN: token, WRIT_SUPERVISOR_TOKEN: 'x' };
  const args = [
    'coord',
    '--supervisor',
    'http://127.0.0.1:9',
    '--supervisor-key',
    path.join(state, 'sup.pub'),
    '--listen',
    `127.0.0.1:${port}`,
    '--state',
    state,
    '--admin-key',
    path.join(state, 'admin.pub'),
  ];
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}` };
  return {
    url,
    args,
    env,
    start: () => startWrit(args, env),
    run: () => runWrit(args, env),
    api: async (method: string, route: string, body?: string) => {
      const res = await fetch(`${url}${route}`, { method, headers, ...(body ? { body } : {}) });
      return { status: res.status, body: (await res.json()) as any };
    },
    /** Records key set v1 (answered 503: the supervisor is unreachable, but the coord stored what it verified) and a job that waits. */
    async record(): Promise<string> {
      const ks = bootstrapKeySet({
        cluster: 'writ-dev',
        admin: { keyid: admin.keyid, publicKey: b64url(admin.publicKey) },
        nowS: Math.floor(Date.now() / 1000),
      });
      await this.api('POST', '/v1/keyset', encodeEnvelope(signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(ks), [admin])));
      // A selector no node matches: the job is recorded and waits (a node id the coord never registered is refused, NODE_UNKNOWN).
      const job = buildJobPayload({ source: 'export default async () => 1', target: { selector: { rack: 'nowhere' } }, aud: 'writ-dev' });
      const res = await this.api('POST', '/v1/jobs', encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(job), [admin])));
      expect(res.status).toBe(202);
      return job.id;
    },
  };
}

describe.skipIf(!support.ok)('a ledger disk that turns read-only, or vanishes (writ coord)', () => {
  it('read-only: the coord exits non-zero within 10 s with LEDGER_UNAVAILABLE and the folder, will not start on that disk, and its history there is intact', async () => {
    const state = path.join(dir, 'ro');
    const image = path.join(dir, 'ro.img');
    const disk = mountExt4(path.join(state, 'ledger'), image, 160);
    const co = await loneCoord(state);
    const proc = await co.start();
    await co.record();
    // PGlite never fsyncs (docs/operations.md): what is still in the page cache when a disk fails is lost with
    // it. Flushed first, this history is what a failing disk must not cost.
    execFileSync('sync', ['-f', disk.dir]);
    const t0 = Date.now();
    disk.makeReadOnly();
    const exit = await proc.exited(t0);
    console.log(`[ledger faults] the coord exited ${exit.afterMs} ms after its disk turned read-only`);
    expect(exit.code).not.toBe(0);
    expect(exit.code).not.toBeNull();
    expect(exit.afterMs).toBeLessThan(10_000);
    expect(proc.stderr()).toMatch(/LEDGER_UNAVAILABLE/);
    expect(proc.stderr()).toContain(disk.dir);
    expect(proc.stderr()).toMatch(/read-only/);

    // Restarted on the disk as it is: it refuses at once, saying why (not "PGlite failed to initialize properly").
    const again = await co.run();
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(new RegExp(`LEDGER_UNAVAILABLE: the ledger folder ${disk.dir} is on a read-only file system`));

    // Nothing was lost or damaged by the fault: the ledger on the read-only disk checks sound, with the job,
    // the key set and their audit entries (writ ledger check copies a read-only folder without locking it).
    const check = await runWrit(['ledger', 'check', '--ledger', disk.dir, '--json'], {});
    expect(check.code).toBe(0);
    const report = JSON.parse(check.stdout) as { ok: boolean; checks: { name: string; detail: string }[] };
    const detail = (name: string) => report.checks.find((x) => x.name === name)?.detail;
    expect([report.ok, detail('table jobs'), detail('table keysets')]).toEqual([true, '1 rows read', '1 rows read']);
    expect(detail('audit chain')).toMatch(/^[1-9]\d* entries/);
  }, 300_000);

  it('vanished (unmounted under it): the coord exits non-zero within 10 s with LEDGER_UNAVAILABLE, saying the folder is gone', async () => {
    const state = path.join(dir, 'gone');
    const disk = mountTmpfs(path.join(state, 'ledger'), 96);
    const co = await loneCoord(state);
    const proc = await co.start();
    await co.record();
    const t0 = Date.now();
    disk.unmount();
    const exit = await proc.exited(t0);
    console.log(`[ledger faults] the coord exited ${exit.afterMs} ms after its disk vanished`);
    expect([exit.code === 0, exit.code === null, exit.afterMs < 10_000]).toEqual([false, false, true]);
    expect(proc.stderr()).toMatch(new RegExp(`LEDGER_UNAVAILABLE: the ledger folder ${disk.dir} is gone`));
  }, 300_000);
});

describe.skipIf(!support.ok)('a corrupted ledger (writ coord, writ ledger check)', () => {
  it('at start: LEDGER_CORRUPT naming the folder and what to do, and `writ ledger check` agrees', async () => {
    const state = path.join(dir, 'corrupt');
    const co = await loneCoord(state);
    const first = await co.start();
    await co.record();
    first.child.kill('SIGTERM');
    expect((await first.exited()).code).toBe(0);
    const ledger = path.join(state, 'ledger');
    // Scribble over the control file, as a torn write after a power loss might.
    writeFileSync(path.join(ledger, 'global', 'pg_control'), randomBytes(512), { flag: 'r+' });

    const res = await co.run();
    expect(res.code).toBe(1);
    expect(res.ms).toBeLessThan(60_000);
    expect(res.stderr).toContain(`LEDGER_CORRUPT: the ledger folder ${ledger} is corrupt`);
    expect(res.stderr).toContain('restore the newest backup');
    expect(res.stderr).toContain(`writ ledger check --ledger ${ledger}`);
    expect(res.stderr).not.toMatch(/failed to initialize properly|Aborted\(\)/);

    const check = await runWrit(['ledger', 'check', '--ledger', ledger, '--json'], {});
    expect(check.code).toBe(1);
    expect(JSON.parse(check.stdout)).toMatchObject({ ok: false, error: { code: 'LEDGER_CORRUPT', details: { dataDir: ledger } } });
  }, 300_000);

  it('a damaged page read while running: the request answers LEDGER_CORRUPT and the coord exits with it', async () => {
    const state = path.join(dir, 'corrupt-page');
    const co = await loneCoord(state);
    const first = await co.start();
    await co.record();
    first.child.kill('SIGTERM');
    expect((await first.exited()).code).toBe(0);
    const ledger = path.join(state, 'ledger');
    // Damage the jobs table's first page only, so that the ledger still opens and the damage is met at work.
    const jobsFile = await jobsRelation(ledger);
    writeFileSync(jobsFile, randomBytes(8192), { flag: 'r+' });

    const proc = await co.start();
    const res = await co.api('GET', '/v1/jobs');
    expect([res.status, res.body.error?.code]).toEqual([500, 'LEDGER_CORRUPT']);
    const exit = await proc.exited();
    expect(exit.code).toBe(1);
    expect(proc.stderr()).toContain(`LEDGER_CORRUPT: the ledger folder ${ledger} is corrupt (invalid page in block 0`);
  }, 300_000);
});

/** The file of the jobs table, asked of the ledger itself (the coord is stopped). */
async function jobsRelation(ledger: string): Promise<string> {
  const l = await openLedger({ dataDir: ledger });
  try {
    const [row] = await l.db.query<{ f: string }>("SELECT pg_relation_filepath('jobs') AS f");
    return path.join(ledger, row!.f);
  } finally {
    await l.close();
  }
}
