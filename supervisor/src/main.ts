// Runs a supervisor from its config: starts it, listens, announces readiness, and on `signal` releases
// everything in reverse order within the shutdown grace. app.ts-style builders never listen; this does.
import { once } from 'node:events';
import type { KeyPair } from '@writ/protocol';
import type { SupervisorConfig } from './config.ts';
import { buildSupervisorApp, httpReportSink } from './http.ts';
import { Supervisor, type Logger } from './supervisor.ts';

export interface ServiceRun<L> {
  logger: L;
  /** Where the one `{"ready":true,...}` line goes (stdout in `writ`); process managers and tests wait for it. */
  io: { out(line: string): void };
  /** Aborted to stop (the CLI aborts it on SIGINT/SIGTERM); its reason is logged. */
  signal: AbortSignal;
}

/** A resource to release on the way out, named for the log when it overruns. */
export interface Releaser {
  name: string;
  release(): Promise<void>;
}

/**
 * Releases in reverse order of opening, all within `graceMs`. A release that overruns is logged and left
 * behind so that the ones opened before it still get released; the result says whether all finished.
 */
export async function releaseInReverse(releasers: readonly Releaser[], graceMs: number, logger: Pick<Logger, 'error'>): Promise<boolean> {
  const deadline = Date.now() + graceMs;
  let clean = true;
  for (const r of [...releasers].reverse()) {
    let timer: NodeJS.Timeout | undefined;
    const overran = new Promise<'overran'>((resolve) => (timer = setTimeout(() => resolve('overran'), Math.max(0, deadline - Date.now()))));
    try {
      if ((await Promise.race([r.release().then(() => 'released' as const), overran])) === 'overran') {
        clean = false;
        logger.error({ resource: r.name, graceMs }, 'not released within the shutdown grace; leaving it');
      }
    } catch (e) {
      clean = false;
      logger.error({ resource: r.name, err: (e as Error).message }, 'releasing failed');
    } finally {
      clearTimeout(timer);
    }
  }
  return clean;
}

/** Waits for `signal` (resolving at once if it has fired already). */
export async function untilAborted(signal: AbortSignal): Promise<void> {
  if (!signal.aborted) await once(signal, 'abort');
}

export interface SupervisorRun extends ServiceRun<Logger> {
  /** The supervisor's report-signing key (the CLI keeps it at config.signingKeyFile). */
  signingKey: KeyPair;
}

/** Runs until `run.signal` aborts; resolves true when everything was released within the grace. */
export async function runSupervisor(config: SupervisorConfig, run: SupervisorRun): Promise<boolean> {
  const { logger, signingKey } = run;
  const releasers: Releaser[] = [];
  try {
    const sup = await Supervisor.start({ admins: { threshold: config.admins.threshold, keys: [...config.admins.keys] }, production: config.production, id: config.id, clusterId: config.clusterId, redisUrl: config.redisUrl, signingKey, sink: httpReportSink(config.coordUrl), logger });
    releasers.push({ name: 'supervisor', release: () => sup.close() });
    const app = await buildSupervisorApp(sup, config.apiToken);
    releasers.push({ name: 'http server', release: () => app.close() });
    const url = await app.listen({ ...config.listen }); // fastify writes into its options; the config is frozen
    run.io.out(JSON.stringify({ ready: true, url, keyid: signingKey.keyid, publicKeyFile: config.publicKeyFile }));
    await untilAborted(run.signal);
    logger.info({ sig: run.signal.reason }, 'stopping');
  } catch (e) {
    await releaseInReverse(releasers, config.shutdownGraceMs, logger);
    throw e;
  }
  return releaseInReverse(releasers, config.shutdownGraceMs, logger);
}
