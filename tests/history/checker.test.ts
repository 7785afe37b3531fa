// The history checker against made-up histories: each kind of finding is counted, and a clean history
// counts nothing.
import { describe, expect, it } from 'vitest';
import { checkHistory, type HistoryInput, type JournalRec, type LedgerJob } from './checker.ts';

const start = (attempt: number, exec: string, ts = 1): JournalRec => ({ t: 'start', attempt, exec, ts });
const intent = (attempt: number, exec: string, step: number): JournalRec => ({ t: 'intent', attempt, exec, step, op: 'net.netns.ensure', ts: 2 });
const done = (attempt: number, exec: string, step: number, name: string, created: boolean): JournalRec => ({
  t: 'done',
  attempt,
  exec,
  step,
  op: 'net.netns.ensure',
  result: { name, created },
  ts: 3,
});

function clean(): HistoryInput {
  const ledger = new Map<string, LedgerJob>([['j1', { id: 'j1', status: 'succeeded', result: 'ok:a:1', finishedAt: new Date(5000).toISOString() }]]);
  return {
    submissions: [{ id: 'j1', tag: 'a', steps: 1, expected: 'ok:a:1', acceptedAt: 1000, lastAnswer: '202' }],
    observed: new Map([['j1', ['queued', 'running', 'succeeded']]]),
    ledger,
    journals: new Map([['j1', [{ node: 'n', records: [start(1, 'e1'), intent(1, 'e1', 1), done(1, 'e1', 1, 'wxas1', true)] }]]]),
    netns: ['wxas1'],
    netnsOwner: (n) => (n === 'wxas1' ? { jobId: 'j1', step: 1 } : n === 'wxzs1' ? { jobId: 'zz', step: 1 } : null),
    faults: [{ kind: 'kill-runner', at: 2000, restoredAt: 3000 }],
  };
}

describe('history checker', () => {
  it('counts nothing in a clean history and measures the recovery', () => {
    const r = checkHistory(clean());
    expect(r.summary).toBe('lost=0 duplicated=0 unexpected=0');
    expect(r.recoveries).toEqual([{ kind: 'kill-runner', at: 2000, recoveryMs: 3000 }]);
  });

  it('counts an accepted job that did not succeed as lost', () => {
    const h = clean();
    h.ledger.set('j1', { id: 'j1', status: 'queued', result: null, finishedAt: null });
    expect(checkHistory(h).lost).toBe(1);
    h.ledger.delete('j1');
    expect(checkHistory(h).lost).toBe(1);
  });

  it('counts a step created twice, an attempt started twice, and an effect after a newer start as duplicated', () => {
    const h = clean();
    h.journals.get('j1')![0]!.records.push(start(2, 'e2'), intent(2, 'e2', 1), done(2, 'e2', 1, 'wxas1', true));
    expect(checkHistory(h).duplicated).toBe(1);
    const h2 = clean();
    h2.journals.get('j1')![0]!.records.splice(1, 0, start(1, 'e9'));
    expect(checkHistory(h2).duplicated).toBe(1);
    const h3 = clean();
    h3.journals.get('j1')![0]!.records.splice(1, 0, start(2, 'e2'));
    expect(checkHistory(h3).duplicated).toBe(2); // the old attempt's intent and done both came after it
  });

  it('counts a changed terminal state, a wrong result, an orphan effect and missing effects as unexpected', () => {
    const h = clean();
    h.observed.set('j1', ['running', 'failed', 'succeeded']);
    expect(checkHistory(h).unexpected).toBe(1);
    const h2 = clean();
    h2.ledger.get('j1')!.result = 'ok:b:1';
    expect(checkHistory(h2).unexpected).toBe(1);
    const h3 = clean();
    h3.netns.push('wxzs1');
    expect(checkHistory(h3).unexpected).toBe(1);
    const h4 = clean();
    h4.netns = [];
    expect(checkHistory(h4).unexpected).toBe(1);
  });
});
