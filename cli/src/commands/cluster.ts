// writ cluster apply|diff FILE: static cluster intent authored in Nix (nix/lib/cluster-schema.nix), evaluated
// offline with `nix-instantiate --eval --strict --json` (a .nix file) or already evaluated (a .json file), and
// loaded into the ledger: enrollment rules and node classes with their install plans.
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { WritError, type InstallPlan } from '@writ/protocol';
import { parse } from '../args.ts';
import { api, resolveCoord } from '../client.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import { dispatchSubcommand, type CliContext, type Command } from './types.ts';

/** The normalised cluster, as cluster-schema.nix returns it (schemaVersion 1). */
export interface ClusterSpec {
  schemaVersion: 1;
  name: string;
  pools: { name: string; description: string; supervisors: string[] }[];
  classes: { name: string; pool: string; labels: Record<string, string>; installProfile: string | null; diskPolicy: string | null; description: string }[];
  installProfiles: { name: string; system: string | null; flake: string | null; subvolumes: string[]; kernelParams: string[] }[];
  diskPolicies: { name: string; hints: Record<string, unknown> }[];
  /** In the ledger's own shape (coord/src/enroll/rules.ts), fixed nodes' rules (priority 0) included. */
  enrollmentRules: ClusterRule[];
  nodes: {
    name: string;
    mac: string;
    serial: string | null;
    assign: ClusterRule['assign'];
    tokenSha256: string | null;
    autoAccept: boolean;
    maxUses: number | null;
  }[];
  installPlans: InstallPlan[];
  deployments: ClusterDeployment[];
}

export interface ClusterRule {
  name: string;
  priority: number;
  match: Record<string, unknown>;
  assign: { class: string | null; pool: string | null; labels: Record<string, string>; hostname: string | null };
  tokenSha256: string | null;
  autoAccept: boolean;
  maxUses: number | null;
}

export interface ClusterDeployment {
  name: string;
  system: string | null;
  flake: string | null;
  selector: Record<string, string>;
  batchSize: number;
  maxUnavailable: number;
  drain: boolean;
  healthCheck: { argv: string[]; timeoutMs: number };
  timeoutS: number;
  profile: string;
}

