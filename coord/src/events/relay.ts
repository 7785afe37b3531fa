// Live job events across coords. Each coord emits the events it records on its own emitter (the SSE routes
// listen there); with several coords on one PostgreSQL, an SSE client of one coord must also see what
// another one recorded. After each commit the recording coord sends a NOTIFY naming the jobs and the range of
// event seqs it added (a doorbell, not the events: NOTIFY payloads are small and not durable); every other
// coord that has a live subscriber for one of those jobs reads those events from the ledger and emits them
// locally. The ledger stays the one source.
//
// A doorbell is rung only for jobs some other coord follows: each coord announces on a second channel the jobs
// it starts and stops following (a job is followed while its `job:<id>` event has a listener here: an SSE
// stream, the hosts controller), repeats the whole list every `announceEveryMs`, and asks the others for
// theirs when it starts (`hello`). What a coord announced is forgotten after three periods without hearing it
// again (a coord that died). So a coord whose jobs nobody streams sends no notifications at all.
//
// Neither a doorbell nor an announcement is needed for correctness. A notification can be lost (the coord
// that recorded the events died between its commit and its NOTIFY), or not sent (the recording coord had not
// heard of the follow yet), so every `catchUpMs` the relay also compares, for the jobs it has subscribers
// for, the newest seq in the ledger (jobs.event_seq) with the newest it has emitted, and reads what is
// missing. An SSE client that reconnects gets everything after its Last-Event-ID from the ledger anyway.
import { randomBytes } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { JobEventMessage } from '@writ/protocol';
import type { Ledger } from '../ledger/index.ts';
import { SessionLeases } from '../ledger/leases.ts';
import { PgSession } from '../ledger/pg-session.ts';

export const EVENTS_CHANNEL = 'writ_job_events';
/** Where coords announce which jobs they follow (so that only those are rung for). */
export const FOLLOWS_CHANNEL = 'writ_job_follows';
/** NOTIFY payloads are limited to 8000 bytes; a larger batch is sent as several notifications. */
const MAX_PAYLOAD = 7000;

/** What a coord sends: its name and, per job, the first and last seq it recorded. */
interface Doorbell {
  from: string;
  jobs: [string, number, number][];
}

/** What a coord announces: jobs it now follows (or still does), jobs it stopped following, and `hello` on start. */
interface Follows {
  from: string;
  add?: string[];
  del?: string[];
  /** The sender (re)joined: the others announce every job they follow. */
  hello?: true;
  /** How often the sender repeats its follows (ms): its word holds for three times that. */
  every: number;
}

export interface EventRelayOptions {
  session: PgSession;
  ledger: Ledger;
  /** The coord's local emitter: `job:<id>` events, as CoordService.events (or attach it later). */
  emitter?: EventEmitter;
  onError?: (err: Error) => void;
  /** How often followed jobs are checked against the ledger for events whose notification was lost (default 2 s). */
  catchUpMs?: number;
  /**
   * How often this coord repeats the jobs it follows (default 10 s); the others forget a coord's follows after
   * three times that without hearing them again.
   */
  announceEveryMs?: number;
}

export class EventRelay {
  private pending = new Map<string, [number, number]>();
  private scheduled = false;
  private closed = false;
  private chain: Promise<void> = Promise.resolve();
  /** For jobs followed here: the newest seq emitted locally (recorded here or relayed). */
  private readonly seen = new Map<string, number>();
  private catchUpTimer: NodeJS.Timeout | undefined;
  private announceTimer: NodeJS.Timeout | undefined;
  readonly metrics = {
    notificationsSent: 0,
    notificationsReceived: 0,
    eventsRelayed: 0,
    eventsCaughtUp: 0,
    catchUpPasses: 0,
    /** Events recorded here for which no doorbell was rung: no other coord follows their job. */
    eventsFollowedNowhereElse: 0,
    announcementsSent: 0,
  };

  private emitter: EventEmitter | undefined;
  /** Jobs followed here (a listener on `job:<id>`), as announced to the others. */
  private readonly followedHere = new Set<string>();
  /** Changes to announce on the next tick: true for a job followed from now on, false for one dropped. */
  private announcing = new Map<string, boolean>();
  private announceScheduled = false;
  /** Jobs other coords follow: job → coord → until when its word holds. */
  private readonly followedByOthers = new Map<string, Map<string, number>>();
  /** The session's generation when this coord last said hello: after a lost connection it says hello again. */
  private helloGeneration = -1;

  private constructor(private readonly opts: EventRelayOptions) {
    if (opts.emitter) this.attach(opts.emitter);
  }

