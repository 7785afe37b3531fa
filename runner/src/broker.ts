// The privileged side of host calls, on the runner's main thread. Whatever the sandbox worker claims, the
// broker checks again that the capability was granted to this job and that the arguments match its schema
// (X5) before anything in the host table runs.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { WritError, type JsonValue } from '@writ/protocol';
import { hostFacts } from '@writ/sal';
import { checkCapabilityCall } from './sandbox/capability-check.ts';
import type { HostCallJob } from './sandbox/types.ts';

export interface HostFunction {
  run(args: any, job: HostCallJob): Promise<JsonValue>;
}

/** Capability name → implementation. Only capabilities present here can be called on this node. */
export type HostTable = Map<string, HostFunction>;

export class HostBroker {
  constructor(private readonly table: HostTable) {}

  /** Throws unless this job may make this call here: capability granted, arguments valid, function present. */
  check(job: HostCallJob, name: string, args: JsonValue): void {
    checkCapabilityCall(job.caps, name, args);
    if (!this.table.has(name))
      throw new WritError('HOST_CALL_DENIED', `capability ${JSON.stringify(name)} is not available on this node`, { capability: name });
  }

  async call(job: HostCallJob, name: string, args: JsonValue): Promise<JsonValue> {
    this.check(job, name, args);
    return this.invoke(job, name, args);
  }

  /** Runs a call `check` has already passed (the runner checks before consulting the journal). */
  invoke(job: HostCallJob, name: string, args: JsonValue): Promise<JsonValue> {
    return this.table.get(name)!.run(args, job);
  }
}

/** Host functions that need no node configuration; the SAL areas are added to this table by the runner. */
export function defaultHostTable(): HostTable {
  return new Map<string, HostFunction>([
    ['host.facts', { run: async () => (await hostFacts()) as unknown as JsonValue }],
    [
      'time.sleep',
      {
        // A sleep never outlives the job: one that would end after the deadline fails at once with TIMEOUT
        // (rather than returning early and letting the script believe the time passed), and a sleep in
        // progress ends when the job does.
        async run(args: { ms: number }, job) {
          const left = job.deadlineAt === undefined ? Infinity : job.deadlineAt - Date.now();
          if (args.ms > left) throw new WritError('TIMEOUT', `time.sleep(${args.ms}) would end after the job's deadline (${Math.max(0, left)} ms left)`);
          try {
            await sleep(args.ms, undefined, job.signal ? { signal: job.signal } : undefined);
          } catch {
            // aborted: the job is over and nobody reads the result
          }
          return null;
        },
      },
    ],
    // One reading of the clock for both fields (two readings could straddle a millisecond and disagree).
    [
      'time.now',
      {
        run: async () => {
          const d = new Date();
          return { ms: d.getTime(), iso: d.toISOString() };
        },
      },
    ],
    ['random.bytes', { run: async (args: { n: number }) => ({ hex: randomBytes(args.n).toString('hex') }) }],
  ]);
}
