// The ledger's node tables: nodes, their lifecycle transitions and pending registration challenges.
// Same SQL on PGlite and PostgreSQL. The schema is ledger migration 2 (NODES_MIGRATION_SQL).
import type { JsonValue, NodeHealth } from '@writ/protocol';
import type { Db, Queryable } from '../ledger/db.ts';
import type { NodeState } from './lifecycle.ts';
import type { HeartbeatRecord, NodeRecord, NodeStore, NodeTransitionRecord } from './registry.ts';

export const NODES_MIGRATION_SQL = `
  CREATE TABLE nodes (
    id                 text PRIMARY KEY,
    keyid              text NOT NULL DEFAULT '',
    public_key         text NOT NULL DEFAULT '',
    state              text NOT NULL,
    rescued_from       text,
    labels             jsonb NOT NULL,
    inventory          jsonb NOT NULL,
    version            text NOT NULL,
    registered_at      bigint NOT NULL,
    state_since        bigint NOT NULL,
    deadline_at        bigint,
    reason             text,
    last_heartbeat_at  bigint,
    last_seq           bigint NOT NULL DEFAULT 0,
    health             jsonb
  );
  CREATE INDEX nodes_by_keyid ON nodes (keyid) WHERE keyid <> '';

  CREATE TABLE node_transitions (
    node_id     text NOT NULL REFERENCES nodes (id),
    n           bigserial PRIMARY KEY,
    from_state  text,
    to_state    text NOT NULL,
    event       text NOT NULL,
    actor       text NOT NULL,
    reason      text NOT NULL,
    at          bigint NOT NULL
  );
  CREATE INDEX node_transitions_by_node ON node_transitions (node_id, n);

  CREATE TABLE node_challenges (
    keyid       text PRIMARY KEY,
    challenge   text NOT NULL,
    node_id     text NOT NULL,
    public_key  text NOT NULL,
    expires_at  bigint NOT NULL
  );
`;

interface NodeRow {
  id: string;
  keyid: string;
  public_key: string;
  state: string;
  rescued_from: string | null;
  labels: Record<string, string>;
  pool: string;
  inventory: JsonValue;
  version: string;
  registered_at: string | number;
  state_since: string | number;
  deadline_at: string | number | null;
  reason: string | null;
  last_heartbeat_at: string | number | null;
  last_seq: string | number;
  health: NodeHealth | null;
}

const num = (v: string | number | null): number | null => (v === null ? null : Number(v));

function fromRow(r: NodeRow): NodeRecord {
  return {
    id: r.id,
    keyid: r.keyid,
    publicKey: r.public_key,
    state: r.state as NodeState,
    rescuedFrom: r.rescued_from as NodeState | null,
    labels: r.labels,
    pool: r.pool,
    inventory: r.inventory,
    version: r.version,
    registeredAt: Number(r.registered_at),
    stateSince: Number(r.state_since),
    deadlineAt: num(r.deadline_at),
    reason: r.reason,
    lastHeartbeatAt: num(r.last_heartbeat_at),
    lastSeq: Number(r.last_seq),
    health: r.health,
  };
}

export class SqlNodeStore implements NodeStore {
  constructor(private readonly db: Db) {}

  async putChallenge(c: { challenge: string; nodeId: string; keyid: string; publicKey: string; expiresAt: number }): Promise<void> {
    await this.db.query(
      `INSERT INTO node_challenges (keyid, challenge, node_id, public_key, expires_at) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (keyid) DO UPDATE SET challenge = EXCLUDED.challenge, node_id = EXCLUDED.node_id, public_key = EXCLUDED.public_key, expires_at = EXCLUDED.expires_at`,
      [c.keyid, c.challenge, c.nodeId, c.publicKey, c.expiresAt],
    );
  }

  async purgeChallenges(at: number): Promise<number> {
    return (await this.db.query('DELETE FROM node_challenges WHERE expires_at < $1 RETURNING keyid', [at])).length;
  }

