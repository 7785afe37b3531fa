// The ledger's host deployments: one row per deployment (its signed envelope and where the rollout stands),
// one per node of it (its switch job and how it went), and every step the controller took, in order. Same SQL
// on PGlite and PostgreSQL. Every state change is a compare-and-set on the row, so two coords sharing a
// ledger cannot both start the same node's switch; each step is written with its audit entry in one transaction.
import type { DeploymentNodeState, DeploymentState, HostDeploymentPayload } from '@writ/protocol';
import { appendAuditIn, type AuditInput } from '../ledger/audit.ts';
import type { Db, Queryable } from '../ledger/db.ts';

export const HOST_DEPLOYMENTS_MIGRATION_SQL = `
  CREATE TABLE host_deployments (
    id                 text PRIMARY KEY,
    envelope           text NOT NULL,
    envelope_sha256    text NOT NULL,
    signer_keyids      text[] NOT NULL,
    spec               jsonb NOT NULL,
    state              text NOT NULL CHECK (state IN ('running', 'paused', 'succeeded', 'failed', 'aborted')),
    reason             text,
    batch              integer NOT NULL DEFAULT 0 CHECK (batch >= 0),
    failures_accepted  integer NOT NULL DEFAULT 0 CHECK (failures_accepted >= 0),
    created_at         timestamptz(3) NOT NULL,
    updated_at         timestamptz(3) NOT NULL,
    finished_at        timestamptz(3)
  );
  CREATE INDEX host_deployments_active ON host_deployments (created_at) WHERE state IN ('running', 'paused', 'aborted');

  CREATE TABLE host_deployment_nodes (
    deployment_id  text NOT NULL REFERENCES host_deployments (id),
    node           text NOT NULL,
    position       integer NOT NULL CHECK (position >= 0),
    batch          integer NOT NULL CHECK (batch >= 0),
    job_id         text NOT NULL,
    job_envelope   text NOT NULL,
    state          text NOT NULL CHECK (state IN ('pending', 'draining', 'switching', 'switched', 'failed', 'skipped')),
    error_code     text,
    error_message  text,
    result         jsonb,
    started_at     timestamptz(3),
    finished_at    timestamptz(3),
    PRIMARY KEY (deployment_id, node)
  );

  CREATE TABLE host_deployment_steps (
    deployment_id  text NOT NULL REFERENCES host_deployments (id),
    seq            integer NOT NULL CHECK (seq >= 1),
    at             timestamptz(3) NOT NULL,
    kind           text NOT NULL,
    node           text,
    data           jsonb NOT NULL,
    PRIMARY KEY (deployment_id, seq)
  );
`;

export interface DeploymentRecord {
  id: string;
  envelope: string;
  envelopeSha256: string;
  signerKeyids: string[];
  spec: HostDeploymentPayload;
  state: DeploymentState;
  reason: string | null;
  batch: number;
  failuresAccepted: number;
  createdAt: Date;
  updatedAt: Date;
  finishedAt: Date | null;
}

export interface DeploymentNodeRecord {
  deploymentId: string;
  node: string;
  position: number;
  batch: number;
  jobId: string;
  jobEnvelope: string;
  state: DeploymentNodeState;
  errorCode: string | null;
  errorMessage: string | null;
  result: unknown;
  startedAt: Date | null;
  finishedAt: Date | null;
}

export interface DeploymentStep {
  seq: number;
  at: Date;
  kind: string;
  node: string | null;
  data: Record<string, unknown>;
}

/** A step to record: what happened, to which node, by whom (for the audit log). */
export interface StepInput {
  kind: string;
  node?: string;
  actor: string;
  data?: Record<string, unknown>;
}

interface DeploymentRow {
  id: string;
  envelope: string;
  envelope_sha256: string;
  signer_keyids: string[];
  spec: HostDeploymentPayload | string;
  state: DeploymentState;
  reason: string | null;
  batch: number;
  failures_accepted: number;
  created_at: Date | string;
  updated_at: Date | string;
  finished_at: Date | string | null;
}

interface NodeRow {
  deployment_id: string;
  node: string;
  position: number;
  batch: number;
  job_id: string;
  job_envelope: string;
  state: DeploymentNodeState;
  error_code: string | null;
  error_message: string | null;
  result: unknown;
  started_at: Date | string | null;
  finished_at: Date | string | null;
}

const json = <T>(v: T | string): T => (typeof v === 'string' ? (JSON.parse(v) as T) : v);
const date = (v: Date | string): Date => new Date(v);
const dateOrNull = (v: Date | string | null): Date | null => (v === null ? null : new Date(v));

