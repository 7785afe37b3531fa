// The coord's HTTP API. Built here, never listening (main/dev listen); tested with inject().
// Every route is listed in ROUTES (snapshot-tested); only /healthz, /readyz, /metrics, /openapi.json, the
// dashboard's static files (/, /ui/:file) and the iPXE boot routes (/boot/…) are unauthenticated.
import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import {
  ERROR_CODES,
  JOB_STATUSES,
  MAX_BATCH_BYTES,
  MAX_BATCH_ENVELOPES,
  MAX_REPORT_ENVELOPE_BYTES,
  TERMINAL_STATUSES,
  WritError,
  encodeEnvelope,
  errorAnswer,
  errorCodeOf,
  isErrorCode,
  isJobStatus,
  parseStrictJson,
  toErrorJSON,
  type BatchSubmitAnswer,
  type Envelope,
  type SupervisorHeartbeatAnswer,
  type SupervisorList,
  type ErrorCode,
  type JobPage,
  type JobEventMessage,
  type JobView,
  type SubmitAnswer,
} from '@writ/protocol';
import type { JobAttempt, JobRecord } from './ledger/index.ts';
import type { CoordService, SubmitResult } from './service.ts';
import { HOST_ROUTES, registerHostRoutes } from './hosts/routes.ts';
import { FLOW_ROUTES, registerFlowRoutes } from './flows/routes.ts';
import { envelopeSchema } from './http-schemas.ts';
import type { NodeRecord } from './nodes/registry.ts';
import { coordMetrics } from './metrics.ts';
import swagger from '@fastify/swagger';
import { Enroller } from './enroll/enroller.ts';
import { ENROLL_ROUTES, registerEnrollRoutes } from './enroll/routes.ts';
import { BOOT_PATHS, bootAnswerAfterAction } from './enroll/boot-routes.ts';
import { checkJsonCharset, guardedServerOptions, installRequestGuards } from '@writ/supervisor';
import { DASHBOARD_ROUTES, isDashboardPath, registerDashboardRoutes } from './dashboard/plugin.ts';

export interface AppOptions {
  service: CoordService;
  /** Bearer token for the API (operators, CLI). */
  apiToken: string;
  bodyLimitBytes?: number;
  /** The whole request must arrive within this (A3: a slow body is cut off with 408). Default 30 s. */
  requestTimeoutMs?: number;
  logger?: boolean;
  /** The boot image folder served at /boot/* (`--boot-image`); without it, $WRIT_BOOT_IMAGE at each request. */
  bootImage?: string | null;
}

declare module 'fastify' {
  interface FastifyRequest {
    rawBody?: string;
  }
  interface FastifyInstance {
    /** Every route registered, as "METHOD /path" (HEAD excluded): compared with ROUTES in a test. */
    routeList: string[];
  }
}

/** Event sequence numbers are 32-bit in the ledger. */
const MAX_EVENT_SEQ = 2 ** 31 - 1;

const ID = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$' } as const;

/** The explicit route list (A1). A test compares the app's routes against it. */
export const ROUTES = [
  'GET /healthz',
  'GET /readyz',
  'GET /metrics',
  'GET /openapi.json',
  'POST /v1/jobs',
  'POST /v1/jobs:batch',
  'GET /v1/jobs',
  'GET /v1/jobs/:id',
  'GET /v1/jobs/:id/events',
  'POST /v1/reports',
  'GET /v1/keyset',
  'POST /v1/keyset',
  'POST /v1/nodes/challenge',
  'POST /v1/nodes/register',
  'POST /v1/nodes/heartbeat',
  'POST /v1/nodes/install-report',
  'GET /v1/nodes',
  'GET /v1/nodes/:id',
  'POST /v1/nodes/:id/:action',
  'GET /v1/audit',
  'GET /v1/audit/verify',
  'POST /v1/supervisors/heartbeat',
  'GET /v1/supervisors',
  ...ENROLL_ROUTES,
  ...HOST_ROUTES,
  ...FLOW_ROUTES,
  ...DASHBOARD_ROUTES,
] as const;

