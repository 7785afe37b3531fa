// The ledger's contract, run unchanged on PGlite (in memory and in a data folder) and on a real PostgreSQL
// server (T5 replay record, R1 unfinished-job listing, R8 hash-chained audit log).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256Hex } from '@writ/protocol';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { auditHash, decideTransition, Ledger, MIGRATIONS, migrate, openLedger, type NewJob } from '../src/ledger/index.ts';
import { startTestPostgres } from '../../tests/helpers/postgres.ts';

const RUN = randomBytes(2).toString('hex');
const tempDirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), `writ-ledger-${RUN}-`));
  tempDirs.push(d);
  return d;
}

const postgres = await startTestPostgres();
if (!postgres.ok) console.warn(`[ledger tests] PostgreSQL variant skipped: ${postgres.reason}`);
else console.info(`[ledger tests] PostgreSQL variant on ${postgres.pg.origin}`);

afterAll(async () => {
  if (postgres.ok) await postgres.pg.stop();
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

interface Opened {
  ledger: Ledger;
  /** Opens another ledger on the same storage (PGlite folders must be closed first; PostgreSQL allows both at once). */
  sibling?: () => Promise<Ledger>;
}

interface Engine {
  name: string;
  skip?: string;
  open(): Promise<Opened>;
}

const ENGINES: Engine[] = [
  { name: 'PGlite in memory', open: async () => ({ ledger: await openLedger() }) },
  {
    name: 'PGlite in a data folder',
    open: async () => {
      const dataDir = tempDir();
      return { ledger: await openLedger({ dataDir }), sibling: () => openLedger({ dataDir }) };
    },
  },
  {
    name: 'PostgreSQL',
    ...(postgres.ok ? {} : { skip: postgres.reason }),
    open: async () => {
      if (!postgres.ok) throw new Error(postgres.reason);
      const databaseUrl = await postgres.pg.freshDatabaseUrl();
      return { ledger: await openLedger({ databaseUrl }), sibling: () => openLedger({ databaseUrl }) };
    },
  },
];

function job(id: string, over: Partial<NewJob> = {}): NewJob {
  const envelope = `{"payloadType":"application/vnd.writ.job+json;v=1","payload":"${id}","signatures":[]}`;
  return {
    id,
    envelope,
    envelopeSha256: sha256Hex(envelope),
    signerKeyids: ['k1'],
    target: { node: 'n1' },
    caps: ['vm.create'],
    exp: new Date(Date.now() + 3_600_000),
    ...over,
  };
}

let seqNo = 0;
const uid = (p: string) => `${p}-${RUN}-${++seqNo}`;

describe('decideTransition (pure rules)', () => {
  it('never moves a terminal job and never moves back to admitted', () => {
    for (const from of ['succeeded', 'failed', 'refused'] as const) {
      for (const to of ['queued', 'running', 'succeeded', 'failed', 'refused'] as const) expect(decideTransition(from, 1, to, 2)).toBeNull();
    }
    expect(decideTransition('queued', 0, 'admitted')).toBeNull();
  });
  it('moves only on reports about the newest assigned attempt (attempt numbers are fencing tokens)', () => {
    expect(decideTransition('queued', 1, 'running', 1)).toEqual({ attempts: 1 });
    expect(decideTransition('running', 1, 'running', 1)).toBeNull(); // a duplicate
    expect(decideTransition('queued', 2, 'running', 1)).toBeNull(); // a replaced attempt starting late
    expect(decideTransition('queued', 1, 'running', 2)).toBeNull(); // an attempt the ledger never assigned
    expect(decideTransition('queued', 1, 'running')).toBeNull(); // running needs an attempt
    expect(decideTransition('running', 3, 'succeeded', 2)).toBeNull();
    expect(decideTransition('running', 2, 'failed', 3)).toBeNull();
    expect(decideTransition('running', 3, 'succeeded', 3)).toEqual({ attempts: 3 });
  });
  it('lets the coord end a job or give it a node, but no report move it back to queued', () => {
    expect(decideTransition('queued', 0, 'failed')).toEqual({ attempts: 0 });
    expect(decideTransition('running', 2, 'refused')).toEqual({ attempts: 2 });
    expect(decideTransition('admitted', 0, 'queued')).toEqual({ attempts: 0 });
    expect(decideTransition('running', 2, 'queued', 2)).toBeNull();
    expect(decideTransition('running', 2, 'queued')).toBeNull();
    expect(decideTransition('queued', 2, 'queued')).toBeNull();
  });
});

describe.each(ENGINES)('ledger on $name', (engine) => {
  let opened: Opened;
  let ledger: Ledger;

  beforeAll(async () => {
    if (engine.skip) return;
    opened = await engine.open();
    ledger = opened.ledger;
  });
  afterAll(async () => {
    await ledger?.close();
  });
  beforeEach((ctx) => {
    if (engine.skip) {
      console.warn(`[ledger tests] skipped on ${engine.name}: ${engine.skip}`);
      ctx.skip();
    }
  });

  describe('migrations', () => {
    it('brings a new database to the newest version, and a second run applies nothing', async () => {
      expect(await ledger.schemaVersion()).toBe(MIGRATIONS.at(-1)!.version);
      expect(await migrate(ledger.db)).toEqual([]);
      const rows = await ledger.db.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version');
      expect(rows.map((r) => Number(r.version))).toEqual(MIGRATIONS.map((m) => m.version));
    });

    it('refuses a database whose schema is newer than the code (CONFIG_INVALID)', async () => {
      await ledger.db.query("INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'from the future', 'x')");
      try {
        await expect(migrate(ledger.db)).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining('newer than this coord knows') });
      } finally {
        await ledger.db.query('DELETE FROM schema_migrations WHERE version = 9999');
      }
      expect(await migrate(ledger.db)).toEqual([]);
    });

    it('refuses when an applied migration differs from the code (CONFIG_INVALID)', async () => {
      const edited = MIGRATIONS.map((m, i) => (i === 0 ? { ...m, sql: `${m.sql}\n-- edited` } : m));
      await expect(migrate(ledger.db, edited)).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    });
  });

  describe('jobs', () => {
    it('records a new job with an admitted event, and reads it back field for field', async () => {
      const rec = job(uid('new'), { signerKeyids: ['k1', 'k2'], target: { selector: { rack: 'a' } }, caps: ['vm.create', 'net.bridge'], maxAttempts: 5 });
      const { job: row, created } = await ledger.insertJob(rec);
      expect(created).toBe(true);
      expect(row).toMatchObject({
        id: rec.id,
        envelope: rec.envelope,
        envelopeSha256: rec.envelopeSha256,
        signerKeyids: ['k1', 'k2'],
        target: { selector: { rack: 'a' } },
        caps: ['vm.create', 'net.bridge'],
        status: 'admitted',
        attempts: 0,
        maxAttempts: 5,
        node: null,
        result: null,
        finishedAt: null,
      });
      expect(row.exp.getTime()).toBe(rec.exp.getTime());
      expect(await ledger.getJob(rec.id)).toEqual(row);
      const events = await ledger.listJobEvents(rec.id, 0, 10);
      expect(events.map((e) => [e.seq, e.type, (e.data as { status: string }).status])).toEqual([[1, 'status', 'admitted']]);
    });

    it('answers a replay of the same envelope with the existing job and records nothing new (T5)', async () => {
      const rec = job(uid('replay'));
      const first = await ledger.insertJob(rec);
      await ledger.transitionJob(rec.id, 'queued', { node: 'n1' });
      const again = await ledger.insertJob(rec);
      expect(again.created).toBe(false);
      expect(again.job.status).toBe('queued');
      expect(again.job.createdAt).toEqual(first.job.createdAt);
      const [count] = await ledger.db.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs WHERE id = $1', [rec.id]);
      expect(count!.n).toBe(1);
      expect((await ledger.listJobEvents(rec.id, 0, 10)).length).toBe(2);
    });

    it('refuses the same id with a different envelope (JOB_ID_CONFLICT)', async () => {
      const rec = job(uid('conflict'));
      await ledger.insertJob(rec);
      const other = `${rec.envelope} `;
      await expect(ledger.insertJob({ ...rec, envelope: other, envelopeSha256: sha256Hex(other) })).rejects.toMatchObject({
        code: 'JOB_ID_CONFLICT',
        status: 409,
      });
      expect((await ledger.getJob(rec.id))!.envelope).toBe(rec.envelope);
    });

    it('creates a job exactly once when the same submission races', async () => {
      const rec = job(uid('race'));
      const results = await Promise.all(Array.from({ length: 12 }, () => ledger.insertJob(rec)));
      expect(results.filter((r) => r.created)).toHaveLength(1);
      expect(new Set(results.map((r) => r.job.createdAt.getTime())).size).toBe(1);
    });

    it('pages newest first by (created_at, id) without repeats or gaps, even with equal times and new arrivals', async () => {
      const node = uid('page-node');
      const ids = Array.from({ length: 7 }, (_, i) => `${node}-j${i}`);
      for (const id of ids) await ledger.insertJob(job(id, { node }));
      // Equal creation times for four of them: the id must break the tie.
      await ledger.db.query("UPDATE jobs SET created_at = '2000-01-01T00:00:00.000Z' WHERE id = ANY($1::text[])", [ids.slice(2, 6)]);
      const expected = (await ledger.db.query<{ id: string }>('SELECT id FROM jobs WHERE node = $1 ORDER BY created_at DESC, id DESC', [node])).map(
        (r) => r.id,
      );
      const seen: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page = await ledger.listJobs({ node, limit: 3, ...(cursor ? { cursor } : {}) });
        seen.push(...page.jobs.map((j) => j.id));
        if (pages === 0) await ledger.insertJob(job(`${node}-late`, { node }));
        cursor = page.nextCursor ?? undefined;
        pages++;
      } while (cursor);
      expect(seen).toEqual(expected);
      expect(pages).toBe(3);
      expect((await ledger.listJobs({ node, status: 'admitted', limit: 50 })).jobs).toHaveLength(8);
      expect((await ledger.listJobs({ node, status: 'queued', limit: 50 })).jobs).toHaveLength(0);
      await expect(ledger.listJobs({ limit: 3, cursor: 'not-a-cursor' })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    });

    it('walks admitted → queued (attempt 1) → running → retry as attempt 2 → running → succeeded, recording each step', async () => {
      const id = uid('life');
      await ledger.insertJob(job(id));
      const q = await ledger.dispatchAttempt(id, 'n1');
      expect(q).toMatchObject({ status: 'queued', node: 'n1', attempts: 1, event: { seq: 2, type: 'status', message: 'queued for node n1 (attempt 1)' } });
      expect((await ledger.transitionJob(id, 'running', { attempt: 1, node: 'n1' }))!.attempts).toBe(1);
      await ledger.recordAttempt(id, 1, 'n1', 'failed', 'COMMAND_FAILED');
      const retry = await ledger.dispatchAttempt(id, 'n1');
      expect(retry).toMatchObject({ status: 'queued', attempts: 2, node: 'n1' });
      expect((await ledger.transitionJob(id, 'running', { attempt: 2 }))!.attempts).toBe(2);
      await ledger.recordAttempt(id, 2, 'n1', 'running');
      const done = await ledger.transitionJob(id, 'succeeded', {
        attempt: 2,
        result: { vm: 'vm-1', ips: ['10.0.0.2'] },
        message: 'succeeded in 5 ms',
        eventData: { ms: 5 },
      });
      expect(done).toMatchObject({ status: 'succeeded', attempts: 2, result: { vm: 'vm-1', ips: ['10.0.0.2'] }, errorCode: null, errorMessage: null });
      expect(done!.finishedAt).toBeInstanceOf(Date);
      expect(done!.event).toMatchObject({ message: 'succeeded in 5 ms', data: { status: 'succeeded', from: 'running', detail: { ms: 5 } } });
      const events = await ledger.listJobEvents(id, 0, 100);
      expect(events.map((e) => (e.data as { status: string }).status)).toEqual(['admitted', 'queued', 'running', 'queued', 'running', 'succeeded']);
      expect(events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6]);
      // Every attempt is in the ledger with its number, node and times; the job's end closed the running one.
      const attempts = await ledger.listAttempts(id);
      expect(attempts.map((a) => [a.attempt, a.node, a.outcome, a.errorCode])).toEqual([
        [1, 'n1', 'failed', 'COMMAND_FAILED'],
        [2, 'n1', 'succeeded', null],
      ]);
      for (const a of attempts) expect([a.dispatchedAt, a.startedAt, a.finishedAt].every((d) => d instanceof Date)).toBe(true);
      // A terminal job gets no new attempt.
      expect(await ledger.dispatchAttempt(id, 'n1')).toBeNull();
    });

    it('supersedes an attempt replaced unfinished, and leaves no attempt open once the job is terminal', async () => {
      const id = uid('supersede');
      await ledger.insertJob(job(id));
      await ledger.dispatchAttempt(id, 'n1');
      await ledger.transitionJob(id, 'running', { attempt: 1, node: 'n1' });
      await ledger.recordAttempt(id, 1, 'n1', 'running');
      // The queue lost attempt 1 (or it stalled): attempt 2 replaces it.
      await ledger.dispatchAttempt(id, 'n1');
      expect((await ledger.listAttempts(id)).map((a) => [a.attempt, a.outcome])).toEqual([
        [1, 'superseded'],
        [2, 'queued'],
      ]);
      await ledger.transitionJob(id, 'failed', { errorCode: 'ENVELOPE_EXPIRED', errorMessage: 'x' });
      const after = await ledger.listAttempts(id);
      expect(after.map((a) => [a.attempt, a.outcome])).toEqual([
        [1, 'superseded'],
        [2, 'superseded'],
      ]);
      expect(after.every((a) => a.finishedAt instanceof Date)).toBe(true);
    });

    it('never changes a terminal job again', async () => {
      for (const terminal of ['succeeded', 'failed', 'refused'] as const) {
        const id = uid(`terminal-${terminal}`);
        await ledger.insertJob(job(id));
        const t = await ledger.transitionJob(id, terminal, { errorCode: 'TIMEOUT', errorMessage: 'x', result: 1 });
        expect(t!.status).toBe(terminal);
        for (const to of ['queued', 'running', 'succeeded', 'failed', 'refused', 'admitted'] as const) {
          expect(await ledger.transitionJob(id, to, { attempt: 9, result: 'late' })).toBeNull();
        }
        const after = await ledger.getJob(id);
        expect(after).toMatchObject({ status: terminal, attempts: 0 });
        expect(after!.updatedAt).toEqual(t!.updatedAt);
        expect((await ledger.listJobEvents(id, 0, 100)).length).toBe(2);
      }
    });

    it("ignores an older attempt's late report, an unassigned attempt's, and duplicates of the current one (fencing)", async () => {
      const id = uid('fence');
      await ledger.insertJob(job(id));
      await ledger.dispatchAttempt(id, 'n1');
      await ledger.transitionJob(id, 'running', { attempt: 1, node: 'n1' });
      await ledger.dispatchAttempt(id, 'n1');
      expect(await ledger.transitionJob(id, 'running', { attempt: 3, node: 'n1' })).toBeNull();
      await ledger.transitionJob(id, 'running', { attempt: 2, node: 'n1' });
      expect(await ledger.transitionJob(id, 'running', { attempt: 1, node: 'n1' })).toBeNull();
      expect(await ledger.transitionJob(id, 'succeeded', { attempt: 1, result: 'stale' })).toBeNull();
      expect(await ledger.transitionJob(id, 'running', { attempt: 2, node: 'n1' })).toBeNull();
      expect(await ledger.getJob(id)).toMatchObject({ status: 'running', attempts: 2, node: 'n1', errorCode: null, result: null });
      expect(await ledger.transitionJob(id, 'succeeded', { attempt: 2, result: 'fresh' })).not.toBeNull();
    });

    it('serialises racing transitions: of many identical running reports exactly one applies', async () => {
      const id = uid('race-transition');
      await ledger.insertJob(job(id));
      await ledger.dispatchAttempt(id, 'n1');
      const results = await Promise.all(Array.from({ length: 10 }, () => ledger.transitionJob(id, 'running', { attempt: 1, node: 'n1' })));
      expect(results.filter((r) => r !== null)).toHaveLength(1);
      expect((await ledger.listJobEvents(id, 0, 100)).length).toBe(3);
    });

    it('returns null for an unknown job and refuses an unknown status', async () => {
      expect(await ledger.transitionJob(uid('missing'), 'queued')).toBeNull();
      await expect(ledger.transitionJob(uid('missing'), 'exploded' as never)).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    });

    it('records attempts; a late running report never reopens a finished attempt', async () => {
      const id = uid('attempts');
      await ledger.insertJob(job(id));
      await ledger.recordAttempt(id, 1, 'n1', 'running');
      const failed = await ledger.recordAttempt(id, 1, 'n1', 'failed', 'COMMAND_FAILED');
      expect(failed).toMatchObject({ attempt: 1, outcome: 'failed', errorCode: 'COMMAND_FAILED' });
      expect(failed.finishedAt).toBeInstanceOf(Date);
      const late = await ledger.recordAttempt(id, 1, 'n1', 'running');
      expect(late).toMatchObject({ outcome: 'failed', errorCode: 'COMMAND_FAILED' });
      await ledger.recordAttempt(id, 2, 'n2', 'succeeded');
      const list = await ledger.listAttempts(id);
      expect(list.map((a) => [a.attempt, a.node, a.outcome])).toEqual([
        [1, 'n1', 'failed'],
        [2, 'n2', 'succeeded'],
      ]);
      await expect(ledger.recordAttempt(uid('missing'), 1, 'n1', 'running')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    });
  });

  describe('job events', () => {
    it('numbers events per job from 1 without gaps, even when appended concurrently, and replays after a seq', async () => {
      const id = uid('events');
      await ledger.insertJob(job(id));
      const seqs = await Promise.all(Array.from({ length: 30 }, (_, i) => ledger.appendJobEvent(id, { type: 'log', level: 'info', message: `line ${i}` })));
      expect([...seqs].sort((a, b) => a - b)).toEqual(Array.from({ length: 30 }, (_, i) => i + 2));
      // A client that saw up to seq 20 (Last-Event-ID: 20) gets exactly the rest, in order.
      const rest = await ledger.listJobEvents(id, 20, 1000);
      expect(rest.map((e) => e.seq)).toEqual(Array.from({ length: 11 }, (_, i) => i + 21));
      expect((await ledger.listJobEvents(id, 0, 5)).map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
      const other = uid('events-other');
      await ledger.insertJob(job(other));
      expect(await ledger.appendJobEvent(other, { type: 'security', message: 'x' })).toBe(2);
    });

    it('cuts an oversized message to 8 KiB and replaces oversized data with a note', async () => {
      const id = uid('big');
      await ledger.insertJob(job(id));
      const seq = await ledger.appendJobEvent(id, { type: 'log', message: 'é'.repeat(20_000), data: { blob: 'x'.repeat(100_000) } });
      const [ev] = await ledger.listJobEvents(id, seq - 1, 1);
      expect(Buffer.byteLength(ev!.message, 'utf8')).toBeLessThanOrEqual(8 * 1024);
      expect(ev!.message.endsWith('…[truncated]')).toBe(true);
      expect(ev!.message.startsWith('éé')).toBe(true);
      expect(ev!.data).toEqual({ truncated: true, bytes: expect.any(Number) });
    });

    it('stores NUL bytes and lone surrogates as U+FFFD instead of failing the write', async () => {
      const id = uid('nul');
      await ledger.insertJob(job(id));
      const seq = await ledger.appendJobEvent(id, { type: 'log', message: 'a\u0000b\ud800c', data: { 'k\u0000': 'v\udc00' } });
      const [ev] = await ledger.listJobEvents(id, seq - 1, 1);
      expect(ev!.message).toBe('a\uFFFDb\uFFFDc');
      expect(ev!.data).toEqual({ 'k\uFFFD': 'v\uFFFD' });
    });

    it('keeps a capped number of log events, then one "log truncated" event, while status events go on', async () => {
      const capped = new Ledger(ledger.db, { maxLogEventsPerJob: 5 });
      const id = uid('cap');
      await ledger.insertJob(job(id));
      const seqs: number[] = [];
      for (let i = 0; i < 8; i++) seqs.push(await capped.appendJobEvent(id, { type: 'log', message: `l${i}` }));
      expect(seqs).toEqual([2, 3, 4, 5, 6, 0, 0, 0]);
      const t = await capped.transitionJob(id, 'failed', { errorCode: 'TIMEOUT', errorMessage: 'late' });
      expect(t!.event.seq).toBe(8);
      const events = await capped.listJobEvents(id, 0, 100);
      expect(events.map((e) => e.message)).toEqual(['admitted', 'l0', 'l1', 'l2', 'l3', 'l4', expect.stringMatching(/^log truncated/), 'admitted → failed']);
      expect(await capped.appendJobEvent(id, { type: 'security', message: 'still recorded' })).toBe(9);
    });

    it('refuses events for an unknown job (NOT_FOUND)', async () => {
      await expect(ledger.appendJobEvent(uid('ghost'), { type: 'log', message: 'x' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    });
  });

  describe('unfinished jobs (reconciler)', () => {
    it('lists unfinished, unexpired jobs untouched for the given time, and touchJob defers them', async () => {
      const stale = uid('stale');
      const fresh = uid('fresh');
      const expired = uid('expired');
      const done = uid('done');
      const running = uid('running');
      for (const id of [stale, fresh, expired, done, running]) await ledger.insertJob(job(id));
      await ledger.transitionJob(done, 'succeeded', { result: 1 });
      await ledger.transitionJob(running, 'running', { attempt: 1, node: 'n1' });
      await ledger.db.query("UPDATE jobs SET updated_at = now() - interval '1 hour' WHERE id = ANY($1::text[])", [[stale, expired, done, running]]);
      await ledger.db.query("UPDATE jobs SET exp = now() - interval '1 second' WHERE id = $1", [expired]);
      const ids = (await ledger.listUnfinished({ olderThanMs: 60_000, limit: 10_000 })).map((j) => j.id);
      expect(ids).toContain(stale);
      expect(ids).toContain(running);
      expect(ids).not.toContain(fresh);
      expect(ids).not.toContain(expired);
      expect(ids).not.toContain(done);
      expect((await ledger.listUnfinished({ olderThanMs: 0, limit: 10_000 })).map((j) => j.id)).toContain(fresh);
      expect(await ledger.touchJob(stale)).toBe(true);
      expect(await ledger.touchJob(done)).toBe(false);
      expect((await ledger.listUnfinished({ olderThanMs: 60_000, limit: 10_000 })).map((j) => j.id)).not.toContain(stale);
    });
  });

  describe('signed key sets', () => {
    it('keeps every published version and answers the highest as current', async () => {
      const before = await ledger.currentKeySet();
      const base = (before?.version ?? 0) + 100;
      await ledger.putKeySet({ version: base + 1, envelope: 'env-1', signerKeyids: ['a'] });
      await ledger.putKeySet({ version: base + 2, envelope: 'env-2', signerKeyids: ['a', 'b'] });
      // A version is written once: a second put of the same version keeps the first envelope.
      await ledger.putKeySet({ version: base + 2, envelope: 'other', signerKeyids: [] });
      expect(await ledger.currentKeySet()).toEqual({ version: base + 2, envelope: 'env-2' });
    });
  });

  // Runs after everything else in this engine's block: these tests own the audit chain of this database.
  describe('audit log', () => {
    const tricky = {
      unicode: 'ünï 😀 \u2028',
      nested: { b: [1, 2.5, -0, 1e21, 2 ** 60, 5e-324], a: null, t: true },
      __proto__key: { ['__proto__']: 1 },
      nul: 'a\u0000',
    };

    it('chains entries: each links to the previous hash and hashes its canonical encoding', async () => {
      const a = await ledger.appendAudit({ kind: 'job.admit', actor: 'k1', subject: 'j1', data: { target: { node: 'n1' } } });
      const b = await ledger.appendAudit({ kind: 'key.revoke', actor: 'api', subject: 'k1', data: tricky });
      const c = await ledger.appendAudit({ kind: 'security', actor: 'node:n1', subject: '' });
      expect([a.seq, b.seq, c.seq]).toEqual([1, 2, 3]);
      expect(a.prevHash).toBe('0'.repeat(64));
      expect(b.prevHash).toBe(a.hash);
      expect(c.prevHash).toBe(b.hash);
      for (const e of [a, b, c]) expect(auditHash(e)).toBe(e.hash);
      const tail = await ledger.tailAudit(2);
      expect(tail.map((e) => e.seq)).toEqual([2, 3]);
      expect(tail[0]).toEqual(b);
      expect(await ledger.verifyAudit()).toMatchObject({ ok: true, count: 3, head: { seq: 3, hash: c.hash } });
    });

    it('refuses UPDATE and DELETE on the audit table outright', async () => {
      await expect(ledger.db.query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 1")).rejects.toThrow(/append-only/);
      await expect(ledger.db.query('DELETE FROM audit_log WHERE seq = 1')).rejects.toThrow(/append-only/);
      expect(await ledger.verifyAudit()).toMatchObject({ ok: true, count: 3 });
    });

    // Tampering as someone able to switch the guard trigger off; each case is detected, then undone.
    async function tamper(sql: string, params: unknown[] = []): Promise<void> {
      await ledger.db.query('ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update');
      try {
        await ledger.db.query(sql, params);
      } finally {
        await ledger.db.query('ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update');
      }
    }

    it('detects an edited entry (data, actor or time) and names its seq', async () => {
      const [orig] = await ledger.db.query<{ data: unknown; actor: string; at: Date }>('SELECT data, actor, at FROM audit_log WHERE seq = 2');
      await tamper(`UPDATE audit_log SET data = jsonb_set(data, '{nested,t}', 'false') WHERE seq = 2`);
      expect(await ledger.verifyAudit()).toMatchObject({ ok: false, firstBadSeq: 2, count: 1, reason: expect.stringContaining('hash') });
      await tamper('UPDATE audit_log SET data = $1::jsonb WHERE seq = 2', [JSON.stringify(orig!.data)]);
      expect((await ledger.verifyAudit()).ok).toBe(true);

      await tamper("UPDATE audit_log SET actor = 'mallory' WHERE seq = 1");
      expect(await ledger.verifyAudit()).toMatchObject({ ok: false, firstBadSeq: 1 });
      await tamper("UPDATE audit_log SET actor = 'k1' WHERE seq = 1");

      await tamper("UPDATE audit_log SET at = at + interval '1 millisecond' WHERE seq = 3");
      expect(await ledger.verifyAudit()).toMatchObject({ ok: false, firstBadSeq: 3 });
      await tamper("UPDATE audit_log SET at = at - interval '1 millisecond' WHERE seq = 3");
      expect(await ledger.verifyAudit()).toMatchObject({ ok: true, count: 3 });
    });

    it('detects a removed entry, in the middle and at the end', async () => {
      const [row2] = await ledger.db.query<Record<string, unknown>>('SELECT seq, at, kind, actor, subject, data, prev_hash, hash FROM audit_log WHERE seq = 2');
      await tamper('DELETE FROM audit_log WHERE seq = 2');
      expect(await ledger.verifyAudit()).toMatchObject({ ok: false, firstBadSeq: 2, reason: expect.stringContaining('missing') });
      await ledger.db.query('INSERT INTO audit_log (seq, at, kind, actor, subject, data, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)', [
        row2!.seq,
        row2!.at,
        row2!.kind,
        row2!.actor,
        row2!.subject,
        JSON.stringify(row2!.data),
        row2!.prev_hash,
        row2!.hash,
      ]);
      expect((await ledger.verifyAudit()).ok).toBe(true);

      const [row3] = await ledger.db.query<Record<string, unknown>>('SELECT seq, at, kind, actor, subject, data, prev_hash, hash FROM audit_log WHERE seq = 3');
      await tamper('DELETE FROM audit_log WHERE seq = 3');
      expect(await ledger.verifyAudit()).toMatchObject({ ok: false, firstBadSeq: 3, reason: expect.stringContaining('missing from the end') });
      await ledger.db.query('INSERT INTO audit_log (seq, at, kind, actor, subject, data, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)', [
        row3!.seq,
        row3!.at,
        row3!.kind,
        row3!.actor,
        row3!.subject,
        JSON.stringify(row3!.data),
        row3!.prev_hash,
        row3!.hash,
      ]);
      expect(await ledger.verifyAudit()).toMatchObject({ ok: true, count: 3 });
    });

    it('detects two entries swapped (reordered)', async () => {
      const swap = async () => {
        await tamper('UPDATE audit_log SET seq = 1000002 WHERE seq = 2');
        await tamper('UPDATE audit_log SET seq = 2 WHERE seq = 3');
        await tamper('UPDATE audit_log SET seq = 3 WHERE seq = 1000002');
      };
      await swap();
      expect(await ledger.verifyAudit()).toMatchObject({ ok: false, firstBadSeq: 2 });
      await swap();
      expect(await ledger.verifyAudit()).toMatchObject({ ok: true, count: 3 });
    });

    it('never forks the chain under concurrent appends (from two ledgers where the engine allows)', async () => {
      const second = engine.name === 'PostgreSQL' ? await opened.sibling!() : ledger;
      const before = (await ledger.verifyAudit()).count;
      try {
        const writers = Array.from({ length: 40 }, (_, i) =>
          (i % 2 ? second : ledger).appendAudit({ kind: 'job.effect', actor: `node:n${i % 3}`, subject: `j${i}`, data: { i } }),
        );
        const entries = await Promise.all(writers);
        expect(new Set(entries.map((e) => e.seq)).size).toBe(40);
        expect(Math.max(...entries.map((e) => e.seq))).toBe(before + 40);
        expect(await ledger.verifyAudit()).toMatchObject({ ok: true, count: before + 40 });
      } finally {
        if (second !== ledger) await second.close();
      }
    });
  });
});

// Each test here opens a PGlite (Postgres in WebAssembly) in a folder several times: seconds per open on a
// loaded machine, so they get more than the default 30 s.
describe('PGlite data folder', () => {
  it('keeps jobs, events, key sets and the audit chain across close and reopen, and refuses a second opener', async () => {
    const dataDir = tempDir();
    const first = await openLedger({ dataDir });
    const id = uid('persist');
    await first.insertJob(job(id));
    await first.dispatchAttempt(id, 'n1');
    await first.transitionJob(id, 'running', { attempt: 1, node: 'n1' });
    await first.appendJobEvent(id, { type: 'log', message: 'hello' });
    await first.putKeySet({ version: 7, envelope: 'kept', signerKeyids: ['k1'] });
    const entry = await first.appendAudit({ kind: 'job.admit', actor: 'k1', subject: id });
    await expect(openLedger({ dataDir })).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining('in use') });
    await first.close();

    const second = await openLedger({ dataDir });
    try {
      expect(await second.getJob(id)).toMatchObject({ status: 'running', attempts: 1, node: 'n1' });
      expect((await second.listJobEvents(id, 0, 10)).map((e) => e.message)).toEqual([
        'admitted',
        'queued for node n1 (attempt 1)',
        'queued → running (attempt 1 on n1)',
        'hello',
      ]);
      expect(await second.currentKeySet()).toEqual({ version: 7, envelope: 'kept' });
      expect(await second.verifyAudit()).toMatchObject({ ok: true, count: 1, head: { hash: entry.hash } });
      expect(await migrate(second.db)).toEqual([]);
    } finally {
      await second.close();
    }
  }, 120_000);

  it('refuses to open a folder whose schema is newer than the code (CONFIG_INVALID)', async () => {
    const dataDir = tempDir();
    const first = await openLedger({ dataDir });
    await first.db.query("INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'from the future', 'x')");
    await first.close();
    await expect(openLedger({ dataDir })).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    // The refused open released the folder.
    await expect(openLedger({ dataDir })).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining('newer') });
  }, 120_000);
});
