// The one file that imports QuickJS. Each worker thread keeps a WebAssembly instance with its own capped memory
// (setMemoryLimit alone does not stop wasm growth, and every runtime in an instance shares the cap) and gives
// every job a fresh runtime with a memory limit, a stack limit and an interrupt at the deadline (X2), and a
// context locked down by the prelude (X4). Between jobs the instance's memory is restored to its state right
// after instantiation, and the instance is replaced after a number of jobs or after any job that leaves it
// suspect (docs/sandbox.md, "Warm instances"). Runs inside a sandbox worker thread only.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import RELEASE_SYNC from '@jitl/quickjs-wasmfile-release-sync';
import {
  newQuickJSWASMModuleFromVariant,
  newVariant,
  Scope,
  type QuickJSContext,
  type QuickJSDeferredPromise,
  type QuickJSHandle,
  type QuickJSWASMModule,
} from 'quickjs-emscripten-core';
import { CAPABILITIES, ERROR_CODES, isErrorCode, type ErrorCode, type ErrorJSON } from '@writ/protocol';
import { GUEST_GLOBALS, PRELUDE_SOURCE } from './prelude.ts';
import {
  DEFAULT_RECYCLE_AFTER_JOBS,
  LOG_LIMITS,
  MAX_HOST_CALLS_IN_FLIGHT,
  type BoundaryLimits,
  type GuestResult,
  type LogLevel,
  type SandboxJob,
} from './types.ts';

const MIB = 1024 * 1024;
const WASM_PAGE = 64 * 1024;
/** The release build declares a 16 MiB minimum memory. */
const INITIAL_PAGES = 256;
const INITIAL_BYTES = INITIAL_PAGES * WASM_PAGE;
/** Without a QuickJS stack limit a deep recursion overflows the host stack, and disposing then aborts. */
const STACK_BYTES = 192 * 1024;
/** Guest getters run while a failure is described; they get this much time past the deadline. */
const DESCRIBE_BUDGET_MS = 50;
/** Granularity of the pristine-memory snapshot: almost all of a fresh instance's memory is zero. */
const SNAPSHOT_PAGE = 4096;
/** A job ending with one of these may have left the instance half-way through something: replace it. */
const LIMIT_CODES: ReadonlySet<string> = new Set<ErrorCode>(['MEMORY_LIMIT', 'STACK_LIMIT', 'TIMEOUT']);

// The repository compiles without DOM typings, so the few WebAssembly members used here are declared locally.
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Memory: new (descriptor: { initial: number; maximum: number }) => WasmMemory;
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

let compiled: object | undefined;

/** Compiles the QuickJS wasm once per thread; instantiating from it is what a new instance costs. */
export function precompileQuickJS(): void {
  if (compiled) return;
  const require = createRequire(import.meta.url);
  compiled = new wasm.Module(readFileSync(require.resolve('@jitl/quickjs-wasmfile-release-sync/wasm')));
}

interface PristinePage {
  offset: number;
  bytes: Uint8Array;
}

interface Instance {
  readonly memoryMiB: number;
  readonly module: QuickJSWASMModule;
  readonly memory: WasmMemory;
  readonly maxBytes: number;
  /** The non-zero pages right after instantiation; absent when the instance serves a single job. */
  readonly pristine: readonly PristinePage[] | undefined;
  jobsRun: number;
  /** A runtime has lived in the memory since it was last restored. */
  dirty: boolean;
}

export interface SandboxSettings {
  /** Jobs one WebAssembly instance serves before it is replaced; 1 gives every job its own instance. */
  recycleAfterJobs: number;
}

const settings: SandboxSettings = { recycleAfterJobs: DEFAULT_RECYCLE_AFTER_JOBS };
let instancesCreated = 0;
/** The instance kept for the next job; taken out while a runtime lives in it, so two never share it. */
let warm: Instance | undefined;
let spare: Promise<PreparedGuest | undefined> | undefined;
let latest: Instance | undefined;

