// The shapes shared by the pool (main thread), the sandbox worker threads and the host-call broker.
import type { ErrorJSON, JsonValue } from '@writ/protocol';

export interface SandboxLimits {
  /** Wall-clock budget from the moment a worker thread takes the job. */
  timeoutMs: number;
  /** Guest heap (QuickJS allocator limit); the WebAssembly memory is capped a little above it. */
  memoryMiB: number;
}

export interface SandboxJob {
  jobId: string;
  attempt: number;
  /** An ES module whose default export is `async function (args, ctx)`. */
  source: string;
  args: JsonValue;
  /** Granted capability names; exactly these appear under `ctx.sal`. */
  caps: string[];
  limits: SandboxLimits;
  /** Store paths pinned in the envelope (X7): what nix operations may install or switch to. */
  pins?: { nix?: string[] };
}

/** What the host side of a call sees: the job plus the moment it must end and a signal that fires when it does. */
export interface HostCallJob extends SandboxJob {
  deadlineAt?: number;
  signal?: AbortSignal;
}

export type SandboxOutcome = { ok: true; value: JsonValue; durationMs: number } | { ok: false; error: ErrorJSON; durationMs: number };

export type LogLevel = 'info' | 'warn' | 'error';

/** Caps on every JSON value that crosses the sandbox boundary, in either direction. */
export interface BoundaryLimits {
  maxBytes: number;
  maxDepth: number;
  maxNodes: number;
}

export const DEFAULT_BOUNDARY_LIMITS: Readonly<BoundaryLimits> = Object.freeze({ maxBytes: 1024 * 1024, maxDepth: 64, maxNodes: 100_000 });

/** Caps on guest log output; lines past the count are dropped after one notice. */
export const LOG_LIMITS = Object.freeze({ maxLineChars: 8 * 1024, maxLines: 1000 });

/**
 * Jobs one WebAssembly instance serves (each in its own runtime and context) before the thread replaces it.
 * A new instance costs ~14 ms of CPU; a kept one with a fresh runtime a few ms.
 */
export const DEFAULT_RECYCLE_AFTER_JOBS = 200;

/** Host calls a single job may have outstanding at once, so a guest cannot flood the main thread. */
export const MAX_HOST_CALLS_IN_FLIGHT = 64;

// Messages between the pool and a worker thread. Values travel as JSON text so that each side applies the
// boundary caps itself instead of trusting a structured clone.
export type ToWorker =
  | { type: 'run'; runId: number; job: SandboxJob; deadlineAt: number }
  | { type: 'hostResult'; runId: number; callId: number; ok: true; json: string }
  | { type: 'hostResult'; runId: number; callId: number; ok: false; error: ErrorJSON };

export type GuestResult = { ok: true; json: string } | { ok: false; error: ErrorJSON };

export type FromWorker =
  | { type: 'ready' }
  | { type: 'log'; runId: number; level: LogLevel; message: string }
  | { type: 'hostCall'; runId: number; callId: number; name: string; argsJson: string }
  | { type: 'warn'; message: string }
  | { type: 'done'; runId: number; result: GuestResult; instancesCreated?: number };
