// The coord's side of the ledger thread (pglite-thread.ts): the same Db interface as an in-process PGlite,
// with every statement sent to the thread that owns PGlite. PGlite runs each statement synchronously on
// its thread; in the coord's thread it would hold up HTTP, the supervisor and the runner while it runs.
//
// It also watches that thread and its folder, because PGlite does not fail cleanly on a sick disk: after a
// write error on a read-only disk, or a new WAL segment that a full disk cannot hold, it spins on its thread
// and never answers again. A fatal fault (read-only, vanished, I/O errors, corruption) fails every call at
// once and is announced on `health`; a full disk is ridden out: calls fail with LEDGER_UNAVAILABLE, and a
// thread that stopped answering is replaced (PostgreSQL's crash recovery, as after a SIGKILL) once there is
// space again.
import { Worker } from 'node:worker_threads';
import { WritError, errorCodeOf } from '@writ/protocol';
import type { Db, Queryable } from './db.ts';
import {
  PGLITE_START_FREE_BYTES,
  faultKindOf,
  folderIdentity,
  isFatalFault,
  ledgerFault,
  probeFolder,
  type FolderIdentity,
  type LedgerFaultKind,
  type LedgerHealth,
  type LedgerPlace,
} from './faults.ts';

export type ThreadRequest =
  | { id: number; op: 'query'; sql: string; params?: unknown[]; tx?: number }
  | { id: number; op: 'exec'; script: string; tx?: number }
  | { id: number; op: 'begin' }
  | { id: number; op: 'commit'; tx: number }
  | { id: number; op: 'rollback'; tx: number }
  | { id: number; op: 'close' };

/** id 0 is the thread's own: ready (ok) or could not open (error). */
export type ThreadReply = { id: number; ok: true; rows?: unknown[]; tx?: number } | { id: number; ok: false; error: { message: string; code?: string } };

type Request = ThreadRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

export interface ThreadLedgerOptions {
  dataDir: string | undefined;
  health: LedgerHealth;
  /** Called once the ledger is closed for good (the folder lock is released then). */
  onClosed(): void;
  /** A request unanswered this long while the disk is full means the thread is stuck (default 3 s). */
  stuckAfterMs?: number;
  /** A request unanswered this long means the thread is stuck whatever the disk says (default 60 s). */
  hungAfterMs?: number;
  /** How often the folder and the requests in flight are looked at (default 1 s). */
  watchEveryMs?: number;
  /** How long PGlite may take to open (default 5 min: creating a ledger on a loaded machine takes a while). */
  openTimeoutMs?: number;
}

/** A database error from the thread: the message and the SQLSTATE code, as PGlite's own error carries them. */
function rebuild(error: { message: string; code?: string }): Error {
  return Object.assign(new Error(error.message), error.code ? { code: error.code } : {});
}

const READ_ONLY_SQL = /^\s*(select|show)\b/i;

interface Waiter {
  resolve(r: ThreadReply & { ok: true }): void;
  reject(e: Error): void;
  since: number;
}

/** Starts the thread and waits for PGlite to open; rejects with what PGlite said (the caller classifies it). */
function startThread(dataDir: string | undefined, openTimeoutMs: number): Promise<Worker> {
  // A worker inherits the process's flags; --input-type (a process started with -e) is refused for a file entry.
  const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
  const worker = new Worker(new URL('./pglite-thread-entry.mjs', import.meta.url), { workerData: { dataDir }, execArgv });
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
      if (!err) return resolve(worker);
      void worker.terminate();
      reject(err);
    };
    const onMessage = (r: ThreadReply) => {
      if (r.id === 0) done(r.ok ? undefined : rebuild(r.error));
    };
    const onError = (e: Error) => done(e);
    const onExit = (code: number) => done(new Error(`the ledger thread exited with code ${code} while opening`));
    const timer = setTimeout(() => done(new Error(`PGlite did not open within ${openTimeoutMs} ms`)), openTimeoutMs);
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
  });
}

