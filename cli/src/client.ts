// A small HTTP client for the coord API, used by the CLI. The coord URL and token come from --coord /
// WRIT_COORD / WRIT_TOKEN, or from the file `writ dev` writes ($WRIT_HOME/dev.json).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { WritError, backoffDelay, fetchAnswer, fromErrorJSON, parseErrorAnswer, toErrorJSON, type ErrorJSON } from '@writ/protocol';
import { writHome } from './keyfiles.ts';

export interface CoordTarget {
  url: string;
  token: string;
  /** Where the URL came from, for hints: 'dev.json' when `writ dev --keep` recorded it. */
  from?: 'flag' | 'env' | 'dev.json';
}

export async function resolveCoord(flag: string | undefined, env: NodeJS.ProcessEnv): Promise<CoordTarget> {
  let dev: { url?: string; token?: string } = {};
  try {
    dev = JSON.parse(await readFile(path.join(writHome(env), 'dev.json'), 'utf8'));
  } catch {
    /* no dev stack recorded */
  }
  const url = flag ?? env.WRIT_COORD ?? dev.url;
  const token = env.WRIT_TOKEN ?? dev.token;
  if (!url)
    throw new WritError('NO_COORD', 'no cluster to talk to: start one with `writ dev --keep` (in another terminal), or pass --coord URL / set WRIT_COORD');
  if (!token) throw new WritError('USAGE', 'no API token: set WRIT_TOKEN (printed by `writ dev --keep`)');
  return { url, token, from: flag ? 'flag' : env.WRIT_COORD ? 'env' : 'dev.json' };
}

/** One request to the coord; `signal` (besides a 30 s timeout) abandons it. Unreachable: NOT_READY (retryable). */
export async function api<T>(
  coord: CoordTarget,
  method: string,
  route: string,
  body?: string | object,
  signal?: AbortSignal,
): Promise<{ status: number; body: T }> {
  const hint = coord.from === 'dev.json' ? ' (the address `writ dev --keep` recorded: start it again with `writ dev --keep`)' : '';
  const answer = await fetchAnswer({
    method,
    url: new URL(route, coord.url),
    token: coord.token,
    ...(body !== undefined ? { body } : {}),
    timeoutMs: 30_000,
    ...(signal ? { signal } : {}),
    unavailable: (m) => new WritError('INTERNAL', `the coord ${m}`),
    unreachable: (e) => new WritError('NOT_READY', `cannot reach the coord at ${coord.url}${hint}: ${e.cause ? String(e.cause) : e.message}`),
  });
  return { status: answer.status, body: answer.body as T };
}

export interface OutageWatcher {
  /** The first retryable failure of an outage (the coord unreachable, restarting, or answering 503). */
  onOutage?(error: ErrorJSON): void;
  /** The coord answered again after an outage. */
  onRecovered?(): void;
}

/**
 * A request that rides out coord restarts: retryable failures are retried with backoff (0.2 s doubling to 2 s)
 * until the coord answers or `signal` aborts (then the abort reason is thrown). A permanent refusal (bad token,
 * no such job) is thrown at once. Only for requests that are safe to repeat: reads, and submissions, which
 * the job id makes idempotent (a repeat is answered as already recorded).
 */
export async function requestUntilAnswered<T>(
  coord: CoordTarget,
  method: 'GET' | 'POST',
  route: string,
  body: string | undefined,
  signal?: AbortSignal,
  watch: OutageWatcher = {},
): Promise<T> {
  let outage = false;
  for (let failures = 0; ; failures++) {
    signal?.throwIfAborted();
    try {
      const { body: answer } = await api<T>(coord, method, route, body, signal);
      if (outage) watch.onRecovered?.();
      return answer;
    } catch (e) {
      signal?.throwIfAborted();
      const error = toErrorJSON(e);
      if (!error.retryable) throw e;
      if (!outage) watch.onOutage?.(error);
      outage = true;
    }
    await sleep(backoffDelay(failures, 200, 2000), undefined, signal ? { signal } : {}).catch(() => {});
  }
}

export interface StreamedEvent<D = { seq: number; type: string; level: string | null; message: string; data: unknown }> {
  id: number | null;
  event: string;
  data: D;
}

/**
 * Follows a job's server-sent events until the stream ends (the job finished) or `signal` aborts. A lost
 * stream, an unreachable coord or a retryable answer (a coord restarting) is retried, resuming after the last
 * event seen; 20 failed tries in a row give up.
 */
export function followEvents(coord: CoordTarget, jobId: string, onEvent: (e: StreamedEvent) => void, signal?: AbortSignal): Promise<void> {
  return followStream(coord, `/v1/jobs/${encodeURIComponent(jobId)}/events`, onEvent, signal);
}

/** Follows any of the coord's event streams (a job's, a flow's) as followEvents does. */
export async function followStream<D>(coord: CoordTarget, route: string, onEvent: (e: StreamedEvent<D>) => void, signal?: AbortSignal): Promise<void> {
  let lastId = 0;
  const retryLater = (attempt: number) => sleep(backoffDelay(attempt, 200, 3000), undefined, signal ? { signal } : {}).catch(() => {});
  for (let attempt = 0; attempt < 20; attempt++) {
    let res: Response;
    try {
      res = await fetch(new URL(route, coord.url), {
        headers: { authorization: `Bearer ${coord.token}`, accept: 'text/event-stream', ...(lastId ? { 'last-event-id': String(lastId) } : {}) },
        ...(signal ? { signal } : {}),
      });
    } catch {
      if (signal?.aborted) return;
      await retryLater(attempt);
      continue;
    }
    if (!res.ok || !res.body) {
      const text = await res.text().catch(() => '');
      let err = null;
      try {
        err = parseErrorAnswer(JSON.parse(text || '{}'));
      } catch {
        /* not JSON: reported below by status */
      }
      if (err?.retryable || (!err && res.status >= 500)) {
        await retryLater(attempt);
        continue;
      }
      throw err ? fromErrorJSON(err) : new WritError('INTERNAL', `events stream answered ${res.status}`);
    }
    const decoder = new TextDecoder();
    let buf = '';
    let ended = false;
    let progressed = false;
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let id: number | null = null;
          let event = 'message';
          let data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('id: ')) id = Number(line.slice(4));
            else if (line.startsWith('event: ')) event = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (event === 'end') ended = true;
          else if (data) {
            if (id) lastId = id;
            progressed = true;
            onEvent({ id, event, data: JSON.parse(data) as D });
          }
        }
      }
    } catch (e) {
      if (signal?.aborted) return;
      void e;
    }
    if (ended) return;
    if (progressed) attempt = -1; // the budget is for failures in a row
    await retryLater(Math.max(0, attempt));
  }
  throw new WritError('NOT_READY', 'lost the event stream too many times');
}