export function configureSandbox(next: Partial<SandboxSettings>): void {
  const recycleAfterJobs = next.recycleAfterJobs ?? settings.recycleAfterJobs;
  if (!Number.isInteger(recycleAfterJobs) || recycleAfterJobs < 1) throw new RangeError('recycleAfterJobs must be a positive integer');
  settings.recycleAfterJobs = recycleAfterJobs;
}

/** Counters for the pool's stats and for tests that must know two jobs shared an instance. */
export function sandboxCounters(): { instancesCreated: number } {
  return { instancesCreated };
}

/** The linear memory of the instance last handed to a runtime (the isolation tests scan it from the host side). */
export function currentInstanceMemory(): ArrayBuffer | undefined {
  return latest?.memory.buffer;
}

async function instantiate(memoryMiB: number): Promise<Instance> {
  precompileQuickJS();
  // The allocator limit below catches most growth; the wasm cap is the backstop, with room for the
  // build's static data and allocator slack above the guest's own heap.
  const maximum = INITIAL_PAGES + Math.ceil((memoryMiB * MIB) / WASM_PAGE);
  const memory = new wasm.Memory({ initial: INITIAL_PAGES, maximum });
  const module = await newQuickJSWASMModuleFromVariant(newVariant(RELEASE_SYNC, { wasmModule: compiled as never, wasmMemory: memory as never }));
  instancesCreated++;
  const pristine = settings.recycleAfterJobs > 1 ? snapshotNonZeroPages(memory) : undefined;
  return { memoryMiB, module, memory, maxBytes: maximum * WASM_PAGE, pristine, jobsRun: 0, dirty: false };
}

function snapshotNonZeroPages(memory: WasmMemory): PristinePage[] {
  const all = Buffer.from(memory.buffer);
  const zero = Buffer.alloc(SNAPSHOT_PAGE);
  const pages: PristinePage[] = [];
  for (let offset = 0; offset < all.length; offset += SNAPSHOT_PAGE) {
    const page = all.subarray(offset, offset + SNAPSHOT_PAGE);
    if (!page.equals(zero)) pages.push({ offset, bytes: Uint8Array.from(page) });
  }
  return pages;
}

/**
 * Puts every byte of the instance's memory back as it was right after instantiation: the heap, the
 * allocator's state, the C stack and QuickJS's static data. Only valid while no runtime lives in it.
 */
function restorePristineMemory(instance: Instance): void {
  const all = new Uint8Array(instance.memory.buffer);
  all.fill(0);
  for (const page of instance.pristine ?? []) all.set(page.bytes, page.offset);
  instance.dirty = false;
}

/** An instance for the next runtime: the warm one when it fits, restored first; otherwise a new one. */
async function acquireInstance(memoryMiB: number): Promise<Instance> {
  const kept = warm;
  warm = undefined;
  // A job with another memory limit gets an instance sized for it: a bigger shared cap would no longer
  // bound the smaller job, and resizing is not possible.
  if (kept && kept.memoryMiB === memoryMiB) {
    if (kept.dirty) restorePristineMemory(kept);
    latest = kept;
  } else {
    latest = await instantiate(memoryMiB);
  }
  return latest;
}

/**
 * Hands an instance back once its runtime is gone. It is kept only if that runtime was freed cleanly, no
 * limit or trap was hit, the memory never grew (so the next job starts at the size a fresh instance has,
 * and memory-exhaustion detection keeps meaning "this job"), and it has jobs left; otherwise it is dropped.
 */
function releaseInstance(instance: Instance, reusable: boolean): void {
  instance.dirty = true;
  const keep =
    reusable && instance.pristine !== undefined && instance.jobsRun < settings.recycleAfterJobs && instance.memory.buffer.byteLength === INITIAL_BYTES;
  if (keep && !warm) warm = instance;
}

/**
 * Builds the next job's sandbox (runtime, context, prelude, in the kept instance or a new one) while the
 * thread is idle, so a job does not wait for it.
 */
export function prepareSpareInstance(memoryMiB: number, boundary: BoundaryLimits): void {
  spare = prepareGuest(memoryMiB, boundary).catch(() => undefined);
}

