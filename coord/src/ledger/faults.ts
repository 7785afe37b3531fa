// What can go wrong under the ledger, said in Writ's terms: a storage fault (disk full, read-only, gone, I/O
// errors) or a damaged ledger becomes LEDGER_UNAVAILABLE or LEDGER_CORRUPT naming the folder and what to do,
// instead of PGlite's "failed to initialize properly" or a bare SQLSTATE. LedgerHealth carries the state that
// readiness reports and that stops the coord on a fault it cannot ride out.
import { constants as fsc } from 'node:fs';
import { access, open, stat, statfs, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { WritError, errorCodeOf } from '@writ/protocol';

/**
 * disk-full: writes fail until space is freed (ridden out: 503, then resumes). engine: PGlite itself stopped
 * answering or aborted (ridden out by restarting it). The others stop the coord: nothing written after them
 * could be trusted to be on disk.
 */
export type LedgerFaultKind = 'disk-full' | 'read-only' | 'vanished' | 'io' | 'corrupt' | 'engine';

const FATAL: ReadonlySet<LedgerFaultKind> = new Set(['read-only', 'vanished', 'io', 'corrupt']);

export function isFatalFault(kind: LedgerFaultKind): boolean {
  return FATAL.has(kind);
}

/** Where the ledger lives, for messages: a PGlite folder, or PostgreSQL (no folder to name). */
export type LedgerPlace = { dataDir: string } | { engine: 'postgres' } | { inMemory: true };

function placeName(p: LedgerPlace): string {
  if ('dataDir' in p) return `the ledger folder ${p.dataDir}`;
  return 'engine' in p ? 'the PostgreSQL ledger' : 'the in-memory ledger';
}

/** The text an operator acts on, per fault. */
export function ledgerFault(kind: LedgerFaultKind, place: LedgerPlace, detail: string, cause?: unknown): WritError {
  const where = placeName(place);
  const dir = 'dataDir' in place ? place.dataDir : undefined;
  const details = { fault: kind, ...(dir ? { dataDir: dir } : {}), ...sqlStateOf(cause) };
  const check = dir ? `writ ledger check --ledger ${dir}` : 'writ ledger check';
  switch (kind) {
    case 'disk-full':
      return new WritError(
        'LEDGER_UNAVAILABLE',
        `${where}: its disk is full (${detail}); writes are refused until space is freed, and nothing is acknowledged meanwhile`,
        details,
        { cause },
      );
    case 'read-only':
      return new WritError(
        'LEDGER_UNAVAILABLE',
        `${where} is on a read-only file system (${detail}); the coord stops. Make the disk writable again and start the coord`,
        details,
        { cause },
      );
    case 'vanished':
      return new WritError(
        'LEDGER_UNAVAILABLE',
        `${where} is gone (${detail}): its disk was unmounted or the folder removed; the coord stops. Mount the disk again (or restore a backup) and start the coord`,
        details,
        { cause },
      );
    case 'io':
      return new WritError(
        'LEDGER_UNAVAILABLE',
        `${where}: its disk reports I/O errors (${detail}); the coord stops. Check the disk, then run \`${check}\``,
        details,
        { cause },
      );
    case 'engine':
      return new WritError('LEDGER_UNAVAILABLE', `${where}: the ledger engine stopped answering (${detail})`, details, { cause });
    case 'corrupt':
      return new WritError(
        'LEDGER_CORRUPT',
        `${where} is corrupt (${detail}). Stop the coord, keep the folder for inspection, restore the newest backup (docs/operations.md, "Backups") and run \`${check}\``,
        details,
        { cause },
      );
  }
}

function sqlStateOf(e: unknown): { sqlState?: string } {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? { sqlState: code } : {};
}

/**
 * Reads a storage fault out of an error from PGlite, PostgreSQL or the file system: its SQLSTATE, the errno
 * text PostgreSQL quotes ("could not extend file …: No space left on device"), or Node's errno code.
 * Ordinary SQL errors (constraints, syntax) are not faults: null.
 */
export function faultKindOf(e: unknown): LedgerFaultKind | null {
  if (errorCodeOf(e)) return null; // already ours
  const err = e as { code?: unknown; message?: unknown; name?: unknown } | null;
  const code = typeof err?.code === 'string' ? err.code : '';
  const m = (typeof err?.message === 'string' ? err.message : String(e)).toLowerCase();
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === '53100' || m.includes('no space left on device') || m.includes('disk quota exceeded'))
    return 'disk-full';
  if (code === 'EROFS' || m.includes('read-only file system')) return 'read-only';
  // Before "corrupt": PostgreSQL says "could not read block …: Input/output error" for a failing disk.
  if (code === 'EIO' || code === '58030' || m.includes('input/output error')) return 'io';
  if (
    code === 'XX001' ||
    code === 'XX002' ||
    /invalid page in block|could not read block|unexpected zero page|invalid (magic number|checkpoint record|primary checkpoint|resource manager|record length)|valid checkpoint record|files are incompatible|missing chunk number|could not access status of transaction|corrupt/.test(
      m,
    )
  )
    return 'corrupt';
  // A file PostgreSQL had, gone: the folder vanished (or, if it is still there, a damaged ledger: the caller probes).
  if (code === 'ENOENT' || code === 'ESTALE' || code === '58P01' || code === '58P02') return 'vanished';
  if (m.startsWith('aborted(') || m.includes('failed to initialize properly') || err?.name === 'RuntimeError') return 'engine';
  return null;
}

