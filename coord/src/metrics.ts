// The coord's Prometheus metrics (GET /metrics) on prom-client, served after the service's hand-written
// counters in app.ts (which belong here too). Read when scraped: queue depth per node and jobs per status from
// the ledger, nodes per lifecycle state from the registry, ledger faults from its health, and job latency
// (admission to end) for the jobs that ended since the previous scrape. Each app has its own registry.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { JOB_STATUSES } from '@writ/protocol';
import { NODE_STATES } from './nodes/lifecycle.ts';
import type { CoordService } from './service.ts';

/** Latency buckets in seconds: a hello-world job takes tens of ms, a VM install many minutes. */
export const JOB_LATENCY_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];
/** At most this many finished jobs are read per scrape; the rest are read on the next ones. */
const FINISHED_PER_SCRAPE = 10_000;

export interface CoordMetrics {
  readonly registry: Registry;
  /** The exposition text and its content type. */
  render(): Promise<{ text: string; contentType: string }>;
}

export function coordMetrics(service: CoordService): CoordMetrics {
  const registry = new Registry();
  new Gauge({
    name: 'writ_queue_depth',
    help: 'Jobs recorded queued for a node and not started yet, per node.',
    labelNames: ['node'],
    registers: [registry],
    async collect() {
      this.reset();
      const rows = await service.ledger.db.query<{ node: string | null; n: number }>(
        "SELECT node, count(*)::int AS n FROM jobs WHERE status = 'queued' GROUP BY node",
      );
      for (const r of rows) this.set({ node: r.node ?? '' }, Number(r.n));
    },
  });

  new Gauge({
    name: 'writ_jobs',
    help: 'Jobs in the ledger per status (waiting for a node: admitted).',
    labelNames: ['status'],
    registers: [registry],
    async collect() {
      const rows = await service.ledger.db.query<{ status: string; n: number }>('SELECT status, count(*)::int AS n FROM jobs GROUP BY status');
      const by = new Map(rows.map((r) => [r.status, Number(r.n)]));
      for (const s of JOB_STATUSES) this.set({ status: s }, by.get(s) ?? 0);
    },
  });

  new Gauge({
    name: 'writ_nodes',
    help: 'Nodes per lifecycle state, and whether their runner is heard from (reachable).',
    labelNames: ['state', 'reachable'],
    registers: [registry],
    async collect() {
      this.reset();
      const nodes = await service.nodes.listNodes();
      for (const s of NODE_STATES) for (const r of ['true', 'false']) this.set({ state: s, reachable: r }, 0);
      for (const n of nodes) this.inc({ state: n.state, reachable: String(service.nodes.reachable(n)) });
    },
  });

  const health = service.ledger.db.health;
  new Gauge({
    name: 'writ_ledger_up',
    help: 'Whether the ledger takes writes (0 while a storage fault holds; details on /readyz).',
    registers: [registry],
    collect() {
      this.set(health.problem ? 0 : 1);
    },
  });
  let faultsReported = 0;
  new Counter({
    name: 'writ_ledger_errors_total',
    help: 'Storage faults the ledger met (failed writes: server gone, disk full, read-only or vanished).',
    registers: [registry],
    collect() {
      if (health.faults > faultsReported) this.inc(health.faults - faultsReported);
      faultsReported = Math.max(faultsReported, health.faults);
    },
  });

  // Jobs that ended after `since` (the previous scrape's newest end) are observed once each.
  let since = new Date();
  const seenAtSince = new Set<string>();
  new Histogram({
    name: 'writ_job_latency_seconds',
    help: 'From admission to the end of the job, per final status; jobs that ended since the coord started (a coord counts every job the shared ledger records).',
    labelNames: ['status'],
    buckets: JOB_LATENCY_BUCKETS_S,
    registers: [registry],
    async collect() {
      const rows = await service.ledger.db.query<{ id: string; status: string; created_at: Date | string; finished_at: Date | string }>(
        "SELECT id, status, created_at, finished_at FROM jobs WHERE finished_at >= $1 AND status IN ('succeeded', 'failed', 'refused') ORDER BY finished_at LIMIT $2",
        [since.toISOString(), FINISHED_PER_SCRAPE],
      );
      for (const r of rows) {
        const finished = new Date(r.finished_at);
        if (finished.getTime() === since.getTime() && seenAtSince.has(r.id)) continue;
        if (finished.getTime() > since.getTime()) {
          since = finished;
          seenAtSince.clear();
        }
        seenAtSince.add(r.id);
        this.observe({ status: r.status }, Math.max(0, (finished.getTime() - new Date(r.created_at).getTime()) / 1000));
      }
    },
  });

  return {
    registry,
    async render() {
      return { text: await registry.metrics(), contentType: registry.contentType };
    },
  };
}
