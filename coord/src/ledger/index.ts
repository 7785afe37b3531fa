// The coord's ledger: the source of truth for jobs, their events and attempts, nodes, signed key sets and
// the audit log. PGlite by default (embedded, in a folder or in memory), PostgreSQL when DATABASE_URL is given;
// the same SQL and migrations serve both. See docs/ledger.md.
import type { RunnerEvent } from '@writ/protocol';
import { openDb, type Db, type Queryable } from './db.ts';
import { appendAudit, appendAuditIn, tailAudit, verifyAudit, type AuditEntry, type AuditInput, type AuditVerification } from './audit.ts';
import {
  DEFAULT_JOB_LIMITS,
  admitJobsIn,
  appendJobEvent,
  getJob,
  insertJob,
  listAttempts,
  listExpiredWaiting,
  listJobEvents,
  listJobs,
  listUnfinished,
  dispatchAttemptIn,
  recordAttempt,
  touchJob,
  transitionJob,
  transitionJobIn,
  type Admission,
  type AdmissionOutcome,
  type DispatchAttemptOptions,
  type AttemptOutcome,
  type JobAttempt,
  type JobEvent,
  type JobEventInput,
  type JobLimits,
  type JobRecord,
  type JobStatus,
  type ListJobsQuery,
  type NewJob,
  type TransitionPatch,
  type TransitionedJob,
} from './jobs.ts';
import { migrate, schemaVersion } from './migrations.ts';
import { applyRunnerEventsIn, type AppliedEvents } from './runner-events.ts';
import { SqlKeySetStore, SqlNodeStore } from '../nodes/sql-store.ts';

export type { Db, Queryable } from './db.ts';
export type { AuditEntry, AuditInput, AuditVerification } from './audit.ts';
export { auditHash, auditPreimage, GENESIS_HASH } from './audit.ts';
export type {
  Admission,
  AdmissionOutcome,
  AttemptOutcome,
  DispatchAttemptOptions,
  JobAttempt,
  JobEvent,
  JobEventInput,
  JobEventType,
  JobLimits,
  JobRecord,
  JobStatus,
  ListJobsQuery,
  NewJob,
  TransitionPatch,
  TransitionedJob,
} from './jobs.ts';
export { DEFAULT_JOB_LIMITS, JOB_STATUSES, TERMINAL_STATUSES, decideTransition } from './jobs.ts';
export { MIGRATIONS, migrate, schemaVersion, type Migration } from './migrations.ts';
export type { AppliedEvents, RecordedEvent, Retry } from './runner-events.ts';

/**
 * The writes of one transaction (a supervisor report, a group of admissions). Audit entries are collected
 * and appended at the end under one lock of the chain head.
 */
export interface LedgerWriter {
  transitionJob(id: string, to: JobStatus, patch?: TransitionPatch): Promise<TransitionedJob | null>;
  /** Records verified runner events with a few set-based statements; returns what was recorded, in order. */
  applyRunnerEvents(events: readonly RunnerEvent[]): Promise<AppliedEvents>;
  /** Assigns the next attempt of an unfinished job and records it queued for `node` (jobs.ts dispatchAttemptIn). */
  dispatchAttempt(id: string, node: string, opts?: DispatchAttemptOptions): Promise<TransitionedJob | null>;
  audit(input: AuditInput): void;
  /** The transaction itself, for writes other modules own (flows) that must commit with these. */
  readonly tx: Queryable;
}

export interface LedgerOptions {
  /** PostgreSQL connection string (production). When absent, PGlite is used. */
  databaseUrl?: string;
  /** PGlite data folder; undefined keeps the ledger in memory. Ignored with `databaseUrl`. */
  dataDir?: string;
  /** pg Pool size (default 10). */
  poolMax?: number;
  /** Run PGlite on the calling thread instead of its own (see OpenDbOptions). */
  pgliteInProcess?: boolean;
  limits?: Partial<JobLimits>;
}

export class Ledger {
  private readonly limits: JobLimits;
  private readonly keySets: SqlKeySetStore;
  /** Nodes, their lifecycle transitions and registration challenges. */
  readonly nodeStore: SqlNodeStore;

  constructor(
    /** The database underneath, for tests and operational tooling; the service uses the methods. */
    readonly db: Db,
    limits: Partial<JobLimits> = {},
  ) {
    this.limits = Object.freeze({ ...DEFAULT_JOB_LIMITS, ...limits });
    this.keySets = new SqlKeySetStore(db);
    this.nodeStore = new SqlNodeStore(db);
  }

  /** The limits job writes are held to (for modules that write jobs in their own transactions). */
  get jobLimits(): JobLimits {
    return this.limits;
  }

