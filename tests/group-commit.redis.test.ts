// Group commit at the coord (R1 still holds): concurrent submissions are recorded together, each client is
// answered only after its row committed, a batch answers envelope by envelope, and a supervisor report whose
// transaction fails is not acknowledged (its entries are delivered again and land). Real Redis, PGlite and
// PostgreSQL; the kill test runs `writ coord` as its own process.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, runCli } from '@writ/cli';
import {
  PAYLOAD_TYPES,
  bootstrapKeySet,
  b64url,
  buildJobPayload,
  encodeEnvelope,
  encodeJobPayload,
  encodeKeySet,
  encodePublicKeyFile,
  generateKeyPair,
  parseEnvelope,
  signEnvelope,
} from '@writ/protocol';
import { startTestPostgres } from './helpers/postgres.ts';
import { NOOP, startTestStack, type TestStack } from './helpers/stack.ts';

interface PgClient {
  connect(): Promise<void>;
  query(sql: string, params?: unknown[]): Promise<{ rows: any[] }>;
  end(): Promise<void>;
}
const { Client } = createRequire(import.meta.url)('pg') as { Client: new (cfg: { connectionString: string }) => PgClient };

const postgres = await startTestPostgres();
if (!postgres.ok) console.warn(`[group commit] PostgreSQL cases skipped: ${postgres.reason}`);
afterAll(async () => {
  if (postgres.ok) await postgres.pg.stop();
});