async function takeGuest(memoryMiB: number, boundary: BoundaryLimits): Promise<PreparedGuest> {
  const ready = spare;
  spare = undefined;
  const guest = ready ? await ready : undefined;
  if (guest && guest.memoryMiB === memoryMiB && guest.boundary === boundary) return guest;
  guest?.discard();
  return prepareGuest(memoryMiB, boundary);
}

export interface GuestHooks {
  boundary: BoundaryLimits;
  log(level: LogLevel, message: string): void;
  /** Checks and forwards one host call; resolves with the result as JSON text or rejects with an ErrorJSON. */
  hostCall(name: string, argsJson: string): Promise<string>;
  /** Reports a problem of the sandbox itself (not of the script), e.g. a leaked handle. */
  warn(message: string): void;
}

function errorOf(code: ErrorCode, message?: string, details?: Record<string, unknown>): ErrorJSON {
  const error: ErrorJSON = { code, message: message ?? ERROR_CODES[code].message, retryable: ERROR_CODES[code].retryable };
  if (details) error.details = details;
  return error;
}

function failure(code: ErrorCode, message?: string, details?: Record<string, unknown>): GuestResult {
  return { ok: false, error: errorOf(code, message, details) };
}

/** Runs one job to completion in a fresh QuickJS runtime and context. Never throws for guest faults. */
export async function runGuest(job: SandboxJob, deadlineAt: number, hooks: GuestHooks): Promise<GuestResult> {
  const guest = await takeGuest(job.limits.memoryMiB, hooks.boundary);
  return guest.run(job, deadlineAt, hooks);
}

interface PreparedGuest {
  memoryMiB: number;
  boundary: BoundaryLimits;
  run(job: SandboxJob, deadlineAt: number, hooks: GuestHooks): Promise<GuestResult>;
  discard(): void;
}

async function prepareGuest(memoryMiB: number, boundary: BoundaryLimits): Promise<PreparedGuest> {
  const instance = await acquireInstance(memoryMiB);
  try {
    return buildGuest(instance, boundary);
  } catch (err) {
    // Our own prelude failed to set up: nothing of a job is in the instance, but its state is unknown.
    releaseInstance(instance, false);
    throw err;
  }
}

