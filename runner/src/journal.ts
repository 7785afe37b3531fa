// The node's effect journal (R2, R3, T15): one append-only, fsync'd file per job under the runner's state
// dir, `journal/<job id>.jsonl`. It records, in order:
//   start   an attempt of the job began on this node (attempt number from the ledger, execution id);
//   intent  an effect is about to be applied (step number, capability, sha256 of its arguments);
//   done    a host call returned (its result), or failed (its error);
//   end     the attempt's outcome.
// What it gives:
//   - An attempt starts at most once on a node: a queue entry for an attempt the journal shows started is a
//     replay, refused (T15). A job the journal shows finished is never run again.
//   - Fencing: before every effect the execution checks that the newest `start` in the file is its own; an
//     execution paused past its lock (SIGSTOP) whose job was started again applies nothing when resumed.
//   - Exactly-once effects: a re-run replays the results of steps journaled as done instead of calling the
//     SAL again, and calls it again only for a step with an intent and no result (the SAL operations are
//     idempotent, so that call finds what the first one made). Reads are journaled too, so a re-run sees the
//     same values and makes the same calls.
// Several runner processes of one node may share the folder: appends are single O_APPEND writes and every
// check reads the file again, so each sees the others' records.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { WritError, isEffect, isErrorCode, toErrorJSON, type ErrorJSON, type JsonValue } from '@writ/protocol';

export type JournalOutcome = { ok: true; value: JsonValue } | { ok: false; error: ErrorJSON };

export type JournalRecord =
  | { t: 'start'; attempt: number; exec: string; exp: number; ts: number }
  | { t: 'intent'; attempt: number; exec: string; step: number; op: string; args: string; ts: number }
  | { t: 'done'; attempt: number; exec: string; step: number; op: string; args: string; result: JsonValue; ts: number }
  | { t: 'failed'; attempt: number; exec: string; step: number; op: string; args: string; error: ErrorJSON; ts: number }
  | { t: 'end'; attempt: number; exec: string; outcome: JournalOutcome; durationMs: number; ts: number };

/**
 * Points where a test can make the runner process kill itself (SIGKILL), to check what survives a crash
 * at exactly that moment. Set with WRIT_FAILPOINT=<point>[:<step>], e.g. `after-effect:1`. Unset in
 * production; documented in docs/operations.md.
 */
export const FAILPOINTS = ['after-start', 'before-intent', 'after-intent', 'after-effect', 'after-done', 'before-end', 'after-end'] as const;
export type Failpoint = (typeof FAILPOINTS)[number];

export function parseFailpoint(spec: string | undefined): { point: Failpoint; step: number | null } | null {
  if (!spec) return null;
  const [point, step] = spec.split(':');
  if (!FAILPOINTS.includes(point as Failpoint) || (step !== undefined && !/^[1-9][0-9]*$/.test(step))) {
    throw new WritError('CONFIG_INVALID', `WRIT_FAILPOINT=${spec} is not one of ${FAILPOINTS.join(', ')} with an optional :<step>`);
  }
  return { point: point as Failpoint, step: step === undefined ? null : Number(step) };
}

function argsHash(args: unknown): string {
  return createHash('sha256')
    .update(JSON.stringify(args ?? null))
    .digest('hex')
    .slice(0, 32);
}

const RECORD_TYPES = new Set(['start', 'intent', 'done', 'failed', 'end']);

/** One line of a journal file, or null when it is not a record this module wrote. */
function journalRecord(line: string): JournalRecord | null {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return null;
  }
  if (!v || typeof v !== 'object') return null;
  const r = v as Record<string, unknown>;
  if (typeof r.t !== 'string' || !RECORD_TYPES.has(r.t) || !Number.isSafeInteger(r.attempt) || typeof r.exec !== 'string') return null;
  if (r.t !== 'start' && r.t !== 'end' && (!Number.isSafeInteger(r.step) || typeof r.op !== 'string' || typeof r.args !== 'string')) return null;
  if (r.t === 'end' && (typeof r.outcome !== 'object' || r.outcome === null || typeof (r.outcome as { ok?: unknown }).ok !== 'boolean')) return null;
  return v as JournalRecord;
}

/** What the journal says of one job on this node. */
export class JobHistory {
  constructor(
    readonly jobId: string,
    readonly records: readonly JournalRecord[],
  ) {}

  /** The newest attempt started on this node (by any runner process), or null. */
  get newestStart(): { attempt: number; exec: string } | null {
    for (let i = this.records.length - 1; i >= 0; i--) {
      const r = this.records[i]!;
      if (r.t === 'start') return { attempt: r.attempt, exec: r.exec };
    }
    return null;
  }

  /** The highest attempt number started here (0 when none). */
  get highestAttempt(): number {
    let n = 0;
    for (const r of this.records) if (r.t === 'start' && r.attempt > n) n = r.attempt;
    return n;
  }

  /**
   * The attempt that finished the job on this node: it succeeded, or failed in a way no retry changes.
   * An attempt that failed with a retryable error did not finish the job.
   */
  get finished(): Extract<JournalRecord, { t: 'end' }> | null {
    for (const r of this.records) if (r.t === 'end' && (r.outcome.ok || !r.outcome.error.retryable)) return r;
    return null;
  }

