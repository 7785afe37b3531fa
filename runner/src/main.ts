// Runs the node daemon from its config: starts it, announces readiness, and on `signal` takes no new jobs
// and lets running ones finish within the shutdown grace.
import { untilAborted, type Logger, type ServiceRun } from '@writ/protocol';
import type { RunnerConfig } from './config.ts';
import { startNodeDaemon } from './node-daemon.ts';
import type { HostTable } from './broker.ts';

/** The runner drains instead of releasing resources in reverse: the daemon's stop() bounds that itself. */
export type NodeDaemonRun = ServiceRun<Logger>;

/** Runs until `run.signal` aborts, then drains; resolves once stopped. */
export async function runNodeDaemon(config: RunnerConfig, run: NodeDaemonRun, extra: { hostTable?: HostTable } = {}): Promise<void> {
  const { logger } = run;
  let daemon;
  try {
    daemon = await startNodeDaemon({
      coordUrl: config.coordUrl,
      nodeId: config.nodeId,
      labels: { ...config.labels },
      redisUrl: config.redisUrl,
      redisCredentials: config.redisCredentials,
      signal: run.signal,
      logger,
      admins: { threshold: config.admins.threshold, keys: [...config.admins.keys] },
      clusterId: config.clusterId,
      stateDir: config.stateDir,
      production: config.production,
      ...(config.heartbeatMs ? { heartbeatMs: config.heartbeatMs } : {}),
      ...(config.concurrency ? { concurrency: config.concurrency } : {}),
      ...(config.lockDurationMs ? { lockDurationMs: config.lockDurationMs } : {}),
      ...(config.stalledIntervalMs ? { stalledIntervalMs: config.stalledIntervalMs } : {}),
      ...(extra.hostTable ? { hostTable: extra.hostTable } : {}),
    });
  } catch (e) {
    // Stopped while it waited to learn its pool's Redis: nothing was started but phone-home, which is stopped.
    if (run.signal.aborted) {
      logger.info({ node: config.nodeId, sig: run.signal.reason }, 'stopped before the coord announced a Redis for its pool');
      return;
    }
    throw e;
  }
  run.io.out(
    JSON.stringify({
      ready: true,
      node: config.nodeId,
      keyid: daemon.identity.key.keyid,
      redis: daemon.redis.url,
      redisFrom: daemon.redis.learned ? 'registration' : 'config',
      newIdentity: daemon.identity.created,
      pid: process.pid,
    }),
  );
  await untilAborted(run.signal);
  logger.info({ node: config.nodeId, sig: run.signal.reason }, 'stopping: no new jobs; letting running ones finish');
  // The daemon bounds its whole stop by the grace, Redis and coord reachable or not (jobs still running then
  // are left to BullMQ's stall check and the journal).
  await daemon.stop(config.shutdownGraceMs);
  logger.info({ node: config.nodeId }, 'stopped cleanly');
}
