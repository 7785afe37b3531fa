// Host rollout (issue 12): a deployment of a builtins-built "system" to 20 simulated nodes in batches of 5
// (maxUnavailable 5), against the sum of the bare nix SAL switches of the same system on 20 fresh profiles,
// in the same run. Each node is a runner in this process with its own Nix profile directory; the stack is
// real (Redis, PGlite, coord, supervisor), the Nix is Debian's nix-bin as root. The deployment and its 20
// switch jobs are signed here and posted to the coord (no CLI start-up in the figure); the rollout time runs
// from that POST to the deployment's `succeeded`. Needs root and nix-bin. Last line: JSON.
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  HOST_DEPLOYMENT_PAYLOAD_TYPE,
  PAYLOAD_TYPES,
  buildHostDeploymentPayload,
  buildJobPayload,
  encodeEnvelope,
  encodeHostDeploymentPayload,
  encodeJobPayload,
  hostSwitchJob,
  sha256Hex,
  signEnvelope,
  type DeploymentView,
  type HostDeploymentPayload,
} from '@writ/protocol';
import { salHostTable } from '@writ/runner';
import { nixConfig, nixSwitch } from '@writ/sal';
import { startTestStack } from '../tests/helpers/stack.ts';

const NODES = Number(process.env.BENCH_ROLLOUT_NODES ?? 20);
const BATCH = Number(process.env.BENCH_ROLLOUT_BATCH ?? 5);

if (process.getuid?.() !== 0) throw new Error('bench rollout needs root (single-user Nix)');
if (spawnSync('nix-build', ['--version']).status !== 0) throw new Error('bench rollout needs nix-build: apt-get install nix-bin');

const tmp = await mkdtemp(path.join(os.tmpdir(), 'writ-bench-rollout-'));
const tag = path.basename(tmp).replace(/[^a-z0-9]/gi, '');
// A system whose activation and health check succeed: what the rollout and the bare switches both install.
await writeFile(
  path.join(tmp, 'system.nix'),
  `derivation {
  name = "writ-bench-system-${tag}"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir -p $out/bin && printf '#!/bin/sh\\\\nexit 0\\\\n' > $out/activate && printf '#!/bin/sh\\\\nexit 0\\\\n' > $out/bin/health && /bin/chmod 555 $out/activate $out/bin/health" ];
}\n`,
);
const built = spawnSync(
  'nix-build',
  ['--option', 'sandbox', 'false', '--option', 'build-users-group', '', '--option', 'substituters', '', '--no-out-link', path.join(tmp, 'system.nix')],
  { encoding: 'utf8', env: { ...process.env, NIX_PATH: '' } },
);
if (built.status !== 0) throw new Error(`nix-build failed: ${built.stderr}`);
const system = built.stdout.trim();
const nodes = Array.from({ length: NODES }, (_, i) => `bench-${String(i).padStart(2, '0')}`);

