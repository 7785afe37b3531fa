// Enrollment rules: what an inventory must show (MACs, DMI serial/product globs, disk and NIC traits, the
// token) and what a matching node becomes (class, pool, labels, hostname pattern). Matching is pure: the
// same function answers a registration and `writ enroll rules test`, and says why each criterion held or not.
import { LABELS_SCHEMA, WritError, assertSchema, compileSchema, type NodeInventory } from '@writ/protocol';

export interface RuleMatch {
  /** Any NIC with one of these MACs (lower-case, colon-separated). */
  macs?: string[];
  /** Globs (`*`, `?`) against the DMI system serial and product name. */
  dmiSerial?: string;
  dmiProduct?: string;
  /** Some disk must have all the disk traits given. */
  diskSerial?: string;
  diskModel?: string;
  diskMinBytes?: number;
  diskMaxBytes?: number;
  /** Some NIC must have all the NIC traits given. */
  nicDriver?: string;
  nicMinSpeedMbps?: number;
  diskless?: boolean;
  /** The node must present this rule's enrollment token. */
  requireToken?: boolean;
}

export interface RuleAssign {
  class: string | null;
  pool: string | null;
  labels: Record<string, string>;
  /** `{serial}`, `{mac}` (first NIC, no colons), `{id}` (node id) are replaced; null keeps no hostname. */
  hostname: string | null;
}

export interface EnrollmentRule {
  name: string;
  /** Lower first; ties by name. */
  priority: number;
  match: RuleMatch;
  assign: RuleAssign;
  /** sha256 hex of the rule's enrollment token (the token itself is shown once, when the rule is made). */
  tokenSha256: string | null;
  /** Accept a matching node that presented this rule's token without an operator. */
  autoAccept: boolean;
  /** How many distinct node keys may exchange the token (null: no limit). */
  maxUses: number | null;
}

export interface CriterionResult {
  criterion: string;
  ok: boolean;
  detail: string;
}

export interface RuleVerdict {
  rule: string;
  matched: boolean;
  /** True when it matched and the node presented the rule's token and the rule auto-accepts. */
  autoAccept: boolean;
  criteria: CriterionResult[];
}

const NAME = '^[a-z0-9][a-z0-9._-]{0,62}$';
const glob = { type: 'string', minLength: 1, maxLength: 128 };
const ruleSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'priority', 'match', 'assign', 'tokenSha256', 'autoAccept', 'maxUses'],
  properties: {
    name: { type: 'string', pattern: NAME },
    priority: { type: 'integer', minimum: 0, maximum: 1_000_000 },
    match: {
      type: 'object',
      additionalProperties: false,
      properties: {
        macs: { type: 'array', minItems: 1, maxItems: 256, items: { type: 'string', pattern: '^[0-9a-f]{2}(:[0-9a-f]{2}){5}$' } },
        dmiSerial: glob,
        dmiProduct: glob,
        diskSerial: glob,
        diskModel: glob,
        diskMinBytes: { type: 'integer', minimum: 0 },
        diskMaxBytes: { type: 'integer', minimum: 0 },
        nicDriver: glob,
        nicMinSpeedMbps: { type: 'integer', minimum: 0 },
        diskless: { type: 'boolean' },
        requireToken: { type: 'boolean' },
      },
    },
    assign: {
      type: 'object',
      additionalProperties: false,
      required: ['class', 'pool', 'labels', 'hostname'],
      properties: {
        class: { type: ['string', 'null'], pattern: NAME },
        pool: { type: ['string', 'null'], pattern: NAME },
        labels: LABELS_SCHEMA,
        hostname: { type: ['string', 'null'], pattern: '^[a-z0-9{][a-z0-9{}.-]{0,62}$' },
      },
    },
    tokenSha256: { type: ['string', 'null'], pattern: '^[0-9a-f]{64}$' },
    autoAccept: { type: 'boolean' },
    maxUses: { type: ['integer', 'null'], minimum: 1 },
  },
};
const validateRule = compileSchema<EnrollmentRule>(ruleSchema);

/** Checks a rule as given (CLI, API, Nix intent); throws CONFIG_INVALID with the problem. */
export function checkRule(v: unknown): EnrollmentRule {
  assertSchema(validateRule, v, 'enrollment rule', 'CONFIG_INVALID');
  const r = v as EnrollmentRule;
  if (r.autoAccept && !r.tokenSha256)
    throw new WritError('CONFIG_INVALID', `rule ${r.name}: auto-accept needs a token (a node is accepted only for presenting it)`);
  if (r.match.requireToken && !r.tokenSha256) throw new WritError('CONFIG_INVALID', `rule ${r.name}: requireToken needs a token`);
  if (Object.keys(r.match).length === 0 && !r.tokenSha256)
    throw new WritError('CONFIG_INVALID', `rule ${r.name} matches nothing in particular: give a criterion or a token`);
  return r;
}