// The iPXE boot routes too: firmware cannot send a token (coord/src/enroll/boot-routes.ts says what they reveal).
const PUBLIC = new Set(['/healthz', '/readyz', '/metrics', '/openapi.json', ...BOOT_PATHS]);
/** Authenticated by a signature instead of the API token: supervisor reports, node registration and heartbeats. */
const SIGNED = new Set([
  '/v1/reports',
  '/v1/nodes/challenge',
  '/v1/nodes/register',
  '/v1/nodes/heartbeat',
  '/v1/nodes/install-report',
  '/v1/supervisors/heartbeat',
]);
const OPERATOR_ACTIONS = ['accept', 'reject', 'drain', 'rescue', 'unrescue', 'retire', 'install', 'reprovision', 'rekey'] as const;

function errorCodeOrInternal(code: string | null): ErrorCode {
  return isErrorCode(code) ? code : 'INTERNAL';
}

function sendError(reply: FastifyReply, code: ErrorCode, message: string, details?: Record<string, unknown>) {
  return reply.code(ERROR_CODES[code].status).send(errorAnswer(code, message, details));
}

function jobView(job: JobRecord, attempts?: JobAttempt[]): JobView {
  return {
    id: job.id,
    status: job.status,
    node: job.node ?? null,
    target: job.target,
    caps: job.caps,
    signers: job.signerKeyids,
    attempts: job.attempts,
    error: job.errorCode ? { code: job.errorCode, message: job.errorMessage ?? '' } : null,
    result: (job.result ?? null) as JobView['result'],
    createdAt: job.createdAt.toISOString(),
    updatedAt: job.updatedAt.toISOString(),
    finishedAt: job.finishedAt ? job.finishedAt.toISOString() : null,
    ...(attempts
      ? {
          attemptHistory: attempts.map((a) => ({
            attempt: a.attempt,
            node: a.node,
            dispatchedAt: a.dispatchedAt?.toISOString() ?? null,
            startedAt: a.startedAt?.toISOString() ?? null,
            finishedAt: a.finishedAt?.toISOString() ?? null,
            outcome: a.outcome,
            errorCode: a.errorCode,
          })),
        }
      : {}),
  };
}

function nodeView(n: NodeRecord, service: CoordService) {
  return {
    id: n.id,
    state: n.state,
    reachable: service.nodes.reachable(n),
    keyid: n.keyid || null,
    labels: n.labels,
    version: n.version,
    health: n.health,
    lastHeartbeatAt: n.lastHeartbeatAt ? new Date(n.lastHeartbeatAt).toISOString() : null,
    stateSince: new Date(n.stateSince).toISOString(),
    deadlineAt: n.deadlineAt ? new Date(n.deadlineAt).toISOString() : null,
    reason: n.reason,
    pool: n.pool,
  };
}

function submitAnswer(r: Exclude<SubmitResult, { error: unknown }>): SubmitAnswer {
  return { id: r.id, status: r.status, node: r.node, replayed: r.replayed };
}

