// writ plan SCRIPT.js [--args JSON|@FILE] [--caps a,b] [--fixture FILE.json] [--json]: what the script would do,
// before anyone signs it. Runs it in the runner's sandbox against a recording SAL (runner/src/plan.ts).
import { readFile } from 'node:fs/promises';
import {
  CAPABILITIES,
  JOB_ID_PATTERN,
  PAYLOAD_TYPES,
  WritError,
  errorCodeOf,
  fromB64,
  fromErrorJSON,
  parseEnvelope,
  parseJobPayload,
  payloadKindOf,
  type JobPayload,
  type JsonValue,
} from '@writ/protocol';
import { checkScriptCompiles, loadNodeConfig, parsePlanFixtureText, planScript, type Plan, type PlanFixture, type PlannedCall } from '@writ/runner';
import { didYouMean, parse, parseDurationS } from '../args.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import { parseArgsValue, parseTarget } from './sign.ts';
import type { Command } from './types.ts';

export const PLAN_HELP = `usage: writ plan SCRIPT.js [--args JSON|@FILE] [--caps a,b] [--fixture FILE.json] [--config node.json] [--json]
       writ plan ENVELOPE.json [--fixture FILE.json] [--config node.json] [--json]

Runs the script once in the runner's sandbox against a recording SAL and lists the host calls it would
make, in order, each with its capability and arguments: what a signer signs. Every call is checked as on a
node (capability granted, arguments valid against the capability's schema) and has no effect. Reads are
answered from this machine (host.facts, time.now, random.bytes) or the fixture; effects, and reads of SAL
areas, get a planned placeholder shaped like the real answer, marked "planned" (docs/plan.md).

Given a signed job envelope instead (one to co-sign with writ sign --add-signature, say), plans the script
it carries with the arguments, capabilities, job id, limits and pins it carries. Its signatures are not
checked here: writ verify does that.

options:
  --args JSON|@FILE   the script's arguments, as for writ sign (default: null)
  --caps a,b          check the script against this capability list, as the runner will: a call outside it
                      fails with CAPABILITY_NOT_GRANTED. Without --caps every capability is granted and the
                      plan says which ones to sign with
  --fixture FILE      answers by capability: {"vm.info": {"answer": {…}}, "host.facts": {"answers": [{…}, …]},
                      "btrfs.disk.clone": {"error": {"code": "RESOURCE_NOT_FOUND", "message": "…"}}}
  --config FILE       a node's config file (as for writ runner --config): a call of a SAL area it does not
                      configure fails with HOST_CALL_DENIED, and a link name outside its net prefix with
                      PATH_ESCAPE, as on that node
  --target SPEC       node=ID or label=k=v, as for writ sign (checked and shown; the plan runs here)
  --id ID             ctx.job.id the script sees (default: plan)
  --timeout DURATION  script wall-clock limit (default 30s)
  --memory MIB        script memory limit in MiB (default 64)
  --nix-pin PATH      a /nix/store path the job may install (repeatable)
  --json              one JSON document: {script, sha256, effects: [{seq, call, capability, args, kind,
                      answer, answerFrom}], result | error, …}

exit codes: 0 the script ran to its end, 1 it failed (the calls before the failure are listed), 2 usage.

examples:
  writ plan scripts/examples/hello.js --caps host.facts
  writ plan scripts/examples/deploy-vm.js --args @web1.json --fixture node-7.json --json
  writ plan deploy.env.json`;

const OPTIONS = {
  args: { type: 'string' },
  caps: { type: 'string' },
  fixture: { type: 'string' },
  config: { type: 'string' },
  target: { type: 'string', multiple: true },
  id: { type: 'string' },
  timeout: { type: 'string' },
  memory: { type: 'string' },
  'nix-pin': { type: 'string', multiple: true },
} as const;

async function readScript(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new WritError('USAGE', `cannot read script ${file} (${(e as NodeJS.ErrnoException).code})`);
  }
}

interface EnvelopeJob {
  job: JobPayload;
  /** The key ids the signatures name (not verified here). */
  keyids: string[];
}

