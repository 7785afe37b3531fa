// GET /metrics on a real stack: queue depth per node, jobs per status, nodes per lifecycle state, ledger health
// and faults, and a job latency histogram that counts each finished job once (issue 13).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WritError } from '@writ/protocol';
import { NOOP, startTestStack, type TestStack } from './helpers/stack.ts';
import { until } from './helpers/processes.ts';

let s: TestStack;

beforeAll(async () => {
  s = await startTestStack({ nodes: [{ id: 'node-a', labels: {} }] });
  await s.startRunner('node-idle', {}, { accept: false });
  await s.waitForNode('node-idle', ['inspected'], 30_000);
}, 180_000);
afterAll(async () => {
  await s?.close();
});

async function scrape(): Promise<{ text: string; contentType: string | null }> {
  const res = await fetch(`${s.url}/metrics`); // unauthenticated, as Prometheus scrapes it
  expect(res.status).toBe(200);
  return { text: await res.text(), contentType: res.headers.get('content-type') };
}

/** The value of one series, e.g. value(text, 'writ_nodes{state="active",reachable="true"}'); NaN when absent. */
function value(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line ? Number(line.slice(series.length + 1)) : NaN;
}

describe('/metrics', () => {
  it('is Prometheus text with the service counters and the new families, each with HELP and TYPE', async () => {
    const { text, contentType } = await scrape();
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    for (const [name, type] of [
      ['writ_jobs_submitted_total', 'counter'],
      ['writ_queue_depth', 'gauge'],
      ['writ_jobs', 'gauge'],
      ['writ_nodes', 'gauge'],
      ['writ_ledger_up', 'gauge'],
      ['writ_ledger_errors_total', 'counter'],
      ['writ_job_latency_seconds', 'histogram'],
    ]) {
      expect(text).toContain(`# TYPE ${name} ${type}\n`);
      expect(text).toMatch(new RegExp(`# HELP ${name} \\S`));
    }
  });

  it('nodes per lifecycle state and liveness', async () => {
    const { text } = await scrape();
    // Liveness depends on heartbeats, which a loaded machine may delay: the state counts hold either way.
    const inState = (state: string) =>
      value(text, `writ_nodes{state="${state}",reachable="true"}`) + value(text, `writ_nodes{state="${state}",reachable="false"}`);
    expect([inState('active'), inState('inspected'), inState('failed'), inState('retired')]).toEqual([1, 1, 0, 0]);
  });

  it("the ledger's statements and transactions: counted as the coord runs them, a job's admission and finish among them", async () => {
    const before = (await scrape()).text;
    for (const name of ['writ_ledger_statements_total', 'writ_ledger_transactions_total']) {
      expect(before).toContain(`# TYPE ${name} counter\n`);
      expect(value(before, name)).toBeGreaterThan(0); // the migrations and start-up already ran some
    }
    const { envelope, id } = s.sign(NOOP);
    expect((await s.post(envelope)).status).toBe(202);
    expect((await s.waitFor(id)).status).toBe('succeeded');
    const after = (await scrape()).text;
    // At least the admission and the recording of the runner's result, each a transaction of statements.
    expect(value(after, 'writ_ledger_transactions_total') - value(before, 'writ_ledger_transactions_total')).toBeGreaterThanOrEqual(2);
    expect(value(after, 'writ_ledger_statements_total') - value(before, 'writ_ledger_statements_total')).toBeGreaterThanOrEqual(4);
  });

  it('job latency: each finished job is observed once, under its final status', async () => {
    const before = value((await scrape()).text, 'writ_job_latency_seconds_count{status="succeeded"}');
    const { envelope, id } = s.sign(NOOP);
    expect((await s.post(envelope)).status).toBe(202);
    const job = await s.waitFor(id);
    expect(job.status).toBe('succeeded');
    const first = (await scrape()).text;
    const counted = value(first, 'writ_job_latency_seconds_count{status="succeeded"}');
    expect(counted).toBe((Number.isNaN(before) ? 0 : before) + 1);
    const seconds = (job.finishedAt.getTime() - job.createdAt.getTime()) / 1000;
    expect(value(first, 'writ_job_latency_seconds_bucket{le="3600",status="succeeded"}')).toBe(counted);
    expect(value(first, 'writ_job_latency_seconds_sum{status="succeeded"}')).toBeGreaterThanOrEqual(seconds - 0.001);
    // A second scrape with no job ended in between counts nothing again.
    expect(value((await scrape()).text, 'writ_job_latency_seconds_count{status="succeeded"}')).toBe(counted);
  });

  it('jobs per status, and queue depth per node while jobs wait behind busy runner slots', async () => {
    // A job for a known node that takes no work waits admitted.
    const waiting = s.sign(NOOP, { target: { node: 'node-idle' } });
    expect((await s.post(waiting.envelope)).status).toBe(202);
    expect(value((await scrape()).text, 'writ_jobs{status="admitted"}')).toBeGreaterThanOrEqual(1);
    // The runner takes two jobs at a time: of four that sleep, two wait queued for node-a.
    const sleepers = Array.from({ length: 4 }, () =>
      s.sign('export default async (a, ctx) => { await ctx.sal.time.sleep({ ms: 4000 }); return 1 }', { caps: ['time.sleep'] }),
    );
    for (const j of sleepers) expect((await s.post(j.envelope)).status).toBe(202);
    const depth = await until(
      'queue depth for node-a above 0',
      async () => {
        const d = value((await scrape()).text, 'writ_queue_depth{node="node-a"}');
        return d > 0 ? d : undefined;
      },
      30_000,
    );
    expect(depth).toBeLessThanOrEqual(4);
    for (const j of sleepers) await s.waitFor(j.id, ['succeeded'], 60_000);
    expect(value((await scrape()).text, 'writ_queue_depth{node="node-a"}')).toBeNaN(); // no queued job left: no series
    expect(value((await scrape()).text, 'writ_jobs{status="succeeded"}')).toBeGreaterThanOrEqual(5);
  });

  it('the ledger: up, and its storage faults counted', async () => {
    const before = await scrape();
    expect(value(before.text, 'writ_ledger_up')).toBe(1);
    const faults = value(before.text, 'writ_ledger_errors_total');
    const health = s.ledger.db.health;
    health.degraded(new WritError('LEDGER_UNAVAILABLE', 'a write failed (test)'));
    try {
      const during = await scrape();
      expect(value(during.text, 'writ_ledger_up')).toBe(0);
      expect(value(during.text, 'writ_ledger_errors_total')).toBe(faults + 1);
    } finally {
      health.writeSucceeded();
    }
    expect(value((await scrape()).text, 'writ_ledger_up')).toBe(1);
  });
});
