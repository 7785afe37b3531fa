// HTTP routes of host deployments and cluster intent (listed in app.ts's ROUTES). Creating a deployment takes
// the admin's signed deployment and its signed switch jobs; pause, resume and abort are operator actions (API
// token), audited. Cluster intent (./intent.ts) loads enrollment rules and classes evaluated from Nix.
import type { FastifyInstance } from 'fastify';
import { MAX_DEPLOYMENT_NODES } from '@writ/protocol';
import type { HostController } from './controller.ts';
import { INTENT_ROUTES, registerIntentRoutes } from './intent.ts';

export const HOST_ROUTES = [
  'POST /v1/deployments',
  'GET /v1/deployments',
  'GET /v1/deployments/:id',
  'POST /v1/deployments/:id/:action',
  ...INTENT_ROUTES,
] as const;

const ACTIONS = ['pause', 'resume', 'abort'] as const;
const ID = { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,62}$' } as const;
/** A switch job envelope is ~2 KiB; a deployment of the largest size fits with room. */
const CREATE_BODY_LIMIT = 8 * 1024 * 1024;

export function registerHostRoutes(app: FastifyInstance, hosts: HostController): void {
  registerIntentRoutes(app, hosts.db);
  app.post(
    '/v1/deployments',
    {
      bodyLimit: CREATE_BODY_LIMIT,
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['deployment', 'jobs'],
          properties: {
            deployment: { type: 'string', maxLength: 1024 * 1024 },
            jobs: { type: 'array', minItems: 1, maxItems: MAX_DEPLOYMENT_NODES, items: { type: 'string', maxLength: 64 * 1024 } },
          },
        },
      },
    },
    async (req, reply) => {
      const body = req.body as { deployment: string; jobs: string[] };
      const r = await hosts.create(body);
      return reply.code(r.created ? 201 : 200).send({ ...r.deployment, created: r.created });
    },
  );
  app.get('/v1/deployments', async () => ({ deployments: await hosts.list() }));
  app.get(
    '/v1/deployments/:id',
    {
      schema: {
        params: { type: 'object', properties: { id: ID } },
        querystring: { type: 'object', additionalProperties: false, properties: { after: { type: 'integer', minimum: 0, maximum: 2_147_483_647 } } },
      },
    },
    async (req) => {
      const { id } = req.params as { id: string };
      const after = (req.query as { after?: number }).after;
      const view = await hosts.get(id);
      return after === undefined ? view : { ...view, steps: (view.steps ?? []).filter((s) => s.seq > after) };
    },
  );
  app.post(
    '/v1/deployments/:id/:action',
    {
      schema: {
        params: { type: 'object', properties: { id: ID, action: { type: 'string', enum: [...ACTIONS] } } },
        body: { type: 'object', additionalProperties: false, properties: { actor: { type: 'string', maxLength: 200 } } },
      },
    },
    async (req) => {
      const { id, action } = req.params as { id: string; action: (typeof ACTIONS)[number] };
      const actor = `operator${(req.body as { actor?: string } | undefined)?.actor ? `:${(req.body as { actor: string }).actor}` : ''}`;
      return action === 'pause' ? hosts.pause(id, actor) : action === 'resume' ? hosts.resume(id, actor) : hosts.abort(id, actor);
    },
  );
}
