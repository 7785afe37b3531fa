// One contract per seam: each parser accepts what its producer writes and refuses unknown fields and wrong
// types with a code (HTTP answers, BullMQ job data and failure reasons, runner-event batches and stream
// entries, supervisor reports).
import { describe, expect, it } from 'vitest';
import {
  EVENT_STREAM_FIELD,
  MAX_EVENTS_PER_BATCH,
  encodeFailureReason,
  encodeRunnerEventBatch,
  encodeSupervisorReport,
  eventStreamFields,
  parseBatchSubmitAnswer,
  parseQueueFailure,
  parseJobEventMessage,
  parseJobView,
  parseQueueJobData,
  parseQueueJobId,
  queueJobId,
  MAX_ATTEMPT_NUMBER,
  parseRunnerEventBatch,
  parseSubmitAnswer,
  parseSupervisorReport,
  queueJobData,
  parseErrorAnswer,
  parseJobPage,
  parseQueueStateAnswer,
  readAnswer,
  parseSupervisorBatchAnswer,
  parseSupervisorSubmitAnswer,
  errorAnswer,
  queueJobEnvelope,
  readEventStreamEntry,
  utf8,
  type RunnerEvent,
  type RunnerEventBatch,
} from '../src/index.ts';

const bytes = (v: unknown) => utf8.encode(JSON.stringify(v));
function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

describe('queue seam (BullMQ job data, failure reasons)', () => {
  it('takes exactly the envelope and the attempt, and refuses anything beside them or instead of them', () => {
    expect(parseQueueJobData(queueJobData('{"e":1}', 2))).toEqual({ envelope: '{"e":1}', attempt: 2 });
    for (const attempt of [0, -1, 1.5, '1', null, MAX_ATTEMPT_NUMBER + 1])
      expect(
        codeOf(() => parseQueueJobData({ envelope: 'x', attempt })),
        String(attempt),
      ).toBe('SECURITY_EVENT');
    expect(codeOf(() => parseQueueJobData({ envelope: 'x' }))).toBe('SECURITY_EVENT');
    // Each attempt is its own queue entry: `<job>@<attempt>`, split unambiguously (`@` is not in job ids).
    expect(queueJobId('job-1', 3)).toBe('job-1@3');
    expect(parseQueueJobId('a.b-c@12')).toEqual({ jobId: 'a.b-c', attempt: 12 });
    for (const bad of ['job-1', '@1', 'job@0', 'job@01', 'job@x', 'job@', `job@${MAX_ATTEMPT_NUMBER + 1}`]) expect(parseQueueJobId(bad), bad).toBeNull();
    expect(codeOf(() => parseQueueJobData({ envelope: 'x', job: { id: 'parsed copy' } }))).toBe('SECURITY_EVENT');
    expect(codeOf(() => parseQueueJobData({ envelope: 42 }))).toBe('SECURITY_EVENT');
    expect(codeOf(() => parseQueueJobData(['x']))).toBe('SECURITY_EVENT');
    expect(codeOf(() => parseQueueJobData(null))).toBe('SECURITY_EVENT');
    // The envelope is reachable first, so the runner verifies it before judging the rest.
    expect(queueJobEnvelope({ envelope: 'x', job: {} })).toBe('x');
  });

  it('round-trips Writ failure reasons and tells BullMQ own reasons apart', () => {
    const e = { code: 'TIMEOUT' as const, message: 'ran past', retryable: false, details: { ms: 3 } };
    expect(parseQueueFailure(encodeFailureReason(e))).toEqual({ error: e });
    // With the run's duration beside the error (not inside it).
    expect(parseQueueFailure(encodeFailureReason(e, { durationMs: 1042 }))).toEqual({ error: e, durationMs: 1042 });
    expect(parseQueueFailure('{"code":"TIMEOUT","message":"x","retryable":false,"durationMs":-1}')).toBeNull();
    expect(parseQueueFailure('{"code":"TIMEOUT","message":"x","retryable":false,"durationMs":"1"}')).toBeNull();
    expect(parseQueueFailure('job stalled more than allowable limit')).toBeNull();
    expect(parseQueueFailure('{"code":"NOT_A_CODE","message":"x","retryable":false}')).toBeNull();
    expect(parseQueueFailure('{"code":"TIMEOUT","message":"x","retryable":false,"extra":1}')).toBeNull();
    expect(parseQueueFailure('{"code":"TIMEOUT","message":1,"retryable":false}')).toBeNull();
    expect(parseQueueFailure('[1]')).toBeNull();
    expect(parseQueueFailure(undefined)).toBeNull();
  });
});

