// The ledger's enrollment records, each its own table with its own owner: rules and classes (operators,
// or cluster intent applied from Nix), assignments (what a rule or an operator made of a node), bootstrap
// exchanges (a node key presenting an enrollment token, once per key) and boot answers (what a machine's
// iPXE script does on its next boot). The inventory stays on the node's row: the node owns it.
// Other modules (the Nix face) load intent through `applyEnrollmentIntent`.
import { createHash, randomBytes } from 'node:crypto';
import { WritError, assertSchema, compileSchema, type InstallPlan, type NodeAssignment, PAYLOAD_TYPES } from '@writ/protocol';
import type { Queryable } from '../ledger/db.ts';
import { checkRule, ruleOrder, type EnrollmentRule } from './rules.ts';

export const ENROLL_MIGRATION_SQL = `
  CREATE TABLE enroll_rules (
    name          text PRIMARY KEY,
    priority      integer NOT NULL,
    match         jsonb NOT NULL,
    assign        jsonb NOT NULL,
    token_sha256  text,
    auto_accept   boolean NOT NULL,
    max_uses      integer,
    created_at    bigint NOT NULL
  );
  CREATE TABLE node_classes (
    name          text PRIMARY KEY,
    description   text NOT NULL DEFAULT '',
    install_plan  jsonb
  );
  CREATE TABLE node_assignments (
    node_id      text PRIMARY KEY REFERENCES nodes (id),
    hostname     text,
    class        text,
    pool         text,
    labels       jsonb NOT NULL,
    rule         text,
    assigned_by  text NOT NULL,
    assigned_at  bigint NOT NULL
  );
  CREATE TABLE node_bootstraps (
    node_id       text NOT NULL REFERENCES nodes (id),
    keyid         text NOT NULL,
    token_sha256  text NOT NULL,
    rule          text,
    at            bigint NOT NULL,
    PRIMARY KEY (node_id, keyid)
  );
  CREATE INDEX node_bootstraps_by_token ON node_bootstraps (token_sha256);
  CREATE TABLE boot_answers (
    mac      text PRIMARY KEY,
    answer   text NOT NULL CHECK (answer IN ('local', 'install', 'rescue')),
    node_id  text,
    set_by   text NOT NULL,
    set_at   bigint NOT NULL
  );
`;

export interface NodeClass {
  name: string;
  description: string;
  installPlan: InstallPlan | null;
}

export type BootAnswer = 'local' | 'install' | 'rescue';

export const tokenSha256 = (token: string) => createHash('sha256').update(token).digest('hex');

/**
 * A fresh enrollment token: `wet_` and 32 random bytes in base64url (47 characters). The prefix keeps it from
 * starting with '-', which a command line takes for an option (`writ image build --token -x…` was refused as
 * ambiguous about one time in 32), and lets secret scanners recognise it.
 */
export function newEnrollmentToken(): string {
  return `wet_${randomBytes(32).toString('base64url')}`;
}

interface RuleRow {
  name: string;
  priority: number;
  match: EnrollmentRule['match'];
  assign: EnrollmentRule['assign'];
  token_sha256: string | null;
  auto_accept: boolean;
  max_uses: number | null;
}

const ruleOf = (r: RuleRow): EnrollmentRule => ({
  name: r.name,
  priority: Number(r.priority),
  match: r.match,
  assign: r.assign,
  tokenSha256: r.token_sha256,
  autoAccept: r.auto_accept,
  maxUses: r.max_uses === null ? null : Number(r.max_uses),
});

export async function putRule(db: Queryable, rule: EnrollmentRule, at = Date.now()): Promise<void> {
  const r = checkRule(rule);
  await db.query(
    `INSERT INTO enroll_rules (name, priority, match, assign, token_sha256, auto_accept, max_uses, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (name) DO UPDATE SET priority = EXCLUDED.priority, match = EXCLUDED.match, assign = EXCLUDED.assign, token_sha256 = EXCLUDED.token_sha256, auto_accept = EXCLUDED.auto_accept, max_uses = EXCLUDED.max_uses`,
    [r.name, r.priority, JSON.stringify(r.match), JSON.stringify(r.assign), r.tokenSha256, r.autoAccept, r.maxUses, at],
  );
}

export async function listRules(db: Queryable): Promise<EnrollmentRule[]> {
  return ruleOrder((await db.query<RuleRow>('SELECT * FROM enroll_rules')).map(ruleOf));
}

export async function deleteRule(db: Queryable, name: string): Promise<boolean> {
  return (await db.query('DELETE FROM enroll_rules WHERE name = $1 RETURNING name', [name])).length === 1;
}

const planSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['type', 'class', 'disk', 'subvolumes', 'jobs'],
  properties: {
    type: { const: PAYLOAD_TYPES.installPlan },
    class: { type: 'string', maxLength: 63 },
    disk: {
      type: 'object',
      additionalProperties: false,
      minProperties: 1,
      properties: {
        serial: { type: 'string', maxLength: 128 },
        wwn: { type: 'string', maxLength: 128 },
        byId: { type: 'string', maxLength: 256 },
        model: { type: 'string', maxLength: 128 },
        minBytes: { type: 'integer', minimum: 0 },
        maxBytes: { type: 'integer', minimum: 0 },
      },
    },
    subvolumes: { type: 'array', maxItems: 64, items: { type: 'string', pattern: '^@?[A-Za-z0-9._-]{1,63}$' } },
    jobs: { type: 'array', maxItems: 16, items: { type: 'string', maxLength: 1024 * 1024 } },
  },
};
const validatePlan = compileSchema<InstallPlan>(planSchema);

export async function putClass(db: Queryable, c: NodeClass): Promise<void> {
  if (!/^[a-z0-9][a-z0-9._-]{0,62}$/.test(c.name)) throw new WritError('CONFIG_INVALID', `class name ${c.name}: lower-case letters, digits, '.', '_' and '-'`);
  if (c.installPlan) {
    assertSchema(validatePlan, c.installPlan, 'install plan', 'CONFIG_INVALID');
    if (c.installPlan.class !== c.name) throw new WritError('CONFIG_INVALID', `the install plan names class ${c.installPlan.class}, not ${c.name}`);
  }
  await db.query(
    `INSERT INTO node_classes (name, description, install_plan) VALUES ($1, $2, $3)
     ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, install_plan = EXCLUDED.install_plan`,
    [c.name, c.description, c.installPlan === null ? null : JSON.stringify(c.installPlan)],
  );
}

export async function getClass(db: Queryable, name: string): Promise<NodeClass | null> {
  const rows = await db.query<{ name: string; description: string; install_plan: InstallPlan | null }>('SELECT * FROM node_classes WHERE name = $1', [name]);
  const r = rows[0];
  return r ? { name: r.name, description: r.description, installPlan: r.install_plan } : null;
}

export async function listClasses(db: Queryable): Promise<NodeClass[]> {
  return (await db.query<{ name: string; description: string; install_plan: InstallPlan | null }>('SELECT * FROM node_classes ORDER BY name')).map((r) => ({
    name: r.name,
    description: r.description,
    installPlan: r.install_plan,
  }));
}

export async function deleteClass(db: Queryable, name: string): Promise<boolean> {
  return (await db.query('DELETE FROM node_classes WHERE name = $1 RETURNING name', [name])).length === 1;
}

interface AssignmentRow {
  node_id: string;
  hostname: string | null;
  class: string | null;
  pool: string | null;
  labels: Record<string, string>;
  rule: string | null;
}

export async function getAssignment(db: Queryable, nodeId: string): Promise<NodeAssignment | null> {
  const r = (await db.query<AssignmentRow>('SELECT * FROM node_assignments WHERE node_id = $1', [nodeId]))[0];
  return r
    ? { type: PAYLOAD_TYPES.nodeAssignment, nodeId: r.node_id, hostname: r.hostname, class: r.class, pool: r.pool, labels: r.labels, rule: r.rule }
    : null;
}

export async function putAssignment(db: Queryable, a: NodeAssignment, by: string, at = Date.now()): Promise<void> {
  await db.query(
    `INSERT INTO node_assignments (node_id, hostname, class, pool, labels, rule, assigned_by, assigned_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (node_id) DO UPDATE SET hostname = EXCLUDED.hostname, class = EXCLUDED.class, pool = EXCLUDED.pool, labels = EXCLUDED.labels, rule = EXCLUDED.rule, assigned_by = EXCLUDED.assigned_by, assigned_at = EXCLUDED.assigned_at`,
    [a.nodeId, a.hostname, a.class, a.pool, JSON.stringify(a.labels), a.rule, by, at],
  );
}

/**
 * Records a node key's exchange of a token. Returns false (and records nothing) when the token's rule allows
 * `maxUses` keys and that many other keys have exchanged it already.
 */
export async function recordBootstrap(
  db: Queryable,
  b: { nodeId: string; keyid: string; tokenSha256: string; rule: string | null; maxUses: number | null; at: number },
): Promise<boolean> {
  const seen = await db.query<{ node_id: string; keyid: string }>('SELECT node_id, keyid FROM node_bootstraps WHERE token_sha256 = $1', [b.tokenSha256]);
  if (seen.some((s) => s.node_id === b.nodeId && s.keyid === b.keyid)) return true;
  if (b.maxUses !== null && seen.length >= b.maxUses) return false;
  await db.query('INSERT INTO node_bootstraps (node_id, keyid, token_sha256, rule, at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING', [
    b.nodeId,
    b.keyid,
    b.tokenSha256,
    b.rule,
    b.at,
  ]);
  return true;
}

