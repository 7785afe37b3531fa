// Enrollment's HTTP routes (operator API, bearer token): rules and classes, and the dry run behind
// `writ enroll rules test`; and the iPXE boot routes (no token, boot-routes.ts). The registration route itself
// stays with the node routes and calls the Enroller.
import type { FastifyInstance } from 'fastify';
import { WritError, parseNodeInventory, type JsonValue } from '@writ/protocol';
import type { Db } from '../ledger/db.ts';
import type { NodeRegistry } from '../nodes/registry.ts';
import { BOOT_ROUTES, macsOf, registerBootRoutes } from './boot-routes.ts';
import { checkRule, matchRules, type EnrollmentRule } from './rules.ts';
import {
  deleteClass,
  deleteRule,
  getAssignment,
  listBootAnswers,
  listBootstraps,
  listClasses,
  listRules,
  newEnrollmentToken,
  putClass,
  putRule,
  tokenSha256,
  type NodeClass,
} from './store.ts';

export const ENROLL_ROUTES = [
  'GET /v1/enroll/rules',
  'POST /v1/enroll/rules',
  'DELETE /v1/enroll/rules/:name',
  'POST /v1/enroll/test',
  'GET /v1/enroll/classes',
  'POST /v1/enroll/classes',
  'DELETE /v1/enroll/classes/:name',
  'GET /v1/enroll/nodes/:id',
  ...BOOT_ROUTES,
] as const;

/** A rule as an operator gives it: `token: true` makes a fresh token, shown once in the answer. */
type RuleInput = Omit<EnrollmentRule, 'tokenSha256' | 'maxUses' | 'priority' | 'autoAccept'> & {
  priority?: number;
  autoAccept?: boolean;
  maxUses?: number | null;
  token?: boolean | string;
};

const ruleView = (r: EnrollmentRule) => ({ ...r, hasToken: r.tokenSha256 !== null });

export function registerEnrollRoutes(app: FastifyInstance, db: Db, opts: { nodes?: NodeRegistry; bootImage?: string | null } = {}): void {
  registerBootRoutes(app, db, opts.nodes, { bootImage: opts.bootImage ?? null });
  app.get('/v1/enroll/rules', async () => ({ rules: (await listRules(db)).map(ruleView) }));
  app.post('/v1/enroll/rules', async (req, reply) => {
    const b = req.body as RuleInput;
    if (!b || typeof b !== 'object') throw new WritError('BAD_REQUEST', 'send a rule as a JSON object');
    const { token: wantToken, ...rest } = b;
    const token = wantToken === true ? newEnrollmentToken() : typeof wantToken === 'string' ? wantToken : null;
    if (token !== null && !/^[A-Za-z0-9_-]{16,128}$/.test(token))
      throw new WritError('CONFIG_INVALID', 'an enrollment token is 16 to 128 characters of A-Z, a-z, 0-9, _ and -');
    const rule = checkRule({ priority: 100, autoAccept: false, maxUses: null, ...rest, tokenSha256: token === null ? null : tokenSha256(token) });
    await putRule(db, rule);
    return reply.code(201).send({ rule: ruleView(rule), ...(wantToken === true ? { token } : {}) });
  });
  app.delete('/v1/enroll/rules/:name', async (req) => {
    const { name } = req.params as { name: string };
    if (!(await deleteRule(db, name))) throw new WritError('NOT_FOUND', `no enrollment rule ${name}`);
    return { deleted: name };
  });
  app.post('/v1/enroll/test', async (req) => {
    const b = req.body as { inventory?: unknown; token?: string };
    const inv = parseNodeInventory(b?.inventory);
    const { rule, verdicts } = matchRules(await listRules(db), inv, b.token ? tokenSha256(b.token) : null);
    return { matched: rule?.name ?? null, assign: rule?.assign ?? null, autoAccept: verdicts.at(-1)?.autoAccept ?? false, verdicts };
  });
  app.get('/v1/enroll/classes', async () => ({ classes: await listClasses(db) }));
  app.post('/v1/enroll/classes', async (req, reply) => {
    const c = req.body as NodeClass;
    await putClass(db, { name: c?.name, description: c?.description ?? '', installPlan: c?.installPlan ?? null });
    return reply.code(201).send({ class: c.name });
  });
  app.delete('/v1/enroll/classes/:name', async (req) => {
    const { name } = req.params as { name: string };
    if (!(await deleteClass(db, name))) throw new WritError('NOT_FOUND', `no node class ${name}`);
    return { deleted: name };
  });
  app.get('/v1/enroll/nodes/:id', async (req) => {
    const { id } = req.params as { id: string };
    const inv = (await db.query<{ inventory: JsonValue }>('SELECT inventory FROM nodes WHERE id = $1', [id]))[0]?.inventory;
    // What each of the machine's NICs boots next through iPXE (only answers an operator action or an install set).
    return { assignment: await getAssignment(db, id), bootstraps: await listBootstraps(db, id), boot: await listBootAnswers(db, macsOf(inv)) };
  });
}