// ---------------------------------------------------------------- the folder itself

export type FolderState = { ok: true; freeBytes: number } | { ok: false; kind: Exclude<LedgerFaultKind, 'engine' | 'corrupt'>; detail: string };

/** The folder's device and inode when it was opened: a different one later means its disk went away. */
export interface FolderIdentity {
  dev: number;
  ino: number;
}

export async function folderIdentity(dataDir: string): Promise<FolderIdentity> {
  const s = await stat(dataDir);
  return { dev: s.dev, ino: s.ino };
}

function errnoState(e: unknown, what: string): FolderState {
  const code = (e as NodeJS.ErrnoException).code ?? '';
  const kind = faultKindOf(e);
  const detail = `${what}: ${code || (e as Error).message}`;
  if (kind === 'disk-full' || kind === 'read-only' || kind === 'io' || kind === 'vanished') return { ok: false, kind, detail };
  if (code === 'EACCES' || code === 'EPERM') return { ok: false, kind: 'read-only', detail };
  return { ok: false, kind: 'io', detail };
}

/**
 * Looks at the ledger folder from outside PGlite: still the folder that was opened (same device and inode),
 * still holding a ledger, writable. With `write` (true: 64 KiB, or a byte count), also writes a file there:
 * the only reliable way to tell a full disk (statfs counts reserved blocks differently for root), and a disk
 * that ext4 made read-only after an error (its "emergency_ro" passes access(2); only a write is refused).
 */
export async function probeFolder(
  dataDir: string,
  opts: { identity?: FolderIdentity; write?: boolean | number; expectLedger?: boolean; minFreeBytes?: number } = {},
): Promise<FolderState> {
  try {
    const s = await stat(dataDir);
    if (opts.identity && (s.dev !== opts.identity.dev || s.ino !== opts.identity.ino))
      return { ok: false, kind: 'vanished', detail: 'the folder at that path is not the one the coord opened' };
  } catch (e) {
    return errnoState(e, 'the folder');
  }
  if (opts.expectLedger) {
    try {
      await stat(join(dataDir, 'PG_VERSION'));
    } catch (e) {
      return errnoState(e, 'PG_VERSION');
    }
  }
  try {
    await access(dataDir, fsc.W_OK);
  } catch (e) {
    return errnoState(e, 'write access');
  }
  if (opts.write) {
    const probe = join(dataDir, `.writ-probe-${process.pid}`);
    try {
      const fh = await open(probe, 'w', 0o600);
      try {
        await fh.write(Buffer.alloc(typeof opts.write === 'number' ? opts.write : 64 * 1024));
      } finally {
        await fh.close();
      }
    } catch (e) {
      await unlink(probe).catch(() => {});
      return errnoState(e, 'a test write');
    }
    await unlink(probe).catch(() => {});
  }
  let freeBytes = Number.NaN;
  try {
    const f = await statfs(dataDir);
    freeBytes = f.bavail * f.bsize;
  } catch {
    /* not every file system answers statfs; the write probe above is what decides */
  }
  if (opts.minFreeBytes !== undefined && freeBytes < opts.minFreeBytes) {
    return {
      ok: false,
      kind: 'disk-full',
      detail: `${(freeBytes / 2 ** 20).toFixed(1)} MiB free, and PGlite needs ${(opts.minFreeBytes / 2 ** 20).toFixed(0)} MiB to start`,
    };
  }
  return { ok: true, freeBytes };
}

/**
 * Free space PGlite needs to start on an existing folder: its crash recovery ends by writing a new WAL
 * segment (16 MiB). With less, it stops with "could not write to file pg_wal/xlogtemp…: No space left on
 * device", which reaches us only as "PGlite failed to initialize properly".
 */
export const PGLITE_START_FREE_BYTES = 20 * 2 ** 20;

// ---------------------------------------------------------------- health

/**
 * The ledger's health as the coord last saw it. A ridden-out fault (disk full) holds until a write succeeds
 * again; a fatal one is final and is announced once to `onFatal` listeners (the coord stops on it).
 */
export class LedgerHealth {
  private current: WritError | null = null;
  private final: WritError | null = null;
  private readonly listeners = new Set<(e: WritError) => void>();
  /** Storage faults met since the ledger opened (each failed write counts), for /metrics. */
  faults = 0;

  /** Null while the ledger takes writes; otherwise what is wrong. */
  get problem(): WritError | null {
    return this.final ?? this.current;
  }

  get fatal(): WritError | null {
    return this.final;
  }

  /** A fault the ledger can ride out: readiness is false until `writeSucceeded`. */
  degraded(e: WritError): void {
    this.faults++;
    if (!this.final) this.current = e;
  }

  writeSucceeded(): void {
    this.current = null;
  }

  /** A fault the ledger cannot ride out: announced once. */
  failed(e: WritError): void {
    this.faults++;
    if (this.final) return;
    this.final = e;
    for (const l of this.listeners) {
      try {
        l(e);
      } catch {
        /* a listener's failure must not hide the fault from the others */
      }
    }
  }

  /** Calls `listener` once on a fatal fault (at once if it happened already); returns an unsubscribe. */
  onFatal(listener: (e: WritError) => void): () => void {
    if (this.final) {
      listener(this.final);
      return () => {};
    }
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
