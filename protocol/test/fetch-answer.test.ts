// fetchAnswer, the one HTTP client of the tiers, against a real server on loopback.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WritError, errorCodeOf, fetchAnswer } from '../src/index.ts';

let server: http.Server;
let url: string;
const seen: { auth: string | undefined; type: string | undefined; body: string }[] = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      seen.push({ auth: req.headers.authorization, type: req.headers['content-type'], body });
      if (req.url === '/ok') return res.writeHead(200, { 'content-type': 'application/json' }).end('{"a":1}');
      if (req.url === '/refused') return res.writeHead(404).end('{"error":{"code":"FLOW_NOT_FOUND","message":"no flow x","retryable":false}}');
      if (req.url === '/html') return res.writeHead(502).end('<html>bad gateway</html>');
      if (req.url === '/cut') return req.socket.destroy();
      res.writeHead(500).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

const unavailable = (m: string) => new WritError('SUPERVISOR_UNAVAILABLE', `it ${m}`);

describe('fetchAnswer', () => {
  it('sends the token and the body as given, and returns the status and JSON body', async () => {
    expect(await fetchAnswer({ method: 'POST', url: `${url}/ok`, token: 't0k', body: '{"x": 1}', timeoutMs: 5000, unavailable })).toEqual({
      status: 200,
      body: { a: 1 },
    });
    expect(seen.at(-1)).toEqual({ auth: 'Bearer t0k', type: 'application/json', body: '{"x": 1}' });
    await fetchAnswer({ method: 'GET', url: `${url}/ok`, timeoutMs: 5000, unavailable });
    expect(seen.at(-1)).toEqual({ auth: undefined, type: undefined, body: '' });
  });

  it("throws the WritError an error answer carries, and the caller's error for what is not Writ's", async () => {
    const refused = await fetchAnswer({ method: 'GET', url: `${url}/refused`, timeoutMs: 5000, unavailable }).catch((e: unknown) => e);
    expect(errorCodeOf(refused)).toBe('FLOW_NOT_FOUND');
    const html = await fetchAnswer({ method: 'GET', url: `${url}/html`, timeoutMs: 5000, unavailable }).catch((e: unknown) => e as Error);
    expect(errorCodeOf(html)).toBe('SUPERVISOR_UNAVAILABLE');
    expect((html as Error).message).toMatch(/502 with a body that is not JSON/);
  });

  it('a service that is not there, or stops mid-answer, is unreachable', async () => {
    const cut = await fetchAnswer({
      method: 'GET',
      url: `${url}/cut`,
      timeoutMs: 5000,
      unavailable,
      unreachable: (e) => new WritError('NOT_READY', `gone: ${e.message}`),
    }).catch((e: unknown) => e);
    expect(errorCodeOf(cut)).toBe('NOT_READY');
    const closed = await fetchAnswer({ method: 'GET', url: 'http://127.0.0.1:1/', timeoutMs: 5000, unavailable }).catch((e: unknown) => e as Error);
    expect(errorCodeOf(closed)).toBe('SUPERVISOR_UNAVAILABLE');
    expect((closed as Error).message).toMatch(/is unreachable/);
  });
});
