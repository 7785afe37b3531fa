import { describe, expect, it } from 'vitest';
import { errorCodeOf } from '@writ/protocol';
import { IN_PROGRESS, NODE_STATES, STABLE, takesWork, transition, type NodeEvent, type NodeState } from '../src/nodes/lifecycle.ts';

const op = { byOperator: true };
const auto = { byOperator: false };
const codeOf = (fn: () => unknown) => {
  try {
    fn();
    return 'OK';
  } catch (e) {
    return errorCodeOf(e) ?? String(e);
  }
};

function walk(events: [NodeEvent, boolean][], start: NodeState = 'discovered'): NodeState[] {
  let s = start;
  let rescuedFrom: NodeState | null = null;
  const seen: NodeState[] = [s];
  for (const [e, byOp] of events) {
    const r = transition(s, e, { byOperator: byOp, rescuedFrom });
    if (r.rescuedFrom) rescuedFrom = r.rescuedFrom;
    s = r.to;
    seen.push(s);
  }
  return seen;
}

describe('node lifecycle', () => {
  it('goes from discovered to active only through an operator accept', () => {
    expect(
      walk([
        ['inspect', false],
        ['accept', true],
        ['activate', false],
      ]),
    ).toEqual(['discovered', 'inspected', 'commissioned', 'active']);
    expect(codeOf(() => transition('inspected', 'accept', auto))).toBe('TRANSITION_NOT_ALLOWED');
    expect(codeOf(() => transition('inspected', 'activate', auto))).toBe('TRANSITION_NOT_ALLOWED');
  });

  it('drains to commissioned, takes no work while draining', () => {
    expect(
      walk(
        [
          ['drain', true],
          ['drained', false],
        ],
        'active',
      ),
    ).toEqual(['active', 'draining', 'commissioned']);
    expect(takesWork('draining', true)).toBe(false);
    expect(takesWork('active', false)).toBe(false);
    expect(takesWork('active', true)).toBe(true);
  });

  it('fails an in-progress state at its deadline or when its runner dies, and a failed node needs an operator', () => {
    for (const s of IN_PROGRESS) {
      expect(transition(s, 'deadline', auto).to).toBe('failed');
      expect(transition(s, 'runner-lost', auto).to).toBe('failed');
    }
    expect(codeOf(() => transition('active', 'deadline', auto))).toBe('TRANSITION_NOT_ALLOWED');
    // A failed machine never drifts back into the pool by itself.
    for (const e of ['activate', 'inspect', 'drained', 'install-done'] as NodeEvent[])
      expect(codeOf(() => transition('failed', e, auto))).toBe('TRANSITION_NOT_ALLOWED');
  });

  it('rescues from any stable state and returns to it', () => {
    for (const s of STABLE)
      expect(
        walk(
          [
            ['rescue', true],
            ['unrescue', true],
          ],
          s,
        ),
      ).toEqual([s, 'rescue', s]);
    for (const s of NODE_STATES.filter((x) => !STABLE.has(x))) expect(codeOf(() => transition(s, 'rescue', op))).toBe('TRANSITION_NOT_ALLOWED');
  });

  it('retires from anywhere but retired, and nothing leaves retired', () => {
    for (const s of NODE_STATES.filter((x) => x !== 'retired')) expect(transition(s, 'retire', op).to).toBe('retired');
    for (const e of ['accept', 'rescue', 'activate', 'retire'] as NodeEvent[])
      expect(codeOf(() => transition('retired', e, op))).toBe('TRANSITION_NOT_ALLOWED');
  });
});