  /** Where relayed events are emitted and follows are seen: the service's emitter, once the service exists. */
  attach(emitter: EventEmitter): void {
    const was = this.emitter;
    if (was) {
      was.off('newListener', this.onNewListener);
      was.off('removeListener', this.onRemoveListener);
    }
    this.emitter = emitter;
    emitter.on('newListener', this.onNewListener);
    emitter.on('removeListener', this.onRemoveListener);
    const now = new Set(jobsListenedOn(emitter));
    for (const id of this.followedHere) if (!now.has(id)) this.follow(id, false);
    for (const id of now) this.follow(id, true);
  }

  static async start(opts: EventRelayOptions): Promise<EventRelay> {
    const r = new EventRelay(opts);
    // One notification at a time, in the order they came: a stream gets the events of one job in order.
    await opts.session.listen(EVENTS_CHANNEL, (payload) => {
      r.chain = r.chain.then(() => r.received(payload)).catch((e: Error) => opts.onError?.(e));
    });
    await opts.session.listen(FOLLOWS_CHANNEL, (payload) => r.receivedFollows(payload));
    await r.announceAll();
    // A lost session missed announcements both ways: say hello on the next one (which the query opens).
    opts.session.onReset(() => {
      if (!r.closed) setTimeout(() => void r.announceAll().catch((e: Error) => opts.onError?.(e)), 250).unref();
    });
    r.catchUpTimer = setInterval(() => {
      r.chain = r.chain.then(() => r.catchUp()).catch((e: Error) => opts.onError?.(e));
    }, opts.catchUpMs ?? 2000);
    r.catchUpTimer.unref();
    r.announceTimer = setInterval(() => {
      r.forgetExpired();
      void r.announceAll().catch((e: Error) => opts.onError?.(e));
    }, r.announceEveryMs);
    r.announceTimer.unref();
    return r;
  }

  private get name(): string {
    return this.opts.session.opts.name;
  }

  private get announceEveryMs(): number {
    return this.opts.announceEveryMs ?? 10_000;
  }

  /** Whether another coord has said (recently enough) that it follows `jobId`. */
  followedElsewhere(jobId: string): boolean {
    const by = this.followedByOthers.get(jobId);
    if (!by) return false;
    const now = Date.now();
    for (const [coord, until] of by) if (until < now) by.delete(coord);
    if (by.size === 0) this.followedByOthers.delete(jobId);
    return by.size > 0;
  }

  /** How many jobs other coords follow, as far as this coord has heard (and not yet forgotten). */
  get followsHeardOf(): number {
    return this.followedByOthers.size;
  }

  /** Drops what other coords said they follow and did not repeat in time (a coord that died said nothing more). */
  private forgetExpired(): void {
    for (const id of [...this.followedByOthers.keys()]) this.followedElsewhere(id);
  }

  private readonly onNewListener = (name: string | symbol): void => {
    // Emitted before the listener is added.
    if (typeof name === 'string' && name.startsWith('job:')) this.follow(name.slice(4), true);
  };

  private readonly onRemoveListener = (name: string | symbol): void => {
    // Emitted after the listener is removed.
    if (typeof name === 'string' && name.startsWith('job:') && this.emitter?.listenerCount(name) === 0) this.follow(name.slice(4), false);
  };

  /** A job starts or stops being followed here: the others hear of it on the next tick. */
  private follow(jobId: string, on: boolean): void {
    if (this.closed || this.followedHere.has(jobId) === on) return;
    if (on) this.followedHere.add(jobId);
    else this.followedHere.delete(jobId);
    this.announcing.set(jobId, on);
    if (this.announceScheduled) return;
    this.announceScheduled = true;
    setImmediate(() => {
      this.announceScheduled = false;
      const changes = this.announcing;
      this.announcing = new Map();
      const add = [...changes].filter(([, on]) => on).map(([id]) => id);
      const del = [...changes].filter(([, on]) => !on).map(([id]) => id);
      void this.announce({ add, del }).catch((e: Error) => this.opts.onError?.(e));
    });
  }

  /**
   * Repeats every job followed here (so the others keep them, and learn them after a lost notification); says
   * hello first when this session is new, so the others repeat theirs.
   */
  private async announceAll(): Promise<void> {
    const hello = this.opts.session.generation !== this.helloGeneration;
    if (!hello && this.followedHere.size === 0) return;
    const generation = this.opts.session.generation;
    await this.announce({ add: [...this.followedHere], del: [], hello });
    if (hello) this.helloGeneration = generation;
  }

  private async announce(o: { add: string[]; del: string[]; hello?: boolean }): Promise<void> {
    const head = { from: this.name, every: this.announceEveryMs };
    const payloads = [
      ...(o.hello ? [JSON.stringify({ ...head, hello: true } satisfies Follows)] : []),
      ...packed(o.add, (add) => ({ ...head, add }) satisfies Follows),
      ...packed(o.del, (del) => ({ ...head, del }) satisfies Follows),
    ];
    this.metrics.announcementsSent += await this.notify(FOLLOWS_CHANNEL, payloads);
  }

