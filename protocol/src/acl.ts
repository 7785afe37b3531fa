// Authorisation: does a set of verified signers grant a job its capabilities on its target?
// Evaluated at admission (supervisor) and again on the node (runner), from the same data.
import { grantCovers, isDangerous } from './capabilities/index.ts';
import { WritError } from './errors.ts';
import type { JobPayload, JobTarget } from './job.ts';
import type { TrustedKey } from './keys.ts';

/** A user key with what it may do. `nodes: ['*']` means any node; `labels` narrows to nodes carrying them. */
export interface KeyGrant {
  keyid: string;
  /** base64url public key. */
  publicKey: string;
  /** Grant patterns: `vm.create`, `vm.*`, `*`. */
  caps: string[];
  nodes: string[];
  labels: Record<string, string>;
  revoked?: boolean;
  comment?: string;
}

/** What the evaluator knows of the node a job is meant for (the runner knows itself; the supervisor its registry). */
export interface NodeView {
  id: string;
  labels: Record<string, string>;
}

function labelsMatch(required: Record<string, string>, actual: Record<string, string>): boolean {
  return Object.entries(required).every(([k, v]) => actual[k] === v);
}

/**
 * Picks one of `candidates` from the job id alone, so that the same job (a replay, a re-dispatch) lands on
 * the same node while different jobs spread over all of them.
 */
export function pickByJobId<T>(jobId: string, candidates: readonly T[]): T {
  let h = 0;
  for (const c of jobId) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return candidates[h % candidates.length]!;
}

export function targetMatchesNode(target: JobTarget, node: NodeView): boolean {
  return 'node' in target ? target.node === node.id : labelsMatch(target.selector, node.labels);
}

function scopeCovers(grant: KeyGrant, target: JobTarget, node: NodeView | undefined): boolean {
  const anyNode = grant.nodes.includes('*');
  if ('node' in target) {
    if (!anyNode && !grant.nodes.includes(target.node)) return false;
    if (Object.keys(grant.labels).length === 0) return true;
    return node !== undefined && node.id === target.node && labelsMatch(grant.labels, node.labels);
  }
  // A selector is in scope when it is at least as narrow as the grant's labels (and, with a node list, the node chosen is on it).
  if (!labelsMatch(grant.labels, target.selector)) return false;
  return anyNode || (node !== undefined && grant.nodes.includes(node.id));
}

export interface AuthorizeOptions {
  /** Distinct signers needed for any dangerous capability (T8); default 1. Per-capability thresholds come with key sets. */
  dangerousThreshold?: (capability: string) => number;
}

/**
 * Throws KEY_REVOKED, CAPABILITY_NOT_GRANTED, TARGET_OUT_OF_SCOPE or THRESHOLD_NOT_MET.
 * Every requested capability must be granted, on this target, by at least one verified, unrevoked signer;
 * dangerous ones by as many distinct signers as their threshold asks.
 */
export function authorizeJob(
  job: Pick<JobPayload, 'caps' | 'target'>,
  signers: TrustedKey[],
  grants: ReadonlyMap<string, KeyGrant | KeyGrant[]>,
  node?: NodeView,
  opts: AuthorizeOptions = {},
): void {
  const active: KeyGrant[] = [];
  const revoked: string[] = [];
  for (const s of signers) {
    const entry = grants.get(s.keyid);
    if (!entry) continue;
    const list = Array.isArray(entry) ? entry : [entry];
    if (list.some((g) => g.revoked)) revoked.push(s.keyid);
    else active.push(...list);
  }
  if (active.length === 0) {
    if (revoked.length) throw new WritError('KEY_REVOKED', `the signing key ${revoked.join(', ')} has been revoked`, { keyids: revoked });
    throw new WritError('UNKNOWN_KEY', 'no signer holds a grant');
  }
  const inScope = active.filter((g) => scopeCovers(g, job.target, node));
  if (inScope.length === 0) {
    const t = 'node' in job.target ? `node ${job.target.node}` : `selector ${JSON.stringify(job.target.selector)}`;
    throw new WritError('TARGET_OUT_OF_SCOPE', `${t} is outside the scope of ${active.map((g) => g.keyid).join(', ')}`);
  }
  for (const cap of job.caps) {
    const granting = [...new Set(inScope.filter((g) => g.caps.some((p) => grantCovers(p, cap))).map((g) => g.keyid))];
    if (granting.length === 0)
      throw new WritError('CAPABILITY_NOT_GRANTED', `capability ${cap} is not granted to the signer(s) on this target`, { capability: cap });
    const need = isDangerous(cap) ? (opts.dangerousThreshold?.(cap) ?? 1) : 1;
    if (granting.length < need) {
      throw new WritError('THRESHOLD_NOT_MET', `capability ${cap} is dangerous and needs ${need} distinct signers who hold it; got ${granting.length}`, {
        capability: cap,
        need,
        got: granting.length,
      });
    }
  }
}
