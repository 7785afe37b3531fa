// Federation, the supervisor's side: it announces itself to the coord with a signed heartbeat every interval
// (id, API URL, pools, queue depth, capacity, Redis health). The coord accepts it only when the key set in
// force lists this supervisor's key for those pools; one silent for three intervals is marked gone.
import {
  PAYLOAD_TYPES,
  SUPERVISOR_HEARTBEAT_PATH,
  WritError,
  encodeEnvelope,
  encodeSupervisorHeartbeat,
  errorCodeOf,
  parseSupervisorHeartbeatAnswer,
  readAnswer,
  signEnvelope,
  type KeyPair,
  type SupervisorHeartbeat,
} from '@writ/protocol';
import type { Logger, Supervisor } from './supervisor.ts';

export interface HeartbeatOptions {
  supervisor: Supervisor;
  coordUrl: string;
  /** Where the coord reaches this supervisor's API. */
  apiUrl: string;
  pools: readonly string[];
  intervalMs: number;
  /** The Redis address runners of these pools use, without credentials. */
  runnerRedis: string | null;
  clusterId: string;
  signingKey: KeyPair;
  logger?: Logger;
}

export interface HeartbeatLoop {
  /** Heartbeats the coord accepted, and the last refusal or failure (null after a success). */
  readonly sent: number;
  readonly lastError: { code: string; message: string } | null;
  stop(): Promise<void>;
}

/** Builds one signed heartbeat envelope. */
export async function signedSupervisorHeartbeat(o: Omit<HeartbeatOptions, 'coordUrl' | 'logger'>, ts: number): Promise<string> {
  const stats = await o.supervisor.stats();
  const hb: SupervisorHeartbeat = {
    supervisor: o.supervisor.opts.id,
    cluster: o.clusterId,
    method: 'POST',
    path: SUPERVISOR_HEARTBEAT_PATH,
    apiUrl: o.apiUrl,
    pools: [...o.pools],
    queueDepth: stats.queueDepth,
    capacity: stats.capacity,
    redisOk: stats.redisOk,
    redisError: stats.redisError,
    runnerRedis: o.runnerRedis,
    intervalMs: o.intervalMs,
    ts,
  };
  return encodeEnvelope(signEnvelope(PAYLOAD_TYPES.supervisorHeartbeat, encodeSupervisorHeartbeat(hb), [o.signingKey]));
}

/** Sends a heartbeat now and then every `intervalMs` until stopped; a refusal is logged (once per code) and retried. */
export function startSupervisorHeartbeats(o: HeartbeatOptions): HeartbeatLoop {
  const ac = new AbortController();
  let sent = 0;
  let lastError: { code: string; message: string } | null = null;
  let lastTs = 0;
  const beat = async () => {
    // Strictly increasing, as the coord requires, even when two beats fall in one millisecond.
    lastTs = Math.max(lastTs + 1, Date.now());
    const body = await signedSupervisorHeartbeat(o, lastTs);
    let res: Response;
    try {
      res = await fetch(new URL(SUPERVISOR_HEARTBEAT_PATH, o.coordUrl), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        signal: AbortSignal.any([ac.signal, AbortSignal.timeout(10_000)]),
      });
    } catch (e) {
      throw new WritError('LEDGER_UNAVAILABLE', `coord unreachable: ${(e as Error).message}`);
    }
    parseSupervisorHeartbeatAnswer(readAnswer(res.status, await res.text(), (m) => new WritError('LEDGER_UNAVAILABLE', `coord ${m}`)));
  };
  const loop = (async () => {
    while (!ac.signal.aborted) {
      try {
        await beat();
        sent++;
        o.supervisor.setCollecting(true);
        if (lastError) o.logger?.info({ supervisor: o.supervisor.opts.id }, 'the coord accepts our heartbeats again');
        lastError = null;
      } catch (e) {
        if (ac.signal.aborted) break;
        const code = errorCodeOf(e) ?? 'INTERNAL';
        // Refused by the coord: stop carrying events its peers should carry. Unreachable: keep collecting (the
        // entries wait, unacknowledged, until the coord is back).
        if (code === 'SUPERVISOR_NOT_LISTED') o.supervisor.setCollecting(false);
        const previous = lastError as { code: string } | null; // set by earlier rounds of this loop
        if (previous?.code !== code) {
          const hint = code === 'SUPERVISOR_NOT_LISTED' ? ' (an admin lists this supervisor: writ keyset supervisor add)' : '';
          o.logger?.warn({ supervisor: o.supervisor.opts.id, code, err: (e as Error).message }, `the coord refused or missed a heartbeat${hint}`);
        }
        lastError = { code, message: (e as Error).message };
      }
      await new Promise<void>((resolve) => {
        const onAbort = () => (clearTimeout(t), resolve());
        // The listener goes when the timer fires: the signal lives as long as the loop.
        const t = setTimeout(() => (ac.signal.removeEventListener('abort', onAbort), resolve()), o.intervalMs);
        ac.signal.addEventListener('abort', onAbort, { once: true });
      });
    }
  })();
  return {
    get sent() {
      return sent;
    },
    get lastError() {
      return lastError;
    },
    async stop() {
      ac.abort();
      await loop;
    },
  };
}