  private receivedFollows(payload: string): void {
    if (this.closed) return;
    let f: Follows;
    try {
      f = JSON.parse(payload) as Follows;
    } catch {
      return;
    }
    if (typeof f !== 'object' || f === null || typeof f.from !== 'string' || f.from === this.name) return;
    // The sender's period, within reason (an announcement is not trusted to keep a follow for hours).
    const every = Number.isFinite(f.every) ? Math.min(Math.max(f.every, 100), 600_000) : this.announceEveryMs;
    const until = Date.now() + 3 * every;
    for (const id of Array.isArray(f.add) ? f.add : []) {
      if (typeof id !== 'string') continue;
      let by = this.followedByOthers.get(id);
      if (!by) this.followedByOthers.set(id, (by = new Map()));
      by.set(f.from, until);
    }
    for (const id of Array.isArray(f.del) ? f.del : []) {
      const by = typeof id === 'string' ? this.followedByOthers.get(id) : undefined;
      if (!by) continue;
      by.delete(f.from);
      if (by.size === 0) this.followedByOthers.delete(id);
    }
    // A coord that (re)joined learns at once what this one follows.
    if (f.hello && this.followedHere.size > 0) void this.announce({ add: [...this.followedHere], del: [] }).catch((e: Error) => this.opts.onError?.(e));
  }

  /** The local coord recorded (and emitted) event `seq` of `jobId`: tell the others, in one NOTIFY per tick. */
  readonly published = (jobId: string, seq: number): void => {
    if (this.closed) return;
    if (this.seen.has(jobId)) this.seen.set(jobId, Math.max(this.seen.get(jobId)!, seq));
    if (!this.followedElsewhere(jobId)) {
      this.metrics.eventsFollowedNowhereElse++;
      return;
    }
    const r = this.pending.get(jobId);
    this.pending.set(jobId, r ? [Math.min(r[0], seq), Math.max(r[1], seq)] : [seq, seq]);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.flush().catch((e: Error) => this.opts.onError?.(e));
    });
  };

  private async flush(): Promise<void> {
    const batch = [...this.pending].map(([id, [a, b]]) => [id, a, b] as [string, number, number]);
    this.pending = new Map();
    // One statement for the whole tick: pg_notify per payload.
    const sent = await this.notify(
      EVENTS_CHANNEL,
      packed(batch, (jobs) => ({ from: this.name, jobs }) satisfies Doorbell),
    );
    this.metrics.notificationsSent += sent;
  }

  /** Sends the payloads on `channel` in one statement; returns how many. */
  private async notify(channel: string, payloads: readonly string[]): Promise<number> {
    if (payloads.length === 0) return 0;
    await this.opts.session.query(`SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p`, [channel, payloads]);
    return payloads.length;
  }

  private async received(payload: string): Promise<void> {
    let bell: Doorbell;
    try {
      bell = JSON.parse(payload) as Doorbell;
    } catch {
      return;
    }
    if (bell.from === this.name || !Array.isArray(bell.jobs)) return;
    this.metrics.notificationsReceived++;
    for (const j of bell.jobs) {
      if (!Array.isArray(j) || typeof j[0] !== 'string' || !Number.isInteger(j[1]) || !Number.isInteger(j[2])) continue;
      const [jobId, first, last] = j;
      // Only jobs someone here follows: the others cost nothing but the notification.
      const emitter = this.emitter;
      if (!emitter || emitter.listenerCount(`job:${jobId}`) === 0) continue;
      // What a catch-up pass emitted already is not read, nor emitted, again.
      const from = Math.max(first - 1, this.seen.get(jobId) ?? 0);
      if (from >= last) continue;
      const events = await this.opts.ledger.listJobEvents(jobId, from, Math.min(1000, last - from));
      this.metrics.eventsRelayed += events.length;
      this.emit(emitter, jobId, events);
    }
  }

  private emit(
    emitter: EventEmitter,
    jobId: string,
    events: readonly { seq: number; type: JobEventMessage['type']; level: string | null; message: string; data: unknown }[],
  ): void {
    for (const e of events) {
      if (this.seen.has(jobId)) this.seen.set(jobId, Math.max(this.seen.get(jobId)!, e.seq));
      emitter.emit(`job:${jobId}`, { seq: e.seq, type: e.type, level: e.level, message: e.message, data: e.data } satisfies JobEventMessage);
    }
  }

  /** Reads, for the jobs followed here, events the ledger has past the newest emitted here (a lost notification). */
  private async catchUp(): Promise<void> {
    const emitter = this.emitter;
    if (!emitter || this.closed) return;
    this.metrics.catchUpPasses++;
    const followed = jobsListenedOn(emitter);
    for (const id of this.seen.keys()) if (!followed.includes(id)) this.seen.delete(id);
    if (followed.length === 0) return;
    const rows = await this.opts.ledger.db.query<{ id: string; event_seq: number }>('SELECT id, event_seq FROM jobs WHERE id = ANY($1::text[])', [followed]);
    for (const r of rows) {
      const newest = Number(r.event_seq);
      const seen = this.seen.get(r.id);
      // A job seen for the first time: its streams read the ledger when they opened, but an event recorded since
      // then by a coord that had not heard of the follow yet rang no doorbell. Its newest event is emitted: a
      // stream drops it when it has it, and reads from the ledger whatever it lacks up to it.
      if (seen === undefined) {
        this.seen.set(r.id, newest);
        if (newest > 0) {
          const last = await this.opts.ledger.listJobEvents(r.id, newest - 1, 1);
          this.metrics.eventsCaughtUp += last.length;
          this.emit(emitter, r.id, last);
        }
        continue;
      }
      if (newest <= seen) continue;
      const events = await this.opts.ledger.listJobEvents(r.id, seen, Math.min(1000, newest - seen));
      this.metrics.eventsCaughtUp += events.length;
      this.emit(emitter, r.id, events);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.catchUpTimer);
    clearInterval(this.announceTimer);
    this.emitter?.off('newListener', this.onNewListener);
    this.emitter?.off('removeListener', this.onRemoveListener);
    if (this.pending.size > 0) await this.flush().catch(() => {});
    // The others stop ringing for this coord's streams now, not when its word expires.
    if (this.followedHere.size > 0) await this.announce({ add: [], del: [...this.followedHere] }).catch(() => {});
  }
}

