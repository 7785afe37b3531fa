// writ deploy create|list|status|pause|resume|abort: host deployments (issue 12). `create` resolves the
// selector against the ledger's nodes, signs one switch job per node and the deployment that binds them with
// the admin's key(s), and hands both to the coord, whose host controller rolls them out.
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  HOST_DEPLOYMENT_PAYLOAD_TYPE,
  PAYLOAD_TYPES,
  STORE_PATH_PATTERN,
  WritError,
  buildHostDeploymentPayload,
  buildJobPayload,
  encodeEnvelope,
  encodeHostDeploymentPayload,
  encodeJobPayload,
  hostSwitchJob,
  sha256Hex,
  signEnvelope,
  type DeploymentStepView,
  type DeploymentView,
  type HostDeploymentPayload,
} from '@writ/protocol';
import { parse, parseDurationS } from '../args.ts';
import { api, resolveCoord, type CoordTarget } from '../client.ts';
import { keyringDir, loadPrivateKey } from '../keyfiles.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import { loadClusterFile } from './cluster.ts';
import { dispatchSubcommand, type CliContext, type Command } from './types.ts';

const HELP = `usage: writ deploy <create|list|status|pause|resume|abort> ...

  create ID --system /nix/store/... (--selector k=v ... | --node ID ...) --health-check CMD [options]
  create ID --cluster FILE --deployment NAME [--system /nix/store/...] [options]
                   sign and start a host deployment: the system is switched on the selected nodes in
                   batches (nix.switch: activate, health check, then make it the default, or roll back)
  list             every deployment and where it stands
  status ID [--follow]   nodes, batches and every step; --follow prints steps as they happen until the
                   deployment ends or pauses (exit 0 only when it succeeded)
  pause ID         start no further node (switches in flight end and are recorded)
  resume ID        go on with the nodes not yet touched; nodes that failed stay on their old system
                   and stop counting against the budget
  abort ID         touch no further node; pending nodes are skipped (switched nodes keep the new system:
                   deploy the old one to go back)

create options:
  --system PATH          the system's store path (every job pins it; the runner refuses any other)
  --selector k=v         nodes whose labels match (every k=v); active nodes only, in id order
  --node ID              explicit nodes, in this order (repeatable; instead of --selector)
  --batch-size N         nodes per batch (default 1); a batch starts when the one before it ended
  --max-unavailable N    nodes switching or failed at once (default 1); failures reaching it pause
  --drain                wait for a node's other jobs to finish before switching it
  --health-check CMD     a JSON argv (["/nix/store/.../bin/check", "{node}"]) or one absolute program;
                         {node} becomes the node id. It must lie in the system or be in the node's healthCommands
  --health-timeout D     (default 30s)      --timeout D   per node (default 10m)
  --profile NAME         the node's Nix profile (default system)
  --from URL             a substituter configured on the nodes to copy the system from (signature-checked)
  --cluster FILE --deployment NAME   take selector, budget, drain, health check, timeout and profile from
                         a cluster file's deployments (a .nix file is evaluated with nix-instantiate)
  --key FILE             signing key(s) (repeatable; default $WRIT_HOME/keys/admin.key)
  --ttl D                how long the signatures hold (default 1d, at most 7d)
  --follow               follow the rollout after creating it

example:
  writ deploy create web-1 --system /nix/store/...-nixos-system --selector class=compute \\
    --batch-size 2 --health-check '["/nix/store/...-nixos-system/sw/bin/systemctl","is-system-running"]' --follow`;

function parseLabels(pairs: string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs ?? []) {
    const i = p.indexOf('=');
    if (i <= 0) throw new WritError('USAGE', `--selector takes k=v, got ${JSON.stringify(p)}`);
    out[p.slice(0, i)] = p.slice(i + 1);
  }
  return out;
}

function parseHealthCheck(s: string): string[] {
  if (s.trim().startsWith('[')) {
    let argv: unknown;
    try {
      argv = JSON.parse(s);
    } catch (e) {
      throw new WritError('USAGE', `--health-check is not a JSON array: ${(e as Error).message}`);
    }
    if (!Array.isArray(argv) || argv.length === 0 || !argv.every((a) => typeof a === 'string' && a !== ''))
      throw new WritError('USAGE', '--health-check must be a non-empty JSON array of strings');
    return argv as string[];
  }
  if (!s.startsWith('/')) throw new WritError('USAGE', '--health-check must be an absolute program path or a JSON argv array');
  return [s];
}

