// Host deployments end to end (issue 12): a real stack (Redis, PGlite, coord, supervisor) with five simulated
// nodes, each a runner with its own Nix profile directory and the nix SAL on the real nix-bin (as root). The
// "systems" are builtins-only derivations built with nix-build; `writ deploy` (the CLI, as a process) signs
// and creates the deployments. Proves: batches advance one node at a time with maxUnavailable 1; a health
// check failing on one node rolls that node back, pauses the deployment and never touches the nodes after
// it; resume and abort do what docs/nix.md says; a store path other than the pinned one is refused on the node.
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  HOST_DEPLOYMENT_PAYLOAD_TYPE,
  PAYLOAD_TYPES,
  buildHostDeploymentPayload,
  buildJobPayload,
  encodeEnvelope,
  encodeHostDeploymentPayload,
  encodeJobPayload,
  encodePrivateKeyFile,
  hostSwitchJob,
  sha256Hex,
  signEnvelope,
  type DeploymentView,
} from '@writ/protocol';
import { salHostTable } from '@writ/runner';
import { startTestStack, type TestStack } from './helpers/stack.ts';
import { runWrit, until } from './helpers/processes.ts';

const NODES = ['node-a', 'node-b', 'node-c', 'node-d', 'node-e'];
const isRoot = process.getuid?.() === 0;
const hasNix = spawnSync('nix-build', ['--version'], { encoding: 'utf8' }).status === 0;
const skipReason = !isRoot ? 'not root: single-user Nix needs root' : !hasNix ? 'nix-build is not installed (apt-get install nix-bin)' : null;
if (skipReason) console.warn(`skipping the host deployment tests: ${skipReason}`);

let tmp = '';
let s: TestStack;
let env: NodeJS.ProcessEnv;
const systems: Record<string, string> = {};

// A test "system": activation appends its name to a log; the health check fails on a node whose marker file
// exists (`{node}` in the deployment's health check becomes the node id).
function systemExpr(name: string, markers: string, log: string): string {
  const activate = `#!/bin/sh\\necho ${name} >> ${log}\\n`;
  const health = `#!/bin/sh\\nif [ -e ${markers}/fail-$1 ]; then echo \\"service down on $1\\" >&2; exit 1; fi\\n`;
  return `derivation {
    name = "${name}"; system = builtins.currentSystem; builder = "/bin/sh";
    activate = "${activate}"; health = "${health}";
    args = [ "-c" "/bin/mkdir -p $out/bin && printf %s \\"$activate\\" > $out/activate && printf %s \\"$health\\" > $out/bin/health && /bin/chmod 555 $out/activate $out/bin/health" ];
  }`;
}

function nixBuild(file: string, attr: string): string {
  const r = spawnSync(
    'nix-build',
    ['--option', 'sandbox', 'false', '--option', 'build-users-group', '', '--option', 'substituters', '', '--no-out-link', file, '-A', attr],
    { encoding: 'utf8', env: { ...process.env, NIX_PATH: '' }, timeout: 300_000 },
  );
  if (r.status !== 0) throw new Error(`nix-build ${attr} failed: ${r.stderr}`);
  return r.stdout.trim();
}

const profileOf = (node: string) => path.join(tmp, 'profiles', node, 'system');
async function currentSystem(node: string): Promise<string | null> {
  try {
    return await readlink(path.join(path.dirname(profileOf(node)), await readlink(profileOf(node))));
  } catch {
    return null;
  }
}

async function view(id: string): Promise<DeploymentView> {
  const r = await s.get(`/v1/deployments/${id}`);
  expect(r.status).toBe(200);
  return r.body as DeploymentView;
}

async function deploy(id: string, system: string, extra: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runWrit(
    [
      'deploy',
      'create',
      id,
      '--system',
      system,
      '--selector',
      'fleet=test',
      '--batch-size',
      '1',
      '--max-unavailable',
      '1',
      '--health-check',
      JSON.stringify([`${system}/bin/health`, '{node}']),
      '--key',
      path.join(tmp, 'admin.key'),
      ...extra,
    ],
    env,
  );
}