function deploymentOf(r: DeploymentRow): DeploymentRecord {
  return {
    id: r.id,
    envelope: r.envelope,
    envelopeSha256: r.envelope_sha256,
    signerKeyids: r.signer_keyids,
    spec: json(r.spec),
    state: r.state,
    reason: r.reason,
    batch: Number(r.batch),
    failuresAccepted: Number(r.failures_accepted),
    createdAt: date(r.created_at),
    updatedAt: date(r.updated_at),
    finishedAt: dateOrNull(r.finished_at),
  };
}

function nodeOf(r: NodeRow): DeploymentNodeRecord {
  return {
    deploymentId: r.deployment_id,
    node: r.node,
    position: Number(r.position),
    batch: Number(r.batch),
    jobId: r.job_id,
    jobEnvelope: r.job_envelope,
    state: r.state,
    errorCode: r.error_code,
    errorMessage: r.error_message,
    result: r.result === null ? null : json(r.result),
    startedAt: dateOrNull(r.started_at),
    finishedAt: dateOrNull(r.finished_at),
  };
}

const NOW = "date_trunc('milliseconds', clock_timestamp())";

export class HostDeploymentStore {
  constructor(private readonly db: Db) {}

  /** Appends steps and their audit entries in the caller's transaction. */
  private async stepsIn(tx: Queryable, deploymentId: string, steps: readonly StepInput[]): Promise<void> {
    if (steps.length === 0) return;
    const [row] = await tx.query<{ seq: number | null }>('SELECT max(seq) AS seq FROM host_deployment_steps WHERE deployment_id = $1', [deploymentId]);
    let seq = Number(row?.seq ?? 0);
    for (const s of steps) {
      await tx.query(`INSERT INTO host_deployment_steps (deployment_id, seq, at, kind, node, data) VALUES ($1, $2, ${NOW}, $3, $4, $5)`, [
        deploymentId,
        ++seq,
        s.kind,
        s.node ?? null,
        JSON.stringify(s.data ?? {}),
      ]);
    }
    const audits: AuditInput[] = steps.map((s) => ({
      kind: `deploy.${s.kind}`,
      actor: s.actor,
      subject: s.node ? `${deploymentId}/${s.node}` : deploymentId,
      data: s.data ?? {},
    }));
    await appendAuditIn(tx, audits);
  }