  get engine(): Db['engine'] {
    return this.db.engine;
  }

  /** Readiness: resolves when the database answers a query. */
  async ping(): Promise<void> {
    await this.db.query('SELECT 1');
  }

  close(): Promise<void> {
    return this.db.close();
  }

  schemaVersion(): Promise<number> {
    return schemaVersion(this.db);
  }

  // ---- jobs
  insertJob(rec: NewJob): Promise<{ job: JobRecord; created: boolean }> {
    return insertJob(this.db, rec);
  }
  getJob(id: string): Promise<JobRecord | null> {
    return getJob(this.db, id);
  }
  listJobs(q: ListJobsQuery): Promise<{ jobs: JobRecord[]; nextCursor: string | null }> {
    return listJobs(this.db, q);
  }
  transitionJob(id: string, to: JobStatus, patch?: TransitionPatch): Promise<TransitionedJob | null> {
    return transitionJob(this.db, this.limits, id, to, patch);
  }
  /** Assigns the next attempt of an unfinished job, queued for `node`, in its own transaction. */
  dispatchAttempt(id: string, node: string, opts?: DispatchAttemptOptions): Promise<TransitionedJob | null> {
    return this.db.transaction((tx) => dispatchAttemptIn(tx, this.limits, id, node, opts));
  }
  recordAttempt(jobId: string, attempt: number, node: string, outcome: AttemptOutcome, errorCode?: string): Promise<JobAttempt> {
    return recordAttempt(this.db, jobId, attempt, node, outcome, errorCode);
  }
  listAttempts(jobId: string): Promise<JobAttempt[]> {
    return listAttempts(this.db, jobId);
  }
  appendJobEvent(jobId: string, ev: JobEventInput): Promise<number> {
    return appendJobEvent(this.db, this.limits, jobId, ev);
  }
  listJobEvents(jobId: string, afterSeq: number, limit: number): Promise<JobEvent[]> {
    return listJobEvents(this.db, jobId, afterSeq, limit);
  }
  listUnfinished(q: { olderThanMs: number; limit?: number }): Promise<JobRecord[]> {
    return listUnfinished(this.db, q);
  }
  listExpiredWaiting(q: { limit?: number } = {}): Promise<JobRecord[]> {
    return listExpiredWaiting(this.db, q);
  }
  touchJob(id: string): Promise<boolean> {
    return touchJob(this.db, id);
  }

  /** Runs `fn`'s writes in one transaction; resolves after the commit, rejects (nothing written) when any write fails. */
  write<T>(fn: (w: LedgerWriter) => Promise<T>): Promise<T> {
    return this.db.transaction(async (tx) => {
      const audits: AuditInput[] = [];
      const out = await fn({
        transitionJob: (id, to, patch) => transitionJobIn(tx, this.limits, id, to, patch),
        applyRunnerEvents: (events) => applyRunnerEventsIn(tx, this.limits, events, (a) => void audits.push(a)),
        dispatchAttempt: (id, node, opts) => dispatchAttemptIn(tx, this.limits, id, node, opts),
        audit: (input) => void audits.push(input),
        tx,
      });
      await appendAuditIn(tx, audits);
      return out;
    });
  }

  /** Records a group of admissions and their audit entries in one transaction (group commit); outcomes in input order. */
  admitJobs(items: readonly Admission[], audits: (outcomes: AdmissionOutcome[]) => AuditInput[]): Promise<AdmissionOutcome[]> {
    return this.db.transaction(async (tx) => {
      const outcomes = await admitJobsIn(tx, this.limits, items);
      await appendAuditIn(tx, audits(outcomes));
      return outcomes;
    });
  }

  // ---- signed key sets (stored by the node package's store; the highest version is current)
  currentKeySet(): Promise<{ version: number; envelope: string } | null> {
    return this.keySets.current();
  }
  putKeySet(k: { version: number; envelope: string; signerKeyids: string[] }): Promise<void> {
    return this.keySets.put(k);
  }

  // ---- audit log
  appendAudit(input: AuditInput): Promise<AuditEntry> {
    return appendAudit(this.db, input);
  }
  verifyAudit(): Promise<AuditVerification> {
    return verifyAudit(this.db);
  }
  tailAudit(n: number): Promise<AuditEntry[]> {
    return tailAudit(this.db, n);
  }
}

/** Opens the database, brings its schema up to date (refusing one newer than this code) and returns the ledger. */
export async function openLedger(opts: LedgerOptions = {}): Promise<Ledger> {
  const db = await openDb(opts);
  try {
    await migrate(db);
  } catch (e) {
    await db.close().catch(() => {});
    throw e;
  }
  return new Ledger(db, opts.limits);
}