/** The job a file holds when it is a DSSE envelope (a JSON object with payloadType); undefined for a script. */
function envelopeJob(text: string, file: string): EnvelopeJob | undefined {
  if (!text.trimStart().startsWith('{')) return undefined;
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return undefined; // not JSON: a script (one that does not parse is reported as such below)
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc) || !('payloadType' in doc)) return undefined;
  const env = parseEnvelope(text);
  if (env.payloadType !== PAYLOAD_TYPES.job) {
    const kind = payloadKindOf(env.payloadType);
    const carries = kind ? `a ${kind}` : JSON.stringify(env.payloadType.slice(0, 100));
    throw new WritError('PAYLOAD_TYPE_MISMATCH', `${file} carries ${carries}, not a job: writ plan plans job envelopes and scripts`, {
      expected: PAYLOAD_TYPES.job,
    });
  }
  const payload = fromB64(env.payload);
  if (!payload) throw new WritError('ENVELOPE_MALFORMED', `${file}: payload is not canonical base64`);
  return { job: parseJobPayload(payload), keyids: env.signatures.map((s) => s.keyid) };
}

async function readFixture(file: string): Promise<PlanFixture> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new WritError('USAGE', `--fixture: cannot read ${file} (${(e as NodeJS.ErrnoException).code})`);
  }
  try {
    return parsePlanFixtureText(text, `--fixture ${file}`);
  } catch (e) {
    const capability = (e as { details?: { capability?: unknown } }).details?.capability;
    if (errorCodeOf(e) === 'PLAN_FIXTURE_INVALID' && typeof capability === 'string' && !CAPABILITIES.has(capability)) {
      throw new WritError('PLAN_FIXTURE_INVALID', `${(e as Error).message}${didYouMean(capability, CAPABILITIES.keys())}`, { capability });
    }
    throw e;
  }
}

function parseCaps(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const caps = value
    .split(',')
    .map((c) => c.trim())
    .filter(Boolean);
  for (const c of caps) {
    if (!CAPABILITIES.has(c))
      throw new WritError('CAPABILITY_UNKNOWN', `--caps ${c} is not a capability${didYouMean(c, CAPABILITIES.keys())} (the list: docs/sal.md)`, {
        capability: c,
      });
  }
  return caps;
}

