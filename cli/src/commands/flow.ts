// writ flow sign|run|show|list|cancel: signed flows (issue 10). A flow file is JSON: steps with their script
// files, targets, capabilities, dependencies, retries and inputs; `sign` reads the scripts, checks the graph
// and signs the whole document once; `run` submits it (signing it first when given a flow file) and can
// follow it live.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import {
  DEFAULT_LIMITS,
  PAYLOAD_TYPES,
  WritError,
  addSignature,
  b64url,
  encodeEnvelope,
  encodeFlowPayload,
  parseEnvelope,
  parseFlowPayload,
  parseStrictJson,
  signEnvelope,
  stepScript,
  type FlowPayload,
  type FlowStep,
  type JobTarget,
} from '@writ/protocol';
import { randomBytes } from 'node:crypto';
import { parse, parseDurationS } from '../args.ts';
import { api, followStream, resolveCoord, type CoordTarget } from '../client.ts';
import { keyringDir, loadPrivateKey, writeEnvelopeFile } from '../keyfiles.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import { dispatchSubcommand, type CliContext, type Command } from './types.ts';

const HELP = `usage: writ flow <sign|run|show|list|cancel> ...

  sign FLOW.json [--out FILE] [--key FILE ...] [--ttl D] [--id ID] [--force]
                  read the flow file and its scripts, check the graph, and sign the whole flow once
                  (more signers: run sign again on the envelope with another --key)
  run FLOW.json|FLOW.env.json [--follow] [--key FILE ...]
                  submit a flow (a flow file is signed first with your key); --follow prints step
                  states and the steps' log lines until the flow ends (exit 0 only if it succeeded)
  show ID [--follow]   the flow's steps, their nodes, jobs and attempts
  list [--status running|succeeded|failed|cancelled]
  cancel ID       stop a running flow: pending and running steps end cancelled

A flow file (paths relative to it):
  { "id": "hv-setup",
    "steps": [
      { "name": "disk", "script": "disk.js", "target": { "node": "hv-1" }, "caps": ["btrfs.pool.format"] },
      { "name": "bridge", "script": "bridge.js", "target": { "selector": { "role": "hv" } }, "each": true,
        "maxParallel": 2, "maxFailures": 0, "depends": ["disk"], "caps": ["net.bridge.ensure"] },
      { "name": "vm", "script": "vm.js", "target": { "node": "hv-1" }, "depends": ["disk", "bridge"],
        "inputs": { "device": { "from": "disk", "path": "device" } }, "retries": { "max": 2, "backoffMs": 1000 },
        "timeout": "2m", "memoryMiB": 64, "args": { "name": "vm-1" } } ] }
  A step's script gets args.inputs: each input is the named step's result (or the field at "path"); a
  fan-out step's result is an object by node. ctx.job.attempt counts retries.

options:
  --coord URL     (default $WRIT_COORD, or the cluster \`writ dev --keep\` recorded)
  --key FILE      signing key (repeatable; default $WRIT_HOME/keys/admin.key)
  --ttl D         how long the signature holds (default 1h, at most 7d)
  --json          machine-readable output`;

interface StepFile {
  name: string;
  script: string;
  target: JobTarget;
  each?: boolean;
  maxParallel?: number;
  maxFailures?: number;
  caps?: string[];
  depends?: string[];
  retries?: { max: number; backoffMs: number };
  inputs?: FlowStep['inputs'];
  args?: FlowStep['args'];
  timeout?: string;
  timeoutMs?: number;
  memoryMiB?: number;
  pins?: FlowStep['pins'];
}

const STEP_FILE_KEYS = new Set([
  'name',
  'script',
  'target',
  'each',
  'maxParallel',
  'maxFailures',
  'caps',
  'depends',
  'retries',
  'inputs',
  'args',
  'timeout',
  'timeoutMs',
  'memoryMiB',
  'pins',
]);

