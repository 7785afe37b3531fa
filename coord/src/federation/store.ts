// The ledger's supervisor table: every supervisor that announced itself with a signed heartbeat, what it said
// last, and whether it is live or gone. Same SQL on PGlite and PostgreSQL; several coords share the rows, so a
// state change is a compare-and-set and liveness is judged from `last_heartbeat_at`, never from one coord's memory.
import type { Queryable } from '../ledger/db.ts';

/**
 * Ledger migration: the supervisors table, and each node's pool (enrollment assigns it; until then every
 * node is in pool `default`, which the one supervisor of `writ dev` serves).
 */
export const SUPERVISORS_MIGRATION_SQL = `
  CREATE TABLE supervisors (
    id                 text PRIMARY KEY,
    keyid              text NOT NULL,
    api_url            text NOT NULL,
    pools              text[] NOT NULL,
    queue_depth        bigint NOT NULL,
    capacity           bigint NOT NULL,
    redis_ok           boolean NOT NULL,
    redis_error        text,
    runner_redis       text,
    interval_ms        integer NOT NULL CHECK (interval_ms > 0),
    last_ts            bigint NOT NULL,
    first_seen_at      bigint NOT NULL,
    last_heartbeat_at  bigint NOT NULL,
    state              text NOT NULL CHECK (state IN ('live', 'gone')),
    state_since        bigint NOT NULL
  );
  ALTER TABLE nodes ADD COLUMN pool text NOT NULL DEFAULT 'default';
  CREATE INDEX nodes_by_pool ON nodes (pool);
`;

export type SupervisorState = 'live' | 'gone';

export interface SupervisorRecord {
  id: string;
  keyid: string;
  apiUrl: string;
  pools: string[];
  queueDepth: number;
  capacity: number;
  redisOk: boolean;
  redisError: string | null;
  /** The Redis address runners of its pools use (no credentials), as the supervisor announced it. */
  runnerRedis: string | null;
  intervalMs: number;
  /** The timestamp inside the newest heartbeat accepted (ms): a heartbeat not newer is a replay. */
  lastTs: number;
  firstSeenAt: number;
  lastHeartbeatAt: number;
  state: SupervisorState;
  stateSince: number;
}

interface SupervisorRow {
  id: string;
  keyid: string;
  api_url: string;
  pools: string[];
  queue_depth: string | number;
  capacity: string | number;
  redis_ok: boolean;
  redis_error: string | null;
  runner_redis: string | null;
  interval_ms: number;
  last_ts: string | number;
  first_seen_at: string | number;
  last_heartbeat_at: string | number;
  state: string;
  state_since: string | number;
}

function fromRow(r: SupervisorRow): SupervisorRecord {
  return {
    id: r.id,
    keyid: r.keyid,
    apiUrl: r.api_url,
    pools: r.pools,
    queueDepth: Number(r.queue_depth),
    capacity: Number(r.capacity),
    redisOk: r.redis_ok,
    redisError: r.redis_error,
    runnerRedis: r.runner_redis,
    intervalMs: Number(r.interval_ms),
    lastTs: Number(r.last_ts),
    firstSeenAt: Number(r.first_seen_at),
    lastHeartbeatAt: Number(r.last_heartbeat_at),
    state: r.state as SupervisorState,
    stateSince: Number(r.state_since),
  };
}

export class SqlSupervisorStore {
  constructor(private readonly db: Queryable) {}

  async list(): Promise<SupervisorRecord[]> {
    return (await this.db.query<SupervisorRow>('SELECT * FROM supervisors ORDER BY id')).map(fromRow);
  }

  async get(id: string): Promise<SupervisorRecord | null> {
    const rows = await this.db.query<SupervisorRow>('SELECT * FROM supervisors WHERE id = $1', [id]);
    return rows[0] ? fromRow(rows[0]) : null;
  }

  /**
   * Records a heartbeat when it is newer than the last one accepted (`last_ts`), whichever coord took that one.
   * Returns the row before and after, or null when the heartbeat was not newer (a replay, or one overtaken).
   */
  async recordHeartbeat(
    s: Omit<SupervisorRecord, 'firstSeenAt' | 'state' | 'stateSince'>,
  ): Promise<{ before: SupervisorRecord | null; after: SupervisorRecord } | null> {
    const before = await this.get(s.id);
    const rows = await this.db.query<SupervisorRow>(
      `INSERT INTO supervisors AS s (id, keyid, api_url, pools, queue_depth, capacity, redis_ok, redis_error, runner_redis, interval_ms, last_ts, first_seen_at, last_heartbeat_at, state, state_since)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, 'live', $12)
       ON CONFLICT (id) DO UPDATE SET keyid = EXCLUDED.keyid, api_url = EXCLUDED.api_url, pools = EXCLUDED.pools, queue_depth = EXCLUDED.queue_depth,
         capacity = EXCLUDED.capacity, redis_ok = EXCLUDED.redis_ok, redis_error = EXCLUDED.redis_error, runner_redis = EXCLUDED.runner_redis,
         interval_ms = EXCLUDED.interval_ms, last_ts = EXCLUDED.last_ts, last_heartbeat_at = EXCLUDED.last_heartbeat_at,
         state = 'live', state_since = CASE WHEN s.state = 'live' THEN s.state_since ELSE EXCLUDED.state_since END
       WHERE s.last_ts < EXCLUDED.last_ts
       RETURNING *`,
      [s.id, s.keyid, s.apiUrl, s.pools, s.queueDepth, s.capacity, s.redisOk, s.redisError, s.runnerRedis, s.intervalMs, s.lastTs, s.lastHeartbeatAt],
    );
    return rows[0] ? { before, after: fromRow(rows[0]) } : null;
  }

  /**
   * Marks live supervisors silent since before `silentBefore(row)` as gone: one conditional UPDATE, so with
   * several coords on one ledger exactly one of them records each departure. Returns those it marked.
   */
  async markGone(at: number, missedBeats: number): Promise<SupervisorRecord[]> {
    const rows = await this.db.query<SupervisorRow>(
      `UPDATE supervisors SET state = 'gone', state_since = $1
       WHERE state = 'live' AND last_heartbeat_at < $1 - $2::bigint * interval_ms RETURNING *`,
      [at, missedBeats],
    );
    return rows.map(fromRow);
  }
}