  async takeChallenge(keyid: string) {
    const rows = await this.db.query<{ challenge: string; node_id: string; public_key: string; expires_at: string }>(
      'DELETE FROM node_challenges WHERE keyid = $1 RETURNING challenge, node_id, public_key, expires_at',
      [keyid],
    );
    const r = rows[0];
    return r ? { challenge: r.challenge, nodeId: r.node_id, publicKey: r.public_key, expiresAt: Number(r.expires_at) } : null;
  }

  async getNode(id: string): Promise<NodeRecord | null> {
    const rows = await this.db.query<NodeRow>('SELECT * FROM nodes WHERE id = $1', [id]);
    return rows[0] ? fromRow(rows[0]) : null;
  }

  async getNodeByKeyid(keyid: string): Promise<NodeRecord | null> {
    if (!keyid) return null;
    const rows = await this.db.query<NodeRow>('SELECT * FROM nodes WHERE keyid = $1', [keyid]);
    return rows[0] ? fromRow(rows[0]) : null;
  }

  async listNodes(via?: Queryable): Promise<NodeRecord[]> {
    return (await (via ?? this.db).query<NodeRow>('SELECT * FROM nodes ORDER BY id')).map(fromRow);
  }

  async insertNode(n: NodeRecord, t: NodeTransitionRecord | readonly NodeTransitionRecord[]): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.query(
        `INSERT INTO nodes (id, keyid, public_key, state, rescued_from, labels, inventory, version, registered_at, state_since, deadline_at, reason, last_heartbeat_at, last_seq, health, pool)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         ON CONFLICT (id) DO UPDATE SET keyid = EXCLUDED.keyid, public_key = EXCLUDED.public_key`,
        [
          n.id,
          n.keyid,
          n.publicKey,
          n.state,
          n.rescuedFrom,
          JSON.stringify(n.labels),
          JSON.stringify(n.inventory),
          n.version,
          n.registeredAt,
          n.stateSince,
          n.deadlineAt,
          n.reason,
          n.lastHeartbeatAt,
          n.lastSeq,
          n.health === null ? null : JSON.stringify(n.health),
          n.pool,
        ],
      );
      for (const x of Array.isArray(t) ? t : [t]) {
        await tx.query('INSERT INTO node_transitions (node_id, from_state, to_state, event, actor, reason, at) VALUES ($1, $2, $3, $4, $5, $6, $7)', [
          x.nodeId,
          x.from,
          x.to,
          x.event,
          x.actor,
          x.reason,
          x.at,
        ]);
      }
    });
  }

  async updateRegistration(id: string, patch: { labels: Record<string, string>; inventory: JsonValue; version: string }): Promise<void> {
    await this.db.query('UPDATE nodes SET labels = $2, inventory = $3, version = $4 WHERE id = $1', [
      id,
      JSON.stringify(patch.labels),
      JSON.stringify(patch.inventory),
      patch.version,
    ]);
  }

  async recordHeartbeat(id: string, seq: number, at: number, health: NodeHealth): Promise<boolean> {
    const rows = await this.db.query('UPDATE nodes SET last_seq = $2, last_heartbeat_at = $3, health = $4 WHERE id = $1 AND last_seq < $2 RETURNING id', [
      id,
      seq,
      at,
      JSON.stringify(health),
    ]);
    return rows.length === 1;
  }

  async recordHeartbeats(beats: readonly HeartbeatRecord[]): Promise<number> {
    if (beats.length === 0) return 0;
    // One JSON document rather than parallel arrays: PGlite and pg encode a JSON string parameter the same way.
    const rows = await this.db.query(
      `UPDATE nodes AS n SET last_seq = b.seq, last_heartbeat_at = b.at, health = b.health
       FROM jsonb_to_recordset($1::jsonb) AS b(id text, keyid text, seq bigint, at bigint, health jsonb)
       WHERE n.id = b.id AND n.keyid = b.keyid AND n.last_seq < b.seq RETURNING n.id`,
      [JSON.stringify(beats)],
    );
    return rows.length;
  }

  async setState(
    id: string,
    from: NodeState,
    to: NodeState,
    patch: { rescuedFrom: NodeState | null; deadlineAt: number | null; reason: string | null; at: number },
    t: NodeTransitionRecord,
  ): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const rows = await tx.query(
        `UPDATE nodes SET state = $3, rescued_from = CASE WHEN $3 = 'rescue' THEN $4 ELSE NULL END, deadline_at = $5, reason = $6, state_since = $7
         WHERE id = $1 AND state = $2 RETURNING id`,
        [id, from, to, patch.rescuedFrom, patch.deadlineAt, patch.reason, patch.at],
      );
      if (rows.length !== 1) return false;
      await tx.query('INSERT INTO node_transitions (node_id, from_state, to_state, event, actor, reason, at) VALUES ($1, $2, $3, $4, $5, $6, $7)', [
        t.nodeId,
        t.from,
        t.to,
        t.event,
        t.actor,
        t.reason,
        t.at,
      ]);
      return true;
    });
  }

  async clearKey(id: string): Promise<void> {
    await this.db.transaction(async (tx) => {
      await tx.query("UPDATE nodes SET keyid = '', public_key = '', last_seq = 0 WHERE id = $1", [id]);
      await tx.query(
        "INSERT INTO node_transitions (node_id, from_state, to_state, event, actor, reason, at) SELECT id, state, state, 'rekey', 'operator', 'key forgotten; awaiting a new identity', $2 FROM nodes WHERE id = $1",
        [id, Date.now()],
      );
    });
  }

  async assign(id: string, patch: { labels: Record<string, string>; pool: string }): Promise<void> {
    await this.db.query('UPDATE nodes SET labels = $2, pool = $3 WHERE id = $1', [id, JSON.stringify(patch.labels), patch.pool]);
  }

  async listTransitions(id: string): Promise<NodeTransitionRecord[]> {
    const rows = await this.db.query<{
      node_id: string;
      from_state: string | null;
      to_state: string;
      event: string;
      actor: string;
      reason: string;
      at: string;
    }>('SELECT * FROM node_transitions WHERE node_id = $1 ORDER BY n', [id]);
    return rows.map((r) => ({
      nodeId: r.node_id,
      from: r.from_state as NodeState | null,
      to: r.to_state as NodeState,
      event: r.event,
      actor: r.actor,
      reason: r.reason,
      at: Number(r.at),
    }));
  }
}

