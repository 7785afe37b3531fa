// Runs a supervisor from its config: starts it, listens, announces readiness, and on `signal` releases
// everything in reverse order within the shutdown grace. app.ts-style builders never listen; this does.
import { serveUntilAborted, type KeyPair, type ServiceRun } from '@writ/protocol';
import type { SupervisorConfig } from './config.ts';
import { startSupervisorHeartbeats } from './heartbeat.ts';
import { buildSupervisorApp, httpReportSink } from './http.ts';
import { Supervisor, type Logger } from './supervisor.ts';

export interface SupervisorRun extends ServiceRun<Logger> {
  /** The supervisor's report-signing key (the CLI keeps it at config.signingKeyFile). */
  signingKey: KeyPair;
}

/** Runs until `run.signal` aborts; resolves true when everything was released within the grace. */
export async function runSupervisor(config: SupervisorConfig, run: SupervisorRun): Promise<boolean> {
  const { logger, signingKey } = run;
  return serveUntilAborted(run, config.shutdownGraceMs, async (releasers) => {
    const sup = await Supervisor.start({
      admins: { threshold: config.admins.threshold, keys: [...config.admins.keys] },
      production: config.production,
      id: config.id,
      clusterId: config.clusterId,
      redisUrl: config.redisUrl,
      signingKey,
      sink: httpReportSink(config.coordUrl),
      logger,
      claimIdleMs: config.claimIdleMs,
      collectEvents: config.federation === null,
    });
    releasers.push({ name: 'supervisor', release: () => sup.close() });
    const app = await buildSupervisorApp(sup, config.apiToken);
    releasers.push({ name: 'http server', release: () => app.close() });
    const url = await app.listen({ ...config.listen }); // fastify writes into its options; the config is frozen
    const fed = config.federation;
    if (fed) {
      // Federation: announce this supervisor to the coord (it must be listed in the key set for these pools).
      const beats = startSupervisorHeartbeats({
        supervisor: sup,
        coordUrl: config.coordUrl,
        apiUrl: fed.apiUrl ?? url,
        pools: fed.pools,
        intervalMs: fed.intervalMs,
        runnerRedis: fed.runnerRedis,
        clusterId: config.clusterId,
        signingKey,
        logger,
      });
      releasers.push({ name: 'heartbeats', release: () => beats.stop() });
    }
    return { url, keyid: signingKey.keyid, publicKeyFile: config.publicKeyFile, ...(fed ? { pools: fed.pools } : {}) };
  });
}