/** A shell-style glob (`*` any run, `?` one character), whole string, case-sensitive. */
export function globMatch(pattern: string, s: string): boolean {
  const re = new RegExp(
    `^${pattern
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
    's',
  );
  return re.test(s);
}

/** Judges one rule against an inventory and the sha256 of the token the node presented (or null). */
export function judgeRule(rule: EnrollmentRule, inv: NodeInventory, tokenSha256: string | null): RuleVerdict {
  const m = rule.match;
  const c: CriterionResult[] = [];
  const add = (criterion: string, ok: boolean, detail: string) => c.push({ criterion, ok, detail });
  const tokenOk = rule.tokenSha256 !== null && tokenSha256 === rule.tokenSha256;
  if (m.macs) {
    const hit = inv.nics.find((n) => m.macs!.includes(n.mac));
    add('macs', !!hit, hit ? `${hit.name} has ${hit.mac}` : `no NIC has ${m.macs.join(', ')} (has ${inv.nics.map((n) => n.mac).join(', ') || 'none'})`);
  }
  if (m.dmiSerial !== undefined)
    add('dmiSerial', globMatch(m.dmiSerial, inv.dmi.serial ?? ''), `DMI serial ${JSON.stringify(inv.dmi.serial)} against ${m.dmiSerial}`);
  if (m.dmiProduct !== undefined)
    add('dmiProduct', globMatch(m.dmiProduct, inv.dmi.product ?? ''), `DMI product ${JSON.stringify(inv.dmi.product)} against ${m.dmiProduct}`);
  const diskTraits = m.diskSerial !== undefined || m.diskModel !== undefined || m.diskMinBytes !== undefined || m.diskMaxBytes !== undefined;
  if (diskTraits) {
    const hit = inv.disks.find(
      (d) =>
        (m.diskSerial === undefined || globMatch(m.diskSerial, d.serial ?? '')) &&
        (m.diskModel === undefined || globMatch(m.diskModel, d.model ?? '')) &&
        (m.diskMinBytes === undefined || d.sizeBytes >= m.diskMinBytes) &&
        (m.diskMaxBytes === undefined || d.sizeBytes <= m.diskMaxBytes),
    );
    const want = [
      m.diskSerial && `serial ${m.diskSerial}`,
      m.diskModel && `model ${m.diskModel}`,
      m.diskMinBytes !== undefined && `>= ${m.diskMinBytes} B`,
      m.diskMaxBytes !== undefined && `<= ${m.diskMaxBytes} B`,
    ]
      .filter(Boolean)
      .join(', ');
    add(
      'disk',
      !!hit,
      hit
        ? `${hit.name} (serial ${hit.serial}, ${hit.sizeBytes} B) has ${want}`
        : `no disk has ${want} (disks: ${inv.disks.map((d) => `${d.name} serial ${d.serial} ${d.sizeBytes} B`).join('; ') || 'none'})`,
    );
  }
  if (m.nicDriver !== undefined || m.nicMinSpeedMbps !== undefined) {
    const hit = inv.nics.find(
      (n) =>
        (m.nicDriver === undefined || globMatch(m.nicDriver, n.driver ?? '')) && (m.nicMinSpeedMbps === undefined || (n.speedMbps ?? 0) >= m.nicMinSpeedMbps),
    );
    add(
      'nic',
      !!hit,
      hit ? `${hit.name} (${hit.driver}, ${hit.speedMbps ?? '?'} Mb/s)` : `no NIC has driver ${m.nicDriver ?? '*'} at ${m.nicMinSpeedMbps ?? 0}+ Mb/s`,
    );
  }
  if (m.diskless !== undefined) add('diskless', inv.diskless === m.diskless, `the node is ${inv.diskless ? '' : 'not '}diskless`);
  if (m.requireToken)
    add('token', tokenOk, tokenOk ? 'the node presented this rule’s token' : tokenSha256 ? 'the node presented another token' : 'the node presented no token');
  const matched = c.every((x) => x.ok);
  return { rule: rule.name, matched, autoAccept: matched && rule.autoAccept && tokenOk, criteria: c };
}

/** Rules in the order they are tried. */
export function ruleOrder(rules: readonly EnrollmentRule[]): EnrollmentRule[] {
  return [...rules].sort((a, b) => a.priority - b.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The first matching rule (by priority), with every rule's verdict up to it. */
export function matchRules(
  rules: readonly EnrollmentRule[],
  inv: NodeInventory,
  tokenSha256: string | null,
): { rule: EnrollmentRule | null; verdicts: RuleVerdict[] } {
  const verdicts: RuleVerdict[] = [];
  for (const r of ruleOrder(rules)) {
    const v = judgeRule(r, inv, tokenSha256);
    verdicts.push(v);
    if (v.matched) return { rule: r, verdicts };
  }
  return { rule: null, verdicts };
}

/** The hostname a pattern gives this node: `{serial}`, `{mac}` and `{id}` filled in, lower-cased, trimmed to 63. */
export function hostnameFor(pattern: string | null, inv: NodeInventory, nodeId: string): string | null {
  if (!pattern) return null;
  const clean = (s: string) =>
    s
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, '-')
      .replace(/^-+|-+$/g, '');
  const h = pattern
    .replace(/\{serial\}/g, clean(inv.dmi.serial ?? 'noserial'))
    .replace(/\{mac\}/g, (inv.nics[0]?.mac ?? '000000000000').replace(/:/g, ''))
    .replace(/\{id\}/g, nodeId);
  return h.slice(0, 63);
}