export const KEYSETS_MIGRATION_SQL = `
  CREATE TABLE keysets (
    version        integer PRIMARY KEY CHECK (version >= 1),
    envelope       text NOT NULL,
    signer_keyids  text[] NOT NULL,
    published_at   timestamptz(3) NOT NULL DEFAULT now()
  );
`;

/** Signed key sets as published; the highest version is current. */
export class SqlKeySetStore {
  constructor(private readonly db: Db) {}
  async current(): Promise<{ version: number; envelope: string } | null> {
    const rows = await this.db.query<{ version: number; envelope: string }>('SELECT version, envelope FROM keysets ORDER BY version DESC LIMIT 1');
    return rows[0] ? { version: Number(rows[0].version), envelope: rows[0].envelope } : null;
  }
  async put(k: { version: number; envelope: string; signerKeyids: string[] }): Promise<void> {
    await this.db.query('INSERT INTO keysets (version, envelope, signer_keyids) VALUES ($1, $2, $3) ON CONFLICT (version) DO NOTHING', [
      k.version,
      k.envelope,
      k.signerKeyids,
    ]);
  }
}

/** Registered public keys (base64url) of these nodes, in the caller's transaction; nodes without one are absent. */
export async function nodePublicKeysIn(q: Queryable, ids: readonly string[]): Promise<Map<string, string>> {
  if (ids.length === 0) return new Map();
  const rows = await q.query<{ id: string; public_key: string }>("SELECT id, public_key FROM nodes WHERE id = ANY($1::text[]) AND public_key <> ''", [ids]);
  return new Map(rows.map((r) => [r.id, r.public_key]));
}
