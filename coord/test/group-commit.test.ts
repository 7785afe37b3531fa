// The group-commit mechanism on its own: items that arrive while a group is being written go out together in
// the next group, each caller hears its own outcome only after its group's write resolved, and a failed
// write rejects exactly the callers of that group.
import { describe, expect, it } from 'vitest';
import { GroupCommitter } from '../src/ledger/group-commit.ts';

function deferred() {
  let resolve!: () => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

describe('GroupCommitter', () => {
  it('writes what arrived during a write as one group, and answers each caller after its own group', async () => {
    const writes: number[][] = [];
    const gates: ReturnType<typeof deferred>[] = [];
    const gc = new GroupCommitter<number, string>(
      async (items) => {
        writes.push(items);
        const gate = deferred();
        gates.push(gate);
        await gate.promise;
        return items.map((i) => `ok ${i}`);
      },
      { maxItems: 100, maxInFlight: 1 },
    );
    const answered: string[] = [];
    const first = gc
      .add([1])
      .then(([x]) => x!)
      .then((x) => answered.push(x));
    await new Promise((r) => setImmediate(r));
    expect(writes).toEqual([[1]]);
    // Arrive one by one while the first group is being written.
    const rest = [2, 3, 4, 5].map((i) =>
      gc
        .add([i])
        .then(([x]) => x!)
        .then((x) => answered.push(x)),
    );
    await new Promise((r) => setImmediate(r));
    expect(writes).toEqual([[1]]);
    expect(answered).toEqual([]);
    gates[0]!.resolve();
    await first;
    await new Promise((r) => setImmediate(r));
    expect(writes).toEqual([[1], [2, 3, 4, 5]]);
    expect(answered).toEqual(['ok 1']); // the second group is not written yet: nobody in it is answered
    gates[1]!.resolve();
    await Promise.all(rest);
    expect(answered).toEqual(['ok 1', 'ok 2', 'ok 3', 'ok 4', 'ok 5']);
  });

  it('splits at maxItems and rejects only the callers of a failed group', async () => {
    let n = 0;
    const gc = new GroupCommitter<number, number>(
      async (items) => {
        if (++n === 1) throw new Error('disk full');
        return items;
      },
      { maxItems: 2 },
    );
    const outcomes = await Promise.allSettled([1, 2, 3].map((i) => gc.add([i]).then(([x]) => x!)));
    expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected', 'fulfilled']);
    expect(await gc.add([7, 8, 9])).toEqual([7, 8, 9]);
  });
});
