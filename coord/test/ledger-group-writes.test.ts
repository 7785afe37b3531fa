// The ledger's grouped writes, on PGlite and on a real PostgreSQL: admissions recorded many at once (replay
// and id conflict inside one group and across groups), a supervisor report's runner events applied with a
// few set-based statements by the same rules as single transitions, and audit entries chained per batch.
import { sha256Hex, type RunnerEvent } from '@writ/protocol';
import { afterAll, describe, expect, it } from 'vitest';
import { openLedger, type Admission, type Ledger } from '../src/ledger/index.ts';
import { startTestPostgres } from '../../tests/helpers/postgres.ts';

const postgres = await startTestPostgres();
if (!postgres.ok) console.warn(`[ledger group writes] PostgreSQL variant skipped: ${postgres.reason}`);
afterAll(async () => {
  if (postgres.ok) await postgres.pg.stop();
});

const ENGINES: { name: string; skip?: string; open(): Promise<Ledger> }[] = [
  { name: 'PGlite', open: () => openLedger({ limits: { maxLogEventsPerJob: 3 } }) },
  {
    name: 'PostgreSQL',
    ...(postgres.ok ? {} : { skip: postgres.reason }),
    open: async () => {
      if (!postgres.ok) throw new Error(postgres.reason);
      return openLedger({ databaseUrl: await postgres.pg.freshDatabaseUrl(), limits: { maxLogEventsPerJob: 3 } });
    },
  },
];

function admission(id: string, over: Partial<Admission> = {}): Admission {
  const envelope = JSON.stringify({ id, v: over.envelope ?? 1 });
  return {
    id,
    envelope,
    envelopeSha256: sha256Hex(envelope),
    signerKeyids: ['k1'],
    target: { node: 'n1' },
    caps: [],
    exp: new Date(Date.now() + 3600_000),
    status: 'queued',
    node: 'n1',
    ...over,
    ...(over.envelope ? { envelopeSha256: sha256Hex(over.envelope) } : {}),
  };
}

const ev = {
  running: (jobId: string, attempt = 1): RunnerEvent => ({ type: 'status', jobId, attempt, node: 'n1', ts: 1, status: 'running' }),
  log: (jobId: string, message: string): RunnerEvent => ({ type: 'log', jobId, attempt: 1, node: 'n1', ts: 1, level: 'info', message }),
  ok: (jobId: string, value: unknown, attempt = 1): RunnerEvent => ({
    type: 'result',
    jobId,
    attempt,
    node: 'n1',
    ts: 1,
    ok: true,
    value: value as never,
    durationMs: 3,
  }),
  fail: (jobId: string, final: boolean, attempt = 1): RunnerEvent => ({
    type: 'result',
    jobId,
    attempt,
    node: 'n1',
    ts: 1,
    ok: false,
    error: { code: 'COMMAND_FAILED', message: 'boom', retryable: true },
    final,
    durationMs: 2,
  }),
};

