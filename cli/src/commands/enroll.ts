// writ enroll rules add|list|rm|test: the ledger's enrollment rules (what a booted machine becomes).
import { readFile } from 'node:fs/promises';
import { WritError } from '@writ/protocol';
import { parse } from '../args.ts';
import { api, resolveCoord } from '../client.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import type { CliContext, Command } from './types.ts';

const HELP = `usage: writ enroll rules <add|list|rm|test> [options] [--json]

  add NAME [criteria] [assignment]   add (or replace) a rule
  list                               every rule, in the order they are tried
  rm NAME                            delete a rule
  test INVENTORY.json [--token T]    which rule an inventory (as a node sends it; see writ nodes show)
                                     would match, and why each criterion held or not

criteria (all given must hold):
  --mac MAC              a NIC has this MAC (repeat: any of them)
  --dmi-serial GLOB      DMI system serial (* and ? globs)
  --dmi-product GLOB     DMI product name
  --disk-serial GLOB     some disk has this serial (with the other --disk-* traits)
  --disk-model GLOB      some disk has this model
  --disk-min-gib N       some disk is at least N GiB;  --disk-max-gib N: at most N GiB
  --nic-driver GLOB      some NIC uses this driver;  --nic-min-mbps N: at least this speed
  --diskless / --not-diskless
  --require-token        the node must present this rule's token

assignment:
  --class NAME  --pool NAME  --label k=v (repeat)  --hostname PATTERN ({serial}, {mac}, {id})
  --priority N           lower is tried first (default 100)
  --token                make an enrollment token for this rule (printed once; put it in the image
                         with writ image build --token)
  --auto-accept          accept matching nodes that present the token, without an operator
  --max-uses N           at most N node keys may use the token

A node no rule matches stays inspected (pending) with its inventory visible; a matched node
without auto-accept waits for writ nodes accept.

example:
  writ enroll rules add lab --mac 52:54:00:12:34:56 --disk-serial 'WRIT*' --class worker \\
    --pool lab --label role=worker --hostname 'lab-{mac}' --token --auto-accept`;

const RULE_OPTIONS = {
  coord: { type: 'string' },
  mac: { type: 'string', multiple: true },
  'dmi-serial': { type: 'string' },
  'dmi-product': { type: 'string' },
  'disk-serial': { type: 'string' },
  'disk-model': { type: 'string' },
  'disk-min-gib': { type: 'string' },
  'disk-max-gib': { type: 'string' },
  'nic-driver': { type: 'string' },
  'nic-min-mbps': { type: 'string' },
  diskless: { type: 'boolean' },
  'not-diskless': { type: 'boolean' },
  'require-token': { type: 'boolean' },
  class: { type: 'string' },
  pool: { type: 'string' },
  label: { type: 'string', multiple: true },
  hostname: { type: 'string' },
  priority: { type: 'string' },
  token: { type: 'boolean' },
  'auto-accept': { type: 'boolean' },
  'max-uses': { type: 'string' },
} as const;

function whole(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new WritError('USAGE', `${flag} must be a whole number`);
  return n;
}

interface RuleView {
  name: string;
  priority: number;
  match: Record<string, unknown>;
  assign: { class: string | null; pool: string | null; labels: Record<string, string>; hostname: string | null };
  hasToken: boolean;
  autoAccept: boolean;
  maxUses: number | null;
}

async function add(argv: string[], io: Io, ctx: CliContext) {
  const { values: v, positionals } = parse(argv, RULE_OPTIONS, { min: 1, max: 1, usage: 'writ enroll rules add NAME [criteria] [assignment]' });
  if (v.help) return (io.out(HELP), EXIT.ok);
  const GiB = 2 ** 30;
  const labels: Record<string, string> = {};
  for (const l of v.label ?? []) {
    const m = /^([^=]+)=(.*)$/.exec(l);
    if (!m) throw new WritError('USAGE', `--label ${l}: expected key=value`);
    labels[m[1]!] = m[2]!;
  }
  if (v.diskless && v['not-diskless']) throw new WritError('USAGE', '--diskless and --not-diskless contradict each other');
  const min = whole(v['disk-min-gib'], '--disk-min-gib');
  const max = whole(v['disk-max-gib'], '--disk-max-gib');
  const match = {
    ...(v.mac ? { macs: v.mac.map((m) => m.toLowerCase()) } : {}),
    ...(v['dmi-serial'] !== undefined ? { dmiSerial: v['dmi-serial'] } : {}),
    ...(v['dmi-product'] !== undefined ? { dmiProduct: v['dmi-product'] } : {}),
    ...(v['disk-serial'] !== undefined ? { diskSerial: v['disk-serial'] } : {}),
    ...(v['disk-model'] !== undefined ? { diskModel: v['disk-model'] } : {}),
    ...(min !== undefined ? { diskMinBytes: min * GiB } : {}),
    ...(max !== undefined ? { diskMaxBytes: max * GiB } : {}),
    ...(v['nic-driver'] !== undefined ? { nicDriver: v['nic-driver'] } : {}),
    ...(v['nic-min-mbps'] !== undefined ? { nicMinSpeedMbps: whole(v['nic-min-mbps'], '--nic-min-mbps') } : {}),
    ...(v.diskless ? { diskless: true } : v['not-diskless'] ? { diskless: false } : {}),
    ...(v['require-token'] ? { requireToken: true } : {}),
  };
  const body = {
    name: positionals[0]!,
    priority: whole(v.priority, '--priority') ?? 100,
    match,
    assign: { class: v.class ?? null, pool: v.pool ?? null, labels, hostname: v.hostname ?? null },
    autoAccept: v['auto-accept'] === true,
    maxUses: whole(v['max-uses'], '--max-uses') ?? null,
    ...(v.token ? { token: true } : {}),
  };
  const r = (await api<{ rule: RuleView; token?: string }>(await resolveCoord(v.coord, ctx.env), 'POST', '/v1/enroll/rules', body)).body;
  if (v.json) return (printJson(io, r), EXIT.ok);
  io.out(`rule ${r.rule.name} saved (priority ${r.rule.priority}${r.rule.autoAccept ? ', auto-accepts nodes presenting its token' : ''})`);
  if (r.token) io.out(`token: ${r.token}\n(shown once: build images with writ image build --token ${r.token})`);
  return EXIT.ok;
}

