// Runs a coord from its config: opens the ledger, starts the service, listens, announces readiness, and on
// `signal` releases everything in reverse order within the shutdown grace. app.ts builds; this listens.
// A ledger fault it cannot ride out (read-only or vanished disk, corruption) stops it the same way, and then
// it fails with that fault (LEDGER_UNAVAILABLE or LEDGER_CORRUPT, naming the folder): a process supervisor
// that restarts it is the recovery, and a restart on a still-broken disk fails at once with the same words.
import { readFile } from 'node:fs/promises';
import { decodeKeyFile, serveUntilAborted, type Logger, type ServiceRun, type WritError } from '@writ/protocol';
import { buildApp } from './app.ts';
import { startCoordination, type Coordination } from './events/relay.ts';
import type { CoordConfig } from './config.ts';
import { openLedger } from './ledger/index.ts';
import { CoordService } from './service.ts';
import { HttpSupervisorClient } from './supervisor-client.ts';

export type CoordRun = ServiceRun<Logger>;

/** Runs until `run.signal` aborts (true when everything was released within the grace), or throws the ledger's fatal fault. */
export async function runCoord(config: CoordConfig, run: CoordRun): Promise<boolean> {
  const { logger } = run;
  const supervisorKey = config.supervisorKeyFile === null ? null : decodeKeyFile(await readFile(config.supervisorKeyFile, 'utf8'), config.supervisorKeyFile);
  const ledgerFailed = new AbortController();
  const stop = AbortSignal.any([run.signal, ledgerFailed.signal]);
  const clean = await serveUntilAborted({ ...run, signal: stop }, config.shutdownGraceMs, async (releasers) => {
    const ledger = await openLedger(config.ledger);
    releasers.push({ name: 'ledger', release: () => ledger.close() });
    ledger.db.health.onFatal((e) => {
      logger.error({ code: e.code, ...e.details, err: e.message }, 'the ledger failed; stopping');
      ledgerFailed.abort(e);
    });
    // On PostgreSQL other coords may share the ledger: leases decide who drives which job, and live events
    // reach the SSE clients of every coord (events/relay.ts). PGlite has one coord by construction.
    let coordination: Coordination | undefined;
    if ('databaseUrl' in config.ledger) {
      coordination = await startCoordination({
        databaseUrl: config.ledger.databaseUrl,
        ledger,
        onError: (e) => logger.warn({ err: e.message }, 'coordination with the other coords'),
      });
      releasers.push({ name: 'coordination session', release: () => coordination!.close() });
      logger.info({ coord: coordination.session.opts.name }, 'coordinating with other coords through PostgreSQL');
    }
    const service = new CoordService({
      admins: { threshold: config.admins.threshold, keys: [...config.admins.keys] },
      clusterId: config.clusterId,
      ledger,
      // The start-up supervisor (optional) serves pool `default`; the key set's supervisors join by heartbeats.
      ...(config.supervisorUrl !== null
        ? { supervisor: new HttpSupervisorClient('sup-1', config.supervisorUrl, config.supervisorToken), pinnedSupervisor: { apiUrl: config.supervisorUrl } }
        : {}),
      supervisorKeys: supervisorKey ? [supervisorKey.publicKey] : [],
      supervisorToken: config.supervisorToken,
      nodeStore: ledger.nodeStore,
      logger,
      ...(coordination ? { leases: coordination.leases, onEventPublished: coordination.relay.published } : {}),
    });
    coordination?.relay.attach(service.events);
    await service.start();
    releasers.push({ name: 'coord service', release: () => service.stop() });
    const app = await buildApp({ service, apiToken: config.apiToken, bootImage: config.bootImage });
    releasers.push({ name: 'http server', release: () => app.close() });
    const url = await app.listen({ ...config.listen }); // fastify writes into its options; the config is frozen
    return { url };
  });
  if (ledgerFailed.signal.aborted) throw ledgerFailed.signal.reason as WritError;
  return clean;
}