  /** The last record of each step, across every attempt: what a re-run replays. */
  steps(): Map<number, Extract<JournalRecord, { t: 'intent' | 'done' | 'failed' }>> {
    const m = new Map<number, Extract<JournalRecord, { t: 'intent' | 'done' | 'failed' }>>();
    for (const r of this.records) if (r.t === 'intent' || r.t === 'done' || r.t === 'failed') m.set(r.step, r);
    return m;
  }

  /** Steps with an intent whose execution never journaled a result (possibly applied, possibly not). */
  openIntents(): number[] {
    return [...this.steps().values()].filter((r) => r.t === 'intent').map((r) => r.step);
  }
}

export interface JournalOptions {
  /** Where the files live; null keeps the journal in memory only (a runner without a state dir). */
  dir: string | null;
  /** Kill this process at a named point (tests only). */
  failpoint?: { point: Failpoint; step: number | null } | null;
  /** Called just before a failpoint kills the process. */
  onFailpoint?: (point: Failpoint, step: number | null) => void;
}

/** One node's journal. */
export class EffectJournal {
  private readonly memory = new Map<string, JournalRecord[]>();
  private dirSynced = new Set<string>();

  private constructor(readonly opts: JournalOptions) {}

  static async open(opts: JournalOptions): Promise<EffectJournal> {
    if (opts.dir) {
      try {
        await mkdir(opts.dir, { recursive: true, mode: 0o700 });
      } catch (e) {
        throw new WritError(
          'JOURNAL_UNAVAILABLE',
          `cannot create the effect journal folder ${opts.dir}: ${(e as Error).message}`,
          { dir: opts.dir },
          { cause: e },
        );
      }
    }
    return new EffectJournal(opts);
  }

  get durable(): boolean {
    return this.opts.dir !== null;
  }

  private file(jobId: string): string {
    return path.join(this.opts.dir!, `${jobId}.jsonl`);
  }

  /** Reads a job's records. A torn last line (the process died mid-write) is ignored: it was never synced. */
  async read(jobId: string): Promise<JobHistory> {
    if (!this.opts.dir) return new JobHistory(jobId, [...(this.memory.get(jobId) ?? [])]);
    let text: string;
    try {
      text = await readFile(this.file(jobId), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return new JobHistory(jobId, []);
      throw new WritError('JOURNAL_UNAVAILABLE', `cannot read the effect journal of job ${jobId}: ${(e as Error).message}`, { jobId }, { cause: e });
    }
    const records: JournalRecord[] = [];
    const lines = text.split('\n');
    lines.pop(); // after the last newline: empty, or a torn write
    for (const line of lines) {
      const rec = journalRecord(line);
      if (!rec)
        throw new WritError(
          'JOURNAL_UNAVAILABLE',
          `the effect journal of job ${jobId} has a corrupt record; move ${this.file(jobId)} aside only after checking what the job did`,
          { jobId },
        );
      records.push(rec);
    }
    return new JobHistory(jobId, records);
  }

  /** Appends one record and syncs it to disk before returning. */
  async append(jobId: string, rec: JournalRecord): Promise<void> {
    if (!this.opts.dir) {
      const list = this.memory.get(jobId) ?? [];
      list.push(rec);
      this.memory.set(jobId, list);
      return;
    }
    const file = this.file(jobId);
    let fh: FileHandle | undefined;
    try {
      fh = await open(file, 'a', 0o600);
      await fh.write(`${JSON.stringify(rec)}\n`);
      await fh.datasync();
      // A new file's name must be durable too: sync the folder once per job.
      if (!this.dirSynced.has(jobId)) {
        const dh = await open(this.opts.dir, 'r');
        try {
          await dh.sync();
        } finally {
          await dh.close();
        }
        this.dirSynced.add(jobId);
        if (this.dirSynced.size > 10_000) this.dirSynced.clear();
      }
    } catch (e) {
      throw new WritError('JOURNAL_UNAVAILABLE', `cannot write the effect journal of job ${jobId}: ${(e as Error).message}`, { jobId }, { cause: e });
    } finally {
      await fh?.close().catch(() => {});
    }
  }

  failpoint(point: Failpoint, step: number | null = null): void {
    const fp = this.opts.failpoint;
    if (!fp || fp.point !== point || (fp.step !== null && fp.step !== step)) return;
    this.opts.onFailpoint?.(point, step);
    process.kill(process.pid, 'SIGKILL');
  }

  /**
   * Starts an attempt: recorded (and synced) before anything of the job runs. `history` is the job's journal
   * as the caller just read it (to decide the attempt may start); read again when not given.
   */
  async begin(jobId: string, attempt: number, exp: number, history?: JobHistory): Promise<JobRun> {
    const before = history ?? (await this.read(jobId));
    const exec = randomBytes(6).toString('base64url');
    await this.append(jobId, { t: 'start', attempt, exec, exp, ts: Date.now() });
    this.failpoint('after-start');
    // The start just appended adds no step: the run replays what `before` holds.
    return new JobRun(this, jobId, attempt, exec, before);
  }

  /**
   * Removes the files of jobs whose envelopes expired more than `graceS` ago: no tier accepts such an
   * envelope any more, so no replay needs the record. Returns how many were removed.
   */
  async prune(nowS: number, graceS = 24 * 3600): Promise<number> {
    if (!this.opts.dir) return 0;
    let removed = 0;
    for (const name of await readdir(this.opts.dir).catch(() => [] as string[])) {
      if (!name.endsWith('.jsonl')) continue;
      const jobId = name.slice(0, -'.jsonl'.length);
      try {
        const h = await this.read(jobId);
        const exp = Math.max(0, ...h.records.map((r) => (r.t === 'start' ? r.exp : 0)));
        if (exp === 0) {
          // No complete start record: only an empty or torn file, old enough to be from a dead process.
          const st = await stat(this.file(jobId));
          if (Date.now() - st.mtimeMs < graceS * 1000) continue;
        } else if (exp + graceS > nowS) continue;
        await unlink(this.file(jobId));
        removed++;
      } catch {
        /* left for the next pass */
      }
    }
    return removed;
  }
}

/** One execution of one attempt: replays what earlier runs journaled, fences and journals every host call. */
export class JobRun {
  private step = 0;
  /** What earlier executions journaled, by step. */
  readonly replay: ReadonlyMap<number, Extract<JournalRecord, { t: 'intent' | 'done' | 'failed' }>>;
  private readonly lastStep: number;
  /** Set once a newer attempt took the job: every later call is refused. */
  fenced: WritError | null = null;
  /** Steps whose results came from the journal instead of a call. */
  replayed = 0;