function positiveInt(v: string | undefined, what: string, dflt: number): number {
  if (v === undefined) return dflt;
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new WritError('USAGE', `${what} must be a positive integer, got ${JSON.stringify(v)}`);
  return Number(v);
}

interface NodeListing {
  id: string;
  state: string;
  labels: Record<string, string>;
}

async function create(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      coord: { type: 'string' },
      system: { type: 'string' },
      selector: { type: 'string', multiple: true },
      node: { type: 'string', multiple: true },
      'batch-size': { type: 'string' },
      'max-unavailable': { type: 'string' },
      drain: { type: 'boolean' },
      'health-check': { type: 'string' },
      'health-timeout': { type: 'string' },
      timeout: { type: 'string' },
      profile: { type: 'string' },
      from: { type: 'string' },
      cluster: { type: 'string' },
      deployment: { type: 'string' },
      key: { type: 'string', multiple: true },
      ttl: { type: 'string' },
      follow: { type: 'boolean', default: false },
    },
    { min: 1, max: 1, usage: 'writ deploy create ID --system PATH (--selector k=v | --node ID) --health-check CMD' },
  );
  if (values.help) return (io.out(HELP), EXIT.ok);
  const id = positionals[0]!;
  const fromCluster = values.cluster ? await fromClusterFile(values.cluster, values.deployment) : undefined;
  if (!values.cluster && values.deployment) throw new WritError('USAGE', '--deployment needs --cluster FILE');
  const system = values.system ?? fromCluster?.system ?? undefined;
  if (!system) {
    throw new WritError(
      'USAGE',
      fromCluster?.flake
        ? `deployment ${values.deployment} names a flake (${fromCluster.flake}): build it (nix build) and pass the result's store path as --system`
        : '--system /nix/store/... is required',
    );
  }
  if (!new RegExp(STORE_PATH_PATTERN).test(system))
    throw new WritError('USAGE', `--system must be a store path (/nix/store/<hash>-<name>), got ${JSON.stringify(system)}`);
  const healthArgv = values['health-check'] ? parseHealthCheck(values['health-check']) : fromCluster?.healthCheck.argv;
  if (!healthArgv) throw new WritError('USAGE', '--health-check is required: a deployment without a health gate could not roll back');
  if (values.selector && values.node) throw new WritError('USAGE', 'give --selector or --node, not both');
  const selector = values.selector ? parseLabels(values.selector) : values.node ? {} : (fromCluster?.selector ?? {});
  const coord = await resolveCoord(values.coord, ctx.env);
  const nodes = await resolveNodes(coord, selector, values.node, io);

  const keyFiles = values.key?.length ? values.key : [path.join(keyringDir(ctx.env), 'admin.key')];
  const keys = await Promise.all(keyFiles.map(loadPrivateKey));
  const { body: keyset } = await api<{ keySet?: { cluster?: string } }>(coord, 'GET', '/v1/keyset');
  const aud = keyset.keySet?.cluster;
  if (!aud) throw new WritError('KEYSET_MISSING', 'the coord has no key set yet: publish one first');
  const ttlS = values.ttl ? parseDurationS(values.ttl, '--ttl') : 24 * 3600;
  const base = buildHostDeploymentPayload({
    id,
    aud,
    system,
    ...(fromCluster?.flake ? { source: fromCluster.flake } : {}),
    profile: values.profile ?? fromCluster?.profile ?? 'system',
    selector,
    nodes,
    batchSize: positiveInt(values['batch-size'], '--batch-size', fromCluster?.batchSize ?? 1),
    maxUnavailable: positiveInt(values['max-unavailable'], '--max-unavailable', fromCluster?.maxUnavailable ?? 1),
    drain: values.drain ?? fromCluster?.drain ?? false,
    healthCheck: {
      argv: healthArgv,
      timeoutMs: values['health-timeout']
        ? parseDurationS(values['health-timeout'], '--health-timeout') * 1000
        : (fromCluster?.healthCheck.timeoutMs ?? 30_000),
    },
    timeoutS: values.timeout ? parseDurationS(values.timeout, '--timeout') : (fromCluster?.timeoutS ?? 600),
    ttlS,
    nowS: ctx.now(),
  });
  const jobs: string[] = [];
  const bindings: HostDeploymentPayload['jobs'] = [];
  for (const node of nodes) {
    const job = buildJobPayload(hostSwitchJob(base, node, values.from));
    const raw = encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(job), keys));
    jobs.push(raw);
    bindings.push({ node, id: job.id, envelopeSha256: sha256Hex(raw) });
  }
  const payload: HostDeploymentPayload = { ...base, jobs: bindings };
  const deployment = encodeEnvelope(signEnvelope(HOST_DEPLOYMENT_PAYLOAD_TYPE, encodeHostDeploymentPayload(payload), keys));
  const { body: view } = await api<DeploymentView & { created: boolean }>(coord, 'POST', '/v1/deployments', { deployment, jobs });
  if (values.json && !values.follow) return (printJson(io, view), EXIT.ok);
  if (!values.json)
    io.out(
      `deployment ${view.id}: ${view.created ? 'created' : 'exists already'}; ${nodes.length} node(s) in ${view.batches} batch(es) of ${view.batchSize}, maxUnavailable ${view.maxUnavailable}; system ${system}`,
    );
  if (!values.follow) return EXIT.ok;
  return follow(coord, view.id, io, values.json ?? false);
}