/** JSON on one line, cut to `max` characters for the terminal (--json has everything). */
function brief(value: JsonValue | undefined, max: number): string {
  const text = JSON.stringify(value ?? null);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function callLines(c: PlannedCall, width: number): string[] {
  const head = `${String(c.seq).padStart(3)}. ${c.kind.padEnd(6)} ${c.capability.padEnd(width)} ${JSON.stringify(c.args)}${c.dangerous ? '   (dangerous)' : ''}`;
  const pad = ' '.repeat(12);
  if (c.error) return [head, `${pad}→ ${c.answerFrom === 'fixture' ? 'fails (from the fixture)' : 'refused'}: ${c.error.code}: ${c.error.message}`];
  return [head, `${pad}→ ${c.answerFrom === 'planned' ? 'planned' : c.answerFrom === 'host' ? 'from this host' : 'from the fixture'}: ${brief(c.answer, 160)}`];
}

function printPlan(io: Io, script: string, plan: Plan, config: string | undefined): void {
  io.out(`plan for ${script} (sha256 ${plan.sha256})${config ? ` on a node configured by ${config}` : ''}`);
  io.out(plan.caps ? `granted: ${plan.caps.join(', ') || '(none)'}` : 'granted: every capability (pass --caps to check the list you will sign)');
  const width = Math.max(0, ...plan.calls.map((c) => c.capability.length));
  let logAt = 0;
  const logsUpTo = (n: number) => {
    while (logAt < plan.logs.length && plan.logs[logAt]!.afterCall <= n) {
      const l = plan.logs[logAt++]!;
      io.out(`      [${l.level.padEnd(5)}] ${l.message}`);
    }
  };
  if (plan.calls.length === 0) io.out(plan.outcome.ok ? 'no host calls: the script has no effects' : 'no host calls before the script failed');
  logsUpTo(0);
  for (const c of plan.calls) {
    for (const line of callLines(c, width)) io.out(line);
    logsUpTo(c.seq);
  }
  logsUpTo(Infinity);
  const effects = plan.calls.filter((c) => c.kind === 'effect');
  const dangerous = effects.filter((c) => c.dangerous).length;
  const planned = plan.calls.some((c) => c.answerFrom === 'planned');
  const used = plan.capabilitiesUsed.length ? `; capabilities used: ${plan.capabilitiesUsed.join(',')}` : '';
  io.out(`${effects.length} effect(s)${dangerous ? ` (${dangerous} dangerous)` : ''}, ${plan.calls.length - effects.length} read(s)${used}`);
  if (plan.outcome.ok) io.out(`result${planned ? ' (built from planned values)' : ''}: ${brief(plan.outcome.result, 400)}`);
}

async function plan(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(argv, OPTIONS, {
    min: 1,
    max: 1,
    usage: 'writ plan SCRIPT.js|ENVELOPE.json [--args JSON|@FILE] [--caps a,b] [--fixture FILE.json] [--config node.json]',
  });
  if (values.help) return (io.out(PLAN_HELP), EXIT.ok);
  const script = positionals[0]!;
  const text = await readScript(script);
  const signed = envelopeJob(text, script);
  if (signed) {
    const given = (['args', 'caps', 'target', 'id', 'timeout', 'memory', 'nix-pin'] as const).filter((o) => values[o] !== undefined);
    if (given.length)
      throw new WritError(
        'USAGE',
        `${script} is a signed envelope: it carries its own ${given.map((o) => `--${o}`).join(', ')}; plan the script file to choose them`,
      );
  }
  const source = signed ? signed.job.script.source : text;
  const caps = signed ? signed.job.caps : parseCaps(values.caps);
  const target = signed ? signed.job.target : values.target?.length ? parseTarget(values.target) : undefined;
  const memory = values.memory === undefined ? undefined : Number(values.memory);
  if (memory !== undefined && (!Number.isInteger(memory) || memory < 1 || memory > 1024))
    throw new WritError('USAGE', '--memory must be a whole number of MiB from 1 to 1024');
  const timeoutMs = values.timeout === undefined ? undefined : parseDurationS(values.timeout, '--timeout') * 1000;
  if (timeoutMs === 0) throw new WritError('USAGE', '--timeout must be longer than 0s');
  if (values.id !== undefined && !new RegExp(JOB_ID_PATTERN).test(values.id)) {
    throw new WritError('USAGE', `--id ${JSON.stringify(values.id)}: a job id is letters, digits, '.', '_' and '-' (at most 128)`);
  }
  const args = signed ? signed.job.args : await parseArgsValue(values.args);
  const fixture = values.fixture === undefined ? undefined : await readFixture(values.fixture);
  // The node's SAL areas, checked as `writ runner --config` checks them (CONFIG_INVALID naming the field).
  const node = values.config === undefined ? undefined : await loadNodeConfig(values.config);
  // Compiled as the runner will (and as writ sign does): a syntax error is reported with its line and column.
  const problem = await checkScriptCompiles(source);
  if (problem) throw fromErrorJSON({ ...problem, message: `${script}: ${problem.message}` });

  const result = await planScript({
    source,
    args,
    ...(caps ? { caps } : {}),
    ...(fixture ? { fixture } : {}),
    ...(node ? { available: new Set(node.hostTable.keys()), salConfig: node.sal } : {}),
    ...(signed
      ? { jobId: signed.job.id, limits: signed.job.limits, ...(signed.job.pins ? { pins: signed.job.pins } : {}) }
      : {
          ...(values.id ? { jobId: values.id } : {}),
          limits: { ...(timeoutMs ? { timeoutMs } : {}), ...(memory ? { memoryMiB: memory } : {}) },
          ...(values['nix-pin']?.length ? { pins: { nix: values['nix-pin'] } } : {}),
        }),
  });
  if (values.json) {
    printJson(io, {
      ok: result.outcome.ok,
      script,
      sha256: result.sha256,
      args,
      caps: result.caps,
      ...(values.config ? { config: values.config } : {}),
      ...(target ? { target } : {}),
      ...(signed
        ? { envelope: { jobId: signed.job.id, keyids: signed.keyids, signaturesChecked: false, aud: signed.job.aud, iat: signed.job.iat, exp: signed.job.exp } }
        : {}),
      effects: result.calls,
      capabilitiesUsed: result.capabilitiesUsed,
      logs: result.logs,
      ...(result.outcome.ok ? { result: result.outcome.result } : { error: result.outcome.error }),
    });
  } else {
    if (signed)
      io.out(
        `${script}: job ${signed.job.id} for ${JSON.stringify(signed.job.target)}, signed by ${signed.keyids.join(', ')} (signatures not checked here: writ verify)`,
      );
    printPlan(io, script, result, values.config);
    if (!result.outcome.ok) {
      const hint =
        result.calls.length === 0 && values.args === undefined && result.outcome.error.code === 'SCRIPT_ERROR' ? ' (the script was given no --args)' : '';
      io.err(`writ: ${result.outcome.error.code}: ${result.outcome.error.message}${hint}`);
    }
  }
  return result.outcome.ok ? EXIT.ok : EXIT.failure;
}

export const planCommand: Command = {
  name: 'plan',
  summary: 'dry-run a script: list the effects it would have, with capabilities and arguments',
  help: PLAN_HELP,
  run: plan,
};
