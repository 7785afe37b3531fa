// Versioned schema migrations, the same SQL for PGlite and PostgreSQL. Append new versions at the end; never
// edit an applied one (its checksum is stored and checked at every start).
import { sha256Hex, WritError } from '@writ/protocol';
import { KEYSETS_MIGRATION_SQL, NODES_MIGRATION_SQL } from '../nodes/sql-store.ts';
import { SUPERVISORS_MIGRATION_SQL } from '../federation/store.ts';
import { ENROLL_MIGRATION_SQL } from '../enroll/store.ts';
import { HOST_DEPLOYMENTS_MIGRATION_SQL } from '../hosts/store.ts';
import { FLOWS_MIGRATION_SQL } from '../flows/store.ts';
import { RUNNER_BATCHES_MIGRATION_SQL } from './batches.ts';
import type { Db } from './db.ts';

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

const JOB_STATUSES = `('admitted', 'queued', 'running', 'succeeded', 'failed', 'refused')`;

export const MIGRATIONS: readonly Migration[] = Object.freeze([
  {
    version: 1,
    name: 'jobs, attempts, events, authorised keys, audit log',
    // Timestamps keep millisecond precision so a JS Date holds them exactly: pagination cursors and the
    // audit hash both depend on reading back the value that was written.
    sql: `
      CREATE TABLE jobs (
        id               text PRIMARY KEY,
        envelope         text NOT NULL,
        envelope_sha256  text NOT NULL,
        signer_keyids    text[] NOT NULL,
        target           jsonb NOT NULL,
        node             text,
        caps             text[] NOT NULL,
        status           text NOT NULL CHECK (status IN ${JOB_STATUSES}),
        attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        max_attempts     integer NOT NULL CHECK (max_attempts >= 1),
        result           jsonb,
        error_code       text,
        error_message    text,
        exp              timestamptz(3) NOT NULL,
        created_at       timestamptz(3) NOT NULL,
        updated_at       timestamptz(3) NOT NULL,
        finished_at      timestamptz(3),
        event_seq        integer NOT NULL DEFAULT 0,
        log_events       integer NOT NULL DEFAULT 0
      );
      CREATE INDEX jobs_by_created ON jobs (created_at, id);
      CREATE INDEX jobs_by_status ON jobs (status, created_at, id);
      CREATE INDEX jobs_by_node ON jobs (node, created_at, id);
      CREATE INDEX jobs_unfinished ON jobs (updated_at) WHERE status IN ('admitted', 'queued', 'running');

      CREATE TABLE job_attempts (
        job_id       text NOT NULL REFERENCES jobs (id),
        attempt      integer NOT NULL CHECK (attempt >= 1),
        node         text NOT NULL,
        started_at   timestamptz(3) NOT NULL,
        finished_at  timestamptz(3),
        outcome      text NOT NULL CHECK (outcome IN ('running', 'succeeded', 'failed')),
        error_code   text,
        PRIMARY KEY (job_id, attempt)
      );

      CREATE TABLE job_events (
        job_id   text NOT NULL REFERENCES jobs (id),
        seq      integer NOT NULL CHECK (seq >= 1),
        at       timestamptz(3) NOT NULL,
        type     text NOT NULL CHECK (type IN ('status', 'log', 'security')),
        level    text,
        message  text NOT NULL,
        data     jsonb,
        PRIMARY KEY (job_id, seq)
      );

      CREATE TABLE authorized_keys (
        keyid          text PRIMARY KEY,
        public_key     text NOT NULL,
        caps           text[] NOT NULL,
        nodes          text[] NOT NULL,
        labels         jsonb NOT NULL,
        comment        text NOT NULL DEFAULT '',
        created_at     timestamptz(3) NOT NULL,
        updated_at     timestamptz(3) NOT NULL,
        revoked_at     timestamptz(3),
        revoke_reason  text
      );

      CREATE TABLE audit_log (
        seq        bigint PRIMARY KEY CHECK (seq >= 1),
        at         timestamptz(3) NOT NULL,
        kind       text NOT NULL,
        actor      text NOT NULL,
        subject    text NOT NULL,
        data       jsonb NOT NULL,
        prev_hash  text NOT NULL,
        hash       text NOT NULL
      );
      -- The head names the last entry: it is the row every append locks (so two appends never fork the
      -- chain), and it lets verification notice entries cut off the end.
      CREATE TABLE audit_head (
        id    boolean PRIMARY KEY DEFAULT true CHECK (id),
        seq   bigint NOT NULL,
        hash  text NOT NULL
      );
      INSERT INTO audit_head (id, seq, hash) VALUES (true, 0, '${'0'.repeat(64)}');

      -- Append-only by construction: ordinary UPDATE, DELETE and TRUNCATE are refused. Someone who can
      -- drop the trigger can still edit rows; verifyAudit() is what detects that.
      CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
      END;
      $$;
      CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
      CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
    `,
  },
  // The node registry and key-set store own their SQL (coord/src/nodes/sql-store.ts); the ledger orders it.
  { version: 2, name: 'nodes, node transitions, registration challenges', sql: NODES_MIGRATION_SQL },
  { version: 3, name: 'signed key sets', sql: KEYSETS_MIGRATION_SQL },
  // Signed key sets (version 3) replaced the interim list of authorised keys.
  { version: 4, name: 'drop the interim authorised keys', sql: 'DROP TABLE authorized_keys;' },
  // Attempt numbers are assigned by the ledger when it dispatches (R3): an attempt exists from then on,
  // queued until a runner reports it running, and superseded when a newer one replaces it unfinished.
  {
    version: 5,
    name: 'attempts assigned at dispatch: queued and superseded outcomes',
    sql: `
      ALTER TABLE job_attempts ALTER COLUMN started_at DROP NOT NULL;
      ALTER TABLE job_attempts ADD COLUMN dispatched_at timestamptz(3);
      ALTER TABLE job_attempts DROP CONSTRAINT job_attempts_outcome_check;
      ALTER TABLE job_attempts ADD CONSTRAINT job_attempts_outcome_check CHECK (outcome IN ('queued', 'running', 'succeeded', 'failed', 'superseded'));
    `,
  },
  { version: 6, name: 'supervisors (federation) and node pools', sql: SUPERVISORS_MIGRATION_SQL },
  { version: 7, name: 'host deployments, their nodes and steps', sql: HOST_DEPLOYMENTS_MIGRATION_SQL },
  { version: 8, name: 'enrollment: rules, classes, assignments, bootstrap exchanges, boot answers', sql: ENROLL_MIGRATION_SQL },
  { version: 9, name: 'flows: flows, their steps, step jobs and events', sql: FLOWS_MIGRATION_SQL },
  { version: 10, name: 'runner event batches applied (a redelivered report applies nothing twice)', sql: RUNNER_BATCHES_MIGRATION_SQL },
]);

