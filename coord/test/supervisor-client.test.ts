// The coord's HTTP client of a supervisor hands many attempts over in batch requests: split by count and by
// size as sent, in order, each envelope carried byte for byte; a supervisor without the batch route (an older
// `writ supervisor`, played here by a small HTTP server answering as that version did) gets one request per item.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_SUPERVISOR_BATCH_BYTES, MAX_SUPERVISOR_BATCH_ITEMS, errorAnswer } from '@writ/protocol';
import type { DispatchItem } from '@writ/supervisor';
import { HttpSupervisorClient, batchBodies } from '../src/supervisor-client.ts';

const item = (i: number, envelope = `{"payload":"p${i}","note":"quote \\" and unicode \u00e9"}`): DispatchItem => ({
  jobId: `job-${i}`,
  node: 'n1',
  envelope,
  attempt: 1 + (i % 3),
  ...(i % 4 === 0 ? { delayMs: 1500.4 } : {}),
});

describe('batchBodies', () => {
  it('splits by count, keeps the order, and carries each envelope text exactly', () => {
    const items = Array.from({ length: MAX_SUPERVISOR_BATCH_ITEMS * 2 + 1 }, (_, i) => item(i));
    const bodies = batchBodies(items);
    expect(bodies.map((b) => b.items.length)).toEqual([MAX_SUPERVISOR_BATCH_ITEMS, MAX_SUPERVISOR_BATCH_ITEMS, 1]);
    const sent = bodies.flatMap((b) => (JSON.parse(b.body) as { items: { envelope: string; node: string; attempt: number; delayMs?: number }[] }).items);
    expect(sent).toEqual(items.map((it) => ({ envelope: it.envelope, node: it.node, attempt: it.attempt, ...(it.delayMs ? { delayMs: 1500 } : {}) })));
    expect(bodies.flatMap((b) => b.items)).toEqual(items);
  });

  it('keeps every body within the byte limit as sent, escapes included', () => {
    // 300 KB envelopes made mostly of characters JSON escapes (a quote becomes two bytes).
    const big = `{"x":"${'\\"'.repeat(150_000)}"}`;
    const items = Array.from({ length: 40 }, (_, i) => item(i, big));
    const bodies = batchBodies(items);
    expect(bodies.length).toBeGreaterThan(1);
    for (const b of bodies) expect(Buffer.byteLength(b.body)).toBeLessThanOrEqual(MAX_SUPERVISOR_BATCH_BYTES);
    expect(bodies.flatMap((b) => b.items)).toEqual(items);
    expect(bodies.flatMap((b) => (JSON.parse(b.body) as { items: { envelope: string }[] }).items.map((x) => x.envelope))).toEqual(items.map(() => big));
  });
});

describe('HttpSupervisorClient.dispatchMany', () => {
  let server: http.Server | undefined;
  afterEach(() => new Promise<void>((r) => (server ? server.close(() => r()) : r())));

  /**
   * A supervisor double: records each request. `batch` answers the batch route (given the items' envelopes), or
   * is false for a supervisor without it.
   */
  async function supervisor(batch: false | ((envelopes: string[]) => unknown)) {
    const seen: { path: string; body: string }[] = [];
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += String(d)));
      req.on('end', () => {
        const path = req.url ?? '';
        seen.push({ path, body });
        const send = (status: number, doc: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(doc));
        if (path === '/v1/submit:batch' && batch)
          return send(200, batch((JSON.parse(body) as { items: { envelope: string }[] }).items.map((it) => it.envelope)));
        if (path.startsWith('/v1/submit?')) return send(200, { jobId: 'j', node: 'n1' });
        return send(404, errorAnswer('ROUTE_NOT_FOUND', `no route POST ${path}`));
      });
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
    const { port } = server!.address() as AddressInfo;
    return { seen, client: new HttpSupervisorClient('sup-1', `http://127.0.0.1:${port}`, 'token') };
  }

  const refusing = (envelopes: string[]) => ({
    results: envelopes.map((e, i) =>
      e.includes('refuse') ? { error: { code: 'SIGNATURE_INVALID', message: 'no', retryable: true } } : { jobId: `job-${i}`, node: 'n1' },
    ),
  });

  it('sends many items in one request and maps each result back to its item, retryable by its own registry', async () => {
    const { seen, client } = await supervisor(refusing);
    const out = await client.dispatchMany([item(1), item(2, '{"refuse":true}'), item(3)]);
    // The supervisor said retryable; SIGNATURE_INVALID is not, in the coord's registry, which decides.
    expect(out).toEqual([null, { code: 'SIGNATURE_INVALID', message: 'no', retryable: false }, null]);
    // A lone item takes the same route (and so the same size limit).
    expect(await client.dispatchMany([item(4)])).toEqual([null]);
    expect(seen.map((r) => r.path)).toEqual(['/v1/submit:batch', '/v1/submit:batch']);
  });

  it('an answer it cannot read, or a refusal code it does not know, is a retryable SUPERVISOR_UNAVAILABLE, never a refusal', async () => {
    const short = await supervisor(() => ({ results: [{ jobId: 'j', node: 'n1' }] }));
    expect((await short.client.dispatchMany([item(1), item(2)])).map((e) => [e?.code, e?.retryable])).toEqual([
      ['SUPERVISOR_UNAVAILABLE', true],
      ['SUPERVISOR_UNAVAILABLE', true],
    ]);
    await new Promise<void>((r) => server!.close(() => r()));
    const newer = await supervisor((envelopes) => ({
      results: envelopes.map((e, i) => (i === 0 ? { error: { code: 'FROM_A_NEWER_VERSION', message: 'x', retryable: false } } : { jobId: 'j', node: 'n1' })),
    }));
    expect((await newer.client.dispatchMany([item(1), item(2)])).map((e) => e && [e.code, e.retryable])).toEqual([['SUPERVISOR_UNAVAILABLE', true], null]);
  });

  it('falls back to one request per item, and stays there, when the supervisor has no batch route', async () => {
    const { seen, client } = await supervisor(false);
    expect(await client.dispatchMany([item(1), item(2)])).toEqual([null, null]);
    expect(await client.dispatchMany([item(3), item(4)])).toEqual([null, null]);
    expect(seen.map((r) => r.path.split('?')[0])).toEqual(['/v1/submit:batch', '/v1/submit', '/v1/submit', '/v1/submit', '/v1/submit']);
  });

  it('a supervisor that cannot be reached is every item’s retryable refusal', async () => {
    const client = new HttpSupervisorClient('sup-gone', 'http://127.0.0.1:9', 'token');
    const out = await client.dispatchMany([item(1), item(2)]);
    expect(out.map((e) => [e?.code, e?.retryable])).toEqual([
      ['SUPERVISOR_UNAVAILABLE', true],
      ['SUPERVISOR_UNAVAILABLE', true],
    ]);
  });
});