export async function openPgliteThread(o: ThreadLedgerOptions): Promise<Db> {
  const { dataDir, health } = o;
  const place: LedgerPlace = dataDir ? { dataDir } : { inMemory: true };
  const stuckAfterMs = o.stuckAfterMs ?? 3000;
  const hungAfterMs = o.hungAfterMs ?? 60_000;
  const openTimeoutMs = o.openTimeoutMs ?? 300_000;

  let worker = await startThread(dataDir, openTimeoutMs);
  const identity: FolderIdentity | undefined = dataDir ? await folderIdentity(dataDir) : undefined;
  /** Bumped on every restart: a transaction begun on an earlier thread is gone with it. */
  let generation = 0;
  let state: 'open' | 'restarting' | 'failed' | 'closed' = 'open';
  /** What calls get while the state is not open. */
  let refusal: WritError = new WritError('LEDGER_UNAVAILABLE', 'the ledger is closed');
  const waiting = new Map<number, Waiter>();
  let nextId = 0;

  const rejectAll = (e: WritError) => {
    for (const w of waiting.values()) w.reject(e);
    waiting.clear();
  };

  /** The fault behind an error, as a WritError; a file gone from a folder that is still there is damage, not a vanished disk. */
  const faultOf = async (kind: LedgerFaultKind, detail: string, cause?: unknown): Promise<{ kind: LedgerFaultKind; error: WritError }> => {
    if (kind === 'vanished' && dataDir) {
      const st = await probeFolder(dataDir, { identity, expectLedger: true });
      if (st.ok) kind = 'corrupt';
      else if (st.kind !== 'disk-full') ({ kind, detail } = { kind: st.kind, detail: `${detail}; ${st.detail}` });
    }
    return { kind, error: ledgerFault(kind, place, detail, cause) };
  };

  const failFatally = (e: WritError) => {
    if (state === 'failed' || state === 'closed') return;
    state = 'failed';
    refusal = e;
    rejectAll(e);
    health.failed(e);
    // The thread may be spinning in PGlite: stop it rather than wait for it.
    void worker.terminate().catch(() => {});
  };

  /** Replaces a thread that stopped answering or died; calls fail fast meanwhile. */
  const restart = (why: WritError) => {
    if (state !== 'open') return;
    state = 'restarting';
    refusal = why;
    health.degraded(why);
    generation++;
    rejectAll(why);
    const old = worker;
    void old.terminate().catch(() => {});
    void (async () => {
      let failures = 0;
      for (let delay = 250; state === 'restarting'; delay = Math.min(delay * 2, 5000)) {
        await new Promise((r) => setTimeout(r, delay).unref());
        if (state !== 'restarting') return;
        if (dataDir) {
          // Only with space to spare: PGlite's recovery writes, and on a full disk it spins again.
          const st = await probeFolder(dataDir, { identity, write: true, expectLedger: true, minFreeBytes: PGLITE_START_FREE_BYTES });
          if (!st.ok) {
            if (st.kind !== 'disk-full') return failFatally((await faultOf(st.kind, st.detail)).error);
            refusal = ledgerFault('disk-full', place, st.detail);
            continue;
          }
        }
        try {
          const next = await startThread(dataDir, openTimeoutMs);
          if (state !== 'restarting') {
            void next.terminate();
            return;
          }
          worker = next;
          attach(next);
          state = 'open';
          return;
        } catch (e) {
          const kind = faultKindOf(e) ?? 'engine';
          const f = await faultOf(kind, (e as Error).message, e);
          if (isFatalFault(f.kind)) return failFatally(f.error);
          refusal = f.error;
          // PGlite that cannot start on a folder with space to spare will not start by waiting.
          if (f.kind !== 'disk-full' && ++failures >= 5)
            return failFatally(ledgerFault('corrupt', place, `PGlite could not reopen it: ${(e as Error).message}`, e));
        }
      }
    })();
  };

  const attach = (w: Worker) => {
    w.on('message', (r: ThreadReply) => {
      if (w !== worker) return;
      const waiter = waiting.get(r.id);
      if (!waiter) return;
      waiting.delete(r.id);
      if (r.ok) waiter.resolve(r);
      else waiter.reject(rebuild(r.error));
    });
    const died = async (detail: string, cause?: unknown) => {
      if (w !== worker || state !== 'open') return;
      const f = await faultOf(faultKindOf(cause) ?? 'engine', detail, cause);
      if (isFatalFault(f.kind)) failFatally(f.error);
      else restart(f.error);
    };
    w.on('error', (e) => void died(`the ledger thread failed: ${e.message}`, e));
    w.on('exit', (code) => void died(`the ledger thread exited with code ${code}`));
  };
  attach(worker);

  /** Maps a failed call: a storage fault becomes a WritError (and fails, degrades or restarts the ledger). */
  const mapError = async (e: Error, gen: number): Promise<Error> => {
    if (errorCodeOf(e)) return e;
    const kind = faultKindOf(e);
    if (!kind) return e;
    const f = await faultOf(kind, e.message, e);
    if (isFatalFault(f.kind)) failFatally(f.error);
    else if (f.kind === 'disk-full') health.degraded(f.error);
    else if (gen === generation) restart(f.error);
    return f.error;
  };

  const call = async (req: Request, gen = generation): Promise<ThreadReply & { ok: true }> => {
    if (state !== 'open') throw refusal;
    if (gen !== generation) throw ledgerFault('engine', place, 'the transaction was lost when the ledger thread was restarted');
    const id = ++nextId;
    try {
      return await new Promise<ThreadReply & { ok: true }>((resolve, reject) => {
        waiting.set(id, { resolve, reject, since: Date.now() });
        worker.postMessage({ ...req, id });
      });
    } catch (e) {
      throw await mapError(e as Error, gen);
    }
  };

  // A write that went through ends a fault, except a full disk: small updates still fit in pages PostgreSQL
  // has, so it ends only when a test write of the folder's own fits too (readiness would flap otherwise).
  let confirming = false;
  const wrote = () => {
    if (health.problem?.details?.fault !== 'disk-full' || !dataDir) return health.writeSucceeded();
    if (confirming) return;
    confirming = true;
    void probeFolder(dataDir, { write: true })
      .then((st) => {
        if (st.ok) health.writeSucceeded();
      })
      .finally(() => (confirming = false));
  };
  const noteWrite = <T>(p: Promise<T>): Promise<T> => p.then((v) => (wrote(), v));
  // The watch: a fatal fault is found even while nothing is asked of the ledger, and a stuck thread is replaced.
  let watching = false;
  const watch = setInterval(() => {
    if (watching || state !== 'open') return;
    watching = true;
    void (async () => {
      if (dataDir) {
        const st = await probeFolder(dataDir, { identity, expectLedger: true, write: 512 });
        if (!st.ok) {
          const f = await faultOf(st.kind, st.detail);
          if (isFatalFault(f.kind)) return failFatally(f.error);
          health.degraded(f.error);
        }
      }
      let oldest = Infinity;
      for (const w of waiting.values()) oldest = Math.min(oldest, w.since);
      const age = Date.now() - oldest;
      if (waiting.size === 0 && health.problem?.details?.fault === 'disk-full') {
        // Nothing may come to write (a coord out of rotation while not ready): write something small to find out.
        await call({ op: 'query', sql: 'SELECT txid_current()' }).then(wrote, () => {});
        return;
      }
      if (age < stuckAfterMs) return;
      const probe = dataDir === undefined ? undefined : await probeFolder(dataDir, { write: true });
      const full = health.problem?.details?.fault === 'disk-full' || (probe?.ok === false && probe.kind === 'disk-full');
      if (full) restart(ledgerFault('disk-full', place, `the ledger thread has not answered for ${age} ms; it is restarted once there is space`));
      else if (age >= hungAfterMs) restart(ledgerFault('engine', place, `the ledger thread has not answered for ${age} ms; it is restarted`));
    })()
      .catch(() => {})
      .finally(() => {
        watching = false;
      });
  }, o.watchEveryMs ?? 1000);
  watch.unref();

  const on = (tx: number | undefined, gen: number): Queryable => ({
    query: async <T>(sql: string, params?: readonly unknown[]) => {
      const r = call({ op: 'query', sql, ...(params ? { params: [...params] } : {}), ...(tx ? { tx } : {}) }, gen);
      return (await (tx || READ_ONLY_SQL.test(sql) ? r : noteWrite(r))).rows as T[];
    },
    exec: async (script) => void (await (tx ? call({ op: 'exec', script, tx }, gen) : noteWrite(call({ op: 'exec', script }, gen)))),
  });
  return {
    engine: 'pglite',
    health,
    query: (sql, params) => on(undefined, generation).query(sql, params),
    exec: (script) => on(undefined, generation).exec(script),
    transaction: async (fn) => {
      const gen = generation;
      const { tx } = await call({ op: 'begin' }, gen);
      let out;
      try {
        out = await fn(on(tx!, gen));
      } catch (e) {
        await call({ op: 'rollback', tx: tx! }, gen).catch(() => {});
        throw e;
      }
      await noteWrite(call({ op: 'commit', tx: tx! }, gen));
      return out;
    },
    close: async () => {
      if (state === 'closed') return;
      const wasOpen = state === 'open';
      clearInterval(watch);
      try {
        // A clean close checkpoints; a thread that does not answer (stuck in PGlite) is stopped instead.
        if (wasOpen) await Promise.race([call({ op: 'close' }), new Promise((r) => setTimeout(r, 30_000).unref())]).catch(() => {});
      } finally {
        state = 'closed';
        refusal = new WritError('LEDGER_UNAVAILABLE', 'the ledger is closed');
        rejectAll(refusal);
        await worker.terminate().catch(() => {});
        o.onClosed();
      }
    },
  };
}