function buildGuest(instance: Instance, boundary: BoundaryLimits): PreparedGuest {
  const { memoryMiB, module, memory, maxBytes: memoryCap } = instance;
  instance.dirty = true;
  const memoryExhausted = () => memory.buffer.byteLength + 2 * MIB >= memoryCap;
  const scope = new Scope();
  const pending = new Set<QuickJSDeferredPromise>();
  // Until a job starts there is no deadline: only the prelude (our own code) runs.
  let interruptAt = Infinity;
  let job: SandboxJob;
  let hooks: GuestHooks;
  let interrupted = false;
  let importAttempted = false;
  let linesLogged = 0;
  let finished = false;
  let wake: (() => void) | undefined;
  let result: GuestResult;

  const runtime = scope.manage(module.newRuntime());
  runtime.setMemoryLimit(memoryMiB * MIB);
  runtime.setMaxStackSize(STACK_BYTES);
  runtime.setInterruptHandler(() => {
    if (Date.now() <= interruptAt) return false;
    interrupted = true;
    return true;
  });
  runtime.setModuleLoader(() => {
    importAttempted = true;
    return { error: new Error('scripts cannot import modules') };
  });
  const context = scope.manage(runtime.newContext());
  const lengthOf = (h: QuickJSHandle): number => {
    const l = context.getProp(h, 'length');
    try {
      return context.typeof(l) === 'number' ? context.getNumber(l) : Infinity;
    } finally {
      l.dispose();
    }
  };

  const hostLog = scope.manage(
    context.newFunction('hostLog', (levelH, messageH) => {
      if (finished || linesLogged > LOG_LIMITS.maxLines) return;
      const level = context.getString(levelH) as LogLevel;
      if (++linesLogged > LOG_LIMITS.maxLines) {
        hooks.log('warn', `log limit of ${LOG_LIMITS.maxLines} lines reached; further lines are dropped`);
        return;
      }
      const length = lengthOf(messageH);
      const message = context.getString(messageH);
      hooks.log(level, length > LOG_LIMITS.maxLineChars + 32 ? message.slice(0, LOG_LIMITS.maxLineChars) : message);
    }),
  );

  const hostCall = scope.manage(
    context.newFunction('hostCall', (nameH, argsH) => {
      const deferred = context.newPromise();
      pending.add(deferred);
      const reject = (error: ErrorJSON) => settle(deferred, { ok: false, error });
      if (pending.size > MAX_HOST_CALLS_IN_FLIGHT) {
        reject(errorOf('HOST_CALL_DENIED', `more than ${MAX_HOST_CALLS_IN_FLIGHT} host calls in flight`));
        return deferred.handle;
      }
      // The prelude caps the text; measure it anyway before copying it out of the guest.
      const length = lengthOf(argsH);
      if (context.typeof(nameH) !== 'string' || context.typeof(argsH) !== 'string' || !(length <= hooks.boundary.maxBytes)) {
        reject(errorOf('BOUNDARY_INVALID', 'host call arguments are not bounded JSON text'));
        return deferred.handle;
      }
      hooks.hostCall(context.getString(nameH), context.getString(argsH)).then(
        (json) => settle(deferred, { ok: true, json }),
        (err: ErrorJSON) => settle(deferred, { ok: false, error: err }),
      );
      return deferred.handle;
    }),
  );

  const settle = (deferred: QuickJSDeferredPromise, outcome: GuestResult) => {
    if (finished || !pending.delete(deferred)) return;
    const made = outcome.ok
      ? callPrivate('parse', [context.newString(outcome.json)])
      : callPrivate('makeHostError', [
          context.newString(outcome.error.code),
          context.newString(outcome.error.message),
          ...(outcome.error.details ? [context.newString(JSON.stringify(outcome.error.details))] : []),
        ]);
    if (made.error) {
      deferred.reject(made.error);
      made.error.dispose();
    } else {
      (outcome.ok ? deferred.resolve : deferred.reject)(made.value);
      made.value.dispose();
    }
    wake?.();
  };

  const prelude = scope.manage(context.unwrapResult(context.evalCode(PRELUDE_SOURCE, 'writ:prelude')));
  const limits = scope.manage(
    jsonHandle(context, {
      ...boundary,
      maxLineChars: LOG_LIMITS.maxLineChars,
      maxLines: LOG_LIMITS.maxLines,
      globals: GUEST_GLOBALS,
      capabilities: [...CAPABILITIES.keys()],
    }),
  );
  const privates = scope.manage(context.unwrapResult(context.callFunction(prelude, context.undefined, hostCall, hostLog, limits)));
  const callPrivate = (name: 'runMain' | 'makeHostError' | 'describeThrown' | 'parse', args: QuickJSHandle[]) => {
    const fn = context.getProp(privates, name);
    try {
      return context.callFunction(fn, context.undefined, ...args);
    } finally {
      fn.dispose();
      for (const a of args) if (a.alive && a !== context.undefined) a.dispose();
    }
  };

  const classify = (errorHandle: QuickJSHandle, stage: 'load' | 'run'): GuestResult => {
    if (interrupted) return failure('TIMEOUT', `the script ran past its ${job.limits.timeoutMs} ms deadline and was interrupted`);
    interruptAt = Date.now() + DESCRIBE_BUDGET_MS;
    const described = callPrivate('describeThrown', [errorHandle.dup()]);
    let name = '',
      message = '',
      stack = '',
      hostCode = '',
      getterFault = '';
    if (described.error) {
      described.error.dispose();
      // A getter on the thrown value (name, message, stack) that does not return is guest code running out
      // of time, not of memory.
      if (interrupted) return failure('TIMEOUT', `reading the thrown error ran past its ${DESCRIBE_BUDGET_MS} ms budget: a getter on it did not return`);
    } else {
      [name, message, stack, hostCode, getterFault] = context.dump(described.value) as [string, string, string, string, string];
      described.value.dispose();
    }
    return classifyThrown({
      name,
      message,
      stack,
      hostCode,
      getterFault,
      stage,
      importAttempted,
      memoryExhausted: memoryExhausted() || described.error !== undefined,
    });
  };

  const dispose = () => {
    for (const deferred of pending) deferred.dispose();
    pending.clear();
    scope.dispose();
  };

  return {
    memoryMiB,
    boundary,
    discard: () => {
      let disposed = false;
      try {
        dispose();
        disposed = true;
      } catch {
        // an unused sandbox: nothing ran in it that could leak
      }
      releaseInstance(instance, disposed);
    },
    async run(thisJob, deadlineAt, thisHooks) {
      instance.jobsRun++;
      // A thrown host exception (a wasm trap, an abort) leaves the instance in an unknown state.
      let trapped = false;
      job = thisJob;
      hooks = thisHooks;
      interruptAt = deadlineAt;
      try {
        // Evaluate the module, then call its default export through the prelude.
        const loaded = context.evalCode(job.source, 'script.js', { type: 'module' });
        if (loaded.error) {
          result = classify(scope.manage(loaded.error), 'load');
        } else {
          const namespace = scope.manage(loaded.value);
          const started = callPrivate('runMain', [
            namespace.dup(),
            context.newString(JSON.stringify(job.args)),
            jsonHandle(context, job.caps),
            context.newString(JSON.stringify({ id: job.jobId, attempt: job.attempt })),
          ]);
          if (started.error) {
            result = classify(scope.manage(started.error), 'run');
          } else {
            const mainPromise = scope.manage(started.value);
            const deadlineTimer = setTimeout(() => wake?.(), Math.max(0, deadlineAt - Date.now()) + 1);
            try {
              result = await drive();
            } finally {
              clearTimeout(deadlineTimer);
            }

            async function drive(): Promise<GuestResult> {
              for (;;) {
                const ran = runtime.executePendingJobs();
                if (ran.error) return classify(scope.manage(ran.error), 'run');
                ran.dispose();
                const state = context.getPromiseState(mainPromise);
                if (state.type === 'fulfilled') {
                  const value = scope.manage(state.value);
                  if (context.typeof(value) === 'string') {
                    if (lengthOf(value) > hooks.boundary.maxBytes)
                      return failure('OUTPUT_TOO_LARGE', `the result is larger than ${hooks.boundary.maxBytes} bytes`);
                    return { ok: true, json: context.getString(value) };
                  }
                  const [code, message] = context.dump(value) as [string, string];
                  return failure(isErrorCode(code) ? code : 'SCRIPT_INVALID', message);
                }
                if (state.type === 'rejected') return classify(scope.manage(state.error), 'run');
                if (Date.now() > deadlineAt) return failure('TIMEOUT', `the script ran past its ${job.limits.timeoutMs} ms deadline`);
                if (pending.size === 0 && !runtime.hasPendingJob()) {
                  return failure('SCRIPT_ERROR', 'the script is waiting on a promise that can never settle');
                }
                await new Promise<void>((resolve) => (wake = resolve));
                wake = undefined;
              }
            }
          }
        }
      } catch (err) {
        // A wasm trap (memory exhausted inside a built-in) or a broken instance: the instance is dropped below.
        trapped = true;
        result = memoryExhausted()
          ? failure('MEMORY_LIMIT', 'the script exhausted its memory')
          : failure('SCRIPT_ERROR', `the sandbox stopped the script: ${(err as Error)?.message ?? String(err)}`);
      } finally {
        finished = true;
      }
      // After memory exhaustion QuickJS can be left holding objects it could not free, and freeing the runtime then
      // fails an assertion (and prints). The whole instance is dropped with the job, so skip the teardown.
      if (!result.ok && result.error.code === 'MEMORY_LIMIT') {
        releaseInstance(instance, false);
        return result;
      }
      let disposed = false;
      try {
        dispose();
        disposed = true;
      } catch (err) {
        // The instance is dropped with this job, so a failed disposal leaks nothing beyond it; report it as a bug.
        hooks.warn(`disposing the QuickJS runtime failed: ${(err as Error)?.message ?? String(err)}`);
      }
      releaseInstance(instance, disposed && !trapped && (result.ok || !LIMIT_CODES.has(result.error.code)));
      return result;
    },
  };
}