beforeAll(async () => {
  if (skipReason) return;
  tmp = await mkdtemp(path.join(os.tmpdir(), 'writ-hosts-'));
  await mkdir(path.join(tmp, 'markers'));
  const src = path.join(tmp, 'systems.nix');
  const markers = path.join(tmp, 'markers');
  const log = path.join(tmp, 'activations.log');
  const tag = path.basename(tmp).replace(/[^a-z0-9]/gi, '');
  await writeFile(
    src,
    `{\n${['one', 'two', 'three', 'four', 'other'].map((n) => `  ${n} = ${systemExpr(`writ-test-system-${n}-${tag}`, markers, log)};`).join('\n')}\n}\n`,
  );
  for (const n of ['one', 'two', 'three', 'four', 'other']) systems[n] = nixBuild(src, n);
  s = await startTestStack({ nodes: [] });
  for (const node of NODES) {
    await s.startRunner(
      node,
      { fleet: 'test' },
      { runner: { hostTable: salHostTable({ nix: { profilesRoot: path.join(tmp, 'profiles', node), sandbox: false } }) } },
    );
  }
  await writeFile(path.join(tmp, 'admin.key'), encodePrivateKeyFile(s.admin, 'admin'), { mode: 0o600 });
  env = { WRIT_COORD: s.url, WRIT_TOKEN: s.token, WRIT_HOME: path.join(tmp, 'home') };
}, 300_000);

