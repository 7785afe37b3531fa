// Admission: verify the raw envelope, parse it strictly, check time and audience, resolve the target to a
// node and authorise the signers for it. Every refusal is a permanent WritError and never reaches Redis.
import {
  KeyRing, PAYLOAD_TYPES, authorizeJob, checkAudience, checkJobTimes, parseJobPayload, targetMatchesNode, trustKeyB64url, verifyEnvelope,
  WritError, type JobPayload, type KeyGrant, type NodeView, type TrustedKey,
} from '@writ/protocol';

export interface Admitted {
  job: JobPayload;
  signers: TrustedKey[];
  node: NodeView;
}

/** The grants a supervisor admits against, with cached key objects (node:crypto) per public key. */
export class GrantStore {
  private ring = new KeyRing();
  private grants = new Map<string, KeyGrant>();
  version = 0;

  replace(grants: KeyGrant[], version: number): void {
    const ring = new KeyRing();
    const map = new Map<string, KeyGrant>();
    for (const g of grants) {
      const key = this.ring.get(g.keyid) ?? trustKeyB64url(g.publicKey);
      if (key.keyid !== g.keyid) throw new WritError('KEY_INVALID', `grant ${g.keyid} does not match its public key (${key.keyid})`);
      map.set(g.keyid, g);
      // Revoked keys stay in the ring so their signatures verify and are refused as KEY_REVOKED, not UNKNOWN_KEY.
      ring.add(key);
    }
    this.ring = ring;
    this.grants = map;
    this.version = version;
  }
  get keyRing(): KeyRing {
    return this.ring;
  }
  get grantMap(): ReadonlyMap<string, KeyGrant> {
    return this.grants;
  }
  list(): KeyGrant[] {
    return [...this.grants.values()];
  }
}

export interface AdmitOptions {
  clusterId: string;
  nowS: number;
  /** Resolve a target to one live node, or throw NODE_NOT_ACTIVE / NODE_NOT_FOUND. */
  pickNode: (job: JobPayload) => NodeView;
}

export function admitEnvelope(raw: string | Uint8Array, grants: GrantStore, opts: AdmitOptions): Admitted {
  const verified = verifyEnvelope(raw, { payloadType: PAYLOAD_TYPES.job, keys: grants.keyRing });
  const job = parseJobPayload(verified.payload);
  checkJobTimes(job, opts.nowS);
  checkAudience(job, opts.clusterId);
  const node = opts.pickNode(job);
  if (!targetMatchesNode(job.target, node)) throw new WritError('TARGET_MISMATCH', `node ${node.id} does not match the job's target`);
  authorizeJob(job, verified.signers, grants.grantMap, node);
  return { job, signers: verified.signers, node };
}