function runNixInstantiate(file: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    // Offline and hermetic: no NIX_PATH, no user nix.conf overrides; Debian's nix has no nixbld group.
    const child = spawn('nix-instantiate', ['--option', 'build-users-group', '', '--eval', '--strict', '--json', file], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NIX_PATH: '', NIX_CONFIG: '' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    child.on('error', (e) =>
      reject(
        (e as NodeJS.ErrnoException).code === 'ENOENT'
          ? new WritError('TOOL_MISSING', 'nix-instantiate is not installed (apt-get install nix-bin), or evaluate the file elsewhere and pass the .json')
          : e,
      ),
    );
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Evaluates (a .nix file) or reads (a .json file) a cluster description; the schema's refusals keep their message. */
export async function loadClusterFile(file: string): Promise<ClusterSpec> {
  let text: string;
  if (file.endsWith('.nix')) {
    const r = await runNixInstantiate(path.resolve(file));
    if (r.code !== 0) {
      const schema = /cluster-schema: [^\n]*/.exec(r.stderr)?.[0];
      throw new WritError(
        'SCHEMA_INVALID',
        schema ??
          `nix-instantiate failed on ${file}: ${r.stderr
            .replace(/^warning:.*\n/gm, '')
            .trim()
            .slice(-2000)}`,
        { file },
      );
    }
    text = r.stdout;
  } else {
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new WritError('USAGE', `cannot read ${file}: ${(e as Error).message}`);
    }
  }
  let spec: ClusterSpec;
  try {
    spec = JSON.parse(text) as ClusterSpec;
  } catch (e) {
    throw new WritError('JSON_SYNTAX', `${file} is not JSON: ${(e as Error).message}`);
  }
  if (spec === null || typeof spec !== 'object' || spec.schemaVersion !== 1 || !Array.isArray(spec.deployments)) {
    throw new WritError('SCHEMA_INVALID', `${file} is not an evaluated Writ cluster (schemaVersion 1): evaluate it with nix/lib/cluster-schema.nix`);
  }
  return spec;
}

interface IntentAnswer {
  cluster: string;
  applied: boolean;
  changes: { kind: 'rule' | 'class'; name: string; action: 'add' | 'change' | 'remove'; fields?: string[] }[];
  unmanaged: { rules: string[]; classes: string[] };
}

const HELP = `usage: writ cluster <apply|diff> FILE [--prune] [--coord URL] [--json]

  diff FILE    what applying FILE would change in the ledger (nothing is written)
  apply FILE   load FILE's enrollment rules and node classes (with their install plans) into the ledger,
               in one transaction; rules and classes of the same name are replaced

FILE is a cluster description: a .nix file built on nix/lib/cluster-schema.nix (evaluated here with
nix-instantiate, offline, builtins only) or the JSON it evaluates to. Fixed nodes become enrollment rules
named node-NAME (priority 0) matching their MAC. Pools, install profiles' systems and host deployments are
checked but not loaded: deployments are started with writ deploy create --cluster FILE --deployment NAME.

  --prune      also remove rules and classes the file does not list (otherwise they stay, listed as unmanaged)

example:
  writ cluster diff nix/examples/lab.nix && writ cluster apply nix/examples/lab.nix`;

/** The ledger intent of a cluster: its rules, and its classes with their install plans. */
export function clusterIntent(spec: ClusterSpec): {
  cluster: string;
  rules: ClusterRule[];
  classes: { name: string; description: string; installPlan: InstallPlan | null }[];
} {
  return {
    cluster: spec.name,
    rules: spec.enrollmentRules,
    classes: spec.classes.map((c) => ({ name: c.name, description: c.description, installPlan: spec.installPlans.find((p) => p.class === c.name) ?? null })),
  };
}

function printAnswer(io: Io, a: IntentAnswer, file: string): void {
  if (a.changes.length === 0) io.out(`cluster ${a.cluster}: nothing to change (${file} matches the ledger)`);
  else {
    io.out(`cluster ${a.cluster}: ${a.changes.length} change(s)${a.applied ? ' applied' : ' to apply'}`);
    const sign = { add: '+', change: '~', remove: '-' } as const;
    for (const c of a.changes) io.out(`  ${sign[c.action]} ${c.kind.padEnd(5)} ${c.name}${c.fields ? `  (${c.fields.join(', ')})` : ''}`);
  }
  if (a.unmanaged.rules.length + a.unmanaged.classes.length > 0) {
    io.out(
      `unmanaged (in the ledger, not in ${file}; kept without --prune): ${[...a.unmanaged.rules.map((r) => `rule ${r}`), ...a.unmanaged.classes.map((c) => `class ${c}`)].join(', ')}`,
    );
  }
}

function intentCommand(dryRun: boolean) {
  return async (argv: string[], io: Io, ctx: CliContext): Promise<number> => {
    const name = dryRun ? 'diff' : 'apply';
    const { values, positionals } = parse(
      argv,
      { coord: { type: 'string' }, prune: { type: 'boolean', default: false } },
      { min: 1, max: 1, usage: `writ cluster ${name} FILE [--prune]` },
    );
    if (values.help) return (io.out(HELP), EXIT.ok);
    const file = positionals[0]!;
    const spec = await loadClusterFile(file);
    const coord = await resolveCoord(values.coord, ctx.env);
    const { body } = await api<IntentAnswer>(coord, 'POST', '/v1/cluster/intent', { ...clusterIntent(spec), prune: values.prune ?? false, dryRun });
    if (values.json) return (printJson(io, body), EXIT.ok);
    printAnswer(io, body, file);
    return EXIT.ok;
  };
}

export const clusterCommand: Command = {
  name: 'cluster',
  summary: 'load static cluster intent (Nix: nix/lib/cluster-schema.nix) into the ledger, or show what would change',
  help: HELP,
  subcommands: { apply: intentCommand(false), diff: intentCommand(true) },
  run(argv, io, ctx) {
    return dispatchSubcommand(this, argv, io, ctx);
  },
};