/** Line and column (1-based) of a syntax error in the script, from QuickJS's "at script.js:LINE:COL". */
export function syntaxErrorPosition(stack: string): { line: number; column: number } | undefined {
  const m = /\bscript\.js:(\d+):(\d+)/.exec(stack);
  return m ? { line: Number(m[1]), column: Number(m[2]) } : undefined;
}

let checker: Promise<QuickJSWASMModule> | undefined;

/**
 * Compiles a script as the runner will, without running any of it, for `writ sign`: SCRIPT_INVALID with the
 * line and column of a syntax error (or an import), or null when it compiles. A module instance of its own,
 * apart from the sandbox's warm instances.
 */
export async function checkScriptCompiles(source: string): Promise<ErrorJSON | null> {
  checker ??= newQuickJSWASMModuleFromVariant(RELEASE_SYNC);
  const runtime = (await checker).newRuntime();
  runtime.setMemoryLimit(256 * MIB);
  runtime.setMaxStackSize(STACK_BYTES);
  const context = runtime.newContext();
  try {
    const compiled = context.evalCode(source, 'script.js', { type: 'module', compileOnly: true });
    if (!compiled.error) {
      compiled.value.dispose();
      return null;
    }
    const thrown = context.dump(compiled.error) as { name?: unknown; message?: unknown; stack?: unknown } | null;
    compiled.error.dispose();
    const name = typeof thrown?.name === 'string' ? thrown.name : '';
    const message = typeof thrown?.message === 'string' ? thrown.message : String(thrown);
    const at = syntaxErrorPosition(typeof thrown?.stack === 'string' ? thrown.stack : '');
    if (name !== 'SyntaxError' && /could not load module/.test(message))
      return { code: 'SCRIPT_INVALID', message: 'scripts cannot import modules', retryable: false };
    return {
      code: 'SCRIPT_INVALID',
      message: `the script does not parse${at ? ` at line ${at.line}, column ${at.column}` : ''}: ${message}`,
      retryable: false,
      ...(at ? { details: at } : {}),
    };
  } finally {
    context.dispose();
    runtime.dispose();
  }
}

