// One statement writes a pass's step changes (setStepsIn): what each field becomes, as setStepIn wrote it one
// step at a time. On the ledger's PGlite.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLedger, type Ledger } from '../src/ledger/index.ts';
import { insertFlowIn, listSteps, setStepsIn } from '../src/flows/store.ts';

let ledger: Ledger;
beforeAll(async () => {
  ledger = await openLedger();
  await ledger.db.transaction((tx) =>
    insertFlowIn(tx, {
      id: 'f1',
      envelope: '{}',
      envelopeSha256: 'a'.repeat(64),
      payloadSha256: 'b'.repeat(64),
      signerKeyids: ['k'],
      steps: ['a', 'b', 'c', 'd'],
      exp: new Date(Date.now() + 3600_000),
    }),
  );
}, 60_000);
afterAll(() => ledger?.close());

const byName = async () => new Map((await listSteps(ledger.db, 'f1')).map((s) => [s.step, s]));

describe('setStepsIn', () => {
  it('writes several steps at once: status, nodes, errors, started and finished times', async () => {
    await ledger.db.transaction((tx) =>
      setStepsIn(tx, 'f1', [
        { step: 'a', status: 'running', nodes: ['n1', 'n2'], started: true },
        { step: 'b', status: 'failed', errorCode: 'STEP_DEPENDENCY_FAILED', errorMessage: 'step x failed', started: false },
        { step: 'c', status: 'succeeded', nodes: ['n3'], started: true },
      ]),
    );
    const s = await byName();
    expect(s.get('a')).toMatchObject({ status: 'running', nodes: ['n1', 'n2'], errorCode: null, finishedAt: null });
    expect(s.get('a')!.startedAt).toBeInstanceOf(Date);
    expect(s.get('b')).toMatchObject({ status: 'failed', nodes: null, errorCode: 'STEP_DEPENDENCY_FAILED', errorMessage: 'step x failed', startedAt: null });
    expect(s.get('b')!.finishedAt).toBeInstanceOf(Date);
    expect(s.get('c')!.startedAt).toBeInstanceOf(Date); // started and finished in one pass
    expect(s.get('c')!.finishedAt).toBeInstanceOf(Date);
    expect(s.get('d')).toMatchObject({ status: 'pending', nodes: null, startedAt: null, finishedAt: null }); // untouched
  });

  it('keeps what a later change does not give (nodes, errors, the first start time)', async () => {
    const before = (await byName()).get('a')!;
    await ledger.db.transaction((tx) => setStepsIn(tx, 'f1', [{ step: 'a', status: 'succeeded', started: false }]));
    const a = (await byName()).get('a')!;
    expect(a).toMatchObject({ status: 'succeeded', nodes: ['n1', 'n2'], errorCode: null });
    expect(a.startedAt).toEqual(before.startedAt);
    expect(a.finishedAt).toBeInstanceOf(Date);
  });
});
