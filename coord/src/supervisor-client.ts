// The one interface the coord uses to reach a supervisor: in-process for `writ dev`, HTTP when the
// supervisor runs as its own process (`writ supervisor`).
import {
  MAX_SUPERVISOR_BATCH_BYTES,
  MAX_SUPERVISOR_BATCH_ITEMS,
  WritError,
  assertErrorJson,
  errorCodeOf,
  fromErrorJSON,
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

  private async call(method: string, path: string, body?: string, maxAnswerBytes?: number): Promise<unknown> {
    const answer = await fetchAnswer({
      method,
      url: new URL(path, this.baseUrl),
      token: this.token,
      ...(body !== undefined ? { body } : {}),
      ...(maxAnswerBytes ? { maxAnswerBytes } : {}),
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
  /**
   * Until when this supervisor is sent one request per item: it answered that it has no batch route (an older
   * `writ supervisor`). Tried again after BATCH_RETRY_MS, so one upgraded in place gets batches again.
   */
  private perItemUntil = 0;

  /**
   * Another process: the supervisor verifies and authorises each envelope itself before it enqueues it. Items
   * go in batch requests (POST /v1/submit:batch, split by count and size), one bulk add per node queue there,
   * instead of a request and a queue write per item. A single item goes the same way, so its size limit is
   * the one a group has. A supervisor without the batch route gets one request per item.
   */
  async dispatchMany(items: readonly DispatchItem[]): Promise<(ErrorJSON | null)[]> {
    if (Date.now() < this.perItemUntil) return this.dispatchEach(items);
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
      const body = await this.call('POST', '/v1/submit:batch', chunk.body, MAX_BATCH_ANSWER_BYTES);
      try {
        answer = parseSupervisorBatchAnswer(body, chunk.items.length);
      } catch (e) {
        // An answer this coord cannot read says nothing about the jobs (a newer or broken supervisor): a link fault.
        throw new WritError('SUPERVISOR_UNAVAILABLE', `supervisor ${this.id} answered a batch this coord cannot read: ${(e as Error).message}`);
      }
    } catch (e) {
      if (errorCodeOf(e) === 'ROUTE_NOT_FOUND') {
        this.perItemUntil = Date.now() + BATCH_RETRY_MS;
        return this.dispatchEach(chunk.items);
      }
      const error = toErrorJSON(e, true);
      return chunk.items.map(() => error);
    }
    return answer.results.map((r) => {
      if (!('error' in r)) return null;
      try {
        assertErrorJson(r.error, 'a batch item refusal');
      } catch {
        // A refusal code this coord does not know (a newer supervisor): not a verdict it can act on; retried.
        return toErrorJSON(
          new WritError(
            'SUPERVISOR_UNAVAILABLE',
            `supervisor ${this.id} refused an item with a code this coord does not know: ${String(r.error.code).slice(0, 64)}`,
          ),
        );
      }
      // Whether it is worth retrying is this coord's registry's word, as on the per-item path.
      return toErrorJSON(fromErrorJSON(r.error), true);
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

/** How long a supervisor that has no batch route is sent one request per item before the route is tried again. */
const BATCH_RETRY_MS = 10 * 60_000;
/** A batch answer: up to 500 results, each refusal's message and details capped by the supervisor (4 KiB each). */
const MAX_BATCH_ANSWER_BYTES = 8 * 1024 * 1024;

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
