// Leases and the event relay between coords, on a real PostgreSQL 15 (started by the test on loopback): two
// coordination sessions on one database, as two coords have.
import { EventEmitter } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LEASE_KINDS, PgSession, SessionLeases, openLedger, startCoordination, type Coordination, type Ledger } from '@writ/coord';
import { startTestPostgres, type TestPostgres } from './helpers/postgres.ts';
import { until } from './helpers/processes.ts';

const postgres = await startTestPostgres();
if (!postgres.ok) console.warn(`skipping the lease tests: ${postgres.reason}`);
let pg: TestPostgres;
let url: string;
const opened: { close(): Promise<void> }[] = [];

beforeAll(async () => {
  if (!postgres.ok) return;
  pg = postgres.pg;
  url = await pg.freshDatabaseUrl();
}, 60_000);

afterAll(async () => {
  for (const o of opened.reverse()) await o.close().catch(() => {});
  await pg?.stop();
});

function session(name: string, o: { expireAfterMs?: number; keepAliveMs?: number } = {}): PgSession {
  const s = new PgSession({ databaseUrl: url, name, ...o });
  opened.push(s);
  return s;
}

describe.skipIf(!postgres.ok)('leases between coords (PostgreSQL advisory locks)', () => {
  it('a key is held by one coord at a time; released, or its holder gone, another takes it', async () => {
    const a = new SessionLeases(session('coord-a'));
    const b = new SessionLeases(session('coord-b'));
    expect(await a.claim(LEASE_KINDS.job, ['j1', 'j2'])).toEqual(['j1', 'j2']);
    expect(await b.claim(LEASE_KINDS.job, ['j1', 'j2', 'j3'])).toEqual(['j3']);
    // The same coord asking again gets nothing: another task of it drives those already.
    expect(await a.claim(LEASE_KINDS.job, ['j1'])).toEqual([]);
    expect(a.holds(LEASE_KINDS.job, 'j1')).toBe(true);
    // Kinds are separate: a flow engine's 'flow' leases do not collide with jobs of the same id.
    expect(await b.claim('flow', ['j1'])).toEqual(['j1']);
    await a.release(LEASE_KINDS.job, ['j1']);
    expect(await b.claim(LEASE_KINDS.job, ['j1', 'j2'])).toEqual(['j1']);
    // The database shows who holds what.
    const admin = session('observer');
    const rows = await admin.query<{ holder: string; n: number }>(
      `SELECT a.application_name AS holder, count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' GROUP BY 1 ORDER BY 1`,
    );
    expect(rows).toEqual([
      { holder: 'coord-a', n: 1 },
      { holder: 'coord-b', n: 3 },
    ]);
  });

  it('a coord whose session ends (killed) loses its leases at once', async () => {
    const sa = session('coord-killed');
    const a = new SessionLeases(sa);
    const b = new SessionLeases(session('coord-survivor'));
    expect(await a.claim(LEASE_KINDS.job, ['k1'])).toEqual(['k1']);
    expect(await b.claim(LEASE_KINDS.job, ['k1'])).toEqual([]);
    // What a SIGKILL does to the coord's socket: the server ends the backend, and its locks with it.
    const pid = (await sa.query<{ pid: number }>('SELECT pg_backend_pid() AS pid'))[0]!.pid;
    await session('killer').query('SELECT pg_terminate_backend($1)', [pid]);
    expect(await until('the lease to come free', async () => ((await b.claim(LEASE_KINDS.job, ['k1'])).length === 1 ? true : undefined), 10_000)).toBe(true);
    // The killed side hears its session went and holds nothing any more.
    await until('the lost session to be noticed', async () => (a.holds(LEASE_KINDS.job, 'k1') ? undefined : true), 10_000);
  });

  it('a coord that stops answering (no statement within the expiry) loses its leases', async () => {
    // keepAliveMs past the expiry: the session goes silent, as a SIGSTOPped coord's does.
    const a = new SessionLeases(session('coord-silent', { expireAfterMs: 1500, keepAliveMs: 60_000 }));
    const b = new SessionLeases(session('coord-awake'));
    expect(await a.claim(LEASE_KINDS.job, ['s1'])).toEqual(['s1']);
    expect(await b.claim(LEASE_KINDS.job, ['s1'])).toEqual([]);
    const t0 = Date.now();
    await until('the silent holder to expire', async () => ((await b.claim(LEASE_KINDS.job, ['s1'])).length === 1 ? true : undefined), 20_000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
  });
});

describe.skipIf(!postgres.ok)('live events between coords (LISTEN/NOTIFY)', () => {
  let ledger: Ledger;
  let a: Coordination;
  let b: Coordination;
  /** What a subscriber of `relayed-1` at coord B received. */
  const got: { seq: number; message: string }[] = [];
  const exp = new Date(Date.now() + 3600_000);
  const newJob = (id: string) => ledger.insertJob({ id, envelope: '{}', envelopeSha256: 'x', signerKeyids: [], target: { node: 'n' }, caps: [], exp });
  beforeAll(async () => {
    ledger = await openLedger({ databaseUrl: url });
    opened.push(ledger);
    // B repeats its follows once a minute, so within a test A knows of them only from B's announcements as they
    // happen (or B's answer to a hello); and B runs no catch-up pass here, so what B gets came by the doorbell.
    a = await startCoordination({ databaseUrl: url, ledger, emitter: new EventEmitter(), name: 'relay-a' });
    b = await startCoordination({ databaseUrl: url, ledger, emitter: new EventEmitter(), name: 'relay-b', announceEveryMs: 60_000, catchUpMs: 3_600_000 });
    opened.push(a, b);
    for (const id of ['relayed-1', 'unfollowed-1', 'relayed-2', 'relayed-3', 'relayed-d']) await newJob(id);
  }, 60_000);

  const tick = () => new Promise((r) => setImmediate(r));

  it('a job no other coord follows rings no doorbell', async () => {
    const sent = a.relay.metrics.notificationsSent;
    const skipped = a.relay.metrics.eventsFollowedNowhereElse;
    const seq = await ledger.appendJobEvent('unfollowed-1', { type: 'log', level: 'info', message: 'nobody streams this' });
    a.relay.published('unfollowed-1', seq);
    await tick();
    await tick();
    expect(a.relay.metrics.notificationsSent).toBe(sent);
    expect(a.relay.metrics.eventsFollowedNowhereElse).toBe(skipped + 1);
  });

  it('an event recorded through one coord reaches a subscriber of the other, rung for and read from the ledger', async () => {
    const bEmitter = new EventEmitter();
    b.relay.attach(bEmitter);
    bEmitter.on('job:relayed-1', (e: { seq: number; message: string }) => got.push({ seq: e.seq, message: e.message }));
    // B announces the follow at once; A rings for the job from then on.
    await until('A to hear that B follows relayed-1', async () => (a.relay.followedElsewhere('relayed-1') ? true : undefined), 10_000);
    const sent = a.relay.metrics.notificationsSent;
    const relayed = b.relay.metrics.eventsRelayed;
    const s2 = await ledger.appendJobEvent('relayed-1', { type: 'log', level: 'info', message: 'first' });
    const s3 = await ledger.appendJobEvent('relayed-1', { type: 'log', level: 'info', message: 'second' });
    a.relay.published('relayed-1', s2);
    a.relay.published('relayed-1', s3);
    await until('both events at the other coord', async () => (got.length >= 2 ? true : undefined), 10_000);
    expect(got).toEqual([
      { seq: 2, message: 'first' },
      { seq: 3, message: 'second' },
    ]);
    expect(a.relay.metrics.notificationsSent - sent).toBe(1); // one NOTIFY for the tick, not one per event
    expect(b.relay.metrics.eventsRelayed - relayed).toBe(2);
    // Its own notifications are not relayed back to itself.
    const aEmitter = new EventEmitter();
    a.relay.attach(aEmitter);
    let echoed = 0;
    aEmitter.on('job:relayed-1', () => echoed++);
    const s4 = await ledger.appendJobEvent('relayed-1', { type: 'log', level: 'info', message: 'third' });
    a.relay.published('relayed-1', s4);
    await until('the third event at the other coord', async () => (got.length >= 3 ? true : undefined), 10_000);
    expect(echoed).toBe(0);
  });

  describe('events no doorbell announced, found by the catch-up pass', () => {
    let e: Coordination;
    beforeAll(async () => {
      // E checks its followed jobs every 200 ms; it repeats its follows once a minute.
      e = await startCoordination({ databaseUrl: url, ledger, emitter: new EventEmitter(), name: 'relay-e', announceEveryMs: 60_000, catchUpMs: 200 });
      opened.push(e);
    });
    // Its follows end with it (it says so), so they do not count in the tests after these.
    afterAll(() => e.relay.close());
    /** What a subscriber at E receives. */
    const received = (): { seq: number; message: string }[] => [];
    const passes = async (n: number) => {
      const from = e.relay.metrics.catchUpPasses;
      await until(`${n} catch-up passes`, async () => (e.relay.metrics.catchUpPasses >= from + n ? true : undefined), 15_000);
    };

    it('an event whose notification was lost (its coord died after the commit) still reaches the subscriber', async () => {
      const eEmitter = new EventEmitter();
      e.relay.attach(eEmitter);
      const list = received();
      eEmitter.on('job:relayed-2', (ev: { seq: number; message: string }) => list.push({ seq: ev.seq, message: ev.message }));
      // A catch-up pass has seen the job followed; then an event is recorded and never announced (what a coord
      // SIGKILLed between its commit and its NOTIFY leaves).
      await passes(2);
      const before = e.relay.metrics.eventsCaughtUp;
      const seq = await ledger.appendJobEvent('relayed-2', { type: 'log', level: 'info', message: 'unannounced' });
      await until('the catch-up to find it', async () => (list.some((x) => x.seq === seq) ? true : undefined), 15_000);
      expect(list.find((x) => x.seq === seq)?.message).toBe('unannounced');
      expect(e.relay.metrics.eventsCaughtUp).toBeGreaterThan(before);
    });

    it('an event recorded before the recording coord heard of a new follow, and before a catch-up pass saw the job, is not lost', async () => {
      // The stream opens (its listener first, then its read of the ledger); at once another coord records an
      // event and rings nothing (it has not heard of the follow). The first catch-up pass that sees the job
      // must hand it on: the job's newest event, which the stream takes, reading any gap from the ledger.
      const list = received();
      const eEmitter = new EventEmitter();
      eEmitter.on('job:relayed-3', (ev: { seq: number; message: string }) => list.push({ seq: ev.seq, message: ev.message }));
      e.relay.attach(eEmitter);
      const seq = await ledger.appendJobEvent('relayed-3', { type: 'status', level: 'info', message: 'succeeded (the last event)' });
      await until('the first catch-up pass to hand it on', async () => (list.some((x) => x.seq === seq) ? true : undefined), 15_000);
      expect(list.find((x) => x.seq === seq)?.message).toBe('succeeded (the last event)');
    });
  });

  it('a coord that starts later learns the follows at once (hello), and a follow that ends is dropped', async () => {
    // A's own stream of the job (the earlier test's) ends: only B follows it now.
    a.relay.attach(new EventEmitter());
    // B repeats its follows once a minute, so C can learn B's only from B's answer to its hello.
    const c = await startCoordination({ databaseUrl: url, ledger, emitter: new EventEmitter(), name: 'relay-c' });
    opened.push(c);
    await until("C to learn B's follow from B's answer to its hello", async () => (c.relay.followedElsewhere('relayed-1') ? true : undefined), 15_000);
    // B's subscriber goes: A and C hear that B stopped following, and ring no more for the job.
    b.relay.attach(new EventEmitter()); // the old emitter's listener is gone with it
    await until(
      'A and C to hear that B stopped following',
      async () => (!a.relay.followedElsewhere('relayed-1') && !c.relay.followedElsewhere('relayed-1') ? true : undefined),
      10_000,
    );
    const sent = a.relay.metrics.notificationsSent;
    const skipped = a.relay.metrics.eventsFollowedNowhereElse;
    const seq = await ledger.appendJobEvent('relayed-1', { type: 'log', level: 'info', message: 'after the stream closed' });
    a.relay.published('relayed-1', seq);
    expect(a.relay.metrics.eventsFollowedNowhereElse).toBe(skipped + 1);
    await tick();
    await tick();
    expect(a.relay.metrics.notificationsSent).toBe(sent);
  });

  it('a coord that dies without a word: the others forget its follows after three of its periods', async () => {
    // An observer that prunes every 300 ms; D repeats its follows every 300 ms until it dies.
    const obs = await startCoordination({ databaseUrl: url, ledger, emitter: new EventEmitter(), name: 'relay-obs', announceEveryMs: 300 });
    const d = await startCoordination({ databaseUrl: url, ledger, emitter: new EventEmitter(), name: 'relay-d', announceEveryMs: 300 });
    opened.push(obs);
    const dEmitter = new EventEmitter();
    d.relay.attach(dEmitter);
    dEmitter.on('job:relayed-d', () => {});
    await until("the observer to hear of D's follow", async () => (obs.relay.followedElsewhere('relayed-d') ? true : undefined), 10_000);
    expect(obs.relay.followsHeardOf).toBe(1);
    // Its session ends under it (what a SIGKILL does): no `del` is sent, its announcements stop.
    await d.session.close();
    // Held until its word runs out (3 × 300 ms after the last announcement heard), then pruned by the
    // observer's own timer: nothing here asks about the job again.
    await until("the observer to forget D's follow", async () => (obs.relay.followsHeardOf === 0 ? true : undefined), 10_000);
    await d.relay.close();
  });
});
