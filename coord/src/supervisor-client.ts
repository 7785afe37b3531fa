// The one interface the coord uses to reach a supervisor: in-process for `writ dev`, HTTP when the
// supervisor runs as its own process (`writ supervisor`).
import {
  MAX_SUPERVISOR_BATCH_BYTES,
  MAX_SUPERVISOR_BATCH_ITEMS,
  WritError,
  assertErrorJson,
  errorCodeOf,
  parseQueueStateAnswer,
  parseSupervisorBatchAnswer,
  parseSupervisorSubmitAnswer,
  fetchAnswer,
  toErrorJSON,
  type ErrorJSON,
  type HolderState,
  type QueueState,
} from '@writ/protocol';
import type { DispatchItem, Supervisor } from '@writ/supervisor';

export interface SupervisorClient {
  readonly id: string;
  /**
   * Enqueues envelopes the coord has verified, authorised and recorded as queued. Per item: null when
   * enqueued, or the supervisor's refusal. Throws when the supervisor could not be reached at all.
   */
  dispatchMany(items: readonly DispatchItem[]): Promise<(ErrorJSON | null)[]>;
  /** Where an attempt stands in its node's queue, and whether a runner says it still executes it. */
  jobState(jobId: string, attempt: number, node: string): Promise<{ state: QueueState; failedReason?: string; held: HolderState }>;
  /** Hands over a signed key set envelope; the supervisor verifies it itself. */
  setKeySet(envelope: string): Promise<void>;
  /** Stops a cancelled job's attempt: removed from its queue if it waits there, else its runner stops it. */
  cancel(jobId: string, attempt: number, node: string): Promise<{ removed: boolean }>;
  health(): Promise<{ ok: boolean; redis: boolean }>;
}

export class InProcessSupervisorClient implements SupervisorClient {
  constructor(private readonly sup: Supervisor) {}
  get id(): string {
    return this.sup.opts.id;
  }
  /** Same process: the coord's verification is reused (the runner still verifies on its own), one bulk add. */
  async dispatchMany(items: readonly DispatchItem[]): Promise<(ErrorJSON | null)[]> {
    await this.sup.enqueueMany(items);
    return items.map(() => null);
  }
  jobState(jobId: string, attempt: number, node: string) {
    return this.sup.jobState(jobId, attempt, node);
  }
  cancel(jobId: string, attempt: number, node: string) {
    return this.sup.cancel(jobId, attempt, node);
  }
  async setKeySet(envelope: string): Promise<void> {
    await this.sup.setKeySet(envelope);
  }
  async health() {
    const h = await this.sup.health();
    return { ok: h.redis, redis: h.redis };
  }
}

export class HttpSupervisorClient implements SupervisorClient {
  constructor(
    readonly id: string,
    private readonly baseUrl: string,
    private readonly token: string,
  ) {}

  private async call(method: string, path: string, body?: unknown): Promise<unknown> {
    const answer = await fetchAnswer({
      method,
      url: new URL(path, this.baseUrl),
      token: this.token,
      ...(body !== undefined ? { body: body as string | object } : {}),
      timeoutMs: 10_000,
      unavailable: (m) => new WritError('SUPERVISOR_UNAVAILABLE', `supervisor ${this.id} ${m}`),
      unreachable: (e) => new WritError('SUPERVISOR_UNAVAILABLE', `supervisor ${this.id} at ${this.baseUrl} is unreachable: ${e.message}`),
    });
    return answer.body;
  }
  private async submit(it: DispatchItem) {
    const q = new URLSearchParams({ node: it.node, attempt: String(it.attempt), ...(it.delayMs ? { delayMs: String(Math.round(it.delayMs)) } : {}) });
    return { node: parseSupervisorSubmitAnswer(await this.call('POST', `/v1/submit?${q}`, it.envelope)).node };
  }
  /** False once the supervisor answered that it has no batch route (an older `writ supervisor`). */
  private batches = true;