describe('runner-event seam (signed batches in the Redis stream)', () => {
  const events: RunnerEvent[] = [
    { type: 'status', jobId: 'j1', attempt: 1, node: 'n1', ts: 1, status: 'running' },
    { type: 'log', jobId: 'j1', attempt: 1, node: 'n1', ts: 2, level: 'info', message: 'hi' },
    { type: 'result', jobId: 'j1', attempt: 1, node: 'n1', ts: 3, ok: true, value: { a: [1] }, durationMs: 4 },
    {
      type: 'result',
      jobId: 'j2',
      attempt: 2,
      node: 'n1',
      ts: 3,
      ok: false,
      error: { code: 'TIMEOUT', message: 'x', retryable: false },
      final: true,
      durationMs: 4,
    },
    { type: 'security', jobId: null, attempt: 0, node: 'n1', ts: 5, error: { code: 'KEYSET_INVALID', message: 'bad', retryable: false } },
  ];
  const batch: RunnerEventBatch = { node: 'n1', batch: 'abc-1', events };

  it('round-trips every event kind', () => {
    expect(parseRunnerEventBatch(encodeRunnerEventBatch(batch))).toEqual(batch);
  });

  it('refuses unknown fields, wrong types, foreign nodes and oversize batches', () => {
    expect(codeOf(() => parseRunnerEventBatch(bytes({ ...batch, extra: 1 })))).toBe('UNKNOWN_FIELD');
    expect(codeOf(() => parseRunnerEventBatch(bytes({ ...batch, events: [{ ...events[0], forged: true }] })))).toBe('UNKNOWN_FIELD');
    expect(codeOf(() => parseRunnerEventBatch(bytes({ ...batch, events: [{ ...events[1], level: 'fatal' }] })))).toBe('SCHEMA_INVALID');
    expect(codeOf(() => parseRunnerEventBatch(bytes({ ...batch, events: [{ ...events[0], attempt: '1' }] })))).toBe('SCHEMA_INVALID');
    expect(codeOf(() => parseRunnerEventBatch(bytes({ ...batch, events: [{ ...events[2], error: { code: 'X', message: '', retryable: true } }] })))).toBe(
      'SCHEMA_INVALID',
    );
    expect(codeOf(() => parseRunnerEventBatch(bytes({ ...batch, events: [] })))).toBe('SCHEMA_INVALID');
    expect(codeOf(() => parseRunnerEventBatch(bytes({ ...batch, events: Array.from({ length: MAX_EVENTS_PER_BATCH + 1 }, () => events[0]) })))).toBe(
      'SCHEMA_INVALID',
    );
    expect(codeOf(() => parseRunnerEventBatch(bytes({ ...batch, events: [{ ...events[0], node: 'n2' }] })))).toBe('SCHEMA_INVALID');
    expect(codeOf(() => parseRunnerEventBatch(utf8.encode('{"node":"n1","node":"n2"}')))).toBe('JSON_DUPLICATE_KEY');
  });

  it('reads stream entries by the one field name both sides use, and marks anything else', () => {
    expect(readEventStreamEntry(eventStreamFields('ENV'))).toEqual({ envelope: 'ENV' });
    expect(readEventStreamEntry(['e', '{}'])).toMatchObject({ malformed: expect.stringContaining(`expected [${EVENT_STREAM_FIELD}]`) });
    expect(readEventStreamEntry([EVENT_STREAM_FIELD, 'a', 'x', 'b'])).toHaveProperty('malformed');
    expect(readEventStreamEntry([EVENT_STREAM_FIELD, 'x'.repeat(2 * 1024 * 1024)])).toMatchObject({ malformed: expect.stringContaining('over the') });
  });
});