async function fromClusterFile(file: string, name: string | undefined) {
  if (!name) throw new WritError('USAGE', '--cluster FILE needs --deployment NAME');
  const spec = await loadClusterFile(file);
  const d = spec.deployments.find((x) => x.name === name);
  if (!d)
    throw new WritError('USAGE', `${file} has no deployment ${JSON.stringify(name)} (it has: ${spec.deployments.map((x) => x.name).join(', ') || 'none'})`);
  return d;
}

/** The nodes a deployment goes to: the listed ones as given, or the active ones matching the selector, by id. */
async function resolveNodes(coord: CoordTarget, selector: Record<string, string>, explicit: string[] | undefined, io: Io): Promise<string[]> {
  const { body } = await api<{ nodes: NodeListing[] }>(coord, 'GET', '/v1/nodes');
  if (explicit?.length) {
    for (const n of explicit) if (!body.nodes.some((x) => x.id === n)) throw new WritError('NODE_NOT_FOUND', `no node ${n}`);
    return explicit;
  }
  if (Object.keys(selector).length === 0) throw new WritError('USAGE', 'select nodes with --selector k=v or --node ID');
  const matching = body.nodes.filter((n) => Object.entries(selector).every(([k, v]) => n.labels[k] === v));
  const inactive = matching.filter((n) => n.state !== 'active');
  if (inactive.length > 0)
    io.err(`note: ${inactive.length} matching node(s) are not active and are left out: ${inactive.map((n) => `${n.id} (${n.state})`).join(', ')}`);
  const active = matching
    .filter((n) => n.state === 'active')
    .map((n) => n.id)
    .sort();
  if (active.length === 0) throw new WritError('USAGE', `no active node matches ${JSON.stringify(selector)}`);
  return active;
}

function printStep(io: Io, s: DeploymentStepView): void {
  const d = s.data as Record<string, unknown>;
  const detail =
    s.kind === 'batch'
      ? `batch ${Number(d.batch) + 1}/${String(d.of)}: ${(d.nodes as string[]).join(', ')}`
      : s.kind === 'failed'
        ? `${String(d.code)}: ${String(d.message)}`
        : s.kind === 'switched'
          ? `generation ${String((d.result as { generation?: number } | null)?.generation ?? '?')}`
          : s.kind === 'paused'
            ? `by ${String(d.by)}${d.failed ? ` (failed: ${(d.failed as string[]).join(', ')})` : ''}`
            : '';
  io.out(`${s.at}  ${String(s.seq).padStart(4)}  ${s.kind.padEnd(9)} ${(s.node ?? '').padEnd(16)} ${detail}`);
}

