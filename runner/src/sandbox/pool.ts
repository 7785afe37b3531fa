// The main-thread side of the sandbox: a pool of worker threads, one job per thread at a time. Scripts never
// run on this thread (R4). Each job has an outside kill at deadline + grace that terminates its thread and
// replaces it (X1); host calls arrive here as bounded JSON and go to the privileged `hostCall` (the broker).
import { Worker } from 'node:worker_threads';
import { ERROR_CODES, silentLogger, toErrorJSON, type ErrorCode, type ErrorJSON, type JsonValue, type Logger } from '@writ/protocol';
import { decodeBounded, encodeBounded } from './boundary.ts';
import {
  DEFAULT_BOUNDARY_LIMITS,
  DEFAULT_RECYCLE_AFTER_JOBS,
  type BoundaryLimits,
  type FromWorker,
  type HostCallJob,
  type LogLevel,
  type SandboxJob,
  type SandboxOutcome,
  type ToWorker,
} from './types.ts';
import type { SandboxWorkerData } from './worker.ts';

export interface SandboxPoolOptions {
  /** Worker threads, i.e. jobs run at once. */
  size: number;
  /** The privileged side of a host call; the job carries `deadlineAt` and an AbortSignal that fires when the job ends. */
  hostCall: (job: HostCallJob, name: string, args: JsonValue) => Promise<JsonValue>;
  onLog?: (job: SandboxJob, level: LogLevel, message: string) => void;
  /** Time past the deadline before the thread is terminated from outside (default 300 ms). */
  graceMs?: number;
  logger?: Logger;
  boundary?: Partial<BoundaryLimits>;
  /** memoryMiB the idle threads prepare an instance for (default 64); jobs with other limits instantiate on demand. */
  warmMemoryMiB?: number;
  /**
   * Jobs a thread's WebAssembly instance serves, each in a fresh runtime and context, before it is replaced
   * (default 200). 1 gives every job its own instance, as before warm instances.
   */
  recycleAfterJobs?: number;
  /** The worker thread's entry module; tests substitute one that can crash. */
  workerEntry?: URL;
}

interface ActiveRun {
  runId: number;
  job: HostCallJob;
  startedAt: number;
  killTimer: NodeJS.Timeout;
  abort: AbortController;
  finish(outcome: SandboxOutcome): void;
}

interface Slot {
  worker: Worker;
  ready: boolean;
  retired: boolean;
  run: ActiveRun | undefined;
  /** WebAssembly instances the thread had created by its last finished job. */
  instancesCreated: number;
}

interface QueuedRun {
  job: SandboxJob;
  resolve(outcome: SandboxOutcome): void;
}

const STARTUP_FAILURES_BEFORE_GIVING_UP = 3;

function errorOf(code: ErrorCode, message?: string): ErrorJSON {
  return { code, message: message ?? ERROR_CODES[code].message, retryable: ERROR_CODES[code].retryable };
}

export class SandboxPool {
  private readonly slots: Slot[] = [];
  private readonly queue: QueuedRun[] = [];
  private readonly boundary: BoundaryLimits;
  private readonly graceMs: number;
  private readonly log: Logger;
  private readonly entry: URL;
  private nextRunId = 0;
  private restarts = 0;
  private instancesCreated = 0;
  private readonly recycleAfterJobs: number;
  private startupFailures = 0;
  private closed = false;

  constructor(private readonly opts: SandboxPoolOptions) {
    if (!Number.isInteger(opts.size) || opts.size < 1) throw new RangeError('SandboxPool size must be a positive integer');
    this.boundary = { ...DEFAULT_BOUNDARY_LIMITS, ...opts.boundary };
    this.graceMs = opts.graceMs ?? 300;
    this.recycleAfterJobs = opts.recycleAfterJobs ?? DEFAULT_RECYCLE_AFTER_JOBS;
    if (!Number.isInteger(this.recycleAfterJobs) || this.recycleAfterJobs < 1) throw new RangeError('SandboxPool recycleAfterJobs must be a positive integer');
    this.log = opts.logger ?? silentLogger;
    this.entry = opts.workerEntry ?? new URL('./worker-entry.mjs', import.meta.url);
    for (let i = 0; i < opts.size; i++) this.slots.push(this.spawn());
  }

  /** Runs a job on the next free thread. Resolves with the outcome; never rejects for anything the script does. */
  run(job: SandboxJob): Promise<SandboxOutcome> {
    return new Promise((resolve) => {
      if (this.closed) return resolve({ ok: false, error: errorOf('WORKER_CRASHED', 'the sandbox pool is closed'), durationMs: 0 });
      this.queue.push({ job, resolve });
      this.dispatch();
    });
  }