  /**
   * Another process: the supervisor verifies and authorises each envelope itself before it enqueues it. Many
   * items go in batch requests (POST /v1/submit:batch, split by count and size), one bulk add per node queue
   * there, instead of a request and a queue write per item; a single item, or a supervisor without the batch
   * route, one request each.
   */
  async dispatchMany(items: readonly DispatchItem[]): Promise<(ErrorJSON | null)[]> {
    if (items.length === 1 || !this.batches) return this.dispatchEach(items);
    const out: (ErrorJSON | null)[] = [];
    for (const chunk of batchBodies(items)) out.push(...(await this.dispatchBatch(chunk)));
    return out;
  }

  private dispatchEach(items: readonly DispatchItem[]): Promise<(ErrorJSON | null)[]> {
    return Promise.all(
      items.map(async (it) => {
        try {
          await this.submit(it);
          return null;
        } catch (e) {
          return toErrorJSON(e, true);
        }
      }),
    );
  }

  private async dispatchBatch(chunk: { items: readonly DispatchItem[]; body: string }): Promise<(ErrorJSON | null)[]> {
    let answer;
    try {
      answer = parseSupervisorBatchAnswer(await this.call('POST', '/v1/submit:batch', chunk.body), chunk.items.length);
    } catch (e) {
      if (errorCodeOf(e) === 'ROUTE_NOT_FOUND') {
        this.batches = false;
        return this.dispatchEach(chunk.items);
      }
      const error = toErrorJSON(e, true);
      return chunk.items.map(() => error);
    }
    return answer.results.map((r) => {
      if (!('error' in r)) return null;
      assertErrorJson(r.error, 'a batch item refusal');
      return r.error;
    });
  }
  async jobState(jobId: string, attempt: number, node: string) {
    return parseQueueStateAnswer(await this.call('GET', `/v1/jobs/${encodeURIComponent(node)}/${encodeURIComponent(jobId)}/${attempt}`));
  }
  async setKeySet(envelope: string) {
    await this.call('PUT', '/v1/keyset', envelope);
  }
  async cancel(jobId: string, attempt: number, node: string) {
    const a = await this.call('POST', `/v1/jobs/${encodeURIComponent(node)}/${encodeURIComponent(jobId)}/${attempt}/cancel`, '{}');
    return { removed: typeof a === 'object' && a !== null && 'removed' in a && a.removed === true };
  }
  async health() {
    try {
      // /readyz answers 503 (thrown here) when Redis is not reachable, and { ok, redis } otherwise.
      const h = await this.call('GET', '/readyz');
      const redis = typeof h === 'object' && h !== null && 'redis' in h && h.redis === true;
      return { ok: redis, redis };
    } catch {
      return { ok: false, redis: false };
    }
  }
}

/**
 * Splits items into batch request bodies of at most MAX_SUPERVISOR_BATCH_ITEMS items and
 * MAX_SUPERVISOR_BATCH_BYTES bytes as sent, in order. Each item is serialised once, into its body.
 */
export function batchBodies(items: readonly DispatchItem[]): { items: DispatchItem[]; body: string }[] {
  const out: { items: DispatchItem[]; body: string }[] = [];
  const head = '{"items":[';
  let parts: string[] = [];
  let chunk: DispatchItem[] = [];
  let bytes = head.length + 2;
  for (const it of items) {
    const part = JSON.stringify({ envelope: it.envelope, node: it.node, attempt: it.attempt, ...(it.delayMs ? { delayMs: Math.round(it.delayMs) } : {}) });
    const size = Buffer.byteLength(part, 'utf8') + 1;
    if (chunk.length > 0 && (chunk.length >= MAX_SUPERVISOR_BATCH_ITEMS || bytes + size > MAX_SUPERVISOR_BATCH_BYTES)) {
      out.push({ items: chunk, body: `${head}${parts.join(',')}]}` });
      parts = [];
      chunk = [];
      bytes = head.length + 2;
    }
    parts.push(part);
    chunk.push(it);
    bytes += size;
  }
  if (chunk.length > 0) out.push({ items: chunk, body: `${head}${parts.join(',')}]}` });
  return out;
}