/**
 * Splits `items` over as many payloads as NOTIFY's size limit needs (MAX_PAYLOAD bytes each, counted as each item
 * serialises, with room for what `wrap` puts around them), in order; none for no items.
 */
function packed<T>(items: readonly T[], wrap: (part: T[]) => object): string[] {
  const out: string[] = [];
  let part: T[] = [];
  let size = 0;
  for (const it of items) {
    const bytes = Buffer.byteLength(JSON.stringify(it)) + 1;
    if (part.length > 0 && size + bytes > MAX_PAYLOAD) {
      out.push(JSON.stringify(wrap(part)));
      part = [];
      size = 0;
    }
    part.push(it);
    size += bytes;
  }
  if (part.length > 0) out.push(JSON.stringify(wrap(part)));
  return out;
}

/** The jobs an emitter has listeners for (`job:<id>` events). */
function jobsListenedOn(emitter: EventEmitter): string[] {
  return emitter
    .eventNames()
    .filter((n): n is string => typeof n === 'string' && n.startsWith('job:') && emitter.listenerCount(n) > 0)
    .map((n) => n.slice(4));
}

/** What a coord on PostgreSQL runs beside its service to work with other coords: leases and the event relay. */
export interface Coordination {
  session: PgSession;
  leases: SessionLeases;
  relay: EventRelay;
  close(): Promise<void>;
}

/** This coord's name among the others (pg_stat_activity.application_name; at most 63 bytes). */
export function coordName(): string {
  return `writ-coord ${hostname()} ${process.pid} ${randomBytes(3).toString('hex')}`.slice(0, 63);
}

/**
 * Opens the coordination session on `databaseUrl` and starts leases and the relay on it. `emitter` is the
 * service's event emitter; hand `relay.published` to the service so what it records reaches the others.
 */
export async function startCoordination(o: {
  databaseUrl: string;
  ledger: Ledger;
  emitter?: EventEmitter;
  name?: string;
  expireAfterMs?: number;
  /** How often the relay repeats the jobs this coord follows (EventRelayOptions.announceEveryMs). */
  announceEveryMs?: number;
  /** How often followed jobs are checked for events no doorbell announced (EventRelayOptions.catchUpMs). */
  catchUpMs?: number;
  onError?: (err: Error) => void;
}): Promise<Coordination> {
  const session = new PgSession({
    databaseUrl: o.databaseUrl,
    name: o.name ?? coordName(),
    ...(o.expireAfterMs ? { expireAfterMs: o.expireAfterMs } : {}),
    ...(o.onError ? { onError: o.onError } : {}),
  });
  try {
    const leases = new SessionLeases(session, o.onError);
    const relay = await EventRelay.start({
      session,
      ledger: o.ledger,
      ...(o.emitter ? { emitter: o.emitter } : {}),
      ...(o.announceEveryMs ? { announceEveryMs: o.announceEveryMs } : {}),
      ...(o.catchUpMs ? { catchUpMs: o.catchUpMs } : {}),
      ...(o.onError ? { onError: o.onError } : {}),
    });
    return {
      session,
      leases,
      relay,
      async close() {
        await relay.close();
        await leases.close();
        await session.close();
      },
    };
  } catch (e) {
    await session.close();
    throw e;
  }
}