function printView(io: Io, v: DeploymentView): void {
  io.out(`deployment ${v.id}: ${v.state}${v.reason ? ` (${v.reason})` : ''}`);
  io.out(`system     ${v.system}${v.source ? `  (from ${v.source})` : ''}\nprofile    ${v.profile}\nselector   ${JSON.stringify(v.selector)}`);
  io.out(
    `rollout    batch ${Math.min(v.batch + 1, v.batches)}/${v.batches}, batch size ${v.batchSize}, maxUnavailable ${v.maxUnavailable}, drain ${v.drain ? 'yes' : 'no'}, timeout ${v.timeoutS} s per node`,
  );
  io.out(
    `nodes      ${Object.entries(v.counts)
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${n} ${k}`)
      .join(', ')}`,
  );
  for (const n of v.nodes)
    io.out(`  ${n.node.padEnd(16)} batch ${String(n.batch + 1).padEnd(3)} ${n.state.padEnd(10)}${n.error ? ` ${n.error.code}: ${n.error.message}` : ''}`);
}

const FINAL = new Set(['succeeded', 'failed', 'aborted']);

/** Prints steps as they come until the deployment ended, or paused with nothing in flight. */
async function follow(coord: CoordTarget, id: string, io: Io, json: boolean): Promise<number> {
  let after = 0;
  for (;;) {
    const { body: v } = await api<DeploymentView>(coord, 'GET', `/v1/deployments/${encodeURIComponent(id)}?after=${after}`);
    for (const s of v.steps ?? []) {
      if (json) io.out(JSON.stringify(s));
      else printStep(io, s);
      after = Math.max(after, s.seq);
    }
    const inFlight = v.counts.draining + v.counts.switching;
    if (FINAL.has(v.state) || (v.state === 'paused' && inFlight === 0)) {
      if (json) io.out(JSON.stringify({ id: v.id, state: v.state, reason: v.reason, counts: v.counts }));
      else io.out(`deployment ${v.id}: ${v.state}${v.reason ? ` (${v.reason})` : ''}`);
      return v.state === 'succeeded' ? EXIT.ok : EXIT.failure;
    }
    await sleep(300);
  }
}

async function list(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values } = parse(argv, { coord: { type: 'string' } }, { min: 0, max: 0, usage: 'writ deploy list' });
  if (values.help) return (io.out(HELP), EXIT.ok);
  const { body } = await api<{ deployments: DeploymentView[] }>(await resolveCoord(values.coord, ctx.env), 'GET', '/v1/deployments');
  if (values.json) return (printJson(io, body), EXIT.ok);
  io.out(`${'DEPLOYMENT'.padEnd(24)} ${'STATE'.padEnd(10)} ${'BATCH'.padEnd(7)} NODES`);
  for (const d of body.deployments) {
    io.out(
      `${d.id.padEnd(24)} ${d.state.padEnd(10)} ${`${Math.min(d.batch + 1, d.batches)}/${d.batches}`.padEnd(7)} ${Object.entries(d.counts)
        .filter(([, n]) => n > 0)
        .map(([k, n]) => `${n} ${k}`)
        .join(', ')}`,
    );
  }
  return EXIT.ok;
}

async function status(argv: string[], io: Io, ctx: CliContext): Promise<number> {
  const { values, positionals } = parse(
    argv,
    { coord: { type: 'string' }, follow: { type: 'boolean', default: false } },
    { min: 1, max: 1, usage: 'writ deploy status ID [--follow]' },
  );
  if (values.help) return (io.out(HELP), EXIT.ok);
  const coord = await resolveCoord(values.coord, ctx.env);
  if (values.follow) return follow(coord, positionals[0]!, io, values.json ?? false);
  const { body: v } = await api<DeploymentView>(coord, 'GET', `/v1/deployments/${encodeURIComponent(positionals[0]!)}`);
  if (values.json) return (printJson(io, v), EXIT.ok);
  printView(io, v);
  io.out('steps:');
  for (const s of v.steps ?? []) printStep(io, s);
  return EXIT.ok;
}

function action(name: 'pause' | 'resume' | 'abort') {
  return async (argv: string[], io: Io, ctx: CliContext): Promise<number> => {
    const { values, positionals } = parse(argv, { coord: { type: 'string' } }, { min: 1, max: 1, usage: `writ deploy ${name} ID` });
    if (values.help) return (io.out(HELP), EXIT.ok);
    const { body: v } = await api<DeploymentView>(
      await resolveCoord(values.coord, ctx.env),
      'POST',
      `/v1/deployments/${encodeURIComponent(positionals[0]!)}/${name}`,
      {},
    );
    if (values.json) return (printJson(io, v), EXIT.ok);
    io.out(`deployment ${v.id}: ${name} → ${v.state}`);
    return EXIT.ok;
  };
}

export const deployCommand: Command = {
  name: 'deploy',
  summary: 'roll a Nix system out to nodes in health-gated batches (host deployments)',
  help: HELP,
  subcommands: { create, list, status, pause: action('pause'), resume: action('resume'), abort: action('abort') },
  run(argv, io, ctx) {
    return dispatchSubcommand(this, argv, io, ctx);
  },
};