/** Reads a flow file and the scripts it names into an unsigned flow payload (checked as the coord will). */
export async function loadFlowFile(file: string, opts: { aud: string; nowS: number; ttlS: number; id?: string }): Promise<FlowPayload> {
  let doc: unknown;
  try {
    doc = parseStrictJson(await readFile(file));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new WritError('USAGE', `no flow file ${file}`);
    throw new WritError('FLOW_INVALID', `${file}: ${(e as Error).message}`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new WritError('FLOW_INVALID', `${file}: a flow file is a JSON object with "steps"`);
  const d = doc as { id?: string; steps?: StepFile[] };
  for (const k of Object.keys(d))
    if (k !== 'id' && k !== 'steps') throw new WritError('FLOW_INVALID', `${file}: unknown field ${JSON.stringify(k)} (a flow file has "id" and "steps")`);
  if (!Array.isArray(d.steps) || d.steps.length === 0) throw new WritError('FLOW_INVALID', `${file}: "steps" must be a non-empty array`);
  const dir = path.dirname(file);
  const steps: FlowStep[] = [];
  for (const [i, s] of d.steps.entries()) {
    const where = `${file}: step ${typeof s?.name === 'string' ? s.name : `#${i + 1}`}`;
    if (!s || typeof s !== 'object') throw new WritError('FLOW_INVALID', `${where}: must be an object`);
    for (const k of Object.keys(s)) if (!STEP_FILE_KEYS.has(k)) throw new WritError('FLOW_INVALID', `${where}: unknown field ${JSON.stringify(k)}`);
    if (typeof s.script !== 'string') throw new WritError('FLOW_INVALID', `${where}: "script" must name a script file`);
    let source: string;
    try {
      source = await readFile(path.resolve(dir, s.script), 'utf8');
    } catch {
      throw new WritError('FLOW_INVALID', `${where}: cannot read script ${s.script} (relative to the flow file)`);
    }
    const timeoutMs = s.timeoutMs ?? (s.timeout ? parseDurationS(s.timeout, `${where} timeout`) * 1000 : DEFAULT_LIMITS.timeoutMs);
    steps.push({
      name: s.name,
      script: stepScript(source),
      target: s.target,
      caps: s.caps ?? [],
      depends: s.depends ?? [],
      limits: { timeoutMs, memoryMiB: s.memoryMiB ?? DEFAULT_LIMITS.memoryMiB },
      ...(s.each !== undefined ? { each: s.each } : {}),
      ...(s.maxParallel !== undefined ? { maxParallel: s.maxParallel } : {}),
      ...(s.maxFailures !== undefined ? { maxFailures: s.maxFailures } : {}),
      ...(s.retries ? { retries: s.retries } : {}),
      ...(s.inputs ? { inputs: s.inputs } : {}),
      ...(s.args ? { args: s.args } : {}),
      ...(s.pins ? { pins: s.pins } : {}),
    });
  }
  const id = opts.id ?? d.id ?? `flow-${b64url(randomBytes(9)).replace(/_/g, '-')}`;
  const flow: FlowPayload = { id, steps, aud: opts.aud, nonce: b64url(randomBytes(16)), iat: opts.nowS, exp: opts.nowS + opts.ttlS };
  // The same checks every tier makes: a bad graph is reported here, before anything is signed.
  parseFlowPayload(encodeFlowPayload(flow));
  return flow;
}

async function clusterId(coord: CoordTarget): Promise<string> {
  const { body } = await api<{ keySet?: { cluster?: string } }>(coord, 'GET', '/v1/keyset');
  const aud = body.keySet?.cluster;
  if (!aud) throw new WritError('KEYSET_MISSING', 'the coord has no key set yet: publish one first (writ keyset)');
  return aud;
}

async function loadKeys(given: string[] | undefined, ctx: CliContext) {
  const files = given?.length ? given : [path.join(keyringDir(ctx.env), 'admin.key')];
  return Promise.all(files.map(loadPrivateKey));
}

/** A signed flow envelope from a flow file, or a flow envelope as given (with more signatures when keys are given). */
async function signedFlow(
  file: string,
  values: { key?: string[] | undefined; ttl?: string | undefined; id?: string | undefined; coord?: string | undefined; aud?: string | undefined },
  ctx: CliContext,
): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => {
    throw new WritError('USAGE', `cannot read ${file}`);
  });
  if (text.includes('"payloadType"')) {
    const env = parseEnvelope(text, 8 * 1024 * 1024);
    if (env.payloadType !== PAYLOAD_TYPES.flow) throw new WritError('PAYLOAD_TYPE_MISMATCH', `${file} is not a flow envelope (${env.payloadType})`);
    if (!values.key?.length) return encodeEnvelope(env);
    let out = env;
    for (const k of await loadKeys(values.key, ctx)) out = addSignature(out, k);
    return encodeEnvelope(out);
  }
  const aud = values.aud ?? (await clusterId(await resolveCoord(values.coord, ctx.env)));
  const flow = await loadFlowFile(file, {
    aud,
    nowS: ctx.now(),
    ttlS: values.ttl ? parseDurationS(values.ttl, '--ttl') : 3600,
    ...(values.id ? { id: values.id } : {}),
  });
  return encodeEnvelope(signEnvelope(PAYLOAD_TYPES.flow, encodeFlowPayload(flow), await loadKeys(values.key, ctx)));
}

