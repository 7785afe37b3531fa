// Hostile HTTP clients against the coord and the supervisor (A3): NUL bytes, malformed escapes, long paths and
// headers, slow bodies, out-of-range SSE ids, wrong charsets and signature counts, each answered with a Writ code
// in Writ's {error:{code,message,retryable}} shape, never 500 and never the framework's own shape.
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, type Io } from '@writ/cli';
import { ROUTES, buildApp } from '@writ/coord';
import { buildSupervisorApp } from '@writ/supervisor';
import { b64url, parseEnvelope, parseErrorAnswer } from '@writ/protocol';
import { NOOP, startTestStack, type TestStack } from './helpers/stack.ts';

let s: TestStack;
let coord: FastifyInstance;
let coordUrl: string;
let sup: FastifyInstance;
let supUrl: string;
let dir: string;
const SUP_TOKEN = 'sup-token-for-http-edges';

beforeAll(async () => {
  s = await startTestStack({ nodes: [{ id: 'node-a', labels: {} }] });
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-http-edges-'));
  // A second coord app on the same service, and a supervisor app, both with a short request timeout.
  coord = await buildApp({ service: s.service, apiToken: s.token, requestTimeoutMs: 1500 });
  coordUrl = await coord.listen({ port: 0, host: '127.0.0.1' });
  sup = await buildSupervisorApp(s.supervisor, SUP_TOKEN, { requestTimeoutMs: 1500 });
  supUrl = await sup.listen({ port: 0, host: '127.0.0.1' });
}, 180_000);
afterAll(async () => {
  await coord?.close();
  await sup?.close();
  await s?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Sends raw bytes and collects everything the server writes until it closes the connection. */
function rawExchange(
  url: string,
  chunks: (string | { waitMs: number })[],
  opts: { timeoutMs?: number; dripUntilClosed?: boolean } = {},
): Promise<{ text: string; closedAfterMs: number }> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const sock = net.connect(Number(port), '127.0.0.1');
    let text = '';
    let closed = false;
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`the server kept the connection open for ${opts.timeoutMs ?? 30_000} ms; got so far: ${JSON.stringify(text.slice(0, 300))}`));
    }, opts.timeoutMs ?? 30_000);
    sock.on('data', (d) => (text += d.toString('latin1')));
    sock.on('error', () => {});
    sock.on('close', () => {
      closed = true;
      clearTimeout(timer);
      resolve({ text, closedAfterMs: Date.now() - started });
    });
    void (async () => {
      for (const c of chunks) {
        if (closed) return;
        if (typeof c === 'string') sock.write(c, 'latin1');
        else await new Promise((r) => setTimeout(r, c.waitMs));
      }
      // A slow body: one byte every 200 ms for as long as the server listens.
      while (opts.dripUntilClosed && !closed) {
        sock.write('x');
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
  });
}

/** The status and Writ error of a raw HTTP answer; fails when the body is not Writ's error shape. */
function parseRawAnswer(text: string): { status: number; code: string } {
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
  const body = text.slice(text.indexOf('\r\n\r\n') + 4);
  const err = parseErrorAnswer(JSON.parse(body));
  if (!err) throw new Error(`not Writ's error shape: ${body}`);
  return { status, code: err.code };
}

async function get(base: string, route: string, token: string, headers: Record<string, string> = {}) {
  const res = await fetch(base + route, { headers: { authorization: `Bearer ${token}`, ...headers } });
  const text = await res.text();
  return { status: res.status, text, error: parseErrorAnswer(JSON.parse(text)) };
}