afterAll(async () => {
  await s?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe.skipIf(skipReason !== null)('host deployments on five simulated nodes (real nix-bin)', () => {
  it('rolls a system out one node at a time with maxUnavailable 1, following progress live', async () => {
    const created = await deploy('roll-one', systems.one!);
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    expect(created.stdout).toMatch(/deployment roll-one: created; 5 node\(s\) in 5 batch\(es\) of 1, maxUnavailable 1/);
    const followed = await runWrit(['deploy', 'status', 'roll-one', '--follow'], env);
    expect(followed.code).toBe(0);
    expect(followed.stdout).toMatch(/deployment roll-one: succeeded/);
    expect(followed.stdout.match(/ switched /g)).toHaveLength(5);

    const v = await view('roll-one');
    expect(v.state).toBe('succeeded');
    expect(v.counts).toMatchObject({ switched: 5, failed: 0, pending: 0 });
    // Steps in order: each node is dispatched only after the node before it switched, batch by batch.
    const steps = v
      .steps!.filter((x) => ['batch', 'dispatch', 'switched'].includes(x.kind))
      .map((x) => `${x.kind}:${x.node ?? (x.data as { batch: number }).batch}`);
    expect(steps).toEqual(NODES.flatMap((n, i) => [`batch:${i}`, `dispatch:${n}`, `switched:${n}`]));
    expect(v.steps!.at(-1)!.kind).toBe('succeeded');
    for (const node of NODES) expect(await currentSystem(node)).toBe(systems.one);
    // Every step is in the audit log too.
    const audit = (await s.get('/v1/audit?tail=200')).body.entries as { kind: string; subject: string }[];
    expect(audit.filter((e) => e.kind.startsWith('deploy.') && e.subject.startsWith('roll-one')).map((e) => e.kind)).toEqual(
      v.steps!.map((x) => `deploy.${x.kind}`),
    );
    expect((await s.get('/v1/audit/verify')).body).toMatchObject({ ok: true });
  }, 180_000);

  it('rolls back the node whose health check fails, pauses, and touches no node after it; resume goes on with the rest', async () => {
    await writeFile(path.join(tmp, 'markers', 'fail-node-c'), '');
    const created = await deploy('roll-two', systems.two!);
    expect(created.code).toBe(0);
    const paused = await until(
      'roll-two paused with nothing in flight',
      async () => {
        const v = await view('roll-two');
        return v.state === 'paused' && v.counts.switching === 0 ? v : undefined;
      },
      120_000,
    );
    expect(paused.reason).toMatch(/node-c.*maxUnavailable 1/);
    expect(paused.nodes.map((n) => [n.node, n.state])).toEqual([
      ['node-a', 'switched'],
      ['node-b', 'switched'],
      ['node-c', 'failed'],
      ['node-d', 'pending'],
      ['node-e', 'pending'],
    ]);
    expect(paused.nodes[2]!.error?.code).toBe('NIX_ACTIVATION_FAILED');
    const failedStep = paused.steps!.find((x) => x.kind === 'failed')!;
    expect(failedStep.data).toMatchObject({ code: 'NIX_ACTIVATION_FAILED', stage: 'health', rolledBack: true });
    expect(String(failedStep.data.message)).toMatch(/re-activated .*system-one.* \(reactivated\)/);
    // node-c kept its old system (the health gate rolled it back); the nodes after it were never touched.
    expect(await currentSystem('node-a')).toBe(systems.two);
    expect(await currentSystem('node-b')).toBe(systems.two);
    expect(await currentSystem('node-c')).toBe(systems.one);
    for (const n of ['node-d', 'node-e']) {
      expect(await currentSystem(n)).toBe(systems.one);
      expect(await s.ledger.getJob(`roll-two.${n}`)).toBeNull();
    }
    // It stays paused: nothing moves by itself.
    await new Promise((r) => setTimeout(r, 1500));
    expect((await view('roll-two')).counts).toMatchObject({ pending: 2, switched: 2, failed: 1 });

    // Resume: the failure is accepted, node-d and node-e follow; node-c stays failed on its old system.
    await rm(path.join(tmp, 'markers', 'fail-node-c'));
    const resumed = await runWrit(['deploy', 'resume', 'roll-two'], env);
    expect(resumed.stdout).toMatch(/roll-two: resume → running/);
    const ended = await runWrit(['deploy', 'status', 'roll-two', '--follow'], env);
    expect(ended.code).toBe(1);
    const v = await view('roll-two');
    expect(v.state).toBe('failed');
    expect(v.reason).toMatch(/1 node\(s\) failed/);
    expect(v.nodes.map((n) => n.state)).toEqual(['switched', 'switched', 'failed', 'switched', 'switched']);
    expect(await currentSystem('node-c')).toBe(systems.one);
    for (const n of ['node-d', 'node-e']) expect(await currentSystem(n)).toBe(systems.two);
    expect(v.steps!.map((x) => x.kind)).toContain('resumed');
  }, 240_000);

  it('abort skips every node not yet touched; a finished deployment cannot be resumed', async () => {
    await writeFile(path.join(tmp, 'markers', 'fail-node-a'), '');
    expect((await deploy('roll-three', systems.three!)).code).toBe(0);
    await until(
      'roll-three paused with nothing in flight',
      async () => {
        const v = await view('roll-three');
        return v.state === 'paused' && v.counts.switching === 0 ? v : undefined;
      },
      120_000,
    );
    const aborted = await runWrit(['deploy', 'abort', 'roll-three', '--json'], env);
    expect(aborted.code).toBe(0);
    const v = JSON.parse(aborted.stdout) as DeploymentView;
    expect(v.state).toBe('aborted');
    expect(v.nodes.map((n) => n.state)).toEqual(['failed', 'skipped', 'skipped', 'skipped', 'skipped']);
    // node-a failed its health check and was rolled back to what roll-two left it on.
    expect(await currentSystem('node-a')).toBe(systems.two);
    for (const n of NODES.slice(1)) {
      expect(await currentSystem(n)).not.toBe(systems.three);
      expect(await s.ledger.getJob(`roll-three.${n}`)).toBeNull();
    }
    const again = await runWrit(['deploy', 'resume', 'roll-three'], env);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/DEPLOYMENT_STATE.*roll-three is aborted/);
    await rm(path.join(tmp, 'markers', 'fail-node-a'));
  }, 180_000);

  it('drains first: a node is switched only after its other jobs ended', async () => {
    // A job that keeps node-e busy for a few seconds, then a deployment with --drain to node-e only.
    const busy = s.sign(
      'export default async (a, ctx) => { const end = (await ctx.sal.time.now()).ms + 4000; while ((await ctx.sal.time.now()).ms < end) {} return 1 }',
      { caps: ['time.now'], target: { node: 'node-e' }, timeoutMs: 60_000 },
    );
    expect((await s.post(busy.envelope)).status).toBeLessThan(300);
    await s.waitFor(busy.id, ['running'], 60_000);
    const both = await deploy('roll-drain', systems.four!, ['--node', 'node-e']);
    expect(both.code).not.toBe(0);
    expect(both.stderr).toMatch(/USAGE.*--selector or --node, not both/);
    const created = await runWrit(
      [
        'deploy',
        'create',
        'roll-drain',
        '--system',
        systems.four!,
        '--node',
        'node-e',
        '--drain',
        '--health-check',
        JSON.stringify([`${systems.four}/bin/health`, '{node}']),
        '--key',
        path.join(tmp, 'admin.key'),
      ],
      env,
    );
    expect(created.code).toBe(0);
    const ended = await runWrit(['deploy', 'status', 'roll-drain', '--follow'], env);
    expect(ended.code).toBe(0);
    const v = await view('roll-drain');
    const busyJob = (await s.ledger.getJob(busy.id))!;
    expect(busyJob.status).toBe('succeeded');
    const at = (kind: string) => Date.parse(v.steps!.find((x) => x.kind === kind)!.at);
    expect(v.steps!.map((x) => x.kind)).toEqual(['created', 'batch', 'drain', 'dispatch', 'switched', 'succeeded']);
    // The switch was handed out only after the other job had finished.
    expect(at('dispatch')).toBeGreaterThanOrEqual(busyJob.finishedAt!.getTime());
    expect(await currentSystem('node-e')).toBe(systems.four);
  }, 180_000);

  it('refuses a store path other than the pinned one: at the coord, and on the node itself', async () => {
    // A deployment whose switch job pins another path than the deployment's system: refused at creation.
    const base = buildHostDeploymentPayload({
      id: 'tampered',
      aud: s.clusterId,
      system: systems.other!,
      selector: { fleet: 'test' },
      nodes: ['node-b'],
      healthCheck: { argv: [`${systems.other}/bin/health`, '{node}'] },
    });
    const input = hostSwitchJob(base, 'node-b');
    const job = buildJobPayload({ ...input, pins: { nix: [systems.one!] } });
    const raw = encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(job), [s.admin]));
    const deployment = encodeEnvelope(
      signEnvelope(
        HOST_DEPLOYMENT_PAYLOAD_TYPE,
        encodeHostDeploymentPayload({ ...base, jobs: [{ node: 'node-b', id: job.id, envelopeSha256: sha256Hex(raw) }] }),
        [s.admin],
      ),
    );
    const res = await fetch(`${s.url}/v1/deployments`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}` },
      body: JSON.stringify({ deployment, jobs: [raw] }),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: unknown }).error).toMatchObject({ code: 'DEPLOYMENT_INVALID', message: expect.stringMatching(/must pin exactly/) });

    // The same switch job sent straight to the node (no deployment): the runner's nix SAL refuses the path.
    const before = await currentSystem('node-b');
    expect((await s.post(raw)).status).toBeLessThan(300);
    const done = await s.waitFor(job.id, ['succeeded', 'failed', 'refused'], 60_000);
    expect(done.status).toBe('failed');
    expect(done.errorCode).toBe('NIX_PATH_NOT_PINNED');
    expect(await currentSystem('node-b')).toBe(before);
    expect(await readFile(path.join(tmp, 'activations.log'), 'utf8')).not.toMatch(/system-other/);
  }, 120_000);
});
