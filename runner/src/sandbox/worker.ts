// A sandbox worker thread: runs one job at a time in a fresh QuickJS runtime and forwards host calls to the
// pool after checking them here first (X5). Nothing in this thread holds authority; the broker re-checks.
import { parentPort, workerData } from 'node:worker_threads';
import { toErrorJSON, type ErrorJSON } from '@writ/protocol';
import { decodeBounded } from './boundary.ts';
import { checkCapabilityCall } from './capability-check.ts';
import { configureSandbox, precompileQuickJS, prepareSpareInstance, runGuest, sandboxCounters } from './quickjs.ts';
import type { BoundaryLimits, FromWorker, SandboxJob, ToWorker } from './types.ts';

export interface SandboxWorkerData {
  boundary: BoundaryLimits;
  /** memoryMiB to prepare the first instance for, before any job says otherwise. */
  warmMemoryMiB: number;
  /** Jobs one WebAssembly instance serves before it is replaced. */
  recycleAfterJobs: number;
}

const port = parentPort;
if (!port) throw new Error('the sandbox worker must run in a worker thread');
const { boundary, warmMemoryMiB, recycleAfterJobs } = workerData as SandboxWorkerData;

interface WaitingCall {
  resolve(json: string): void;
  reject(error: ErrorJSON): void;
}

let current: { runId: number; calls: Map<number, WaitingCall> } | undefined;
let nextCallId = 0;

const post = (msg: FromWorker) => port.postMessage(msg);

function runJob(runId: number, job: SandboxJob, deadlineAt: number): void {
  const calls = new Map<number, WaitingCall>();
  current = { runId, calls };
  // Not awaited: the job's end is posted to the pool. The guest's errors become its result below; anything
  // thrown after that is an uncaught error in this thread, and the pool replaces a thread that dies.
  void runGuest(job, deadlineAt, {
    boundary,
    log: (level, message) => post({ type: 'log', runId, level, message }),
    warn: (message) => post({ type: 'warn', message }),
    hostCall(name, argsJson) {
      try {
        checkCapabilityCall(job.caps, name, decodeBounded(argsJson, boundary, `${name} arguments`));
      } catch (err) {
        return Promise.reject(toErrorJSON(err, true));
      }
      const callId = ++nextCallId;
      post({ type: 'hostCall', runId, callId, name, argsJson });
      return new Promise<string>((resolve, reject) => calls.set(callId, { resolve, reject }));
    },
  })
    .catch((err: unknown) => ({ ok: false as const, error: toErrorJSON(err) }))
    .then((result) => {
      current = undefined;
      post({ type: 'done', runId, result, instancesCreated: sandboxCounters().instancesCreated });
      prepareSpareInstance(job.limits.memoryMiB, boundary);
    });
}

function deliverHostResult(msg: Extract<ToWorker, { type: 'hostResult' }>): void {
  if (!current || current.runId !== msg.runId) return;
  const call = current.calls.get(msg.callId);
  if (!call) return;
  current.calls.delete(msg.callId);
  if (!msg.ok) return call.reject(msg.error);
  try {
    decodeBounded(msg.json, boundary, 'the host call result');
  } catch (err) {
    return call.reject(toErrorJSON(err));
  }
  call.resolve(msg.json);
}

port.on('message', (msg: ToWorker) => {
  if (msg.type === 'run') runJob(msg.runId, msg.job, msg.deadlineAt);
  else if (msg.type === 'hostResult') deliverHostResult(msg);
});

configureSandbox({ recycleAfterJobs });
precompileQuickJS();
prepareSpareInstance(warmMemoryMiB, boundary);
post({ type: 'ready' });
