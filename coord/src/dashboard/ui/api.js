// The dashboard's only way to the coord: its token-protected API, called with the token the operator typed.
// The token lives in this module's memory only (no cookie, no localStorage, never in a URL: A2); reloading
// the page forgets it. Live views read the coord's server-sent events with fetch and a small parser, since
// EventSource cannot send an Authorization header.

let token = null;
const listeners = new Set();

export function hasToken() {
  return token !== null;
}

export function setToken(t) {
  token = t;
  for (const l of listeners) l(token !== null);
}

export function forgetToken() {
  setToken(null);
}

/** Called with true/false when the operator signs in or out (or the coord refuses the token). */
export function onAuthChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra) {
  return { authorization: `Bearer ${token ?? ''}`, ...extra };
}

async function errorOf(res) {
  let code = `HTTP_${res.status}`;
  let message = res.statusText || 'request failed';
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code ?? code;
      message = body.error.message ?? message;
    }
  } catch {
    // not Writ's error shape: keep the status line
  }
  if (res.status === 401) forgetToken();
  return new ApiError(res.status, code, message);
}

/** GET (or another method) an API path; answers the parsed JSON or throws an ApiError with Writ's error code. */
export async function api(path, opts = {}) {
  const res = await fetch(path, {
    method: opts.method ?? 'GET',
    headers: headers(opts.body === undefined ? {} : { 'content-type': 'application/json' }),
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    cache: 'no-store',
    credentials: 'omit',
    signal: opts.signal,
  });
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

/** Checks a token against the coord before keeping it. */
export async function signIn(candidate) {
  const res = await fetch('/v1/nodes', { headers: { authorization: `Bearer ${candidate}` }, cache: 'no-store', credentials: 'omit' });
  if (res.status === 401) throw new ApiError(401, 'UNAUTHENTICATED', 'the coord refused this token');
  if (!res.ok) throw await errorOf(res);
  setToken(candidate);
}

/**
 * Splits a text/event-stream into events. Feed it decoded text as it arrives; it calls onEvent with
 * { id, event, data } for each complete event (comments and keep-alives are skipped).
 */
export function sseParser(onEvent) {
  let buf = '';
  let ev = { id: null, event: 'message', data: [] };
  return (chunk) => {
    buf += chunk;
    for (;;) {
      const nl = buf.search(/\r\n|\r|\n/);
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        if (ev.data.length > 0) onEvent({ id: ev.id, event: ev.event, data: ev.data.join('\n') });
        ev = { id: ev.id, event: 'message', data: [] };
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') ev.event = value;
      else if (field === 'data') ev.data.push(value);
      else if (field === 'id') ev.id = value;
    }
  };
}

/**
 * Follows a server-sent event stream until it sends `end` or `signal` aborts. Reconnects after a dropped
 * connection, resuming with Last-Event-ID (a header: nothing goes in the URL). onEvent gets { event, id, data }
 * with data parsed as JSON; onState gets 'live', 'reconnecting', 'ended' or an ApiError.
 */
export async function follow(path, { onEvent, onState, signal }) {
  let lastId = null;
  let delay = 500;
  while (!signal.aborted) {
    let ended = false;
    try {
      const res = await fetch(path, {
        headers: headers({ accept: 'text/event-stream', ...(lastId ? { 'last-event-id': lastId } : {}) }),
        cache: 'no-store',
        credentials: 'omit',
        signal,
      });
      if (!res.ok) {
        const err = await errorOf(res);
        onState?.(err);
        if (res.status < 500) return;
        throw err;
      }
      onState?.('live');
      delay = 500;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      const feed = sseParser((e) => {
        if (e.id) lastId = e.id;
        if (e.event === 'end') {
          ended = true;
          return;
        }
        let data = null;
        try {
          data = JSON.parse(e.data);
        } catch {
          data = e.data;
        }
        onEvent({ event: e.event, id: e.id, data });
      });
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        feed(value);
        if (ended) break;
      }
      if (ended) {
        await reader.cancel().catch(() => {});
        onState?.('ended');
        return;
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status === 401) return;
    }
    if (signal.aborted) return;
    onState?.('reconnecting');
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10_000);
  }
}