export async function listBootstraps(db: Queryable, nodeId: string): Promise<{ keyid: string; rule: string | null; at: number }[]> {
  return (
    await db.query<{ keyid: string; rule: string | null; at: string }>('SELECT keyid, rule, at FROM node_bootstraps WHERE node_id = $1 ORDER BY at', [nodeId])
  ).map((r) => ({ keyid: r.keyid, rule: r.rule, at: Number(r.at) }));
}

export async function setBootAnswer(db: Queryable, mac: string, answer: BootAnswer, nodeId: string | null, by: string, at = Date.now()): Promise<void> {
  await db.query(
    `INSERT INTO boot_answers (mac, answer, node_id, set_by, set_at) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (mac) DO UPDATE SET answer = EXCLUDED.answer, node_id = EXCLUDED.node_id, set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at`,
    [mac.toLowerCase(), answer, nodeId, by, at],
  );
}

export interface BootAnswerRow {
  mac: string;
  answer: BootAnswer;
  /** The node the answer was set for (null: set for a MAC no node has yet). */
  nodeId: string | null;
  setBy: string;
  setAt: number;
}

interface BootAnswerDbRow {
  mac: string;
  answer: BootAnswer;
  node_id: string | null;
  set_by: string;
  set_at: string | number;
}

const bootRowOf = (r: BootAnswerDbRow): BootAnswerRow => ({ mac: r.mac, answer: r.answer, nodeId: r.node_id, setBy: r.set_by, setAt: Number(r.set_at) });

export async function getBootAnswer(db: Queryable, mac: string): Promise<BootAnswerRow | null> {
  const r = (await db.query<BootAnswerDbRow>('SELECT * FROM boot_answers WHERE mac = $1', [mac.toLowerCase()]))[0];
  return r ? bootRowOf(r) : null;
}

/** The answers set for any of these MACs (a node's NICs). */
export async function listBootAnswers(db: Queryable, macs: readonly string[]): Promise<BootAnswerRow[]> {
  if (macs.length === 0) return [];
  return (await db.query<BootAnswerDbRow>('SELECT * FROM boot_answers WHERE mac = ANY($1::text[]) ORDER BY mac', [macs.map((m) => m.toLowerCase())])).map(
    bootRowOf,
  );
}

/** Forgets the answers set for this node on these MACs (the machine's default applies again). */
export async function clearBootAnswers(db: Queryable, nodeId: string, macs: readonly string[]): Promise<number> {
  if (macs.length === 0) return 0;
  return (await db.query('DELETE FROM boot_answers WHERE node_id = $1 AND mac = ANY($2::text[]) RETURNING mac', [nodeId, macs.map((m) => m.toLowerCase())]))
    .length;
}

/**
 * The nodes (retired ones left out) whose inventory lists a NIC with this MAC, by JSON containment on the
 * inventory the node signed at registration.
 */
export async function nodesWithMac(db: Queryable, mac: string): Promise<{ id: string; state: string }[]> {
  return db.query<{ id: string; state: string }>(
    `SELECT id, state FROM nodes WHERE state <> 'retired' AND inventory -> 'nics' @> $1::jsonb ORDER BY registered_at`,
    [JSON.stringify([{ mac: mac.toLowerCase() }])],
  );
}

/** Cluster intent (e.g. evaluated from Nix): the rules and classes it lists replace those with the same names. */
export interface EnrollmentIntent {
  rules?: EnrollmentRule[];
  classes?: NodeClass[];
  /** Also delete rules and classes the intent does not list. */
  prune?: boolean;
}

/** Applies intent in one transaction; returns what it changed. */
export async function applyEnrollmentIntent(
  db: { transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> },
  intent: EnrollmentIntent,
): Promise<{ rules: number; classes: number; removedRules: string[]; removedClasses: string[] }> {
  const rules = (intent.rules ?? []).map((r) => checkRule(r));
  return db.transaction(async (tx) => {
    for (const c of intent.classes ?? []) await putClass(tx, c);
    for (const r of rules) await putRule(tx, r);
    const removedRules: string[] = [];
    const removedClasses: string[] = [];
    if (intent.prune) {
      const keepR = new Set(rules.map((r) => r.name));
      for (const r of await listRules(tx)) if (!keepR.has(r.name) && (await deleteRule(tx, r.name))) removedRules.push(r.name);
      const keepC = new Set((intent.classes ?? []).map((c) => c.name));
      for (const c of await listClasses(tx)) if (!keepC.has(c.name) && (await deleteClass(tx, c.name))) removedClasses.push(c.name);
    }
    return { rules: rules.length, classes: intent.classes?.length ?? 0, removedRules, removedClasses };
  });
}
