// Admission: verify the raw envelope against the current signed key set, parse it strictly, check time and
// audience, resolve the target to a node and authorise the signers for it (capabilities, scope, k-of-n for
// dangerous capabilities, revocation). Every refusal is a permanent WritError and never reaches Redis.
import {
  WritError,
  authorizeJob,
  checkAudience,
  checkJobTimes,
  openJobText,
  targetMatchesNode,
  type JobPayload,
  type KeySetHolder,
  type NodeView,
  type TrustedKey,
} from '@writ/protocol';

export interface Admitted {
  job: JobPayload;
  signers: TrustedKey[];
  node: NodeView;
}

export interface AdmitOptions {
  clusterId: string;
  nowS: number;
  /** Resolve a target to one live node, or throw NODE_NOT_ACTIVE / NODE_NOT_FOUND. */
  pickNode: (job: JobPayload) => NodeView;
}

export function admitEnvelope(raw: string | Uint8Array, keySets: KeySetHolder, opts: AdmitOptions): Admitted {
  keySets.ensureUsable(opts.nowS);
  // A job envelope, or a flow step's bundle (the job derived from its signed flow, inputs from signed results).
  const verified = openJobText(typeof raw === 'string' ? raw : Buffer.from(raw).toString('utf8'), { keys: keySets.ring });
  const job = verified.job;
  checkJobTimes(job, opts.nowS);
  checkAudience(job, opts.clusterId);
  const node = opts.pickNode(job);
  if (!targetMatchesNode(job.target, node)) throw new WritError('TARGET_MISMATCH', `node ${node.id} does not match the job's target`);
  if (verified.step && verified.step.node !== node.id)
    throw new WritError(
      'TARGET_MISMATCH',
      `step ${verified.step.step.name} of flow ${verified.step.flow.id} was assigned to node ${verified.step.node}, not ${node.id}`,
    );
  authorizeJob(job, verified.signers, keySets.grants, node, { dangerousThreshold: keySets.threshold });
  return { job, signers: verified.signers, node };
}
