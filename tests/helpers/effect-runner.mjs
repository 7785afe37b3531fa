#!/usr/bin/env node
// A node daemon in its own process with the network SAL configured (prefix from WRIT_TEST_NET_PREFIX), so
// scripts can make real, countable effects (network namespaces). Used by the exactly-once tests and the
// history check to kill, pause and restart runners. Settings come as JSON in WRIT_TEST_RUNNER; the journal
// failpoint, if any, in WRIT_FAILPOINT. Prints one JSON line {"ready":true,...} once it takes jobs.
import { register } from 'tsx/esm/api';

register();
const { startNodeDaemon, salHostTable } = await import('@writ/runner');
const cfg = JSON.parse(process.env.WRIT_TEST_RUNNER ?? '{}');
const log = (level) => (obj, msg) => process.stderr.write(`${JSON.stringify({ level, pid: process.pid, text: msg, ...obj })}\n`);
// Each host call is logged (with the job and attempt) when it starts and when it returns.
function traced(table) {
  for (const [name, fn] of table) {
    table.set(name, {
      async run(args, job) {
        log('info')({ capability: name, jobId: job.jobId, attempt: job.attempt }, 'host call');
        const out = await fn.run(args, job);
        log('info')({ capability: name, jobId: job.jobId, attempt: job.attempt }, 'host call returned');
        return out;
      },
    });
  }
  return table;
}
const daemon = await startNodeDaemon({
  nodeId: cfg.nodeId,
  labels: cfg.labels ?? {},
  clusterId: cfg.clusterId,
  admins: cfg.admins,
  stateDir: cfg.stateDir,
  redisUrl: cfg.redisUrl,
  coordUrl: cfg.coordUrl,
  heartbeatMs: cfg.heartbeatMs ?? 500,
  lockDurationMs: cfg.lockDurationMs ?? 2000,
  stalledIntervalMs: cfg.stalledIntervalMs ?? 500,
  concurrency: cfg.concurrency ?? 2,
  hostTable: traced(salHostTable({ net: { prefix: process.env.WRIT_TEST_NET_PREFIX ?? 'wx' } })),
  logger: { info: log('info'), warn: log('warn'), error: log('error') },
});
process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid, keyid: daemon.identity.key.keyid })}\n`);
const stop = async () => {
  await daemon.stop(cfg.graceMs ?? 5000);
  process.exit(0);
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