  /**
   * `instancesCreated` counts the WebAssembly instances threads had created by their last finished job: if it
   * is unchanged between two jobs on a one-thread pool, the second ran in the first one's instance.
   */
  stats(): { size: number; busy: number; queued: number; restarts: number; instancesCreated: number } {
    return {
      size: this.slots.length,
      busy: this.slots.filter((s) => s.run).length,
      queued: this.queue.length,
      restarts: this.restarts,
      instancesCreated: this.instancesCreated,
    };
  }

  /** Terminates every thread; queued and running jobs fail with WORKER_CRASHED (retryable). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const q of this.queue.splice(0))
      q.resolve({ ok: false, error: errorOf('WORKER_CRASHED', 'the sandbox pool closed before the job ran'), durationMs: 0 });
    const exits = this.slots.map(async (slot) => {
      slot.retired = true;
      slot.run?.finish(this.failed(slot.run, 'WORKER_CRASHED', 'the sandbox pool closed while the job ran'));
      await slot.worker.terminate();
    });
    await Promise.all(exits);
  }

  private spawn(): Slot {
    const workerData: SandboxWorkerData = { boundary: this.boundary, warmMemoryMiB: this.opts.warmMemoryMiB ?? 64, recycleAfterJobs: this.recycleAfterJobs };
    // The thread's own V8 heap only holds bounded JSON; guest memory is the separately capped wasm memory.
    const worker = new Worker(this.entry, { workerData, resourceLimits: { maxOldGenerationSizeMb: 256 }, stdout: false, stderr: false });
    const slot: Slot = { worker, ready: false, retired: false, run: undefined, instancesCreated: 0 };
    worker.on('message', (msg: FromWorker) => this.onMessage(slot, msg));
    worker.on('error', (err) => {
      if (!slot.retired) this.log.error({ err: err.message }, 'sandbox worker failed');
    });
    worker.on('exit', (code) => this.onExit(slot, code));
    return slot;
  }

  private replace(slot: Slot): void {
    slot.retired = true;
    const index = this.slots.indexOf(slot);
    if (index < 0 || this.closed) return;
    this.restarts++;
    this.slots[index] = this.spawn();
  }

  private onExit(slot: Slot, code: number): void {
    if (slot.retired) return;
    this.log.error({ exitCode: code }, 'sandbox worker exited');
    if (slot.run) slot.run.finish(this.failed(slot.run, 'WORKER_CRASHED', `the sandbox worker exited (code ${code}) while the job ran`));
    if (!slot.ready && ++this.startupFailures >= STARTUP_FAILURES_BEFORE_GIVING_UP) {
      // A thread that cannot even start will not start next time either; stop instead of spinning.
      this.log.error({ failures: this.startupFailures }, 'sandbox workers fail to start; failing queued jobs');
      for (const q of this.queue.splice(0)) q.resolve({ ok: false, error: errorOf('WORKER_CRASHED', 'sandbox workers fail to start'), durationMs: 0 });
      slot.retired = true;
      this.slots.splice(this.slots.indexOf(slot), 1);
      return;
    }
    this.replace(slot);
  }

  private onMessage(slot: Slot, msg: FromWorker): void {
    if (slot.retired) return;
    switch (msg.type) {
      case 'ready':
        slot.ready = true;
        this.startupFailures = 0;
        this.dispatch();
        return;
      case 'warn':
        this.log.warn({ detail: msg.message }, 'sandbox warning');
        return;
      case 'log':
        if (slot.run?.runId === msg.runId) this.opts.onLog?.(slot.run.job, msg.level, msg.message);
        return;
      case 'hostCall':
        if (slot.run?.runId === msg.runId) this.forwardHostCall(slot, slot.run, msg.callId, msg.name, msg.argsJson);
        return;
      case 'done': {
        if (msg.instancesCreated !== undefined && msg.instancesCreated > slot.instancesCreated) {
          this.instancesCreated += msg.instancesCreated - slot.instancesCreated;
          slot.instancesCreated = msg.instancesCreated;
        }
        const run = slot.run;
        if (run?.runId !== msg.runId) return;
        if (!msg.result.ok) return run.finish({ ok: false, error: msg.result.error, durationMs: Date.now() - run.startedAt });
        try {
          run.finish({ ok: true, value: decodeBounded(msg.result.json, this.boundary, 'the result'), durationMs: Date.now() - run.startedAt });
        } catch (err) {
          run.finish({ ok: false, error: toErrorJSON(err), durationMs: Date.now() - run.startedAt });
        }
      }
    }
  }

  private forwardHostCall(slot: Slot, run: ActiveRun, callId: number, name: string, argsJson: string): void {
    const reply = (msg: ToWorker) => {
      if (slot.run === run && !slot.retired) slot.worker.postMessage(msg);
    };
    const replyError = (err: unknown) => {
      const error = toErrorJSON(err, true);
      if (error.code === 'INTERNAL') this.log.warn({ jobId: run.job.jobId, capability: name, err: (err as Error)?.message ?? String(err) }, 'host call failed');
      reply({ type: 'hostResult', runId: run.runId, callId, ok: false, error });
    };
    let args: JsonValue;
    try {
      args = decodeBounded(argsJson, this.boundary, `${name} arguments`);
    } catch (err) {
      return replyError(err);
    }
    Promise.resolve()
      .then(() => this.opts.hostCall(run.job, name, args))
      .then((value) => reply({ type: 'hostResult', runId: run.runId, callId, ok: true, json: encodeBounded(value, this.boundary, `the ${name} result`) }))
      .catch(replyError);
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (this.queue.length === 0) return;
      if (!slot.ready || slot.run || slot.retired) continue;
      this.start(slot, this.queue.shift()!);
    }
  }

  private start(slot: Slot, queued: QueuedRun): void {
    const startedAt = Date.now();
    const deadlineAt = startedAt + queued.job.limits.timeoutMs;
    const abort = new AbortController();
    const job: HostCallJob = { ...queued.job, deadlineAt, signal: abort.signal };
    const runId = ++this.nextRunId;
    let done = false;
    const run: ActiveRun = {
      runId,
      job,
      startedAt,
      abort,
      killTimer: setTimeout(() => this.kill(slot, run), queued.job.limits.timeoutMs + this.graceMs),
      finish: (outcome) => {
        if (done) return;
        done = true;
        clearTimeout(run.killTimer);
        abort.abort();
        if (slot.run === run) slot.run = undefined;
        queued.resolve(outcome);
        this.dispatch();
      },
    };
    slot.run = run;
    try {
      // Arguments enter under the same caps as everything else that crosses.
      encodeBounded(queued.job.args, this.boundary, 'the job arguments');
    } catch (err) {
      return run.finish({ ok: false, error: toErrorJSON(err), durationMs: 0 });
    }
    slot.worker.postMessage({ type: 'run', runId, job: queued.job, deadlineAt } satisfies ToWorker);
  }

  /**
   * Stops a job an operator cancelled: a run in progress ends now with JOB_CANCELLED and its thread is
   * terminated and replaced (as on an overrun: a guest cannot be trusted to stop itself); a queued one is
   * dropped. Returns whether it was found.
   */
  cancel(jobId: string, attempt: number, message: string): boolean {
    for (const slot of this.slots) {
      const run = slot.run;
      if (!run || run.job.jobId !== jobId || run.job.attempt !== attempt) continue;
      run.finish(this.failed(run, 'JOB_CANCELLED', message));
      const worker = slot.worker;
      this.replace(slot);
      void worker.terminate();
      return true;
    }
    const i = this.queue.findIndex((q) => q.job.jobId === jobId && q.job.attempt === attempt);
    if (i < 0) return false;
    const [queued] = this.queue.splice(i, 1);
    queued!.resolve({ ok: false, error: errorOf('JOB_CANCELLED', message), durationMs: 0 });
    return true;
  }

  /** The outside kill: the guest is stuck where the interrupt handler cannot reach (a long built-in call). */
  private kill(slot: Slot, run: ActiveRun): void {
    if (slot.run !== run) return;
    this.log.warn({ jobId: run.job.jobId, timeoutMs: run.job.limits.timeoutMs }, 'sandbox job overran its deadline; terminating its thread');
    run.finish(this.failed(run, 'TIMEOUT', `the script ran past its ${run.job.limits.timeoutMs} ms deadline and its thread was terminated`));
    const worker = slot.worker;
    this.replace(slot);
    void worker.terminate();
  }

  private failed(run: ActiveRun, code: ErrorCode, message: string): SandboxOutcome {
    return { ok: false, error: errorOf(code, message), durationMs: Date.now() - run.startedAt };
  }
}
