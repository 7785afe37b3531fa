// Static cluster intent (evaluated from Nix by nix/lib/cluster-schema.nix) into the ledger: the enrollment
// rules and node classes (with their install plans) go through issue 11's enrollment store, unchanged in
// shape. A dry run answers what would change; applying changes exactly that, in one transaction, audited.
import type { FastifyInstance } from 'fastify';
import { WritError, canonicalJson, type InstallPlan } from '@writ/protocol';
import { appendAuditIn } from '../ledger/audit.ts';
import type { Db } from '../ledger/db.ts';
import { checkRule, type EnrollmentRule } from '../enroll/rules.ts';
import { applyEnrollmentIntent, listClasses, listRules, type NodeClass } from '../enroll/store.ts';

export const INTENT_ROUTES = ['POST /v1/cluster/intent'] as const;

export interface ClusterIntent {
  /** The cluster's name, for the record. */
  cluster: string;
  rules: EnrollmentRule[];
  classes: NodeClass[];
  /** Also remove rules and classes the intent does not list. */
  prune: boolean;
  dryRun: boolean;
}

export interface IntentChange {
  kind: 'rule' | 'class';
  name: string;
  action: 'add' | 'change' | 'remove';
  /** The fields that differ (change only). */
  fields?: string[];
}

export interface IntentAnswer {
  cluster: string;
  applied: boolean;
  changes: IntentChange[];
  /** Rules and classes in the ledger that the intent does not list and that stay (no prune). */
  unmanaged: { rules: string[]; classes: string[] };
}

function changedFields(a: Record<string, unknown>, b: Record<string, unknown>): string[] {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => canonicalJson(a[k] ?? null) !== canonicalJson(b[k] ?? null)).sort();
}

/** What applying `intent` would change in the ledger, as rules and classes stand now. */
async function diffIntent(
  db: Db,
  intent: Pick<ClusterIntent, 'rules' | 'classes' | 'prune'>,
): Promise<{ changes: IntentChange[]; unmanaged: IntentAnswer['unmanaged'] }> {
  const changes: IntentChange[] = [];
  const haveRules = new Map((await listRules(db)).map((r) => [r.name, r]));
  const haveClasses = new Map((await listClasses(db)).map((c) => [c.name, c]));
  for (const c of intent.classes) {
    const have = haveClasses.get(c.name);
    if (!have) changes.push({ kind: 'class', name: c.name, action: 'add' });
    else {
      const fields = changedFields(have as unknown as Record<string, unknown>, c as unknown as Record<string, unknown>);
      if (fields.length > 0) changes.push({ kind: 'class', name: c.name, action: 'change', fields });
    }
  }
  for (const r of intent.rules) {
    const have = haveRules.get(r.name);
    if (!have) changes.push({ kind: 'rule', name: r.name, action: 'add' });
    else {
      const fields = changedFields(have as unknown as Record<string, unknown>, r as unknown as Record<string, unknown>);
      if (fields.length > 0) changes.push({ kind: 'rule', name: r.name, action: 'change', fields });
    }
  }
  const wantRules = new Set(intent.rules.map((r) => r.name));
  const wantClasses = new Set(intent.classes.map((c) => c.name));
  const extraRules = [...haveRules.keys()].filter((n) => !wantRules.has(n)).sort();
  const extraClasses = [...haveClasses.keys()].filter((n) => !wantClasses.has(n)).sort();
  if (intent.prune) {
    for (const n of extraRules) changes.push({ kind: 'rule', name: n, action: 'remove' });
    for (const n of extraClasses) changes.push({ kind: 'class', name: n, action: 'remove' });
  }
  return { changes, unmanaged: intent.prune ? { rules: [], classes: [] } : { rules: extraRules, classes: extraClasses } };
}

/** Answers what would change and, unless it is a dry run with changes, applies it (one transaction) and audits it. */
export async function applyClusterIntent(db: Db, intent: ClusterIntent, actor: string): Promise<IntentAnswer> {
  // Every rule is checked before anything is written (the same check the enrollment routes make).
  const rules = intent.rules.map((r) => checkRule(r));
  for (const r of rules) {
    if (r.assign.class !== null && !intent.classes.some((c) => c.name === r.assign.class)) {
      throw new WritError('CONFIG_INVALID', `rule ${r.name} assigns class ${r.assign.class}, which the intent does not define`);
    }
  }
  const { changes, unmanaged } = await diffIntent(db, { rules, classes: intent.classes, prune: intent.prune });
  if (intent.dryRun || changes.length === 0) return { cluster: intent.cluster, applied: false, changes, unmanaged };
  await applyEnrollmentIntent(db, { rules, classes: intent.classes, prune: intent.prune });
  await db.transaction((tx) =>
    appendAuditIn(tx, [{ kind: 'cluster.apply', actor, subject: intent.cluster, data: { changes: changes.map((c) => `${c.action} ${c.kind} ${c.name}`) } }]),
  );
  return { cluster: intent.cluster, applied: true, changes, unmanaged };
}

const planSchema = { type: ['object', 'null'] } as const;

export function registerIntentRoutes(app: FastifyInstance, db: Db): void {
  app.post(
    '/v1/cluster/intent',
    {
      bodyLimit: 4 * 1024 * 1024,
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['cluster', 'rules', 'classes'],
          properties: {
            cluster: { type: 'string', minLength: 1, maxLength: 63 },
            // Each rule is checked by the enrollment module's own schema (checkRule), each class by putClass.
            rules: { type: 'array', maxItems: 10_000, items: { type: 'object' } },
            classes: {
              type: 'array',
              maxItems: 1000,
              items: {
                type: 'object',
                additionalProperties: false,
                required: ['name', 'description', 'installPlan'],
                properties: { name: { type: 'string', maxLength: 63 }, description: { type: 'string', maxLength: 1000 }, installPlan: planSchema },
              },
            },
            prune: { type: 'boolean' },
            dryRun: { type: 'boolean' },
          },
        },
      },
    },
    async (req) => {
      const b = req.body as {
        cluster: string;
        rules: EnrollmentRule[];
        classes: { name: string; description: string; installPlan: InstallPlan | null }[];
        prune?: boolean;
        dryRun?: boolean;
      };
      return applyClusterIntent(db, { cluster: b.cluster, rules: b.rules, classes: b.classes, prune: b.prune ?? false, dryRun: b.dryRun ?? false }, 'operator');
    },
  );
}
