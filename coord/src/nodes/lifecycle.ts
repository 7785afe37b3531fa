// The node lifecycle as one transition table with guards. Every change goes through `transition()`;
// the ledger records each one with actor, reason and time. Only `active` nodes that are reachable get work.
import { WritError } from '@writ/protocol';

export const NODE_STATES = [
  'discovered',
  'inspected',
  'commissioned',
  'install-pending',
  'installing',
  'installed',
  'active',
  'draining',
  'reprovisioning',
  'rescue',
  'failed',
  'retired',
] as const;
export type NodeState = (typeof NODE_STATES)[number];

/** States a node passes through while something is being done to it; each has a deadline. */
export const IN_PROGRESS: ReadonlySet<NodeState> = new Set(['install-pending', 'installing', 'reprovisioning', 'draining']);
/** States from which rescue is allowed (and to which a node returns after it). */
export const STABLE: ReadonlySet<NodeState> = new Set(['discovered', 'inspected', 'commissioned', 'installed', 'active', 'failed']);

export type NodeEvent =
  | 'inspect' // inventory received with a valid registration
  | 'accept' // operator
  | 'reject' // operator
  | 'install' // operator or automation: start (re)installing
  | 'install-started'
  | 'install-done'
  | 'install-failed' // the node reported that its install plan stopped
  | 'activate' // a healthy heartbeat from a node an operator accepted (or that finished installing)
  | 'drain' // operator
  | 'drained' // no running jobs left
  | 'reprovision' // operator
  | 'rescue' // operator
  | 'unrescue' // operator: back to where it was
  | 'deadline' // an in-progress state ran past its deadline
  | 'runner-lost' // no heartbeat while in progress
  | 'retire'; // operator

interface Rule {
  from: readonly NodeState[] | '*';
  to: NodeState | 'previous';
  /** Events only an operator may cause. */
  operator?: boolean;
}

const RULES: Record<NodeEvent, Rule> = {
  inspect: { from: ['discovered'], to: 'inspected' },
  // From commissioned too: that is how an operator puts a drained node back into service.
  accept: { from: ['inspected', 'failed', 'commissioned'], to: 'commissioned', operator: true },
  reject: { from: ['discovered', 'inspected'], to: 'retired', operator: true },
  install: { from: ['commissioned', 'failed'], to: 'install-pending', operator: true },
  // From reprovisioning too: a reinstall starts when the machine fetches its install boot (iPXE).
  'install-started': { from: ['install-pending', 'reprovisioning'], to: 'installing' },
  'install-done': { from: ['installing', 'reprovisioning'], to: 'installed' },
  'install-failed': { from: ['installing', 'reprovisioning'], to: 'failed' },
  activate: { from: ['commissioned', 'installed'], to: 'active' },
  drain: { from: ['active'], to: 'draining', operator: true },
  drained: { from: ['draining'], to: 'commissioned' },
  reprovision: { from: ['commissioned', 'active', 'failed', 'installed'], to: 'reprovisioning', operator: true },
  rescue: { from: [...STABLE], to: 'rescue', operator: true },
  unrescue: { from: ['rescue'], to: 'previous', operator: true },
  deadline: { from: [...IN_PROGRESS], to: 'failed' },
  'runner-lost': { from: [...IN_PROGRESS], to: 'failed' },
  retire: { from: NODE_STATES.filter((s) => s !== 'retired'), to: 'retired', operator: true },
};

export const NODE_EVENTS = Object.keys(RULES) as NodeEvent[];

/** Default deadlines for in-progress states, in ms. */
export const DEFAULT_DEADLINES_MS: Readonly<Record<string, number>> = Object.freeze({
  'install-pending': 60 * 60_000,
  installing: 2 * 60 * 60_000,
  reprovisioning: 2 * 60 * 60_000,
  draining: 24 * 60 * 60_000,
});

export interface TransitionResult {
  from: NodeState;
  to: NodeState;
  event: NodeEvent;
  /** For rescue: the state to return to. */
  rescuedFrom?: NodeState;
}

/**
 * Applies an event to a state. Throws TRANSITION_NOT_ALLOWED with what is allowed instead.
 * `rescuedFrom` is the state remembered when the node entered rescue.
 */
export function transition(state: NodeState, event: NodeEvent, ctx: { byOperator: boolean; rescuedFrom?: NodeState | null }): TransitionResult {
  const rule = RULES[event];
  if (!rule) throw new WritError('TRANSITION_NOT_ALLOWED', `unknown node event ${event}`);
  if (rule.operator && !ctx.byOperator) throw new WritError('TRANSITION_NOT_ALLOWED', `${event} is an operator action`);
  if (rule.from !== '*' && !rule.from.includes(state)) {
    const allowed = NODE_EVENTS.filter((e) => {
      const r = RULES[e];
      return (r.from === '*' || r.from.includes(state)) && (!r.operator || ctx.byOperator);
    });
    throw new WritError('TRANSITION_NOT_ALLOWED', `cannot ${event} a node that is ${state}; allowed from ${state}: ${allowed.join(', ') || 'nothing'}`, {
      state,
      event,
      allowed,
    });
  }
  if (rule.to === 'previous') {
    const back = ctx.rescuedFrom;
    if (!back || !STABLE.has(back)) throw new WritError('TRANSITION_NOT_ALLOWED', 'the state before rescue is unknown');
    return { from: state, to: back, event };
  }
  return { from: state, to: rule.to, event, ...(rule.to === 'rescue' ? { rescuedFrom: state } : {}) };
}

/** Does this node take new work? */
export function takesWork(state: NodeState, reachable: boolean): boolean {
  return state === 'active' && reachable;
}