export async function buildApp(opts: AppOptions): Promise<FastifyInstance> {
  const { service } = opts;
  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit: opts.bodyLimitBytes ?? 1024 * 1024 + 4096,
    // A client-chosen request id is not trusted for anything; ours are sequential.
    requestIdHeader: false,
    // Unknown fields are refused (400), never silently dropped: fastify's default removeAdditional would strip them.
    ajv: { customOptions: { removeAdditional: false, useDefaults: false, coerceTypes: 'array', allErrors: false } },
    ...guardedServerOptions(opts.requestTimeoutMs ? { requestTimeoutMs: opts.requestTimeoutMs } : {}),
  });
  installRequestGuards(app);
  // The OpenAPI document is generated from the route schemas registered after this (GET /openapi.json).
  // Every route needs the bearer token but the public ones (no security) and the signed ones (a signature in the body).
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Writ coord API', version: '1' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    transform: ({ schema, url }) => {
      const path = url.replaceAll('::', ':');
      if (SIGNED.has(path))
        return {
          schema: { ...schema, security: [], description: 'Authenticated by the ed25519 signatures of the DSSE envelope in the body, not by the API token.' },
          url,
        };
      // (The dashboard's routes say `security: []` in their own schemas.)
      if (PUBLIC.has(path)) return { schema: { ...schema, security: [] }, url };
      return { schema, url };
    },
  });
  const token = Buffer.from(opts.apiToken);
  const metrics = coordMetrics(service);
  const enroller = new Enroller({ db: service.ledger.db, nodes: service.nodes });
  const routeList: string[] = [];
  app.decorate('routeList', routeList);
  app.addHook('onRoute', (r) => {
    // '::' is fastify's escape for a literal ':' (as in /v1/jobs:batch).
    for (const m of [r.method].flat()) if (m !== 'HEAD') routeList.push(`${m} ${r.url.replaceAll('::', ':')}`);
  });

  // Bodies are parsed by Writ's strict parser (duplicate keys, unsafe integers, lone surrogates refused),
  // and the raw text is kept: signatures are verified over the bytes exactly as received.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    try {
      checkJsonCharset(req.headers['content-type']);
      req.rawBody = body as string;
      done(
        null,
        body === '' ? undefined : parseStrictJson(body as string, { maxBytes: req.routeOptions.bodyLimit ?? opts.bodyLimitBytes ?? 1024 * 1024 + 4096 }),
      );
    } catch (e) {
      done(e as Error, undefined);
    }
  });

  app.addHook('onRequest', async (req, reply) => {
    const path = req.url.split('?')[0]!;
    // The dashboard's static files hold no data; the API calls they make carry the token.
    if (PUBLIC.has(path) || SIGNED.has(path) || isDashboardPath(path)) return;
    const h = req.headers.authorization ?? '';
    const given = Buffer.from(h.startsWith('Bearer ') ? h.slice(7) : '');
    if (given.length !== token.length || !timingSafeEqual(given, token)) {
      return sendError(reply, 'UNAUTHENTICATED', 'send Authorization: Bearer <token> (see `writ dev` output or WRIT_TOKEN)');
    }
  });

  app.setNotFoundHandler((req, reply) => sendError(reply, 'ROUTE_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`));

  app.setErrorHandler(
    (
      err: Error & {
        code?: string;
        statusCode?: number;
        validation?: { keyword: string; params: Record<string, unknown>; instancePath: string; message?: string }[];
      },
      req,
      reply,
    ) => {
      const code = errorCodeOf(err);
      if (code) return reply.code(ERROR_CODES[code].status).send({ error: toErrorJSON(err) });
      if (err.validation) {
        const v = err.validation[0];
        if (v?.keyword === 'additionalProperties')
          return sendError(reply, 'UNKNOWN_FIELD', `unknown field ${JSON.stringify(v.params.additionalProperty)} at ${v.instancePath || '/'}`);
        // The same codes `writ verify` and every tier's envelope parser give for these.
        if (v?.instancePath.endsWith('/signatures') && v.keyword === 'minItems')
          return sendError(reply, 'ENVELOPE_MALFORMED', `${v.instancePath}: signatures must be a non-empty array`);
        if (v?.instancePath.endsWith('/signatures') && v.keyword === 'maxItems')
          return sendError(reply, 'TOO_MANY_SIGNATURES', `${v.instancePath}: at most ${String(v.params.limit)} signatures`);
        const allowed = v?.keyword === 'enum' && Array.isArray(v.params.allowedValues) ? ` (one of: ${v.params.allowedValues.join(', ')})` : '';
        return sendError(reply, 'BAD_REQUEST', `${v?.instancePath || 'body'} ${v?.message ?? 'is invalid'}${allowed}`);
      }
      if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE')
        return sendError(reply, 'BODY_TOO_LARGE', `the body is larger than ${opts.bodyLimitBytes ?? 1024 * 1024 + 4096} bytes`);
      if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return sendError(reply, 'UNSUPPORTED_MEDIA_TYPE', 'send Content-Type: application/json');
      if (err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') return sendError(reply, 'BAD_REQUEST', 'the body is empty');
      if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500)
        return sendError(reply, 'BAD_REQUEST', 'the request is malformed');
      req.log.error({ err }, 'internal error');
      return sendError(reply, 'INTERNAL', ERROR_CODES.INTERNAL.message); // never leak the internal message (A2)
    },
  );

  app.get('/healthz', async () => ({ ok: true }));
  // The ledger is ready while its last write went through and it answers a read: a full disk fails writes
  // while reads still work, and a stuck ledger must not hang this route, so the read has a deadline.
  app.get('/readyz', async (_req, reply) => {
    let ledgerError = service.ledger.db.health.problem;
    if (!ledgerError) {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([service.ledger.ping(), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('no answer within 2 s')), 2000)))]);
      } catch (e) {
        ledgerError = errorCodeOf(e) ? (e as WritError) : new WritError('LEDGER_UNAVAILABLE', `the ledger does not answer: ${(e as Error).message}`);
      } finally {
        clearTimeout(timer);
      }
    }
    const sup = await service.federation.health();
    const ok = !ledgerError && sup.ok;
    return reply
      .code(ok ? 200 : 503)
      .send({ ok, ledger: !ledgerError, supervisor: sup.ok, redis: sup.redis, ...(ledgerError ? { ledgerError: toErrorJSON(ledgerError) } : {}) });
  });
  app.get('/metrics', async (_req, reply) => {
    const m = service.metrics;
    const lines = [
      '# HELP writ_admission_groups_total Ledger transactions that recorded admissions (group commit: many jobs each).',
      '# TYPE writ_admission_groups_total counter',
      `writ_admission_groups_total ${m.admissionGroups}`,
      '# HELP writ_jobs_submitted_total Jobs recorded for the first time.',
      '# TYPE writ_jobs_submitted_total counter',
      `writ_jobs_submitted_total ${m.jobsSubmitted}`,
      '# HELP writ_jobs_replayed_total Submissions of an envelope already recorded (answered, not run again).',
      '# TYPE writ_jobs_replayed_total counter',
      `writ_jobs_replayed_total ${m.jobsReplayed}`,
      '# HELP writ_jobs_refused_total Jobs refused at admission.',
      '# TYPE writ_jobs_refused_total counter',
      `writ_jobs_refused_total ${m.jobsRefused}`,
      '# HELP writ_reports_applied_total Signed supervisor reports applied.',
      '# TYPE writ_reports_applied_total counter',
      `writ_reports_applied_total ${m.reportsApplied}`,
      '# HELP writ_runner_events_applied_total Runner events applied to the ledger.',
      '# TYPE writ_runner_events_applied_total counter',
      `writ_runner_events_applied_total ${m.eventsApplied}`,
      '# HELP writ_runner_events_refused_total Runner events and stream entries refused (unsigned, forged, or from a node the job did not go to).',
      '# TYPE writ_runner_events_refused_total counter',
      `writ_runner_events_refused_total ${m.eventsRefused}`,
      '# HELP writ_jobs_redispatched_total Jobs the reconciler put back on a queue.',
      '# TYPE writ_jobs_redispatched_total counter',
      `writ_jobs_redispatched_total ${m.redispatched}`,
      ...(service.ledger.db.counters
        ? [
            '# HELP writ_ledger_statements_total Statements this coord ran on its ledger.',
            '# TYPE writ_ledger_statements_total counter',
            `writ_ledger_statements_total ${service.ledger.db.counters.statements}`,
            '# HELP writ_ledger_transactions_total Transactions this coord ran on its ledger.',
            '# TYPE writ_ledger_transactions_total counter',
            `writ_ledger_transactions_total ${service.ledger.db.counters.transactions}`,
          ]
        : []),
      '# HELP writ_reconcile_passes_total Reconciler passes started.',
      '# TYPE writ_reconcile_passes_total counter',
      `writ_reconcile_passes_total ${m.reconcilePasses}`,
      '# HELP writ_reconcile_left_to_other_coords_total Unfinished jobs the reconciler left alone because another coord held their lease.',
      '# TYPE writ_reconcile_left_to_other_coords_total counter',
      `writ_reconcile_left_to_other_coords_total ${m.reconcileLeftToOthers}`,
    ];
    const gauges = await metrics.render();
    return reply.type(gauges.contentType).send(lines.join('\n') + '\n' + gauges.text);
  });

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  app.post('/v1/jobs', { schema: { body: envelopeSchema } }, async (req, reply) => {
    const r = await service.submit(req.rawBody!);
    if (r.status === 'refused') return sendError(reply, errorCodeOrInternal(r.errorCode), r.errorMessage ?? 'refused', { id: r.id });
    return reply.code(r.replayed ? 200 : 202).send(submitAnswer(r));
  });

  // Up to MAX_BATCH_ENVELOPES envelopes: one group commit, one bulk enqueue, one answer per envelope in order.
  // 207-style semantics in a 200: each item is an answer or an error; the request fails only as a whole request.
  app.post(
    '/v1/jobs::batch',
    {
      bodyLimit: MAX_BATCH_BYTES,
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['envelopes'],
          properties: { envelopes: { type: 'array', minItems: 1, maxItems: MAX_BATCH_ENVELOPES, items: envelopeSchema } },
        },
      },
    },
    async (req) => {
      // A signature covers the payload bytes, not the envelope's JSON text, so re-encoding each parsed envelope
      // (in the compact form `writ sign` writes) gives the verifier exactly what was signed.
      const { envelopes } = req.body as { envelopes: Envelope[] };
      const results = await service.submitMany(envelopes.map((e) => encodeEnvelope(e)));
      const answer: BatchSubmitAnswer = {
        results: results.map((r) => {
          if ('error' in r) return { id: r.id, error: toErrorJSON(r.error, true) };
          if (r.status === 'refused')
            return { id: r.id, error: { code: errorCodeOrInternal(r.errorCode), message: r.errorMessage ?? 'refused', retryable: false } };
          return submitAnswer(r);
        }),
      };
      return answer;
    },
  );

  app.get(
    '/v1/jobs',
    {
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            status: { type: 'string', enum: [...JOB_STATUSES] },
            node: { type: 'string', maxLength: 63 },
            cursor: { type: 'string', maxLength: 200 },
            limit: { type: 'integer', minimum: 1, maximum: 500 },
          },
        },
      },
    },
    async (req) => {
      const q = req.query as { status?: string; node?: string; cursor?: string; limit?: number };
      const page = await service.ledger.listJobs({
        ...(isJobStatus(q.status) ? { status: q.status } : {}),
        ...(q.node ? { node: q.node } : {}),
        ...(q.cursor ? { cursor: q.cursor } : {}),
        limit: q.limit ?? 50,
      });
      return { jobs: page.jobs.map((j) => jobView(j)), nextCursor: page.nextCursor } satisfies JobPage;
    },
  );

  app.get('/v1/jobs/:id', { schema: { params: { type: 'object', properties: { id: ID } } } }, async (req, reply) => {
    const { id } = req.params as { id: string };
    const job = await service.ledger.getJob(id);
    if (!job) return sendError(reply, 'NOT_FOUND', `no job ${id}`);
    return jobView(job, await service.ledger.listAttempts(id));
  });

  app.get(
    '/v1/jobs/:id/events',
    {
      schema: {
        params: { type: 'object', properties: { id: ID } },
        querystring: { type: 'object', additionalProperties: false, properties: { after: { type: 'integer', minimum: 0, maximum: MAX_EVENT_SEQ } } },
      },
    },
    async (req: FastifyRequest, reply: FastifyReply) => {
      const { id } = req.params as { id: string };
      const job = await service.ledger.getJob(id);
      if (!job) return sendError(reply, 'NOT_FOUND', `no job ${id}`);
      // Checked before the stream opens: an id no event can have would otherwise hold the stream open on keep-alives (A3).
      const givenId = String(req.headers['last-event-id'] ?? (req.query as { after?: number }).after ?? 0);
      if (!/^\d{1,10}$/.test(givenId.trim()) || Number(givenId) > MAX_EVENT_SEQ)
        return sendError(reply, 'BAD_REQUEST', `Last-Event-ID must be a whole number from 0 to ${MAX_EVENT_SEQ}; got ${JSON.stringify(givenId.slice(0, 40))}`);
      const lastId = Number(givenId);
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      let sent = lastId;
      let closed = false;
      const queue: JobEventMessage[] = [];
      const write = (ev: JobEventMessage) => {
        if (closed || ev.seq <= sent) return;
        sent = ev.seq;
        res.write(
          `id: ${ev.seq}\nevent: ${ev.type}\ndata: ${JSON.stringify({ seq: ev.seq, type: ev.type, level: ev.level ?? null, message: ev.message, data: ev.data ?? null })}\n\n`,
        );
        const status = (ev.data as { status?: string } | null)?.status;
        if (ev.type === 'status' && isJobStatus(status) && TERMINAL_STATUSES.has(status)) finish();
      };
      const finish = () => {
        if (closed) return;
        closed = true;
        service.events.off(`job:${id}`, onLive);
        clearInterval(keepAlive);
        res.write(`event: end\ndata: {}\n\n`);
        res.end();
      };
      let replaying = true;
      // Live events go out in seq order. One that comes before an earlier one (recorded through another coord,
      // whose notification is still on its way) waits while the gap is read from the ledger: every event below
      // a seq has committed before it.
      let filling = false;
      const fill = async () => {
        filling = true;
        try {
          while (queue.length > 0 && !closed) {
            const next = queue.sort((a, b) => a.seq - b.seq)[0]!;
            if (next.seq > sent + 1) {
              for (const e of await service.ledger.listJobEvents(id, sent, Math.min(1000, next.seq - sent - 1)))
                write({ seq: e.seq, type: e.type, level: e.level, message: e.message, data: e.data });
            }
            queue.shift();
            write(next);
          }
        } catch {
          // The ledger did not answer: the client reconnects with Last-Event-ID and reads the rest.
          if (!closed) finish();
        } finally {
          filling = false;
        }
      };
      const onLive = (ev: JobEventMessage) => {
        if (!replaying && !filling && ev.seq <= sent + 1) return write(ev);
        queue.push(ev);
        if (!replaying && !filling) void fill();
      };
      service.events.on(`job:${id}`, onLive);
      const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
      req.raw.on('close', () => {
        closed = true;
        service.events.off(`job:${id}`, onLive);
        clearInterval(keepAlive);
      });
      // Replay what the ledger holds, then the live events that arrived meanwhile, in order.
      for (;;) {
        const batch = await service.ledger.listJobEvents(id, sent, 500);
        for (const e of batch) write({ seq: e.seq, type: e.type, level: e.level, message: e.message, data: e.data });
        if (batch.length < 500 || closed) break;
      }
      replaying = false;
      await fill();
      const fresh = await service.ledger.getJob(id);
      if (fresh && TERMINAL_STATUSES.has(fresh.status)) {
        const rest = await service.ledger.listJobEvents(id, sent, 1000);
        for (const e of rest) write({ seq: e.seq, type: e.type, level: e.level, message: e.message, data: e.data });
        finish();
      }
    },
  );

  app.post('/v1/reports', { bodyLimit: MAX_REPORT_ENVELOPE_BYTES, schema: { body: envelopeSchema } }, async (req) => service.ingestReport(req.rawBody!));

  app.get('/v1/keyset', async (_req, reply) => {
    const c = service.currentKeySet();
    if (!c)
      return sendError(
        reply,
        'NOT_FOUND',
        'no key set has been published yet (a new cluster: writ keyset init --admin ADMIN.key.pub, then writ keyset publish)',
      );
    return c;
  });
  // The body is a signed key set envelope (admins sign with their own keys; the coord holds none).
  app.post('/v1/keyset', { schema: { body: envelopeSchema } }, async (req, reply) => {
    const r = await service.publishKeySet(req.rawBody!, 'api');
    return reply.code(r.changed ? 201 : 200).send(r);
  });

  app.post(
    '/v1/nodes/challenge',
    {
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['nodeId', 'publicKey'],
          properties: { nodeId: { type: 'string', pattern: '^[a-z0-9][a-z0-9.-]{0,62}$' }, publicKey: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$' } },
        },
      },
    },
    async (req) => {
      const b = req.body as { nodeId: string; publicKey: string };
      return service.nodes.challenge(b.nodeId, b.publicKey);
    },
  );
  app.post('/v1/nodes/register', { schema: { body: envelopeSchema } }, async (req, reply) => {
    const registered = await service.nodes.register(req.rawBody!);
    // Enrollment (issue 11): rules assign the node; the answer carries its assignment and install plan.
    const { node: n, assignment, installPlan } = await enroller.afterRegistration(registered, req.rawBody!);
    // The node learns its pool, and the Redis its pool's supervisors announced for runners, at registration.
    return reply.code(201).send({ ...nodeView(n, service), redis: service.federation.runnerRedisFor(n.pool), assignment, installPlan });
  });
  registerEnrollRoutes(app, service.ledger.db, { nodes: service.nodes, bootImage: opts.bootImage ?? null });
  app.post('/v1/nodes/heartbeat', { schema: { body: envelopeSchema } }, async (req) => {
    const { node } = await service.nodes.heartbeat(req.rawBody!);
    return { ok: true, state: node.state };
  });
  // A node's signed outcome of its class's install plan (coord/src/enroll/install-report.ts).
  app.post('/v1/nodes/install-report', { schema: { body: envelopeSchema } }, async (req) => enroller.installReport(req.rawBody!));
  app.get('/v1/nodes', async () => ({ nodes: (await service.nodes.listNodes()).map((n) => nodeView(n, service)) }));
  app.get('/v1/nodes/:id', async (req, reply) => {
    const { id } = req.params as { id: string };
    const n = await service.nodes.getNode(id);
    if (!n) return sendError(reply, 'NODE_NOT_FOUND', `no node ${id}`);
    return {
      ...nodeView(n, service),
      inventory: n.inventory,
      transitions: await service.nodes.opts.store.listTransitions(id),
      install: await enroller.installResult(id),
    };
  });
  app.post(
    '/v1/nodes/:id/:action',
    {
      schema: {
        params: { type: 'object', properties: { id: { type: 'string', maxLength: 63 }, action: { type: 'string', enum: [...OPERATOR_ACTIONS] } } },
        body: { type: 'object', additionalProperties: false, properties: { reason: { type: 'string', maxLength: 500 } } },
      },
    },
    async (req) => {
      const { id, action } = req.params as { id: string; action: (typeof OPERATOR_ACTIONS)[number] };
      const reason = (req.body as { reason?: string } | undefined)?.reason ?? '';
      const n =
        action === 'rekey'
          ? await service.nodes.rekey(id, 'operator', reason)
          : await service.nodes.apply(id, action, { actor: 'operator', reason: reason || `operator ${action}`, byOperator: true });
      // reinstall (reprovision), install, rescue and unrescue also set what the machine's next iPXE boot does.
      return { ...nodeView(n, service), ...(await bootAnswerAfterAction(service.ledger.db, n, action)) };
    },
  );

  app.get(
    '/v1/audit',
    { schema: { querystring: { type: 'object', additionalProperties: false, properties: { tail: { type: 'integer', minimum: 1, maximum: 1000 } } } } },
    async (req) => ({
      entries: await service.ledger.tailAudit((req.query as { tail?: number }).tail ?? 50),
    }),
  );
  app.get('/v1/audit/verify', async () => service.ledger.verifyAudit());

  // Federation: supervisors listed in the key set announce themselves with signed heartbeats (no token).
  app.post('/v1/supervisors/heartbeat', { bodyLimit: 32 * 1024, schema: { body: envelopeSchema } }, async (req): Promise<SupervisorHeartbeatAnswer> =>
    service.federation.heartbeat(req.rawBody!),
  );
  app.get('/v1/supervisors', async () => ({ supervisors: await service.federation.list() }) satisfies SupervisorList);

  registerHostRoutes(app, service.hosts);
  registerFlowRoutes(app, service);
  registerDashboardRoutes(app);
  return app;
}