/** An arbitrary constant: the advisory lock that keeps two coords from migrating the same database at once. */
const MIGRATION_LOCK = 0x57524954; // "WRIT"

export function checksumOf(m: Migration): string {
  return sha256Hex(m.sql);
}

/**
 * Brings the schema to the newest version this code knows, in one transaction. Refuses a database that is
 * ahead of the code, or whose applied migrations differ from the code's (CONFIG_INVALID).
 * Returns the versions it applied (empty when the schema was current).
 */
export async function migrate(db: Db, migrations: readonly Migration[] = MIGRATIONS): Promise<number[]> {
  const known = migrations.at(-1)?.version ?? 0;
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await tx.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version     integer PRIMARY KEY,
      name        text NOT NULL,
      checksum    text NOT NULL,
      applied_at  timestamptz(3) NOT NULL DEFAULT now()
    )`);
    const applied = await tx.query<{ version: number; checksum: string }>('SELECT version, checksum FROM schema_migrations ORDER BY version');
    const newest = applied.at(-1)?.version ?? 0;
    if (newest > known) {
      throw new WritError(
        'CONFIG_INVALID',
        `the ledger schema is at version ${newest}, newer than this coord knows (${known}); upgrade the coord or use another database`,
        { schemaVersion: newest, knownVersion: known },
      );
    }
    for (const row of applied) {
      const m = migrations.find((x) => x.version === row.version);
      if (!m || checksumOf(m) !== row.checksum) {
        throw new WritError('CONFIG_INVALID', `ledger migration ${row.version} as applied differs from this coord's copy; the schema history was edited`, {
          version: row.version,
        });
      }
    }
    const done: number[] = [];
    for (const m of migrations) {
      if (m.version <= newest) continue;
      await tx.exec(m.sql);
      await tx.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [m.version, m.name, checksumOf(m)]);
      done.push(m.version);
    }
    return done;
  });
}

export async function schemaVersion(db: Db): Promise<number> {
  const rows = await db.query<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations');
  return Number(rows[0]?.v ?? 0);
}
