// The node agent as the boot image runs it (bundled into /opt/writ/node.mjs): reads the kernel command line,
// keeps the node's identity on the state partition (or in memory when diskless), phones home with the
// enrollment inventory and token, and once the coord has answered with an assignment runs jobs under the
// assigned labels (in rescue mode, `writ.boot=rescue` from the coord's iPXE answer, it runs none). The image's
// /init restarts it when it exits.
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  NodeAgent,
  Runner,
  collectInventory,
  installPlanDue,
  installedPlanRecord,
  loadNodeIdentity,
  nodeHealth,
  runInstallPlan,
  sendInstallReport,
  type InstallReportBody,
} from '@writ/runner';
import { runUntilProcessSignal, untilAborted, type JsonValue, type RegistrationAnswer } from '@writ/protocol';
import { adminKeyRefs, bootModeOf, parseBootCmdline } from './boot-config.ts';

const log = (level: string, msg: string, obj: object = {}) => process.stdout.write(`${JSON.stringify({ level, t: new Date().toISOString(), msg, ...obj })}\n`);
const logger = {
  info: (o: object, m?: string) => log('info', m ?? '', o),
  warn: (o: object, m?: string) => log('warn', m ?? '', o),
  error: (o: object, m?: string) => log('error', m ?? '', o),
  debug: () => {},
};

/** The node id this state dir belongs to, or a fresh random one for a machine that has none yet. */
async function nodeIdFor(stateDir: string): Promise<string> {
  try {
    const meta = JSON.parse(await readFile(path.join(stateDir, 'node.json'), 'utf8')) as { nodeId?: string };
    if (meta.nodeId) return meta.nodeId;
  } catch {
    /* first boot on this state */
  }
  return `node-${randomBytes(5).toString('hex')}`;
}

async function main(): Promise<void> {
  const t0 = process.uptime();
  const cmdline = await readFile('/proc/cmdline', 'utf8');
  const boot = { ...parseBootCmdline(cmdline), mode: bootModeOf(cmdline) };
  const stateDir = process.env.WRIT_STATE_DIR ?? '/var/lib/writ';
  const diskless = process.env.WRIT_DISKLESS === '1';
  const identity = await loadNodeIdentity(stateDir, await nodeIdFor(stateDir));
  log('info', 'writ-boot: identity', {
    node: identity.nodeId,
    keyid: identity.key.keyid,
    created: identity.created,
    diskless,
    mode: boot.mode,
    nodeStartS: t0,
  });
  const inventory = (await collectInventory({ diskless })) as unknown as JsonValue;
  let first: (a: RegistrationAnswer) => void = () => {};
  const registered = new Promise<RegistrationAnswer>((r) => (first = r));
  let runner: Runner | undefined = undefined;
  const agent = new NodeAgent({
    coordUrl: boot.coordUrl,
    identity,
    labels: {},
    version: '0.1.0',
    enrollmentToken: boot.token,
    heartbeatMs: Number(process.env.WRIT_HEARTBEAT_MS ?? 5000),
    backoffBaseMs: 500,
    backoffMaxMs: 10_000,
    inventory: async () => inventory,
    health: () => nodeHealth(stateDir, runner?.runningJobs ?? 0),
    onRegistered: (a) => first(a),
    logger,
  });
  agent.start();
  const answer = await registered;
  const assignment = answer.assignment;
  log('info', 'writ-boot: registered', {
    node: identity.nodeId,
    state: answer.state,
    assignment,
    uptimeS: Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]),
  });
  if (assignment?.hostname) await writeFile('/proc/sys/kernel/hostname', assignment.hostname).catch(() => {});
  if (boot.mode === 'rescue') {
    // Rescue: the node stays known to the coord (heartbeats) but takes no work; the console has a shell.
    log('info', 'writ-boot: rescue mode: registered and heartbeating, running no jobs', { node: identity.nodeId, state: answer.state });
    await runUntilProcessSignal(
      async (stop) => {
        await untilAborted(stop);
        await agent.stop();
      },
      { graceMs: 5000 },
    );
    process.exit(0);
  }
  runner = await Runner.start({
    nodeId: identity.nodeId,
    nodeKey: identity.key,
    clusterId: boot.clusterId,
    admins: { threshold: boot.adminThreshold, keys: adminKeyRefs(boot) },
    stateDir,
    labels: answer.labels,
    redisUrl: boot.redisUrl,
    heartbeatMs: 2000,
    logger,
  });
  log('info', 'writ-boot: runner started', { node: identity.nodeId, labels: answer.labels });
  // The class's install plan: run while the coord holds the node `installing` (it takes no work meanwhile),
  // on an install boot or when this plan is not recorded as installed on the state partition.
  const plan = answer.installPlan;
  if (plan && answer.state === 'installing') {
    const planState = diskless ? null : stateDir;
    const due = await installPlanDue(plan, { mode: boot.mode, stateDir: planState });
    let body: InstallReportBody | null = null;
    if (due.due) {
      log('info', 'writ-boot: install plan running', { class: plan.class, why: due.why, disk: plan.disk, jobs: plan.jobs.length });
      body = await runInstallPlan({ plan, mode: boot.mode, stateDir: planState, runner, logger });
    } else {
      // Installed before, but the coord still waits for the report (it was lost): send the recorded one again.
      const rec = await installedPlanRecord(planState);
      if (rec) body = { class: rec.class, planSha256: rec.planSha256, ok: rec.ok, disk: rec.disk, subvolumes: rec.subvolumes, jobs: rec.jobs };
      log('info', 'writ-boot: install plan not run', { why: due.why, resending: body !== null });
    }
    if (body) {
      log(body.ok ? 'info' : 'error', 'writ-boot: install plan ran', {
        ok: body.ok,
        disk: body.disk,
        subvolumes: body.subvolumes,
        jobs: body.jobs,
        error: body.error,
      });
      try {
        const ack = await sendInstallReport({ coordUrl: boot.coordUrl, nodeId: identity.nodeId, key: identity.key, body, logger });
        log('info', 'writ-boot: install reported', { ack });
      } catch (e) {
        log('error', 'writ-boot: install report refused', { code: (e as { code?: string }).code, err: (e as Error).message });
      }
    }
  } else if (plan) {
    log('info', 'writ-boot: install plan not run', { why: `the node is ${answer.state}, not installing` });
  }
  await runUntilProcessSignal(
    async (stop) => {
      await untilAborted(stop);
      await agent.stop();
      await runner?.close(5000);
    },
    { graceMs: 10_000 },
  );
  process.exit(0);
}

main().catch((e: unknown) => {
  log('error', 'writ-boot: agent failed', { code: (e as { code?: string }).code, err: (e as Error).message });
  process.exit(1);
});