describe('report seam (supervisor → coord)', () => {
  it('round-trips and refuses unknown fields and wrong types', () => {
    const r = { supervisor: 'sup-1', seq: '1-2', entries: [{ envelope: '{}' }, { malformed: 'why' }] };
    expect(parseSupervisorReport(encodeSupervisorReport(r))).toEqual(r);
    expect(codeOf(() => parseSupervisorReport(bytes({ ...r, events: [] })))).toBe('UNKNOWN_FIELD');
    expect(codeOf(() => parseSupervisorReport(bytes({ ...r, entries: [{ envelope: '{}', extra: 1 }] })))).toBe('UNKNOWN_FIELD');
    expect(codeOf(() => parseSupervisorReport(bytes({ ...r, entries: [{ envelope: 5 }] })))).toBe('SCHEMA_INVALID');
    expect(codeOf(() => parseSupervisorReport(bytes({ ...r, seq: 'has space' })))).toBe('SCHEMA_INVALID');
  });
});

describe('HTTP seam (answers the CLI reads)', () => {
  const view = {
    id: 'j',
    status: 'succeeded',
    node: 'n',
    target: { node: 'n' },
    caps: [],
    signers: ['k'],
    attempts: 1,
    result: 1,
    error: null,
    createdAt: 'a',
    updatedAt: 'b',
    finishedAt: null,
  };
  it('accepts what the coord sends', () => {
    expect(parseSubmitAnswer({ id: 'j', status: 'queued', node: null, replayed: false })).toMatchObject({ id: 'j' });
    expect(
      parseBatchSubmitAnswer({
        results: [
          { id: 'j', status: 'queued', node: 'n', replayed: true },
          { id: null, error: { code: 'SIGNATURE_INVALID', message: 'x', retryable: false } },
        ],
      }).results,
    ).toHaveLength(2);
    expect(parseJobView(view)).toMatchObject({ status: 'succeeded' });
    expect(parseJobEventMessage({ seq: 1, type: 'log', level: null, message: 'm', data: null })).toMatchObject({ seq: 1 });
  });
  it('refuses unknown fields, unknown statuses and wrong types', () => {
    expect(codeOf(() => parseSubmitAnswer({ id: 'j', status: 'queued', node: null, replayed: false, extra: 1 }))).toBe('UNKNOWN_FIELD');
    expect(codeOf(() => parseSubmitAnswer({ id: 'j', status: 'lost', node: null, replayed: false }))).toBe('SCHEMA_INVALID');
    expect(codeOf(() => parseBatchSubmitAnswer({ results: [{ id: 'j', error: { code: 'X', message: '', retryable: 'no' } }] }))).toBe('SCHEMA_INVALID');
    expect(codeOf(() => parseJobView({ ...view, attempts: -1 }))).toBe('SCHEMA_INVALID');
    expect(codeOf(() => parseJobView({ ...view, secret: 1 }))).toBe('UNKNOWN_FIELD');
    const attempt = { attempt: 1, node: 'n', dispatchedAt: 'd', startedAt: 'a', finishedAt: null, outcome: 'running', errorCode: null };
    expect(parseJobView({ ...view, attemptHistory: [attempt] }).attemptHistory).toEqual([attempt]);
    expect(codeOf(() => parseJobView({ ...view, attemptHistory: [{ ...attempt, outcome: 'lost' }] }))).toBe('SCHEMA_INVALID');
    expect(parseJobPage({ jobs: [view], nextCursor: null }).jobs).toHaveLength(1);
    expect(codeOf(() => parseJobPage({ jobs: [view], nextCursor: null, total: 1 }))).toBe('UNKNOWN_FIELD');
    expect(codeOf(() => parseJobEventMessage({ seq: 'x', type: 'log', message: 'm' }))).toBe('SCHEMA_INVALID');
  });
});

