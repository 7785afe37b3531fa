// How a flow step's job row stores what it runs. Every tier that runs a step verifies the whole signed flow,
// so the bundle sent to a supervisor carries it (protocol/src/flow.ts, StepBundle); but the ledger already
// holds that flow once, in its `flows` row. A step's job row therefore stores the bundle with the flow
// replaced by the sha256 of its envelope text, and the coord puts the flow back before sending the bundle
// anywhere (a retry, a re-dispatch, a reconcile). Expanding gives byte for byte the bundle built when the
// step started: the flow envelope exactly as signed, the step, the node and the evidence.
//
// Why: the bundle of a flow of many steps is tens of KB (the 100-step benchmark flow: 40 KB), and writing it
// into every step's row cost about 2.3 ms of ledger CPU per step against 1 KB (PGlite, measured on this
// machine), and reading it back on every reconcile pass of unfinished jobs cost as much again.
import { WritError, encodeStepBundle, isStepBundle, type StepEvidence } from '@writ/protocol';

const PREFIX = '{"storedFlowStep":';

interface StoredStep {
  storedFlowStep: { flowEnvelopeSha256: string; step: string; node: string; evidence: StepEvidence[] };
}

/** The text a step's job row stores: its bundle without the flow, which is named by its envelope's sha256. */
export function storedStepText(s: StoredStep['storedFlowStep']): string {
  return JSON.stringify({ storedFlowStep: s });
}

/** Whether a job row's envelope text is a stored step (a cheap look; the text was written by the coord). */
export function isStoredStep(raw: string): boolean {
  return raw.startsWith(PREFIX);
}

/** The flow envelopes (JSON text, as signed) by sha256 of that text. */
export type FlowEnvelopeLookup = (envelopeSha256: string) => Promise<string | undefined>;

/**
 * What a job row's envelope text is sent as: a job's envelope or an older full step bundle as they are, a
 * stored step with its flow put back. Throws INTERNAL when the ledger has no flow with that hash (it would
 * mean a step row outlived its flow row, which the ledger never deletes).
 */
export async function sendableEnvelope(raw: string, lookup: FlowEnvelopeLookup): Promise<string> {
  if (!isStoredStep(raw)) return raw;
  const s = (JSON.parse(raw) as StoredStep).storedFlowStep;
  const flow = await lookup(s.flowEnvelopeSha256);
  if (flow === undefined)
    throw new WritError('INTERNAL', `the ledger holds no flow whose envelope has sha256 ${s.flowEnvelopeSha256} (step ${s.step} on ${s.node})`);
  const bundle = encodeStepBundle({ flow, step: s.step, node: s.node, evidence: s.evidence });
  if (!isStepBundle(bundle)) throw new WritError('INTERNAL', 'an expanded step is not a step bundle');
  return bundle;
}