async function list(argv: string[], io: Io, ctx: CliContext) {
  const { values } = parse(argv, { coord: { type: 'string' } }, { min: 0, max: 0, usage: 'writ enroll rules list' });
  if (values.help) return (io.out(HELP), EXIT.ok);
  const { rules } = (await api<{ rules: RuleView[] }>(await resolveCoord(values.coord, ctx.env), 'GET', '/v1/enroll/rules')).body;
  if (values.json) return (printJson(io, { rules }), EXIT.ok);
  if (rules.length === 0) io.out('no enrollment rules: every new node stays pending until writ nodes accept');
  for (const r of rules) {
    io.out(
      `${String(r.priority).padStart(5)}  ${r.name.padEnd(20)} match ${JSON.stringify(r.match)}  →  class ${r.assign.class ?? '-'} pool ${r.assign.pool ?? '-'} labels ${JSON.stringify(r.assign.labels)} hostname ${r.assign.hostname ?? '-'}${r.hasToken ? ' [token]' : ''}${r.autoAccept ? ' [auto-accept]' : ''}`,
    );
  }
  return EXIT.ok;
}

async function rm(argv: string[], io: Io, ctx: CliContext) {
  const { values, positionals } = parse(argv, { coord: { type: 'string' } }, { min: 1, max: 1, usage: 'writ enroll rules rm NAME' });
  if (values.help) return (io.out(HELP), EXIT.ok);
  const r = (await api<{ deleted: string }>(await resolveCoord(values.coord, ctx.env), 'DELETE', `/v1/enroll/rules/${encodeURIComponent(positionals[0]!)}`))
    .body;
  if (values.json) return (printJson(io, r), EXIT.ok);
  io.out(`rule ${r.deleted} deleted`);
  return EXIT.ok;
}

async function test(argv: string[], io: Io, ctx: CliContext) {
  const { values, positionals } = parse(
    argv,
    { coord: { type: 'string' }, token: { type: 'string' } },
    { min: 1, max: 1, usage: 'writ enroll rules test INVENTORY.json [--token TOKEN]' },
  );
  if (values.help) return (io.out(HELP), EXIT.ok);
  let inventory: unknown;
  try {
    const doc = JSON.parse(await readFile(positionals[0]!, 'utf8')) as { inventory?: unknown };
    // Either the inventory itself or `writ nodes show --json` output, which holds it.
    inventory = doc && typeof doc === 'object' && 'inventory' in doc ? doc.inventory : doc;
  } catch (e) {
    throw new WritError('USAGE', `cannot read ${positionals[0]} as JSON: ${(e as Error).message}`);
  }
  const r = (
    await api<{
      matched: string | null;
      autoAccept: boolean;
      assign: RuleView['assign'] | null;
      verdicts: { rule: string; matched: boolean; criteria: { criterion: string; ok: boolean; detail: string }[] }[];
    }>(await resolveCoord(values.coord, ctx.env), 'POST', '/v1/enroll/test', { inventory, ...(values.token ? { token: values.token } : {}) })
  ).body;
  if (values.json) return (printJson(io, r), EXIT.ok);
  for (const v of r.verdicts) {
    io.out(`${v.matched ? 'MATCH' : 'no   '}  ${v.rule}`);
    for (const c of v.criteria) io.out(`         ${c.ok ? 'ok ' : 'NO '} ${c.criterion}: ${c.detail}`);
  }
  io.out(
    r.matched
      ? `→ rule ${r.matched}: ${JSON.stringify(r.assign)}${r.autoAccept ? ' (accepted automatically)' : ' (waits for writ nodes accept)'}`
      : '→ no rule matches: the node stays pending (inspected) until writ nodes accept',
  );
  return EXIT.ok;
}

const RULES: Record<string, (argv: string[], io: Io, ctx: CliContext) => Promise<number>> = { add, list, rm, test };

export const enrollCommand: Command = {
  name: 'enroll',
  summary: 'enrollment rules: what a booted machine becomes (class, pool, labels, hostname)',
  help: HELP,
  async run(argv, io, ctx) {
    const [group, sub, ...rest] = argv;
    if (group === undefined || group === '--help' || group === '-h') return (io.out(HELP), group === undefined ? EXIT.usage : EXIT.ok);
    if (group !== 'rules') throw new WritError('USAGE', `unknown subcommand "enroll ${group}"; try: enroll rules add|list|rm|test`);
    if (sub === undefined || sub === '--help' || sub === '-h') return (io.out(HELP), sub === undefined ? EXIT.usage : EXIT.ok);
    const fn = RULES[sub];
    if (!fn) throw new WritError('USAGE', `unknown subcommand "enroll rules ${sub}"; try: ${Object.keys(RULES).join(', ')}`);
    return fn(rest, io, ctx);
  },
};
