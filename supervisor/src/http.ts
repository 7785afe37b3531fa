// The supervisor's HTTP API, for a coord in another process. Built here (never listening); `writ supervisor` listens.
// Every route needs the bearer token the coord was given, except /healthz and /readyz.
import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import {
  errorAnswer,
  errorCodeOf,
  parseStrictJson,
  toErrorJSON,
  ERROR_CODES,
  MAX_ATTEMPT_NUMBER,
  WritError,
  MAX_SUPERVISOR_BATCH_BYTES,
  MAX_SUPERVISOR_BATCH_ITEMS,
  type QueueStateAnswer,
  type SupervisorBatchAnswer,
  type SupervisorBatchItem,
  type SupervisorSubmitAnswer,
} from '@writ/protocol';
import type { Supervisor } from './supervisor.ts';
import { checkJsonCharset, guardedServerOptions, installRequestGuards, type HttpGuardOptions } from './http-guards.ts';

export const SUPERVISOR_ROUTES = [
  'GET /healthz',
  'GET /readyz',
  'POST /v1/submit',
  'POST /v1/submit:batch',
  'GET /v1/jobs/:node/:id/:attempt',
  'PUT /v1/keyset',
] as const;

export async function buildSupervisorApp(sup: Supervisor, apiToken: string, guards: HttpGuardOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: false,
    bodyLimit: 1024 * 1024 + 4096,
    requestIdHeader: false,
    ajv: { customOptions: { removeAdditional: false, useDefaults: false, coerceTypes: 'array', allErrors: false } },
    ...guardedServerOptions(guards),
  });
  installRequestGuards(app);
  const token = Buffer.from(apiToken);
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    try {
      checkJsonCharset(req.headers['content-type']);
      (req as { rawBody?: string }).rawBody = body as string;
      done(null, parseStrictJson(body as string, { maxBytes: req.routeOptions.bodyLimit ?? 1024 * 1024 + 4096 }));
    } catch (e) {
      done(e as Error, undefined);
    }
  });
  app.addHook('onRequest', async (req, reply) => {
    const p = req.url.split('?')[0];
    if (p === '/healthz' || p === '/readyz') return;
    const h = req.headers.authorization ?? '';
    const given = Buffer.from(h.startsWith('Bearer ') ? h.slice(7) : '');
    if (given.length !== token.length || !timingSafeEqual(given, token))
      return reply.code(401).send(errorAnswer('UNAUTHENTICATED', 'bad or missing bearer token'));
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send(errorAnswer('ROUTE_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`)));
  app.setErrorHandler((err: Error & { code?: string; statusCode?: number; validation?: unknown[] }, _req, reply) => {
    const code = errorCodeOf(err);
    if (code) return reply.code(ERROR_CODES[code].status).send({ error: toErrorJSON(err) });
    if (err.validation) return reply.code(400).send(errorAnswer('BAD_REQUEST', err.message));
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return reply.code(413).send(errorAnswer('BODY_TOO_LARGE', 'body too large'));
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
      return reply.code(415).send(errorAnswer('UNSUPPORTED_MEDIA_TYPE', 'send Content-Type: application/json'));
    if (typeof err.statusCode === 'number' && err.statusCode < 500) return reply.code(400).send(errorAnswer('BAD_REQUEST', 'the request is malformed'));
    return reply.code(500).send(errorAnswer('INTERNAL', ERROR_CODES.INTERNAL.message));
  });

  app.get('/healthz', async () => ({ ok: true }));
  app.get('/readyz', async (_req, reply) => {
    const h = await sup.health();
    return reply.code(h.redis ? 200 : 503).send({ ok: h.redis, redis: h.redis });
  });
  app.post(
    '/v1/submit',
    {
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            node: { type: 'string', pattern: '^[a-z0-9][a-z0-9.-]{0,62}$' },
            attempt: { type: 'integer', minimum: 1, maximum: MAX_ATTEMPT_NUMBER },
            delayMs: { type: 'integer', minimum: 0, maximum: 3_600_000 },
          },
        },
      },
    },
    async (req) => {
      const q = req.query as { node?: string; attempt?: number; delayMs?: number };
      const r = await sup.submit((req as { rawBody?: string }).rawBody!, {
        ...(q.node ? { node: q.node } : {}),
        attempt: q.attempt ?? 1,
        ...(q.delayMs ? { delayMs: q.delayMs } : {}),
      });
      return { jobId: r.jobId, node: r.node } satisfies SupervisorSubmitAnswer;
    },
  );
  // Many attempts in one request: { items: [{ envelope (the signed text), node, attempt, delayMs? }] }. Each
  // item is verified and authorised on its own; the answer has one result per item, in order.
  app.post<{ Body: { items: SupervisorBatchItem[] } }>(
    // '::' is a literal ':' to Fastify's router ('/v1/submit:batch' would be '/v1/submit' and a parameter).
    '/v1/submit::batch',
    {
      bodyLimit: MAX_SUPERVISOR_BATCH_BYTES,
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['items'],
          properties: {
            items: {
              type: 'array',
              minItems: 1,
              maxItems: MAX_SUPERVISOR_BATCH_ITEMS,
              items: {
                type: 'object',
                additionalProperties: false,
                required: ['envelope', 'node', 'attempt'],
                properties: {
                  envelope: { type: 'string', minLength: 2 },
                  node: { type: 'string', pattern: '^[a-z0-9][a-z0-9.-]{0,62}$' },
                  attempt: { type: 'integer', minimum: 1, maximum: MAX_ATTEMPT_NUMBER },
                  delayMs: { type: 'integer', minimum: 0, maximum: 3_600_000 },
                },
              },
            },
          },
        },
      },
    },
    async (req): Promise<SupervisorBatchAnswer> => {
      const { items } = req.body;
      const results = await sup.submitMany(
        items.map((it) => ({ raw: it.envelope, node: it.node, attempt: it.attempt, ...(it.delayMs ? { delayMs: it.delayMs } : {}) })),
      );
      return { results };
    },
  );
  app.get('/v1/jobs/:node/:id/:attempt', async (req) => {
    const { node, id, attempt } = req.params as { node: string; id: string; attempt: string };
    const n = Number(attempt);
    if (!Number.isSafeInteger(n) || n < 1 || n > MAX_ATTEMPT_NUMBER)
      throw new WritError('BAD_REQUEST', `attempt must be a whole number from 1 to ${MAX_ATTEMPT_NUMBER}`);
    const st = await sup.jobState(id, n, node);
    return { state: st.state, held: st.held, ...(st.failedReason ? { failedReason: st.failedReason } : {}) } satisfies QueueStateAnswer;
  });
  app.post('/v1/jobs/:node/:id/:attempt/cancel', async (req) => {
    const { node, id, attempt } = req.params as { node: string; id: string; attempt: string };
    const n = Number(attempt);
    if (!Number.isSafeInteger(n) || n < 1 || n > MAX_ATTEMPT_NUMBER)
      throw new WritError('BAD_REQUEST', `attempt must be a whole number from 1 to ${MAX_ATTEMPT_NUMBER}`);
    return sup.cancel(id, n, node);
  });
  // The body is a signed key set envelope; it is verified against the key set held (or the pinned admins).
  app.put('/v1/keyset', async (req) => sup.setKeySet((req as { rawBody?: string }).rawBody!));
  return app;
}

/** Delivers signed reports to a coord over HTTP (POST /v1/reports); throws unless the coord accepted them. */
export function httpReportSink(coordUrl: string): { deliver(report: string): Promise<void> } {
  return {
    async deliver(report: string) {
      const res = await fetch(new URL('/v1/reports', coordUrl), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: report,
        signal: AbortSignal.timeout(15_000),
      });
      if (!res.ok) throw new Error(`coord refused the report: ${res.status} ${(await res.text()).slice(0, 300)}`);
    },
  };
}