const s = await startTestStack({ nodes: [] });
try {
  // Started without waiting, then accepted as an operator would: 20 runners registering on a loaded machine
  // take longer than the one-process stack's 15 s wait per node.
  for (const node of nodes) {
    await s.startRunner(
      node,
      { bench: 'rollout' },
      { accept: false, runner: { hostTable: salHostTable({ nix: { profilesRoot: path.join(tmp, 'rollout', node), sandbox: false } }) } },
    );
  }
  for (const node of nodes) {
    await s.waitForNode(node, ['inspected', 'active'], 300_000);
    if ((await s.ledger.nodeStore.getNode(node))?.state === 'inspected')
      await s.service.nodes.apply(node, 'accept', { actor: 'bench', reason: 'a simulated node', byOperator: true });
  }
  const upBy = Date.now() + 300_000;
  while ((await s.service.nodes.workable()).filter((w) => nodes.includes(w.id)).length < NODES) {
    if (Date.now() > upBy) throw new Error('the simulated nodes did not all become workable within 300 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  console.log(`${NODES} simulated nodes up; system ${system}`);

  // The rollout: signed here like `writ deploy create` does, timed from the POST to `succeeded`.
  const base = buildHostDeploymentPayload({
    id: 'bench-rollout',
    aud: s.clusterId,
    system,
    selector: { bench: 'rollout' },
    nodes,
    batchSize: BATCH,
    maxUnavailable: BATCH,
    healthCheck: { argv: [`${system}/bin/health`] },
  });
  const jobs: string[] = [];
  const bindings: HostDeploymentPayload['jobs'] = [];
  for (const node of nodes) {
    const job = buildJobPayload(hostSwitchJob(base, node));
    const raw = encodeEnvelope(signEnvelope(PAYLOAD_TYPES.job, encodeJobPayload(job), [s.admin]));
    jobs.push(raw);
    bindings.push({ node, id: job.id, envelopeSha256: sha256Hex(raw) });
  }
  const deployment = encodeEnvelope(signEnvelope(HOST_DEPLOYMENT_PAYLOAD_TYPE, encodeHostDeploymentPayload({ ...base, jobs: bindings }), [s.admin]));
  const t0 = performance.now();
  const res = await fetch(`${s.url}/v1/deployments`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${s.token}` },
    body: JSON.stringify({ deployment, jobs }),
  });
  if (res.status !== 201) throw new Error(`creating the deployment failed: ${res.status} ${await res.text()}`);
  let view: DeploymentView;
  for (;;) {
    view = await s.service.hosts.get('bench-rollout', false);
    if (view.state !== 'running') break;
    await new Promise((r) => setTimeout(r, 10));
  }
  const rolloutS = (performance.now() - t0) / 1000;
  if (view.state !== 'succeeded') throw new Error(`the rollout ended ${view.state}: ${view.reason}`);
  const steps = await s.service.hosts.store.steps('bench-rollout');
  const batchStarts = steps.filter((x) => x.kind === 'batch').map((x) => x.at.getTime());
  const end = steps.at(-1)!.at.getTime();
  const batchS = batchStarts.map((t, i) => ((batchStarts[i + 1] ?? end) - t) / 1000);
  // What the switches themselves took on the nodes, as the jobs reported it (activation + health check).
  const results = await Promise.all(
    nodes.map(async (n) => (await s.ledger.getJob(`bench-rollout.${n}`))!.result as { activationMs: number; healthMs: number }),
  );
  const inJobSwitchS = results.reduce((a, r) => a + r.activationMs + r.healthMs, 0) / 1000;
  console.log(
    `rollout: ${rolloutS.toFixed(2)} s for ${NODES} nodes in ${batchStarts.length} batches of ${BATCH}; per batch ${batchS.map((b) => b.toFixed(2)).join(', ')} s`,
  );

  // The bare switches: the same system, the nix SAL called directly, one node's fresh profile after another.
  let bareS = 0;
  for (const node of nodes) {
    const config = nixConfig({ profilesRoot: path.join(tmp, 'bare', node), sandbox: false });
    const t = performance.now();
    const r = await nixSwitch(config, { profile: 'system', path: system, healthCheck: { argv: [`${system}/bin/health`] } }, [system]);
    bareS += (performance.now() - t) / 1000;
    if (!r.changed) throw new Error(`bare switch on ${node} changed nothing`);
  }
  console.log(`bare nix.switch: ${bareS.toFixed(2)} s summed over ${NODES} switches (${((bareS / NODES) * 1000).toFixed(0)} ms each)`);
  console.log(`activation + health inside the rollout's jobs, summed: ${inJobSwitchS.toFixed(2)} s`);
  console.log(
    JSON.stringify({
      bench: 'rollout',
      nodes: NODES,
      batch_size: BATCH,
      max_unavailable: BATCH,
      rollout_s: Number(rolloutS.toFixed(3)),
      bare_switch_s: Number(bareS.toFixed(3)),
      overhead_ratio: Number((rolloutS / bareS).toFixed(3)),
      batch_s: batchS.map((b) => Number(b.toFixed(3))),
      in_job_switch_s: Number(inJobSwitchS.toFixed(3)),
      load1: os.loadavg()[0],
    }),
  );
} finally {
  await s.close();
  await rm(tmp, { recursive: true, force: true });
}