async function sign(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      out: { type: 'string', short: 'o' },
      key: { type: 'string', multiple: true },
      ttl: { type: 'string' },
      id: { type: 'string' },
      coord: { type: 'string' },
      aud: { type: 'string' },
      force: { type: 'boolean', default: false },
    },
    { min: 1, max: 1, usage: 'writ flow sign FLOW.json [--out FILE]' },
  );
  if (values.help) return (io.out(HELP), EXIT.ok);
  const raw = await signedFlow(positionals[0]!, values, ctx);
  if (values.out) {
    await writeEnvelopeFile(values.out, raw + '\n', values.force ?? false);
  }
  const env = parseEnvelope(raw, 8 * 1024 * 1024);
  const flow = parseFlowPayload(Buffer.from(env.payload, 'base64'));
  if (values.json)
    return (
      printJson(io, values.out ? { out: values.out, id: flow.id, steps: flow.steps.length, signatures: env.signatures.length } : JSON.parse(raw)),
      EXIT.ok
    );
  if (values.out) io.out(`signed flow ${flow.id} (${flow.steps.length} steps, ${env.signatures.length} signature(s)) → ${values.out}`);
  else io.out(raw);
  return EXIT.ok;
}

interface FlowEventData {
  seq?: number;
  type?: string;
  step?: string | null;
  message?: string;
  data?: { status?: string } | null;
  job?: string;
  node?: string;
  level?: string;
}

/** Prints a flow's events and its steps' log lines until it ends; the exit code says whether it succeeded. */
async function follow(coord: CoordTarget, id: string, io: Io, json: boolean): Promise<number> {
  await followStream<FlowEventData>(coord, `/v1/flows/${encodeURIComponent(id)}/events`, (e) => {
    if (json) return io.out(JSON.stringify({ event: e.event, ...e.data }));
    const d = e.data;
    if (e.event === 'log') io.out(`  [${d.step}${d.node ? `@${d.node}` : ''}] ${d.level === 'info' ? '' : `${d.level}: `}${d.message}`);
    else io.out(`${e.event === 'flow' ? '==' : '--'} ${d.message}`);
  });
  const { body: v } = await api<{ status: string; error: { code: string; message: string } | null }>(coord, 'GET', `/v1/flows/${encodeURIComponent(id)}`);
  if (!json) io.out(`flow ${id}: ${v.status}${v.error ? ` (${v.error.code}: ${v.error.message})` : ''}`);
  return v.status === 'succeeded' ? EXIT.ok : EXIT.failure;
}

async function run(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      follow: { type: 'boolean', default: false },
      key: { type: 'string', multiple: true },
      ttl: { type: 'string' },
      id: { type: 'string' },
      coord: { type: 'string' },
    },
    { min: 1, max: 1, usage: 'writ flow run FLOW.json|FLOW.env.json [--follow]' },
  );
  if (values.help) return (io.out(HELP), EXIT.ok);
  const coord = await resolveCoord(values.coord, ctx.env);
  const raw = await signedFlow(positionals[0]!, { ...values, aud: await clusterId(coord) }, ctx);
  const { body } = await api<{ id: string; status: string; replayed: boolean }>(coord, 'POST', '/v1/flows', raw);
  if (values.json && !values.follow) return (printJson(io, body), EXIT.ok);
  if (!values.json) io.out(`flow ${body.id}: ${body.replayed ? 'already submitted' : 'accepted'} (${body.status})`);
  if (!values.follow) return EXIT.ok;
  return follow(coord, body.id, io, values.json ?? false);
}