async function post(base: string, route: string, token: string, body: string, contentType = 'application/json') {
  const res = await fetch(base + route, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': contentType }, body });
  const text = await res.text();
  return { status: res.status, text, error: parseErrorAnswer(JSON.parse(text)) };
}

describe('NUL bytes and malformed URLs (A3)', () => {
  it('a NUL byte in a query or path is a 400 BAD_REQUEST, not a 500', async () => {
    for (const route of ['/v1/jobs?node=%00', '/v1/jobs?cursor=a%00b', '/v1/jobs/%00', '/v1/nodes/a%00b']) {
      const r = await get(coordUrl, route, s.token);
      expect([route, r.status, r.error?.code]).toEqual([route, 400, 'BAD_REQUEST']);
      expect(r.error?.message).toMatch(/NUL/);
    }
    const r = await get(supUrl, '/v1/jobs/node-a/a%00b/1', SUP_TOKEN);
    expect([r.status, r.error?.code]).toEqual([400, 'BAD_REQUEST']);
  });

  it("a malformed %-escape, an over-long path segment, an over-large header block and a garbage request line come back in Writ's shape", async () => {
    for (const base of [coordUrl, supUrl]) {
      const token = base === coordUrl ? s.token : SUP_TOKEN;
      const badEscape = await get(base, base === coordUrl ? '/v1/jobs/%zz' : '/v1/jobs/%zz/x/1', token);
      expect([badEscape.status, badEscape.error?.code]).toEqual([400, 'BAD_REQUEST']);
      const long = await get(base, base === coordUrl ? `/v1/nodes/${'a'.repeat(300)}` : `/v1/jobs/node-a/${'a'.repeat(300)}/1`, token);
      expect([long.status, long.error?.code]).toEqual([414, 'URI_TOO_LONG']);
      const headers = await rawExchange(base, [`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(70_000)}\r\n\r\n`]);
      expect(parseRawAnswer(headers.text)).toEqual({ status: 431, code: 'HEADERS_TOO_LARGE' });
      const garbage = await rawExchange(base, ['NOT HTTP AT ALL\r\n\r\n']);
      expect(parseRawAnswer(garbage.text)).toEqual({ status: 400, code: 'BAD_REQUEST' });
    }
  });
});

describe('query values', () => {
  it('?status=bogus lists the allowed values', async () => {
    const r = await get(coordUrl, '/v1/jobs?status=bogus', s.token);
    expect([r.status, r.error?.code, r.error?.message]).toEqual([
      400,
      'BAD_REQUEST',
      expect.stringContaining('(one of: admitted, queued, running, succeeded, failed, refused)'),
    ]);
  });
});

describe('slow clients (A3)', () => {
  it('a body that trickles in is cut off with 408 REQUEST_TIMEOUT (coord and supervisor)', async () => {
    for (const [base, token] of [
      [coordUrl, s.token],
      [supUrl, SUP_TOKEN],
    ] as const) {
      const route = base === coordUrl ? '/v1/jobs' : '/v1/submit';
      const r = await rawExchange(
        base,
        [`POST ${route} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{`],
        {
          dripUntilClosed: true,
          timeoutMs: 30_000,
        },
      );
      expect(parseRawAnswer(r.text)).toEqual({ status: 408, code: 'REQUEST_TIMEOUT' });
      expect(r.closedAfterMs).toBeGreaterThanOrEqual(1400);
    }
  });

  it('headers that never finish are cut off too', async () => {
    const r = await rawExchange(coordUrl, ['GET /healthz HTTP/1.1\r\nHost: x\r\n'], { timeoutMs: 30_000 });
    expect(parseRawAnswer(r.text)).toEqual({ status: 408, code: 'REQUEST_TIMEOUT' });
  });
});

describe('SSE ids (A3)', () => {
  it('a Last-Event-ID beyond any event id is a prompt 400; the largest valid one ends the stream of a finished job', async () => {
    const { envelope, id } = s.sign(NOOP);
    expect((await s.post(envelope)).status).toBe(202);
    await s.waitFor(id);
    for (const bad of [String(2 ** 31), '99999999999999999999', '-1', 'abc', '1.5']) {
      const r = await get(coordUrl, `/v1/jobs/${id}/events`, s.token, { 'last-event-id': bad, accept: 'text/event-stream' });
      expect([bad, r.status, r.error?.code]).toEqual([bad, 400, 'BAD_REQUEST']);
      expect(r.error?.message).toMatch(/Last-Event-ID/);
    }
    const q = await get(coordUrl, `/v1/jobs/${id}/events?after=${2 ** 31}`, s.token);
    expect([q.status, q.error?.code]).toEqual([400, 'BAD_REQUEST']);
    // The largest valid id: nothing is after it and the job is over, so the stream ends at once.
    const res = await fetch(`${coordUrl}/v1/jobs/${id}/events`, {
      headers: { authorization: `Bearer ${s.token}`, 'last-event-id': String(2 ** 31 - 1) },
      signal: AbortSignal.timeout(20_000),
    });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('event: end\ndata: {}\n\n');
  });
});

describe('bodies (A3)', () => {
  it('application/json with a charset other than UTF-8 is refused 415 UNSUPPORTED_MEDIA_TYPE; UTF-8 is accepted', async () => {
    const { envelope } = s.sign(NOOP);
    for (const ct of ['application/json; charset=latin1', 'application/json;charset="ISO-8859-1"', 'application/json; charset=utf-16']) {
      const r = await post(coordUrl, '/v1/jobs', s.token, envelope, ct);
      expect([ct, r.status, r.error?.code]).toEqual([ct, 415, 'UNSUPPORTED_MEDIA_TYPE']);
      const sr = await post(supUrl, '/v1/submit', SUP_TOKEN, envelope, ct);
      expect([ct, sr.status, sr.error?.code]).toEqual([ct, 415, 'UNSUPPORTED_MEDIA_TYPE']);
    }
    const ok = await post(coordUrl, '/v1/jobs', s.token, envelope, 'application/json; charset=UTF-8');
    expect(ok.status).toBe(202);
    const text = await post(coordUrl, '/v1/jobs', s.token, envelope, 'text/plain');
    expect([text.status, text.error?.code]).toEqual([415, 'UNSUPPORTED_MEDIA_TYPE']);
  });

  it('0 and 17 signatures give the same codes over HTTP as `writ verify`', async () => {
    const { envelope } = s.sign(NOOP);
    const env = parseEnvelope(envelope);
    const variants = {
      none: { ...env, signatures: [] },
      seventeen: { ...env, signatures: Array.from({ length: 17 }, (_, i) => ({ keyid: `k${i}`, sig: b64url(new Uint8Array(64)) })) },
    };
    const codes: Record<string, [string | undefined, string | undefined, string | undefined]> = {};
    for (const [name, v] of Object.entries(variants)) {
      const file = path.join(dir, `${name}.env.json`);
      await writeFile(file, JSON.stringify(v));
      const out: string[] = [];
      const io: Io = { out: (l) => out.push(l), err: () => {} };
      await runCli(['verify', file, `--pubkey=${b64url(s.admin.publicKey)}`, '--json'], io, {
        env: { WRIT_HOME: dir },
        now: () => Math.floor(Date.now() / 1000),
      });
      const cli = JSON.parse(out.join('\n')) as { checks: { ok: boolean; error?: { code: string } }[] };
      const single = await post(coordUrl, '/v1/jobs', s.token, JSON.stringify(v));
      const batch = await post(coordUrl, '/v1/jobs:batch', s.token, JSON.stringify({ envelopes: [v] }));
      codes[name] = [cli.checks.find((c) => !c.ok)?.error?.code, single.error?.code, batch.error?.code];
    }
    expect(codes).toEqual({
      none: ['ENVELOPE_MALFORMED', 'ENVELOPE_MALFORMED', 'ENVELOPE_MALFORMED'],
      seventeen: ['TOO_MANY_SIGNATURES', 'TOO_MANY_SIGNATURES', 'TOO_MANY_SIGNATURES'],
    });
  });
});

describe('OpenAPI (A1)', () => {
  it('GET /openapi.json is served without a token and describes exactly the declared routes', async () => {
    const res = await fetch(`${coordUrl}/openapi.json`);
    expect(res.status).toBe(200);
    const doc = (await res.json()) as {
      openapi: string;
      info: { title: string };
      paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: Record<string, unknown> }> }; responses?: unknown }>>;
    };
    expect(doc.openapi).toMatch(/^3\./);
    const described = Object.entries(doc.paths)
      .flatMap(([p, ops]) =>
        Object.keys(ops)
          .filter((m) => m !== 'head')
          .map((m) => `${m.toUpperCase()} ${p.replace(/\{(\w+)\}/g, ':$1')}`),
      )
      .sort();
    // The route list is snapshot-tested (signed-path, A1); the document describes every route but itself.
    expect(described).toEqual(ROUTES.filter((r) => r !== 'GET /openapi.json').sort());
    // Bodies carry their schemas, unknown fields refused, as the server checks them.
    const submit = doc.paths['/v1/jobs']!.post!.requestBody!.content['application/json']!.schema;
    expect(submit).toMatchObject({ type: 'object', additionalProperties: false, required: ['payloadType', 'payload', 'signatures'] });
  });

  it('says per route what authenticates it: the token, a signature in the body, or nothing', async () => {
    const doc = (await (await fetch(`${coordUrl}/openapi.json`)).json()) as {
      security: unknown[];
      paths: Record<string, Record<string, { security?: unknown[] }>>;
    };
    expect(doc.security).toEqual([{ bearer: [] }]);
    const open = (p: string, m: string) => doc.paths[p]![m]!.security;
    for (const [p, m] of [
      ['/healthz', 'get'],
      ['/metrics', 'get'],
      ['/', 'get'],
      ['/ui/{file}', 'get'],
      ['/boot/ipxe', 'get'],
      ['/v1/reports', 'post'],
      ['/v1/nodes/register', 'post'],
      ['/v1/supervisors/heartbeat', 'post'],
    ] as const) {
      expect(open(p, m), `${m} ${p}`).toEqual([]);
    }
    for (const [p, m] of [
      ['/v1/jobs', 'post'],
      ['/v1/jobs/{id}', 'get'],
      ['/v1/keyset', 'get'],
      ['/v1/flows', 'post'],
    ] as const) {
      expect(open(p, m), `${m} ${p}`).toBeUndefined(); // the document's default: the bearer token
    }
    // What the document says is what the server does.
    expect((await fetch(`${coordUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${coordUrl}/v1/keyset`)).status).toBe(401);
  });

  it('serves a client generated from it (openapi-typescript types, openapi-fetch calls): type-checked, then run', async () => {
    const { default: openapiTS, astToString } = await import('openapi-typescript');
    const doc = (await (await fetch(`${coordUrl}/openapi.json`)).json()) as Record<string, unknown>;
    const gen = path.join(dir, 'client');
    await mkdir(gen, { recursive: true });
    await symlink(path.resolve(import.meta.dirname, '../node_modules'), path.join(gen, 'node_modules'));
    await writeFile(path.join(gen, 'api.d.ts'), astToString(await openapiTS(doc as never)));
    // A typed use of the generated client, and a call the document does not allow (an unknown status), which
    // the compiler must refuse: the types carry the server's schemas.
    await writeFile(
      path.join(gen, 'use.ts'),
      [
        "import createClient from 'openapi-fetch';",
        "import type { paths } from './api.d.ts';",
        'const client = createClient<paths>({ baseUrl: process.env.URL });',
        "export const ok = client.GET('/v1/jobs', { params: { query: { status: 'succeeded' } } });",
        "export const job = client.GET('/v1/jobs/{id}', { params: { path: { id: 'x' } } });",
        '// @ts-expect-error: not one of the statuses the route accepts',
        "export const bad = client.GET('/v1/jobs', { params: { query: { status: 'bogus' } } });",
        '',
      ].join('\n'),
    );
    await writeFile(
      path.join(gen, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          noEmit: true,
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          allowImportingTsExtensions: true,
          skipLibCheck: true,
          types: ['node'],
          typeRoots: [path.resolve(import.meta.dirname, '../node_modules/@types')],
        },
        files: ['use.ts'],
      }),
    );
    const tsc = spawnSync(process.execPath, [path.resolve(import.meta.dirname, '../node_modules/typescript/bin/tsc'), '-p', gen], { encoding: 'utf8' });
    expect(tsc.stdout + tsc.stderr).toBe('');
    expect(tsc.status).toBe(0);
    // At run time, the same client against this coord.
    const { default: createClient } = await import('openapi-fetch');
    const client = createClient<Record<string, never>>({ baseUrl: coordUrl, headers: { authorization: `Bearer ${s.token}` } });
    const listed = await (client as unknown as { GET(p: string, o: unknown): Promise<{ data?: { jobs: unknown[] }; response: Response }> }).GET('/v1/jobs', {
      params: { query: { status: 'succeeded' } },
    });
    expect(listed.response.status).toBe(200);
    expect(Array.isArray(listed.data?.jobs)).toBe(true);
  }, 120_000);
});

