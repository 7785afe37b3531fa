// What runners report through the Redis events stream, and what supervisors forward to the coord. It lives
// in protocol because runner and supervisor meet only through Redis and must agree on these shapes.
import type { ErrorJSON } from './errors.ts';
import type { JsonValue } from './strict-json.ts';

export type RunnerEvent =
  | { type: 'status'; jobId: string; attempt: number; node: string; ts: number; status: 'running' }
  | { type: 'log'; jobId: string; attempt: number; node: string; ts: number; level: 'info' | 'warn' | 'error'; message: string }
  | { type: 'result'; jobId: string; attempt: number; node: string; ts: number; ok: true; value: JsonValue; durationMs: number }
  | { type: 'result'; jobId: string; attempt: number; node: string; ts: number; ok: false; error: ErrorJSON; final: boolean; durationMs: number }
  | { type: 'security'; jobId: string | null; attempt: number; node: string; ts: number; error: ErrorJSON };

/** A batch of runner events, signed by the supervisor that read them (result payload type). */
export interface SupervisorReport {
  supervisor: string;
  seq: string;
  events: RunnerEvent[];
}