describe('group commit on PGlite', () => {
  let s: TestStack;
  beforeAll(async () => {
    s = await startTestStack();
  }, 60_000);
  afterAll(async () => {
    await s?.close();
  });

  const groups = async () => Number(/writ_admission_groups_total (\d+)/.exec((await s.get('/metrics')).body)![1]);

  it('200 concurrent submits: 200 rows, each answered 202, every job runs', async () => {
    const signed = Array.from({ length: 200 }, () => s.sign(NOOP));
    const answers = await Promise.all(signed.map((j) => s.post(j.envelope)));
    expect(answers.map((a) => a.status)).toEqual(signed.map(() => 202));
    expect(answers.map((a) => a.body.id)).toEqual(signed.map((j) => j.id));
    for (const j of signed) expect(await s.ledger.getJob(j.id), j.id).not.toBeNull();
    for (const j of signed) expect((await s.waitFor(j.id, ['succeeded', 'failed', 'refused'], 60_000)).status).toBe('succeeded');
    expect((await s.ledger.verifyAudit()).ok).toBe(true);
  }, 120_000);

  it('a batch of 200 envelopes is recorded in one transaction', async () => {
    const before = await groups();
    const signed = Array.from({ length: 200 }, () => s.sign(NOOP));
    const res = await fetch(`${s.url}/v1/jobs:batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}` },
      body: `{"envelopes":[${signed.map((j) => j.envelope).join(',')}]}`,
    });
    const { results } = (await res.json()) as { results: { id: string; status?: string }[] };
    expect(results.map((r) => [r.id, r.status])).toEqual(signed.map((j) => [j.id, 'queued']));
    expect((await groups()) - before).toBe(1);
    for (const j of signed) expect((await s.waitFor(j.id, ['succeeded', 'failed', 'refused'], 60_000)).status).toBe('succeeded');
  }, 120_000);

  it('POST /v1/jobs:batch answers each envelope in order: accepted, refused with its code, replayed', async () => {
    const stranger = generateKeyPair();
    const ok1 = s.sign(NOOP);
    const ok2 = s.sign(NOOP);
    const env = parseEnvelope(ok2.envelope);
    const tampered = encodeEnvelope({
      ...env,
      signatures: [{ keyid: env.signatures[0]!.keyid, sig: env.signatures[0]!.sig.replace(/^./, (c) => (c === 'A' ? 'B' : 'A')) }],
    });
    const denied = s.sign(NOOP, { caps: ['host.facts'], keys: [stranger] });
    const ungranted = s.sign('export default async () => 1', { caps: ['time.sleep'] });
    await s.authorize(stranger, ['host.facts'], ['node-b']); // in scope only for another node
    const body = `{"envelopes":[${[ok1.envelope, tampered, denied.envelope, ok1.envelope, ok2.envelope, ungranted.envelope].join(',')}]}`;
    const res = await fetch(`${s.url}/v1/jobs:batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}` },
      body,
    });
    expect(res.status).toBe(200);
    const { results } = (await res.json()) as { results: any[] };
    expect(results).toHaveLength(6);
    expect(results[0]).toMatchObject({ id: ok1.id, replayed: false, status: 'queued', node: 'node-a' });
    expect(results[1]).toMatchObject({ id: null, error: { code: 'SIGNATURE_INVALID' } });
    expect(results[2]).toMatchObject({ id: denied.id, error: { code: 'TARGET_OUT_OF_SCOPE' } });
    expect(results[3]).toMatchObject({ id: ok1.id, replayed: true });
    expect(results[4]).toMatchObject({ id: ok2.id, replayed: false });
    expect(results[5].status ?? results[5].error.code).toBe('queued'); // the admin holds every capability
    expect(await s.ledger.getJob(denied.id)).toMatchObject({ status: 'refused', errorCode: 'TARGET_OUT_OF_SCOPE' });
    expect(await s.ledger.getJob(ok2.id)).not.toBeNull();
    await s.waitFor(ok1.id);
    // Bad requests as a whole: too many envelopes, unknown fields.
    const tooMany = `{"envelopes":[${Array.from({ length: 501 }, () => ok1.envelope).join(',')}]}`;
    const rTooMany = await fetch(`${s.url}/v1/jobs:batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}` },
      body: tooMany,
    });
    expect(rTooMany.status).toBe(400);
    const rHuge = await fetch(`${s.url}/v1/jobs:batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}` },
      body: `{"envelopes":["${'x'.repeat(33 * 1024 * 1024)}"]}`,
    });
    expect([rHuge.status, ((await rHuge.json()) as any).error.code]).toEqual([413, 'BODY_TOO_LARGE']);
    const rUnknown = await fetch(`${s.url}/v1/jobs:batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}` },
      body: `{"envelopes":[${ok1.envelope}],"x":1}`,
    });
    expect(((await rUnknown.json()) as any).error.code).toBe('UNKNOWN_FIELD');
  }, 60_000);

  it('writ submit --batch sends envelope files (one each, or one per line) and reports each one', async () => {
    const home = await mkdtemp(path.join(os.tmpdir(), 'writ-batch-'));
    try {
      const [a, b, c] = [s.sign('export default async () => "a"'), s.sign('export default async () => "b"'), s.sign('export default async () => "c"')];
      const bad = parseEnvelope(c.envelope);
      // A real signature, by another key, under the admin's key id.
      const other = signEnvelope(PAYLOAD_TYPES.job, Buffer.from(bad.payload, 'base64'), [generateKeyPair()]);
      const forged = encodeEnvelope({ ...bad, signatures: [{ keyid: bad.signatures[0]!.keyid, sig: other.signatures[0]!.sig }] });
      await writeFile(path.join(home, 'one.json'), JSON.stringify(JSON.parse(a.envelope), null, 2));
      await writeFile(path.join(home, 'lines.jsonl'), `${b.envelope}\n${forged}\n`);
      const out: string[] = [];
      const err: string[] = [];
      const io = { out: (l: string) => out.push(l), err: (l: string) => err.push(l) };
      const env = { ...process.env, WRIT_HOME: home, WRIT_COORD: s.url, WRIT_TOKEN: s.token };
      const code = await runCli(['submit', '--batch', path.join(home, 'one.json'), path.join(home, 'lines.jsonl'), '--wait'], io, {
        env,
        now: () => Math.floor(Date.now() / 1000),
      });
      expect(code).toBe(1); // one envelope was refused
      expect(out).toEqual(
        expect.arrayContaining([
          `job ${a.id} accepted: queued on node-a`,
          `job ${b.id} accepted: queued on node-a`,
          `job ${a.id} succeeded`,
          `job ${b.id} succeeded`,
        ]),
      );
      expect(err.join('\n')).toMatch(/lines\.jsonl:2: SIGNATURE_INVALID/);
      // Usage errors: --follow with --batch, a script instead of envelopes, a file that holds no envelope.
      await writeFile(path.join(home, 'junk.json'), '{"not":"an envelope"}');
      for (const args of [
        ['--batch', path.join(home, 'one.json'), '--follow'],
        ['--batch', 'x.js'],
        ['--batch', path.join(home, 'junk.json')],
      ]) {
        const e: string[] = [];
        expect(await runCli(['submit', ...args], { out: () => {}, err: (l) => e.push(l) }, { env, now: () => Math.floor(Date.now() / 1000) })).toBe(2);
        expect(e.join('\n')).toMatch(/USAGE/);
      }
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  }, 60_000);
});

