// The whole node daemon: identity, phone-home (registration and heartbeats) and the job loop together.
import { statfs } from 'node:fs/promises';
import os from 'node:os';
import { hostFacts } from '@writ/sal';
import type { JsonValue, NodeHealth } from '@writ/protocol';
import { NodeAgent, type Clock } from './agent.ts';
import { loadNodeIdentity, type NodeIdentity } from './identity.ts';
import { Runner, type RunnerOptions } from './runner.ts';

export interface NodeDaemonOptions extends Omit<RunnerOptions, 'nodeKey'> {
  stateDir: string;
  coordUrl: string;
  heartbeatMs?: number;
  clock?: Clock;
}

export interface NodeDaemon {
  identity: NodeIdentity;
  agent: NodeAgent;
  runner: Runner;
  stop(timeoutMs?: number): Promise<void>;
}

/** What the node says of its health in every heartbeat, healthy or not. */
export async function nodeHealth(stateDir: string, runningJobs: number): Promise<NodeHealth> {
  const problems: string[] = [];
  let diskFreeBytes = 0;
  try {
    const st = await statfs(stateDir);
    diskFreeBytes = Number(st.bavail) * Number(st.bsize);
    if (diskFreeBytes < 512 * 1024 * 1024) problems.push(`less than 512 MiB free under ${stateDir}`);
  } catch (e) {
    problems.push(`cannot stat ${stateDir}: ${(e as Error).message}`);
  }
  const memAvailableBytes = os.freemem();
  if (memAvailableBytes < 128 * 1024 * 1024) problems.push('less than 128 MiB of memory available');
  const load1 = os.loadavg()[0] ?? 0;
  return { healthy: problems.length === 0, problems, load1, memAvailableBytes, diskFreeBytes, runningJobs };
}

export async function startNodeDaemon(opts: NodeDaemonOptions): Promise<NodeDaemon> {
  const identity = await loadNodeIdentity(opts.stateDir, opts.nodeId);
  const runner = await Runner.start({ ...opts, nodeKey: identity.key });
  const agent = new NodeAgent({
    coordUrl: opts.coordUrl,
    identity,
    labels: opts.labels ?? {},
    version: opts.version ?? '0.1.0',
    ...(opts.heartbeatMs ? { heartbeatMs: opts.heartbeatMs } : {}),
    ...(opts.clock ? { clock: opts.clock } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
    inventory: async () => (await hostFacts()) as unknown as JsonValue,
    health: () => nodeHealth(opts.stateDir, runner.runningJobs),
  });
  agent.start();
  return {
    identity,
    agent,
    runner,
    async stop(timeoutMs = 30_000) {
      await agent.stop();
      await runner.close(timeoutMs);
    },
  };
}