function jsonHandle(context: QuickJSContext, value: unknown): QuickJSHandle {
  return context.unwrapResult(context.evalCode(`(${JSON.stringify(value)})`, 'writ:value'));
}

interface Thrown {
  name: string;
  message: string;
  stack: string;
  hostCode: string;
  /** Set when reading name, message or stack threw: which getter, and what it threw. */
  getterFault: string;
  stage: 'load' | 'run';
  importAttempted: boolean;
  memoryExhausted: boolean;
}

function classifyThrown(t: Thrown): GuestResult {
  const details = { name: t.name, stack: t.stack };
  if (t.hostCode && isErrorCode(t.hostCode)) return failure(t.hostCode, t.message, { stack: t.stack });
  if (t.name === 'InternalError' && t.message === 'stack overflow') return failure('STACK_LIMIT', 'the script exceeded its stack limit', details);
  // 'string too long' and 'invalid array length' are the engine refusing an allocation of that size.
  const refusedAllocation =
    (t.name === 'InternalError' && (t.message === 'out of memory' || t.message === 'string too long')) ||
    (t.name === 'RangeError' && t.message === 'invalid array length');
  if (refusedAllocation || t.memoryExhausted) return failure('MEMORY_LIMIT', 'the script exceeded its memory limit', details);
  if (t.importAttempted) return failure('SCRIPT_INVALID', 'scripts cannot import modules', details);
  if (t.stage === 'load' && t.name === 'SyntaxError') {
    const at = syntaxErrorPosition(t.stack);
    return failure('SCRIPT_INVALID', `the script does not parse${at ? ` at line ${at.line}, column ${at.column}` : ''}: ${t.message}`, { ...details, ...at });
  }
  if (t.getterFault) return failure('SCRIPT_ERROR', t.getterFault, details);
  return failure('SCRIPT_ERROR', t.message || 'the script threw a value that is not an Error', details);
}