interface FlowViewBody {
  id: string;
  status: string;
  error: { code: string; message: string } | null;
  createdAt: string;
  finishedAt: string | null;
  stepList: {
    name: string;
    status: string;
    nodes: string[];
    error: { code: string; message: string } | null;
    jobs: { id: string; node: string; status: string; attempts: number; error: { code: string } | null }[];
  }[];
}

async function show(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values, positionals } = parse(
    argv,
    { coord: { type: 'string' }, follow: { type: 'boolean', default: false } },
    { min: 1, max: 1, usage: 'writ flow show ID [--follow]' },
  );
  if (values.help) return (io.out(HELP), EXIT.ok);
  const coord = await resolveCoord(values.coord, ctx.env);
  if (values.follow) return follow(coord, positionals[0]!, io, values.json ?? false);
  const { body: v } = await api<FlowViewBody>(coord, 'GET', `/v1/flows/${encodeURIComponent(positionals[0]!)}`);
  if (values.json) return (printJson(io, v), EXIT.ok);
  io.out(
    `flow ${v.id}: ${v.status}${v.error ? ` (${v.error.code}: ${v.error.message})` : ''}  created ${v.createdAt}${v.finishedAt ? `, finished ${v.finishedAt}` : ''}`,
  );
  for (const s of v.stepList) {
    io.out(`  ${s.name.padEnd(24)} ${s.status.padEnd(10)} ${s.nodes.join(',')}${s.error ? `  ${s.error.code}: ${s.error.message}` : ''}`);
    for (const j of s.jobs) io.out(`      ${j.id.padEnd(40)} ${j.status.padEnd(10)} attempts ${j.attempts}${j.error ? `  ${j.error.code}` : ''}`);
  }
  return EXIT.ok;
}

async function list(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values } = parse(
    argv,
    { coord: { type: 'string' }, status: { type: 'string' }, limit: { type: 'string' } },
    { min: 0, max: 0, usage: 'writ flow list [--status S]' },
  );
  if (values.help) return (io.out(HELP), EXIT.ok);
  const q = new URLSearchParams();
  if (values.status) q.set('status', values.status);
  if (values.limit) q.set('limit', values.limit);
  const { body } = await api<{ flows: { id: string; status: string; steps: number; createdAt: string; error: { code: string } | null }[] }>(
    await resolveCoord(values.coord, ctx.env),
    'GET',
    `/v1/flows${q.size ? `?${q}` : ''}`,
  );
  if (values.json) return (printJson(io, body), EXIT.ok);
  io.out(`${'FLOW'.padEnd(40)} ${'STATUS'.padEnd(10)} ${'STEPS'.padEnd(6)} CREATED`);
  for (const f of body.flows)
    io.out(`${f.id.padEnd(40)} ${f.status.padEnd(10)} ${String(f.steps).padEnd(6)} ${f.createdAt}${f.error ? `  ${f.error.code}` : ''}`);
  return EXIT.ok;
}

async function cancel(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values, positionals } = parse(argv, { coord: { type: 'string' } }, { min: 1, max: 1, usage: 'writ flow cancel ID' });
  if (values.help) return (io.out(HELP), EXIT.ok);
  const { body } = await api<{ id: string; status: string; stopped: number }>(
    await resolveCoord(values.coord, ctx.env),
    'POST',
    `/v1/flows/${encodeURIComponent(positionals[0]!)}/cancel`,
    {},
  );
  if (values.json) return (printJson(io, body), EXIT.ok);
  io.out(`flow ${body.id}: ${body.status}; ${body.stopped} running job(s) stopped`);
  return EXIT.ok;
}

export const flowCommand: Command = {
  name: 'flow',
  summary: 'sign, run and follow signed workflows (DAGs of steps, fan-out, retries, wired inputs)',
  help: HELP,
  subcommands: { sign, run, show, list, cancel },
  run(argv, io, ctx) {
    return dispatchSubcommand(this, argv, io, ctx);
  },
};