describe('error answers and the supervisor HTTP seam', () => {
  it('builds error answers with the registry retryable and parses only that shape', () => {
    expect(errorAnswer('NOT_READY', 'later')).toEqual({ error: { code: 'NOT_READY', message: 'later', retryable: true } });
    expect(parseErrorAnswer(errorAnswer('NOT_FOUND', 'no job x', { id: 'x' }))).toEqual({
      code: 'NOT_FOUND',
      message: 'no job x',
      retryable: false,
      details: { id: 'x' },
    });
    expect(parseErrorAnswer({ error: { code: 'NOT_FOUND', message: 'x' } })).toBeNull(); // retryable missing
    expect(parseErrorAnswer({ error: { code: 'NOPE', message: 'x', retryable: false } })).toBeNull();
    expect(parseErrorAnswer({ error: errorAnswer('NOT_FOUND', 'x').error, extra: 1 })).toBeNull();
    expect(parseErrorAnswer({ message: 'Internal Server Error', statusCode: 500 })).toBeNull();
  });
  it("reads an answer: its JSON on success, the error it carries on failure, the caller's code otherwise", () => {
    const down = (m: string) => Object.assign(new Error(`svc ${m}`), { code: 'SUPERVISOR_UNAVAILABLE' });
    expect(readAnswer(200, '{"a":1}', down)).toEqual({ a: 1 });
    expect(readAnswer(204, '', down)).toBeNull();
    expect(() => readAnswer(404, JSON.stringify(errorAnswer('NOT_FOUND', 'no job x')), down)).toThrow(
      expect.objectContaining({ code: 'NOT_FOUND', message: 'no job x' }),
    );
    expect(() => readAnswer(502, '<html>bad gateway</html>', down)).toThrow(
      expect.objectContaining({ code: 'SUPERVISOR_UNAVAILABLE', message: expect.stringContaining('not JSON') }),
    );
    expect(() => readAnswer(500, '{"statusCode":500}', down)).toThrow(expect.objectContaining({ code: 'SUPERVISOR_UNAVAILABLE', message: 'svc answered 500' }));
    expect(() => readAnswer(200, '{"a":1,"a":2}', down)).toThrow(expect.objectContaining({ code: 'SUPERVISOR_UNAVAILABLE' }));
  });
  it('parses the supervisor answers strictly', () => {
    expect(parseSupervisorSubmitAnswer({ jobId: 'j', node: 'n' })).toEqual({ jobId: 'j', node: 'n' });
    expect(codeOf(() => parseSupervisorSubmitAnswer({ jobId: 'j' }))).toBe('SCHEMA_INVALID');
    const refusal = { error: { code: 'SIGNATURE_INVALID', message: 'no', retryable: false } };
    expect(parseSupervisorBatchAnswer({ results: [{ jobId: 'j', node: 'n' }, refusal] }, 2)).toEqual({ results: [{ jobId: 'j', node: 'n' }, refusal] });
    // One result per item, each one of the two shapes.
    expect(codeOf(() => parseSupervisorBatchAnswer({ results: [{ jobId: 'j', node: 'n' }] }, 2))).toBe('SCHEMA_INVALID');
    expect(codeOf(() => parseSupervisorBatchAnswer({ results: [{ jobId: 'j', node: 'n', ...refusal }] }, 1))).toMatch(/SCHEMA_INVALID|UNKNOWN_FIELD/);
    expect(codeOf(() => parseSupervisorBatchAnswer({ results: [{ error: { code: 'x', message: 'm', retryable: false } }] }, 1))).toMatch(
      /SCHEMA_INVALID|UNKNOWN_FIELD/,
    );
    expect(parseQueueStateAnswer({ state: 'failed', failedReason: 'r', held: 'no' })).toEqual({ state: 'failed', failedReason: 'r', held: 'no' });
    expect(codeOf(() => parseQueueStateAnswer({ state: 'gone', held: 'no' }))).toBe('SCHEMA_INVALID');
    expect(codeOf(() => parseQueueStateAnswer({ state: 'missing' }))).toBe('SCHEMA_INVALID');
    expect(codeOf(() => parseQueueStateAnswer({ state: 'missing', held: 'maybe' }))).toBe('SCHEMA_INVALID');
    expect(codeOf(() => parseQueueStateAnswer({ state: 'active', held: 'yes', returnvalue: 1 }))).toBe('UNKNOWN_FIELD');
  });
});
