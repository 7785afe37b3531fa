// Static cluster intent authored in Nix (nix/lib/cluster-schema.nix): reading a cluster file, evaluated
// offline with `nix-instantiate --eval --strict --json` (a .nix file) or already evaluated (a .json file).
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { WritError } from '@writ/protocol';

/** The normalised cluster, as cluster-schema.nix returns it (schemaVersion 1). */
export interface ClusterSpec {
  schemaVersion: 1;
  name: string;
  pools: { name: string; description: string; supervisors: string[] }[];
  classes: { name: string; pool: string; labels: Record<string, string>; installProfile: string | null; diskPolicy: string | null; description: string }[];
  installProfiles: { name: string; system: string | null; flake: string | null; subvolumes: string[]; kernelParams: string[]; firstJobs: string[] }[];
  diskPolicies: { name: string; hints: Record<string, unknown>; wipe: boolean; layout: string }[];
  enrollmentRules: { name: string; priority: number; match: Record<string, unknown>; class: string; pool: string; labels: Record<string, string>; hostname: string; autoAccept: boolean }[];
  nodes: { name: string; mac: string; class: string; pool: string; labels: Record<string, string>; hostname: string; serial: string | null }[];
  installPlans: { class: string; profile: string; disk: Record<string, unknown>; system: string | null; flake: string | null; subvolumes: string[]; kernelParams: string[]; firstJobs: string[] }[];
  deployments: ClusterDeployment[];
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
    const child = spawn('nix-instantiate', ['--option', 'build-users-group', '', '--eval', '--strict', '--json', file], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NIX_PATH: '', NIX_CONFIG: '' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    child.on('error', (e) => reject((e as NodeJS.ErrnoException).code === 'ENOENT' ? new WritError('TOOL_MISSING', 'nix-instantiate is not installed (apt-get install nix-bin), or evaluate the file elsewhere and pass the .json') : e));
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
      throw new WritError('SCHEMA_INVALID', schema ?? `nix-instantiate failed on ${file}: ${r.stderr.replace(/^warning:.*\n/gm, '').trim().slice(-2000)}`, { file });
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