describe.skipIf(!postgres.ok)('group commit on PostgreSQL', () => {
  it('a report whose transaction fails is not acknowledged; its events land once the ledger takes them again', async () => {
    if (!postgres.ok) return;
    const databaseUrl = await postgres.pg.freshDatabaseUrl();
    const s = await startTestStack({ databaseUrl });
    const db = new Client({ connectionString: databaseUrl });
    await db.connect();
    try {
      // A real write failure: every job event after admission's two (admitted, queued) is refused while the
      // constraint stands, so admission commits and every report fails.
      await db.query('ALTER TABLE job_events ADD CONSTRAINT writ_test_refuse CHECK (seq <= 2) NOT VALID');
      const { envelope, id } = s.sign('export default async () => "landed"');
      expect((await s.post(envelope)).status).toBe(202);
      // The runner ran it and reported; the coord could not record the report and did not acknowledge it.
      const { Redis } = await import('ioredis');
      const redis = new Redis(s.redisUrl, { maxRetriesPerRequest: null });
      try {
        const end = Date.now() + 20_000;
        for (;;) {
          const pending = (await redis.xpending('{writ}:events', 'supervisors')) as [number, ...unknown[]];
          if (Number(pending[0]) > 0) break;
          if (Date.now() > end) throw new Error('no unacknowledged report entries appeared');
          await new Promise((r) => setTimeout(r, 50));
        }
        expect((await s.ledger.getJob(id))?.status).toBe('queued');
        await db.query('ALTER TABLE job_events DROP CONSTRAINT writ_test_refuse');
        expect(await s.waitFor(id, ['succeeded', 'failed'], 30_000)).toMatchObject({ status: 'succeeded', result: 'landed' });
        expect((await s.ledger.listAttempts(id)).map((a) => a.outcome)).toEqual(['succeeded']);
      } finally {
        redis.disconnect();
      }
    } finally {
      await db.end();
      await s.close();
    }
  }, 90_000);

  it('SIGKILL of the coord between the INSERT and the COMMIT: no client got a 202, and no row survived', async () => {
    if (!postgres.ok) return;
    const databaseUrl = await postgres.pg.freshDatabaseUrl();
    const dir = await mkdtemp(path.join(os.tmpdir(), 'writ-gc-'));
    const admin = generateKeyPair();
    const supervisorKey = generateKeyPair();
    await writeFile(path.join(dir, 'admin.pub'), encodePublicKeyFile(admin.publicKey));
    await writeFile(path.join(dir, 'sup.pub'), encodePublicKeyFile(supervisorKey.publicKey));
    const port = await freePort();
    const token = `t-${Math.random().toString(36).slice(2)}`;
    const url = `http://127.0.0.1:${port}`;
    let coord: ChildProcess | undefined;
    const db = new Client({ connectionString: databaseUrl });
    // pg_stat_activity is a snapshot per transaction: watch from a connection of its own, not the lock holder's.
    const watcher = new Client({ connectionString: databaseUrl });
    try {
      // A coord alone: with no node registered, admissions are recorded as waiting and nothing needs a supervisor.
      coord = spawn(
        process.execPath,
        [
          path.resolve(import.meta.dirname, '../bin/writ.mjs'),
          'coord',
          '--supervisor',
          'http://127.0.0.1:9',
          '--supervisor-key',
          path.join(dir, 'sup.pub'),
          '--listen',
          `127.0.0.1:${port}`,
          '--state',
          dir,
          '--admin-key',
          path.join(dir, 'admin.pub'),
        ],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: { ...process.env, DATABASE_URL: databaseUrl, WRIT_TOKEN: token, WRIT_SUPERVISOR_TOKEN: 'x', WRIT_LOG_LEVEL: 'error', WRIT_HOME: dir },
        },
      );
      await new Promise<void>((resolve, reject) => {
        let out = '';
        coord!.stdout!.on('data', (d) => ((out += String(d)), out.includes('"ready":true') && resolve()));
        coord!.once('exit', (code) => reject(new Error(`coord exited (${code})`)));
      });
      const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}` };
      const ks = bootstrapKeySet({
        cluster: 'writ-dev',
        admin: { keyid: admin.keyid, publicKey: b64url(admin.publicKey) },
        nowS: Math.floor(Date.now() / 1000),
      });
      // The supervisor is unreachable, so the answer is 503, but the coord holds the set it verified and stored.
      await fetch(`${url}/v1/keyset`, { method: 'POST', headers, body: encodeEnvelope(signEnvelope(PAYLOAD_TYPES.keySet, encodeKeySet(ks), [admin])) });
      expect((await (await fetch(`${url}/v1/keyset`, { headers })).json()) as any).toMatchObject({ version: 1 });

      // Hold the audit chain's head: the coord's next admission group inserts its rows, then waits for this lock.
      await db.connect();
      await watcher.connect();
      const dbPid = (await db.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
      await db.query('BEGIN');
      await db.query('SELECT seq FROM audit_head WHERE id FOR UPDATE');
      const ids: string[] = [];
      const answers = Array.from({ length: 20 }, () => {
        const job = buildJobPayload({ source: NOOP, target: { node: 'nowhere-1' }, aud: 'writ-dev' });
        ids.push(job.id);
        return fetch(`${url}/v1/jobs`, { method: 'POST', headers, body: encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(job), [admin])) }).then(
          (r) => r.status,
          (e: Error) => `no answer: ${e.message}`,
        );
      });
      const end = Date.now() + 20_000;
      for (;;) {
        // The coord's transaction has inserted the jobs (their row locks are held) and waits on the head lock.
        const { rows } = await watcher.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE '%audit_head%'");
        if (rows[0].n > 0) break;
        if (Date.now() > end)
          throw new Error(
            `the coord never reached the audit lock; activity: ${JSON.stringify((await watcher.query('SELECT state, wait_event_type, wait_event, left(query, 120) AS q FROM pg_stat_activity WHERE datname = current_database()')).rows)} answers: ${JSON.stringify(await Promise.race([Promise.all(answers), new Promise((r) => setTimeout(() => r('pending'), 100))]))}`,
          );
        await new Promise((r) => setTimeout(r, 20));
      }
      coord.kill('SIGKILL');
      const statuses = await Promise.all(answers);
      expect(statuses.filter((x) => x === 202)).toEqual([]);
      await db.query('ROLLBACK');
      // The dead coord's backend ends its transaction without a COMMIT once it can run again.
      const gone = Date.now() + 20_000;
      for (;;) {
        const { rows } = await watcher.query(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), $1) AND state <> 'idle'",
          [dbPid],
        );
        if (rows[0].n === 0) break;
        if (Date.now() > gone) throw new Error('the killed coord still has an active transaction');
        await new Promise((r) => setTimeout(r, 20));
      }
      const { rows } = await watcher.query('SELECT count(*)::int AS n FROM jobs WHERE id = ANY($1::text[])', [ids]);
      expect(rows[0].n).toBe(0);
    } finally {
      if (coord && coord.exitCode === null) coord.kill('SIGKILL');
      await db.end().catch(() => {});
      await watcher.end().catch(() => {});
      await rm(dir, { recursive: true, force: true });
    }
  }, 90_000);
});