  constructor(
    private readonly journal: EffectJournal,
    readonly jobId: string,
    readonly attempt: number,
    readonly exec: string,
    history: JobHistory,
  ) {
    this.replay = history.steps();
    this.lastStep = Math.max(0, ...this.replay.keys());
  }

  /** Throws EFFECT_FENCED when another execution started after this one. */
  async checkCurrent(): Promise<void> {
    if (this.fenced) throw this.fenced;
    const newest = (await this.journal.read(this.jobId)).newestStart;
    if (newest && newest.exec !== this.exec) {
      this.fenced = new WritError(
        'EFFECT_FENCED',
        `attempt ${newest.attempt} of job ${this.jobId} started after this one (attempt ${this.attempt}); this attempt applies no more effects`,
        {
          jobId: this.jobId,
          attempt: this.attempt,
          newerAttempt: newest.attempt,
        },
      );
      throw this.fenced;
    }
  }

  /**
   * One host call. `invoke` makes the real call (capability and arguments already checked by the caller's
   * broker). Journaled results are replayed; an effect is fenced and journaled with an intent first.
   */
  async call(op: string, args: JsonValue, invoke: () => Promise<JsonValue>): Promise<JsonValue> {
    if (this.fenced) throw this.fenced;
    const step = ++this.step;
    const hash = argsHash(args);
    const prev = this.replay.get(step);
    if (prev) {
      if (prev.op !== op || prev.args !== hash) {
        throw new WritError('JOURNAL_MISMATCH', `step ${step} of job ${this.jobId} was ${prev.op} with other arguments in an earlier attempt; now ${op}`, {
          step,
          journaled: prev.op,
          called: op,
        });
      }
      if (prev.t === 'done') {
        this.replayed++;
        return prev.result;
      }
      // A failure the script went on from is part of its history: replay it. A failure at the last journaled
      // step is what ended that attempt: call again (that is the retry).
      if (prev.t === 'failed' && step < this.lastStep) {
        this.replayed++;
        throw new WritError(isErrorCode(prev.error.code) ? prev.error.code : 'INTERNAL', prev.error.message, prev.error.details);
      }
    }
    const effect = isEffect(op);
    const base = { attempt: this.attempt, exec: this.exec, step, op, args: hash };
    if (effect) {
      this.journal.failpoint('before-intent', step);
      await this.checkCurrent();
      await this.journal.append(this.jobId, { t: 'intent', ...base, ts: Date.now() });
      this.journal.failpoint('after-intent', step);
    }
    let result: JsonValue;
    try {
      result = await invoke();
    } catch (e) {
      const error = toErrorJSON(e, true);
      await this.journal.append(this.jobId, { t: 'failed', ...base, error, ts: Date.now() });
      throw e;
    }
    if (effect) this.journal.failpoint('after-effect', step);
    await this.journal.append(this.jobId, { t: 'done', ...base, result, ts: Date.now() });
    if (effect) {
      this.journal.failpoint('after-done', step);
      // The effect is applied and journaled; if a newer attempt took over meanwhile, stop here.
      await this.checkCurrent();
    }
    return result;
  }

  /** Records the attempt's outcome. Not called for a fenced execution: its outcome is not the job's. */
  async end(outcome: JournalOutcome, durationMs: number): Promise<void> {
    this.journal.failpoint('before-end');
    await this.journal.append(this.jobId, { t: 'end', attempt: this.attempt, exec: this.exec, outcome, durationMs, ts: Date.now() });
    this.journal.failpoint('after-end');
  }
}
