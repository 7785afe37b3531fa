// Leases: which coord drives which piece of work, when several coords share one PostgreSQL ledger.
//
// A lease is a PostgreSQL session-level advisory lock on (kind, key), taken on this coord's coordination
// session (pg-session.ts) with pg_try_advisory_lock: never waited for, so a coord skips what another one
// drives and moves on. It lasts as long as the session: a coord that is SIGKILLed or crashes loses its leases
// when its socket closes, one that stops answering loses them after the session's expiry (the server's
// idle_session_timeout), and the work goes to whichever coord claims it next. No table, no clock, no
// cleanup: the database is the one authority on who holds what (`pg_locks` joined with
// `pg_stat_activity.application_name` shows it).
//
// A lease says who drives; it does not make a stale decision fresh. Claim first, then read the state the
// work depends on (the reconciler re-reads each job it claimed), and keep every write fenced as it already
// is (attempt numbers, compare-and-set). With PGlite only one coord opens a ledger (its folder is locked),
// so leases are held in memory with the same interface.
import type { PgSession } from './pg-session.ts';

export interface Leases {
  /** This coord, as it appears to the others (pg_stat_activity.application_name). */
  readonly holder: string;
  /**
   * Claims the keys of `kind` that no coord holds, without waiting; returns those now held by this one.
   * A key this coord holds already is not returned again (another task of this process is driving it).
   * Returns none when the database cannot be asked: work nobody holds waits for the next pass.
   */
  claim(kind: string, keys: readonly string[]): Promise<string[]>;
  /** Gives keys up (those not held are ignored). */
  release(kind: string, keys: readonly string[]): Promise<void>;
  /** Whether this coord still holds the lease (false once its session was lost). */
  holds(kind: string, key: string): boolean;
  /** Claims, runs `fn` on the keys claimed, and releases them whatever `fn` did. */
  withClaimed<T>(kind: string, keys: readonly string[], fn: (claimed: string[]) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

const K = (kind: string, key: string) => `${kind}\u0000${key}`;

abstract class BaseLeases implements Leases {
  protected readonly held = new Set<string>();
  constructor(readonly holder: string) {}
  abstract claim(kind: string, keys: readonly string[]): Promise<string[]>;
  abstract release(kind: string, keys: readonly string[]): Promise<void>;
  holds(kind: string, key: string): boolean {
    return this.held.has(K(kind, key));
  }
  async withClaimed<T>(kind: string, keys: readonly string[], fn: (claimed: string[]) => Promise<T>): Promise<T> {
    const claimed = await this.claim(kind, keys);
    try {
      return await fn(claimed);
    } finally {
      await this.release(kind, claimed).catch(() => {});
    }
  }
  async close(): Promise<void> {
    this.held.clear();
  }
}

/** One process, one ledger (PGlite): leases in memory. */
export class LocalLeases extends BaseLeases {
  async claim(kind: string, keys: readonly string[]): Promise<string[]> {
    const out: string[] = [];
    for (const key of new Set(keys)) {
      if (this.held.has(K(kind, key))) continue;
      this.held.add(K(kind, key));
      out.push(key);
    }
    return out;
  }
  async release(kind: string, keys: readonly string[]): Promise<void> {
    for (const key of keys) this.held.delete(K(kind, key));
  }
}

/**
 * Advisory locks on a coordination session. The lock key is (hashtext(kind), hashtext(key)): two keys that
 * hash alike share a lock, which only makes a coord skip one of them for a pass.
 */
export class SessionLeases extends BaseLeases {
  constructor(
    private readonly session: PgSession,
    private readonly onError: (err: Error) => void = () => {},
  ) {
    super(session.opts.name);
    // The server released every lock with the session; nothing is held any more.
    session.onReset(() => this.held.clear());
  }

  async claim(kind: string, keys: readonly string[]): Promise<string[]> {
    const wanted = [...new Set(keys)].filter((k) => !this.held.has(K(kind, k)));
    if (wanted.length === 0) return [];
    // Mark them first: a second claim from this process while this one is out must not lock them again
    // (session locks are re-entrant, so PostgreSQL would say yes).
    for (const k of wanted) this.held.add(K(kind, k));
    const generation = this.session.generation;
    let got: string[];
    try {
      const rows = await this.session.query<{ k: string }>('SELECT k FROM unnest($2::text[]) AS k WHERE pg_try_advisory_lock(hashtext($1), hashtext(k))', [
        kind,
        wanted,
      ]);
      got = rows.map((r) => r.k);
    } catch (e) {
      for (const k of wanted) this.held.delete(K(kind, k));
      this.onError(e as Error);
      return [];
    }
    const mine = new Set(got);
    for (const k of wanted) if (!mine.has(k)) this.held.delete(K(kind, k));
    // The session was lost while the claim was out: whatever it answered is gone with it.
    if (this.session.generation !== generation) {
      for (const k of got) this.held.delete(K(kind, k));
      return [];
    }
    return got;
  }

  async release(kind: string, keys: readonly string[]): Promise<void> {
    const mine = [...new Set(keys)].filter((k) => this.held.has(K(kind, k)));
    if (mine.length === 0) return;
    for (const k of mine) this.held.delete(K(kind, k));
    const generation = this.session.generation;
    try {
      await this.session.query('SELECT pg_advisory_unlock(hashtext($1), hashtext(k)) FROM unnest($2::text[]) AS k', [kind, mine]);
    } catch (e) {
      // A lost session released them already.
      if (this.session.generation === generation) this.onError(e as Error);
    }
  }
}

/** The kinds of work the coord leases; a flow engine adds its own (e.g. 'flow'). */
export const LEASE_KINDS = Object.freeze({
  /** Reconciling one job: dispatching it when it waits, or a new attempt when its queue entry was lost. */
  job: 'writ.job',
});