  /** Records a new deployment with its nodes and the `created` step; false when the id exists already. */
  async create(
    d: {
      id: string;
      envelope: string;
      envelopeSha256: string;
      signerKeyids: string[];
      spec: HostDeploymentPayload;
      nodes: { node: string; jobId: string; jobEnvelope: string }[];
    },
    steps: readonly StepInput[],
  ): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const inserted = await tx.query(
        `INSERT INTO host_deployments (id, envelope, envelope_sha256, signer_keyids, spec, state, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'running', ${NOW}, ${NOW}) ON CONFLICT (id) DO NOTHING RETURNING id`,
        [d.id, d.envelope, d.envelopeSha256, d.signerKeyids, JSON.stringify(d.spec)],
      );
      if (inserted.length === 0) return false;
      const size = d.spec.batchSize;
      for (const [i, n] of d.nodes.entries()) {
        await tx.query(
          "INSERT INTO host_deployment_nodes (deployment_id, node, position, batch, job_id, job_envelope, state) VALUES ($1, $2, $3, $4, $5, $6, 'pending')",
          [d.id, n.node, i, Math.floor(i / size), n.jobId, n.jobEnvelope],
        );
      }
      await this.stepsIn(tx, d.id, steps);
      return true;
    });
  }

  async get(id: string): Promise<DeploymentRecord | null> {
    const [r] = await this.db.query<DeploymentRow>('SELECT * FROM host_deployments WHERE id = $1', [id]);
    return r ? deploymentOf(r) : null;
  }

  async list(): Promise<DeploymentRecord[]> {
    return (await this.db.query<DeploymentRow>('SELECT * FROM host_deployments ORDER BY created_at DESC, id LIMIT 200')).map(deploymentOf);
  }

  /** Deployments the controller still has to look at: running, or paused/aborted with a node in flight. */
  async active(): Promise<DeploymentRecord[]> {
    const rows = await this.db.query<DeploymentRow>(
      `SELECT d.* FROM host_deployments d WHERE d.state = 'running'
         OR (d.state IN ('paused', 'aborted') AND EXISTS (SELECT 1 FROM host_deployment_nodes n WHERE n.deployment_id = d.id AND n.state IN ('draining', 'switching')))
       ORDER BY d.created_at, d.id`,
    );
    return rows.map(deploymentOf);
  }

  async nodes(id: string): Promise<DeploymentNodeRecord[]> {
    return (await this.db.query<NodeRow>('SELECT * FROM host_deployment_nodes WHERE deployment_id = $1 ORDER BY position', [id])).map(nodeOf);
  }

  async steps(id: string, afterSeq = 0): Promise<DeploymentStep[]> {
    const rows = await this.db.query<{ seq: number; at: Date | string; kind: string; node: string | null; data: Record<string, unknown> | string }>(
      'SELECT seq, at, kind, node, data FROM host_deployment_steps WHERE deployment_id = $1 AND seq > $2 ORDER BY seq LIMIT 5000',
      [id, afterSeq],
    );
    return rows.map((r) => ({ seq: Number(r.seq), at: date(r.at), kind: r.kind, node: r.node, data: json(r.data) }));
  }

  /**
   * Moves one node from `from` to `to` (compare-and-set) with its step; false when it was not in `from`
   * (another coord, or an earlier tick, moved it first).
   */
  async moveNode(
    id: string,
    node: string,
    from: readonly DeploymentNodeState[],
    to: DeploymentNodeState,
    patch: { errorCode?: string | null; errorMessage?: string | null; result?: unknown; started?: boolean; finished?: boolean },
    step: StepInput,
  ): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const moved = await tx.query(
        `UPDATE host_deployment_nodes SET state = $3, error_code = COALESCE($5, error_code), error_message = COALESCE($6, error_message), result = COALESCE($7, result),
           started_at = CASE WHEN $8::boolean THEN ${NOW} ELSE started_at END, finished_at = CASE WHEN $9::boolean THEN ${NOW} ELSE finished_at END
         WHERE deployment_id = $1 AND node = $2 AND state = ANY($4::text[]) RETURNING node`,
        [
          id,
          node,
          to,
          [...from],
          patch.errorCode ?? null,
          patch.errorMessage ?? null,
          patch.result === undefined ? null : JSON.stringify(patch.result),
          patch.started ?? false,
          patch.finished ?? false,
        ],
      );
      if (moved.length === 0) return false;
      await tx.query(`UPDATE host_deployments SET updated_at = ${NOW} WHERE id = $1`, [id]);
      await this.stepsIn(tx, id, [step]);
      return true;
    });
  }

  /**
   * Changes the deployment (compare-and-set on its state and batch) with its steps; false when it was not
   * as expected. `skipPending` marks every pending node skipped (abort).
   */
  async update(
    id: string,
    expect: { state: readonly DeploymentState[]; batch?: number },
    patch: { state?: DeploymentState; reason?: string | null; batch?: number; failuresAccepted?: number; finished?: boolean; skipPending?: boolean },
    steps: readonly StepInput[],
  ): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      const updated = await tx.query(
        `UPDATE host_deployments SET state = COALESCE($3, state), reason = CASE WHEN $4::boolean THEN $5 ELSE reason END, batch = COALESCE($6, batch),
           failures_accepted = COALESCE($7, failures_accepted), finished_at = CASE WHEN $8::boolean THEN ${NOW} ELSE finished_at END, updated_at = ${NOW}
         WHERE id = $1 AND state = ANY($2::text[]) AND ($9::integer IS NULL OR batch = $9) RETURNING id`,
        [
          id,
          [...expect.state],
          patch.state ?? null,
          patch.reason !== undefined,
          patch.reason ?? null,
          patch.batch ?? null,
          patch.failuresAccepted ?? null,
          patch.finished ?? false,
          expect.batch ?? null,
        ],
      );
      if (updated.length === 0) return false;
      if (patch.skipPending)
        await tx.query(`UPDATE host_deployment_nodes SET state = 'skipped', finished_at = ${NOW} WHERE deployment_id = $1 AND state = 'pending'`, [id]);
      await this.stepsIn(tx, id, steps);
      return true;
    });
  }

  /** Jobs other than `exceptJob` that the ledger still has unfinished on `node` (what draining waits for). */
  async otherUnfinishedJobs(node: string, exceptJob: string): Promise<number> {
    const [r] = await this.db.query<{ n: number | string }>("SELECT count(*) AS n FROM jobs WHERE node = $1 AND id <> $2 AND status IN ('queued', 'running')", [
      node,
      exceptJob,
    ]);
    return Number(r?.n ?? 0);
  }
}