describe('supervisor batch submit (POST /v1/submit:batch)', () => {
  const batch = (items: unknown[], token = SUP_TOKEN) => post(supUrl, '/v1/submit:batch', token, JSON.stringify({ items }));

  it('judges each item on its own: the good ones are enqueued, a forged or misplaced one is refused with its code', async () => {
    const good = s.sign(NOOP);
    const second = s.sign(NOOP);
    // The same signed job with its payload changed: the signature no longer holds.
    const forgedDoc = parseEnvelope(s.sign(NOOP).envelope);
    forgedDoc.payload = b64url(new TextEncoder().encode(JSON.stringify({ tampered: true })));
    const elsewhere = s.sign(NOOP, { target: { node: 'node-nowhere' } });
    const r = await batch([
      { envelope: good.envelope, node: 'node-a', attempt: 1 },
      { envelope: JSON.stringify(forgedDoc), node: 'node-a', attempt: 1 },
      { envelope: elsewhere.envelope, node: 'node-nowhere', attempt: 1 },
      { envelope: second.envelope, node: 'node-a', attempt: 2, delayMs: 60_000 },
    ]);
    expect(r.status, r.text).toBe(200);
    const { results } = JSON.parse(r.text) as { results: ({ jobId: string; node: string } | { error: { code: string; retryable: boolean } })[] };
    expect(results).toHaveLength(4);
    expect(results[0]).toEqual({ jobId: good.id, node: 'node-a' });
    expect(results[1]).toMatchObject({ error: { code: expect.stringMatching(/SIGNATURE_INVALID|SCHEMA_INVALID|ENVELOPE_MALFORMED/) } });
    expect(results[2]).toMatchObject({ error: { code: expect.stringMatching(/^NODE_/) } });
    expect(results[3]).toEqual({ jobId: second.id, node: 'node-a' });
    // In the node's queue under <job>@<attempt>: the delayed one waits there.
    expect((await s.supervisor.jobState(second.id, 2, 'node-a')).state).toBe('delayed');
    expect((await s.supervisor.jobState(good.id, 1, 'node-a')).state).not.toBe('missing');
    expect((await s.supervisor.jobState(elsewhere.id, 1, 'node-nowhere')).state).toBe('missing');
  });

  it('refuses a malformed batch whole, with BAD_REQUEST, and asks for the token', async () => {
    const { envelope } = s.sign(NOOP);
    const item = { envelope, node: 'node-a', attempt: 1 };
    for (const [what, items] of [
      ['no items', []],
      ['an item without its attempt', [{ envelope, node: 'node-a' }]],
      ['attempt 0', [{ ...item, attempt: 0 }]],
      ['a node id with a slash', [{ ...item, node: 'a/b' }]],
      ['an unknown field', [{ ...item, priority: 1 }]],
      ['501 items', Array.from({ length: 501 }, () => item)],
    ] as const) {
      const r = await batch([...items]);
      expect([what, r.status, r.error?.code]).toEqual([what, 400, 'BAD_REQUEST']);
    }
    const r = await batch([item], 'wrong-token');
    expect([r.status, r.error?.code]).toEqual([401, 'UNAUTHENTICATED']);
    // The ':' is part of the path, not a parameter: a near miss is an unknown route.
    for (const route of ['/v1/submitx', '/v1/submit:other', '/v1/submit:batchx']) {
      const near = await post(supUrl, route, SUP_TOKEN, JSON.stringify({ items: [item] }));
      expect([route, near.status, near.error?.code]).toEqual([route, 404, 'ROUTE_NOT_FOUND']);
    }
  });
});
