// HTTP routes of flows (listed in app.ts's ROUTES): submit a signed flow, list and show flows, cancel one,
// and follow one live (SSE). The live view reads the ledger, so it works from any coord sharing it: flow
// events (step and flow transitions, with ids for Last-Event-ID) and the step jobs' log lines as they come.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { WritError, type Envelope, encodeEnvelope, FLOW_ID_PATTERN, MAX_FLOW_ENVELOPE_BYTES } from '@writ/protocol';
import type { CoordService } from '../service.ts';
import { envelopeSchema } from '../http-schemas.ts';
import { FLOW_STATUSES, getFlow, listFlowEvents, listFlows, listStepJobs, listSteps, type FlowEvent, type FlowRecord, type FlowStatus } from './store.ts';

export const FLOW_ROUTES = ['POST /v1/flows', 'GET /v1/flows', 'GET /v1/flows/:id', 'POST /v1/flows/:id/cancel', 'GET /v1/flows/:id/events'] as const;

const ID = { type: 'string', pattern: FLOW_ID_PATTERN } as const;
const MAX_SEQ = 2 ** 31 - 1;

function flowSummary(f: FlowRecord) {
  return {
    id: f.id,
    status: f.status,
    steps: f.stepCount,
    signers: f.signerKeyids,
    error: f.errorCode ? { code: f.errorCode, message: f.errorMessage ?? '' } : null,
    exp: f.exp.toISOString(),
    createdAt: f.createdAt.toISOString(),
    updatedAt: f.updatedAt.toISOString(),
    finishedAt: f.finishedAt?.toISOString() ?? null,
  };
}

/** A flow with its steps (in the signed order) and each step's jobs. */
export async function flowView(service: CoordService, id: string) {
  const db = service.ledger.db;
  const f = await getFlow(db, id);
  if (!f) throw new WritError('FLOW_NOT_FOUND', `no flow ${id} (writ flow list)`);
  const steps = await listSteps(db, id);
  const jobs = await listStepJobs(db, id);
  const signed = signedSteps(f);
  const order = signed.map((s) => s.name);
  steps.sort((a, b) => order.indexOf(a.step) - order.indexOf(b.step));
  return {
    ...flowSummary(f),
    stepList: steps.map((s) => ({
      name: s.step,
      status: s.status,
      depends: signed.find((d) => d.name === s.step)?.depends ?? [],
      nodes: s.nodes ?? [],
      error: s.errorCode ? { code: s.errorCode, message: s.errorMessage ?? '' } : null,
      startedAt: s.startedAt?.toISOString() ?? null,
      finishedAt: s.finishedAt?.toISOString() ?? null,
      jobs: jobs
        .filter((j) => j.step === s.step)
        .map((j) => ({
          id: j.jobId,
          node: j.node,
          status: j.status,
          attempts: j.attempts,
          error: j.errorCode ? { code: j.errorCode, message: j.errorMessage ?? '' } : null,
          signedResult: j.hasResult,
        })),
    })),
  };
}

/** Step names in the order the signed document lists them, with the steps each depends on (for display: the dashboard draws the DAG). */
function signedSteps(f: FlowRecord): { name: string; depends: string[] }[] {
  try {
    const env = JSON.parse(f.envelope) as { payload: string };
    const doc = JSON.parse(Buffer.from(env.payload, 'base64').toString('utf8')) as { steps: { name: string; depends?: string[] }[] };
    return doc.steps.map((s) => ({ name: s.name, depends: s.depends ?? [] }));
  } catch {
    return [];
  }
}

