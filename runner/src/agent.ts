// Phone-home: registration (signs a fresh challenge from the ledger, T13) and signed heartbeats every
// 30 s that carry health and are sent even when the node is unhealthy. When the coord is away the agent
// backs off exponentially with jitter, capped. Time comes from a Clock so the loops are tested with a
// controllable one (a loop whose timers never fire is a bug nobody sees otherwise).
import {
  HEARTBEAT_PATH,
  PAYLOAD_TYPES,
  REGISTER_PATH,
  WritError,
  b64url,
  backoffDelay,
  canonicalJson,
  encodeEnvelope,
  errorCodeOf,
  fetchAnswer,
  sha256Hex,
  signEnvelope,
  utf8,
  type ErrorJSON,
  type Heartbeat,
  type JsonValue,
  type Logger,
  type NodeHealth,
  type NodeRegistration,
  type RegistrationAnswer,
} from '@writ/protocol';
import type { NodeIdentity } from './identity.ts';

export interface Clock {
  now(): number;
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const onAbort = () => {
        clearTimeout(t);
        resolve();
      };
      // The listener goes when the timer fires: a long-lived signal must not collect one per heartbeat.
      const t = setTimeout(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal.addEventListener('abort', onAbort, { once: true });
    }),
};

export interface NodeAgentOptions {
  coordUrl: string;
  identity: NodeIdentity;
  labels: Record<string, string>;
  version: string;
  heartbeatMs?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  clock?: Clock;
  random?: () => number;
  inventory: () => Promise<JsonValue>;
  health: () => Promise<NodeHealth>;
  logger?: Logger;
  /** The boot image's enrollment token (a bootstrap secret), sent inside the signed registration. */
  enrollmentToken?: string | null;
  /** Called with the coord's answer after every successful registration (the assignment is in it). */
  onRegistered?: (answer: RegistrationAnswer) => void;
}

export type AgentState = 'registering' | 'registered' | 'stopped';

/** Exponential backoff with jitter in [50%, 100%] of the capped delay (defined once in @writ/protocol). */
export { backoffDelay };

export class NodeAgent {
  state: AgentState = 'registering';
  heartbeatsSent = 0;
  registrations = 0;
  lastError: ErrorJSON | null = null;
  private seq = 0;
  private readonly ac = new AbortController();
  private loop: Promise<void> | undefined;
  private readonly clock: Clock;

  constructor(readonly opts: NodeAgentOptions) {
    this.clock = opts.clock ?? systemClock;
  }

  start(): void {
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.ac.abort();
    await this.loop;
    this.state = 'stopped';
  }

  private async post(path: string, body: string): Promise<unknown> {
    // No token (the body is signed), and only a timeout: stop() waits at most that long for a request in flight.
    const answer = await fetchAnswer({
      method: 'POST',
      url: new URL(path, this.opts.coordUrl),
      body,
      timeoutMs: 15_000,
      unavailable: (m) => new WritError('LEDGER_UNAVAILABLE', `coord ${m}`),
      unreachable: (e) => new WritError('LEDGER_UNAVAILABLE', `coord unreachable: ${e.message}`),
    });
    return answer.body;
  }

  /** One registration: challenge, then the signed registration. */
  async register(): Promise<RegistrationAnswer> {
    const { identity } = this.opts;
    const { challenge } = (await this.post('/v1/nodes/challenge', JSON.stringify({ nodeId: identity.nodeId, publicKey: b64url(identity.key.publicKey) }))) as {
      challenge: string;
    };
    const inventory = await this.opts.inventory();
    const payload: NodeRegistration = {
      nodeId: identity.nodeId,
      publicKey: b64url(identity.key.publicKey),
      challenge,
      method: 'POST',
      path: REGISTER_PATH,
      inventorySha256: sha256Hex(canonicalJson(inventory)),
      inventory,
      labels: this.opts.labels,
      version: this.opts.version,
      iat: Math.floor(this.clock.now() / 1000),
      ...(this.opts.enrollmentToken ? { enrollmentToken: this.opts.enrollmentToken } : {}),
    };
    const env = signEnvelope(PAYLOAD_TYPES.nodeRegistration, utf8.encode(JSON.stringify(payload)), [identity.key]);
    const answer = (await this.post(REGISTER_PATH, encodeEnvelope(env))) as RegistrationAnswer;
    this.registrations++;
    return answer;
  }

  /** One heartbeat, always sent, with health inside (a sick node reports sick, not silent). */
  async heartbeat(): Promise<void> {
    let health: NodeHealth;
    try {
      health = await this.opts.health();
    } catch (e) {
      health = { healthy: false, problems: [`health check failed: ${(e as Error).message}`], load1: 0, memAvailableBytes: 0, diskFreeBytes: 0, runningJobs: 0 };
    }
    this.seq = Math.max(this.seq + 1, this.clock.now());
    const hb: Heartbeat = { nodeId: this.opts.identity.nodeId, method: 'POST', path: HEARTBEAT_PATH, seq: this.seq, ts: this.clock.now(), health };
    const env = signEnvelope(PAYLOAD_TYPES.heartbeat, utf8.encode(JSON.stringify(hb)), [this.opts.identity.key]);
    await this.post(HEARTBEAT_PATH, encodeEnvelope(env));
    this.heartbeatsSent++;
  }

  private async run(): Promise<void> {
    const base = this.opts.backoffBaseMs ?? 1000;
    const max = this.opts.backoffMaxMs ?? 60_000;
    const random = this.opts.random ?? Math.random;
    let failures = 0;
    while (!this.ac.signal.aborted) {
      try {
        if (this.state === 'registering') {
          const answer = await this.register();
          this.state = 'registered';
          this.opts.onRegistered?.(answer);
          // Its pool decides which supervisors carry its jobs, and `redis` is the address they announce for its
          // runner (federation): a daemon started without --redis takes its jobs from there (node-daemon.ts).
          this.opts.logger?.info({ node: this.opts.identity.nodeId, pool: answer.pool ?? null, redis: answer.redis ?? null }, 'registered with the coord');
        }
        await this.heartbeat();
        failures = 0;
        this.lastError = null;
        await this.clock.sleep(this.opts.heartbeatMs ?? 30_000, this.ac.signal);
      } catch (e) {
        if (this.ac.signal.aborted) break;
        const code = errorCodeOf(e);
        this.lastError = { code: code ?? 'INTERNAL', message: (e as Error).message, retryable: true };
        // The ledger forgot us, or our registration was not accepted: register again.
        if (code === 'NODE_NOT_FOUND' || code === 'CHALLENGE_INVALID') this.state = 'registering';
        const delay = backoffDelay(failures++, base, max, random);
        this.opts.logger?.warn({ code, err: (e as Error).message, retryInMs: delay }, 'phone-home failed; backing off');
        await this.clock.sleep(delay, this.ac.signal);
      }
    }
  }
}