describe.each(ENGINES)('grouped ledger writes on $name', (engine) => {
  it('records a group of admissions in one go: created, replayed and conflicting ids, each answered in order', async (ctx) => {
    if (engine.skip) ctx.skip();
    const ledger = await engine.open();
    try {
      const first = await ledger.admitJobs(
        [
          admission('a'),
          admission('b', { status: 'refused', node: null, errorCode: 'CAPABILITY_NOT_GRANTED', errorMessage: 'no' }),
          admission('c', { status: 'admitted', node: null }),
        ],
        (outs) => outs.map((o) => ({ kind: 'job.admit', actor: 'k1', subject: o.id })),
      );
      expect(first.map((o) => ('created' in o ? [o.id, o.created, o.status] : [o.id, o.error.code]))).toEqual([
        ['a', true, 'queued'],
        ['b', true, 'refused'],
        ['c', true, 'admitted'],
      ]);
      // Same envelope again (replay), another envelope under a used id (conflict), and a duplicate inside the group.
      const second = await ledger.admitJobs([admission('a'), admission('b', { envelope: 'other' }), admission('d'), admission('d')], () => []);
      expect(second.map((o) => ('created' in o ? [o.id, o.created, o.status] : [o.id, o.error.code]))).toEqual([
        ['a', false, 'queued'],
        ['b', 'JOB_ID_CONFLICT'],
        ['d', true, 'queued'],
        ['d', false, 'queued'],
      ]);
      expect((await ledger.listJobEvents('a', 0, 10)).map((e) => e.message)).toEqual(['admitted', 'queued for node n1']);
      expect(await ledger.getJob('b')).toMatchObject({ status: 'refused', errorCode: 'CAPABILITY_NOT_GRANTED', finishedAt: expect.any(Date) });
      expect((await ledger.listJobEvents('b', 0, 10)).map((e) => e.message)).toEqual(['admitted', 'refused: CAPABILITY_NOT_GRANTED: no']);
      const v = await ledger.verifyAudit();
      expect(v).toMatchObject({ ok: true, count: 3 });
    } finally {
      await ledger.close();
    }
    // Opening a PGlite (WebAssembly Postgres, migrations included) takes seconds on a loaded machine.
  }, 120_000);

  it('applies a report of many jobs by the rules of single transitions: order, log cap, late reports, retries, attempts, audits', async (ctx) => {
    if (engine.skip) ctx.skip();
    const ledger = await engine.open();
    try {
      await ledger.admitJobs(
        ['j1', 'j2', 'j3'].map((id) => admission(id)),
        () => [],
      );
      const { recorded, retries } = await ledger.write((w) =>
        w.applyRunnerEvents([
          ev.running('j1'),
          ev.log('j1', 'one'),
          ev.log('j1', 'two'),
          ev.log('j1', 'three'),
          ev.log('j1', 'four'),
          ev.log('j1', 'five'),
          ev.ok('j1', { n: 1 }),
          ev.running('j2'),
          ev.fail('j2', false),
          ev.running('j2', 2),
          ev.ok('j2', 'second', 2),
          ev.running('j3'),
          ev.fail('j3', true),
          // Late and duplicate reports change nothing: a running report after the result, a second result.
          ev.running('j1'),
          ev.ok('j1', 'late'),
          ev.log('nosuchjob', 'dropped'),
        ]),
      );
      expect(await ledger.getJob('j1')).toMatchObject({ status: 'succeeded', attempts: 1, result: { n: 1 }, errorCode: null, finishedAt: expect.any(Date) });
      expect((await ledger.listJobEvents('j1', 0, 20)).map((e) => `${e.seq}:${e.type}:${e.message}`)).toEqual([
        '1:status:admitted',
        '2:status:queued for node n1',
        '3:status:running on n1 (attempt 1)',
        '4:log:one',
        '5:log:two',
        '6:log:three',
        '7:log:log truncated: this job wrote more than 3 log events; later ones were dropped',
        '8:status:succeeded in 3 ms',
      ]);
      expect(await ledger.getJob('j2')).toMatchObject({ status: 'succeeded', attempts: 2, result: 'second', errorCode: null });
      expect((await ledger.listAttempts('j2')).map((a) => [a.attempt, a.outcome, a.errorCode])).toEqual([
        [1, 'failed', 'COMMAND_FAILED'],
        [2, 'succeeded', null],
      ]);
      expect(await ledger.getJob('j3')).toMatchObject({ status: 'failed', errorCode: 'COMMAND_FAILED', errorMessage: 'boom' });
      // What was recorded is what subscribers are told, in order, with the seq each row got.
      expect(recorded.filter((r) => r.jobId === 'j2').map((r) => r.seq)).toEqual([3, 4, 5, 6]);
      // The retryable failure of j2's attempt 1 assigned attempt 2 in the same transaction, for the coord to enqueue.
      expect(retries.map((r) => [r.jobId, r.node, r.attempt])).toEqual([['j2', 'n1', 2]]);
      // The succeeded j1 stays as it was; the late result still leaves its audit trace (what the node said).
      const audit = await ledger.tailAudit(20);
      expect(audit.map((a) => `${a.kind}:${a.subject}`)).toEqual(['job.effect:j1', 'job.effect:j2', 'job.fail:j3', 'job.effect:j1']);
      expect((await ledger.verifyAudit()).ok).toBe(true);
      // Attempts lost with a runner (superseded) do not use up retries: attempt 3 fails after two lost ones and is retried.
      await ledger.admitJobs([admission('j4')], () => []);
      await ledger.dispatchAttempt('j4', 'n1');
      await ledger.dispatchAttempt('j4', 'n1');
      const lost = await ledger.write((w) => w.applyRunnerEvents([ev.running('j4', 3), ev.fail('j4', false, 3)]));
      expect(lost.retries.map((r) => [r.jobId, r.attempt])).toEqual([['j4', 4]]);
      expect((await ledger.listAttempts('j4')).map((a) => a.outcome)).toEqual(['superseded', 'superseded', 'failed', 'queued']);
      // Failures do: after the third failed attempt the job fails.
      const third = await ledger.write((w) => w.applyRunnerEvents([ev.running('j4', 4), ev.fail('j4', false, 4)]));
      expect(third.retries.map((r) => r.attempt)).toEqual([5]);
      const last = await ledger.write((w) => w.applyRunnerEvents([ev.running('j4', 5), ev.fail('j4', false, 5)]));
      expect(last.retries).toEqual([]);
      expect(await ledger.getJob('j4')).toMatchObject({ status: 'failed', attempts: 5, errorCode: 'COMMAND_FAILED' });
      // A later report continues each job's sequence where the last one ended.
      await ledger.write((w) => w.applyRunnerEvents([ev.log('j3', 'after')]));
      expect((await ledger.listJobEvents('j3', 0, 20)).map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
    } finally {
      await ledger.close();
    }
  }, 120_000);

  it('counts an event only from the node its job was dispatched to, judged on the locked row (T14)', async (ctx) => {
    if (engine.skip) ctx.skip();
    const ledger = await engine.open();
    try {
      await ledger.admitJobs([admission('mine'), admission('waits', { status: 'admitted', node: null })], () => []);
      const elsewhere = (e: RunnerEvent): RunnerEvent => ({ ...e, node: 'n2' });
      const forged = [elsewhere(ev.running('mine')), elsewhere(ev.ok('mine', 'forged')), elsewhere(ev.ok('waits', 'forged'))];
      const out = await ledger.write((w) =>
        w.applyRunnerEvents([
          ...forged,
          ev.running('mine'),
          { type: 'security', jobId: 'ghost', attempt: 1, node: 'n2', ts: 1, error: { code: 'SIGNATURE_INVALID', message: 'bad', retryable: false } },
        ]),
      );
      // The forged events are handed back, each with the node its job went to (none for a waiting job), by reference.
      expect(out.misattributed.map((m) => [m.jobId, m.dispatchedTo])).toEqual([
        ['mine', 'n1'],
        ['mine', 'n1'],
        ['waits', null],
      ]);
      expect(out.misattributed.map((m) => m.event)).toEqual(forged);
      expect(out.misattributed[0]!.event).toBe(forged[0]);
      // They moved nothing: n1's own report did, and the waiting job is as it was.
      expect(await ledger.getJob('mine')).toMatchObject({ status: 'running', result: null });
      expect((await ledger.listAttempts('mine')).map((a) => [a.node, a.outcome])).toEqual([['n1', 'running']]);
      expect(await ledger.getJob('waits')).toMatchObject({ status: 'admitted', node: null, result: null });
      // A security event about a job the ledger does not know moves nothing, and is still the node's to answer for.
      expect(out.unknownJobEvents).toBe(1);
      const audit = await ledger.tailAudit(10);
      expect(audit.map((a) => `${a.kind}:${a.actor}:${a.subject}`)).toEqual(['security:node:n2:ghost']);
    } finally {
      await ledger.close();
    }
  }, 120_000);

  it("a reconciler's decision about an attempt a report has since replaced writes nothing (no second new attempt)", async (ctx) => {
    if (engine.skip) ctx.skip();
    const ledger = await engine.open();
    try {
      await ledger.admitJobs([admission('r')], () => []);
      // The reconciler read the job at attempt 1 and found its queue entry failed (retryable): it decides to
      // dispatch attempt 2. Before it writes, the runner's report of that failure is applied and assigns attempt 2.
      const judged = await ledger.getJob('r');
      expect(judged).toMatchObject({ status: 'queued', attempts: 1 });
      const report = await ledger.write((w) => w.applyRunnerEvents([ev.running('r'), ev.fail('r', false)]));
      expect(report.retries.map((x) => [x.jobId, x.attempt])).toEqual([['r', 2]]);
      const before = await ledger.listJobEvents('r', 0, 50);
      // The reconciler's write, bound to the attempt it judged: refused, and nothing is written.
      expect(await ledger.dispatchAttempt('r', 'n1', { ifAttempts: judged!.attempts, message: (n) => `re-dispatched as attempt ${n}` })).toBeNull();
      expect(await ledger.transitionJob('r', 'failed', { attempt: judged!.attempts, errorCode: 'COMMAND_FAILED', errorMessage: 'boom' })).toBeNull();
      expect(await ledger.getJob('r')).toMatchObject({ status: 'queued', attempts: 2 });
      expect((await ledger.listAttempts('r')).map((a) => [a.attempt, a.outcome])).toEqual([
        [1, 'failed'],
        [2, 'queued'],
      ]);
      expect(await ledger.listJobEvents('r', 0, 50)).toEqual(before);
      // Bound to the current attempt, the same write goes through (the report's attempt 2 was lost, say).
      expect(await ledger.dispatchAttempt('r', 'n1', { ifAttempts: 2, message: (n) => `re-dispatched as attempt ${n}` })).toMatchObject({
        attempts: 3,
        event: { message: 're-dispatched as attempt 3' },
      });
    } finally {
      await ledger.close();
    }
  }, 120_000);

  it('writes nothing of a report whose transaction fails', async (ctx) => {
    if (engine.skip) ctx.skip();
    const ledger = await engine.open();
    try {
      await ledger.admitJobs([admission('x')], () => []);
      await expect(
        ledger.write(async (w) => {
          await w.applyRunnerEvents([ev.running('x'), ev.ok('x', 1)]);
          w.audit({ kind: 'job.effect', actor: 'n1', subject: 'x' });
          throw new Error('the ledger failed mid-report');
        }),
      ).rejects.toThrow('mid-report');
      expect(await ledger.getJob('x')).toMatchObject({ status: 'queued', attempts: 1 });
      expect((await ledger.listAttempts('x')).map((a) => [a.attempt, a.outcome, a.startedAt])).toEqual([[1, 'queued', null]]);
      expect((await ledger.verifyAudit()).count).toBe(0);
    } finally {
      await ledger.close();
    }
  }, 120_000);
});