export function registerFlowRoutes(app: FastifyInstance, service: CoordService): void {
  app.post('/v1/flows', { bodyLimit: MAX_FLOW_ENVELOPE_BYTES + 64 * 1024, schema: { body: envelopeSchema } }, async (req, reply) => {
    // The signature covers the payload bytes: the compact re-encoding is what `writ flow sign` writes.
    const r = await service.submitFlow(encodeEnvelope(req.body as Envelope));
    return reply.code(r.replayed ? 200 : 202).send(r);
  });

  app.get(
    '/v1/flows',
    {
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { status: { type: 'string', enum: [...FLOW_STATUSES] }, limit: { type: 'integer', minimum: 1, maximum: 500 }, before: ID },
        },
      },
    },
    async (req) => {
      const q = req.query as { status?: FlowStatus; limit?: number; before?: string };
      const flows = await listFlows(service.ledger.db, {
        ...(q.status ? { status: q.status } : {}),
        ...(q.before ? { before: q.before } : {}),
        limit: q.limit ?? 50,
      });
      return { flows: flows.map(flowSummary) };
    },
  );

  app.get('/v1/flows/:id', { schema: { params: { type: 'object', properties: { id: ID } } } }, async (req) =>
    flowView(service, (req.params as { id: string }).id),
  );

  app.post(
    '/v1/flows/:id/cancel',
    {
      schema: {
        params: { type: 'object', properties: { id: ID } },
        body: { type: 'object', additionalProperties: false, properties: { actor: { type: 'string', maxLength: 200 } } },
      },
    },
    async (req) => {
      const { id } = req.params as { id: string };
      const actor = `operator${(req.body as { actor?: string } | undefined)?.actor ? `:${(req.body as { actor: string }).actor}` : ''}`;
      return { id, ...(await service.cancelFlow(id, actor)) };
    },
  );

  app.get(
    '/v1/flows/:id/events',
    {
      schema: {
        params: { type: 'object', properties: { id: ID } },
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { after: { type: 'integer', minimum: 0, maximum: MAX_SEQ }, logs: { type: 'boolean' } },
        },
      },
    },
    async (req: FastifyRequest, reply: FastifyReply) => {
      const { id } = req.params as { id: string };
      const db = service.ledger.db;
      if (!(await getFlow(db, id))) throw new WritError('FLOW_NOT_FOUND', `no flow ${id} (writ flow list)`);
      const q = req.query as { after?: number; logs?: boolean };
      const given = String(req.headers['last-event-id'] ?? q.after ?? 0).trim();
      if (!/^\d{1,10}$/.test(given) || Number(given) > MAX_SEQ)
        throw new WritError('BAD_REQUEST', `Last-Event-ID must be a whole number from 0 to ${MAX_SEQ}; got ${JSON.stringify(given.slice(0, 40))}`);
      const resumed = Number(given) > 0;
      let sent = Number(given);
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      let closed = false;
      let wake: (() => void) | undefined;
      const onLive = () => wake?.();
      service.events.on(`flow:${id}`, onLive);
      const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
      const close = () => {
        if (closed) return;
        closed = true;
        service.events.off(`flow:${id}`, onLive);
        clearInterval(keepAlive);
      };
      req.raw.on('close', close);
      // Log lines of the flow's jobs: from the start on a first connection; on a resumed one, those recorded
      // after the last flow event the client had (log lines carry no event id, so a line recorded between that
      // event and the disconnect is sent again rather than lost).
      const resumeAfter = resumed ? ((await listFlowEvents(db, id, Number(given) - 1, 1))[0]?.at.getTime() ?? 0) : 0;
      const logSeq = new Map<string, number>();
      // Jobs that ended and whose events were all read: not read again on later looks.
      const drained = new Set<string>();
      const withLogs = q.logs !== false;
      try {
        while (!closed) {
          // The steps' log lines and failed attempts, and the flow's own events, written in the order they were
          // recorded: each job's lines in order, merged with the flow's events by time (a line recorded in the
          // same instant as a flow event goes first: a job's lines come in with its result, before the step
          // moves on). On a first connection to a flow under way, both are backlogs, and the merge keeps a
          // step's lines after the flow event that started it.
          const lines: { at: number; text: string }[][] = [];
          if (withLogs) {
            for (const j of await listStepJobs(db, id)) {
              if (drained.has(j.jobId)) continue;
              const ended = ['succeeded', 'failed', 'refused'].includes(j.status);
              const after = logSeq.get(j.jobId) ?? 0;
              const evs = await service.ledger.listJobEvents(j.jobId, after, 500);
              const mine: { at: number; text: string }[] = [];
              for (const ev of evs) {
                const failed = ev.type === 'status' && typeof ev.data === 'object' && ev.data !== null && 'error' in ev.data;
                if ((ev.type === 'log' || failed) && ev.at.getTime() > resumeAfter) {
                  // A failed attempt (retried, or the last) is shown as a line of its step.
                  const data = { job: j.jobId, step: j.step, node: j.node, level: ev.type === 'log' ? ev.level : 'warn', message: ev.message };
                  mine.push({ at: ev.at.getTime(), text: `event: log\ndata: ${JSON.stringify(data)}\n\n` });
                }
                logSeq.set(j.jobId, ev.seq);
              }
              if (mine.length > 0) lines.push(mine);
              // Its status was read before its events: everything it recorded up to its end is in `evs`.
              if (ended && evs.length < 500) drained.add(j.jobId);
            }
          }
          const events: FlowEvent[] = await listFlowEvents(db, id, sent, 500);
          const heads = lines.map(() => 0);
          /** Writes the earliest pending line of any job while it is not later than `until`. */
          const linesUpTo = (until: number) => {
            for (;;) {
              let best = -1;
              for (let k = 0; k < lines.length; k++)
                if (heads[k]! < lines[k]!.length && (best < 0 || lines[k]![heads[k]!]!.at < lines[best]![heads[best]!]!.at)) best = k;
              if (best < 0 || lines[best]![heads[best]!]!.at > until) return;
              res.write(lines[best]![heads[best]!++]!.text);
            }
          };
          for (const e of events) {
            linesUpTo(e.at.getTime());
            res.write(
              `id: ${e.seq}\nevent: ${e.type}\ndata: ${JSON.stringify({ seq: e.seq, at: e.at.toISOString(), type: e.type, step: e.step, message: e.message, data: e.data })}\n\n`,
            );
            sent = e.seq;
          }
          linesUpTo(Infinity);
          const f = await getFlow(db, id);
          if (!f || f.status !== 'running') {
            if (events.length === 500) continue;
            const rest = await listFlowEvents(db, id, sent, 500);
            if (rest.length > 0) continue;
            res.write('event: end\ndata: {}\n\n');
            break;
          }
          if (events.length === 500) continue;
          // Woken by this coord's own events at once; another coord's show up on the next look (every 500 ms).
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, 500);
            wake = () => {
              clearTimeout(t);
              resolve();
            };
          });
          wake = undefined;
        }
      } catch {
        // The ledger did not answer: the client reconnects with Last-Event-ID and reads the rest.
      } finally {
        close();
        res.end();
      }
    },
  );
}
