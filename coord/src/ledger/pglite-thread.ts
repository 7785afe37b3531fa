// The ledger's own thread: it owns the embedded PGlite (Postgres in WebAssembly, whose queries run
// synchronously on the thread that calls them) so that the coord's event loop, which also serves HTTP,
// never runs them. Requests come from `openPgliteThread` (pglite-channel.ts) as numbered messages.
import { parentPort, workerData } from 'node:worker_threads';
import type { PGlite, Transaction } from '@electric-sql/pglite';
import type { ThreadReply, ThreadRequest } from './pglite-channel.ts';
import { createPglite } from './pglite-open.ts';

const port = parentPort;
if (!port) throw new Error('the ledger thread must run in a worker thread');
const { dataDir } = workerData as { dataDir: string | undefined };

interface OpenTx {
  tx: Transaction;
  finish(commit: boolean): void;
  /** Settles after COMMIT (and the file system sync) or ROLLBACK. */
  done: Promise<void>;
}

const ROLLBACK = Symbol('rollback');
const open = new Map<number, OpenTx>();
let nextTx = 0;

function errorOf(e: unknown): ThreadReply & { ok: false } {
  const err = e as { message?: unknown; code?: unknown; detail?: unknown };
  return {
    id: 0,
    ok: false,
    error: { message: typeof err?.message === 'string' ? err.message : String(e), ...(typeof err?.code === 'string' ? { code: err.code } : {}) },
  };
}

let pg!: PGlite;
let openError: unknown;
try {
  // relaxedDurability stays false: a query's promise resolves only after PGlite has synced its file system.
  pg = await createPglite({ ...(dataDir ? { dataDir } : {}), relaxedDurability: false });
} catch (e) {
  openError = e;
}

function target(tx: number | undefined): Pick<PGlite, 'query' | 'exec'> {
  if (tx === undefined) return pg;
  const t = open.get(tx);
  if (!t) throw new Error(`transaction ${tx} is not open`);
  return t.tx;
}

async function begin(): Promise<number> {
  const id = ++nextTx;
  let finish!: (commit: boolean) => void;
  const decided = new Promise<boolean>((r) => (finish = r));
  let started!: (tx: Transaction) => void;
  const ready = new Promise<Transaction>((r) => (started = r));
  const done = pg
    .transaction(async (tx) => {
      started(tx);
      if (!(await decided)) throw ROLLBACK;
    })
    // PGlite 0.5 skips the file system sync for the COMMIT inside transaction(); do it before answering.
    .then(() => pg.syncToFs());
  // If the transaction cannot even start, `done` rejects before `ready` resolves.
  const tx = await Promise.race([ready, done.then(() => Promise.reject(new Error('the transaction ended before it started')))]);
  open.set(id, { tx, finish, done });
  return id;
}

async function end(tx: number, commit: boolean): Promise<void> {
  const t = open.get(tx);
  if (!t) throw new Error(`transaction ${tx} is not open`);
  open.delete(tx);
  t.finish(commit);
  if (commit) return t.done;
  await t.done.catch((e: unknown) => {
    if (e !== ROLLBACK) throw e;
  });
}

async function handle(m: ThreadRequest): Promise<ThreadReply> {
  switch (m.op) {
    case 'query':
      return { id: m.id, ok: true, rows: (await target(m.tx).query(m.sql, m.params)).rows };
    case 'exec':
      await target(m.tx).exec(m.script);
      return { id: m.id, ok: true };
    case 'begin':
      return { id: m.id, ok: true, tx: await begin() };
    case 'commit':
      await end(m.tx, true);
      return { id: m.id, ok: true };
    case 'rollback':
      await end(m.tx, false);
      return { id: m.id, ok: true };
    case 'close':
      for (const [tx] of open) await end(tx, false).catch(() => {});
      await pg.close();
      return { id: m.id, ok: true };
  }
}

if (openError !== undefined) {
  // The coord terminates this thread when it hears this.
  port.postMessage({ ...errorOf(openError), id: 0 } satisfies ThreadReply);
} else {
  port.on('message', (m: ThreadRequest) => {
    handle(m).then(
      (reply) => port.postMessage(reply),
      (e: unknown) => port.postMessage({ ...errorOf(e), id: m.id }),
    );
  });
  port.postMessage({ id: 0, ok: true } satisfies ThreadReply);
}
