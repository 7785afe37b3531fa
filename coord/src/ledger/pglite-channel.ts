// The coord's side of the ledger thread (pglite-thread.ts): the same Db interface as an in-process PGlite,
// with every statement sent to the thread that owns PGlite. PGlite runs each statement synchronously on
// its thread; in the coord's thread it would hold up HTTP, the supervisor and the runner while it runs.
import { Worker } from 'node:worker_threads';
import { WritError } from '@writ/protocol';
import type { Db, Queryable } from './db.ts';

export type ThreadRequest =
  | { id: number; op: 'query'; sql: string; params?: unknown[]; tx?: number }
  | { id: number; op: 'exec'; script: string; tx?: number }
  | { id: number; op: 'begin' }
  | { id: number; op: 'commit'; tx: number }
  | { id: number; op: 'rollback'; tx: number }
  | { id: number; op: 'close' };

/** id 0 is the thread's own: ready (ok) or could not open (error). */
export type ThreadReply =
  | { id: number; ok: true; rows?: unknown[]; tx?: number }
  | { id: number; ok: false; error: { message: string; code?: string } };

type Request = ThreadRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

/** A database error from the thread: the message and the SQLSTATE code, as PGlite's own error carries them. */
function rebuild(error: { message: string; code?: string }): Error {
  return Object.assign(new Error(error.message), error.code ? { code: error.code } : {});
}

export async function openPgliteThread(dataDir: string | undefined, onClosed: () => void): Promise<Db> {
  // A worker inherits the process's flags; --input-type (a process started with -e) is refused for a file entry.
  const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
  const worker = new Worker(new URL('./pglite-thread-entry.mjs', import.meta.url), { workerData: { dataDir }, execArgv });
  const waiting = new Map<number, { resolve(r: ThreadReply & { ok: true }): void; reject(e: Error): void }>();
  let nextId = 0;
  let closed = false;
  let failure: Error | undefined;
  const opened = new Promise<void>((resolve, reject) => {
    waiting.set(0, { resolve: () => resolve(), reject });
  });
  worker.on('message', (r: ThreadReply) => {
    const w = waiting.get(r.id);
    if (!w) return;
    waiting.delete(r.id);
    if (r.ok) w.resolve(r);
    else w.reject(r.id === 0 ? new Error(r.error.message) : rebuild(r.error));
  });
  const fail = (why: string) => {
    failure = new WritError('LEDGER_UNAVAILABLE', `the ledger thread stopped: ${why}`);
    for (const w of waiting.values()) w.reject(failure);
    waiting.clear();
  };
  worker.on('error', (e) => fail(e.message));
  worker.on('exit', (code) => {
    if (!closed) fail(`it exited with code ${code}`);
    onClosed();
  });
  try {
    await opened;
  } catch (e) {
    await worker.terminate();
    throw e;
  }

  const call = (req: Request): Promise<ThreadReply & { ok: true }> => {
    if (closed) return Promise.reject(new WritError('LEDGER_UNAVAILABLE', 'the ledger is closed'));
    if (failure) return Promise.reject(failure);
    const id = ++nextId;
    return new Promise((resolve, reject) => {
      waiting.set(id, { resolve, reject });
      worker.postMessage({ ...req, id });
    });
  };
  const on = (tx?: number): Queryable => ({
    query: async <T>(sql: string, params?: readonly unknown[]) => (await call({ op: 'query', sql, ...(params ? { params: [...params] } : {}), ...(tx ? { tx } : {}) })).rows as T[],
    exec: async (script) => void (await call({ op: 'exec', script, ...(tx ? { tx } : {}) })),
  });
  return {
    engine: 'pglite',
    ...on(),
    transaction: async (fn) => {
      const { tx } = await call({ op: 'begin' });
      let out;
      try {
        out = await fn(on(tx!));
      } catch (e) {
        await call({ op: 'rollback', tx: tx! }).catch(() => {});
        throw e;
      }
      await call({ op: 'commit', tx: tx! });
      return out;
    },
    close: async () => {
      if (closed) return;
      try {
        await call({ op: 'close' });
      } finally {
        closed = true;
        await worker.terminate();
      }
    },
  };
}
