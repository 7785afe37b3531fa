// A node's install report (issue 11): the outcome of its class's install plan, signed with its node key and
// checked as heartbeats are (the node is found by its key; the payload names it, this route and a time near
// ours). A successful report for the plan its class carries now finishes the install (`install-done`, then
// `active` on the next healthy heartbeat); a failed one fails the node with the reason. Each report is kept
// in the audit log (`node.install`), which is where `GET /v1/nodes/:id` reads the latest from.
import { WritError, INSTALL_REPORT_PATH, PAYLOAD_TYPES, installPlanSha256, parseInstallReport, parseStrictJson, type InstallReport } from '@writ/protocol';
import { appendAudit } from '../ledger/audit.ts';
import type { Db, Queryable } from '../ledger/db.ts';
import type { NodeRecord, NodeRegistry } from '../nodes/registry.ts';
import { getAssignment, getClass } from './store.ts';

export const INSTALL_AUDIT_KIND = 'node.install';

/** What the ledger keeps of a report (the node's signed fields, and when the coord took it). */
export type InstallResult = Omit<InstallReport, 'method' | 'path'> & { at: string };

/** The latest install report of a node, or null. */
export async function latestInstallResult(db: Queryable, nodeId: string): Promise<InstallResult | null> {
  const rows = await db.query<{ data: InstallReport; at: Date }>('SELECT data, at FROM audit_log WHERE kind = $1 AND subject = $2 ORDER BY seq DESC LIMIT 1', [
    INSTALL_AUDIT_KIND,
    nodeId,
  ]);
  const r = rows[0];
  if (!r) return null;
  const { method: _m, path: _p, ...rest } = r.data;
  return { ...rest, at: new Date(r.at).toISOString() };
}

const summary = (r: InstallReport) =>
  r.ok
    ? `install plan ${r.planSha256.slice(0, 12)} of class ${r.class} ran on disk ${r.disk?.name} (serial ${r.disk?.serial ?? '-'}): ${r.jobs.length} job(s) succeeded`
    : `install plan ${r.planSha256.slice(0, 12)} of class ${r.class} stopped: ${r.error?.code}: ${r.error?.message}`.slice(0, 900);

export async function applyInstallReport(
  db: Db,
  nodes: NodeRegistry,
  raw: string,
  opts: { now?: () => number; maxSkewMs?: number } = {},
): Promise<{ node: NodeRecord; accepted: boolean }> {
  const { node: signer, payload } = await nodes.verifyNodeSigned(raw, PAYLOAD_TYPES.installReport);
  // The one strict parser (T2): duplicate keys, unsafe integers and lone surrogates are refused, as in heartbeats.
  const r = parseInstallReport(parseStrictJson(payload, { maxBytes: 128 * 1024 }));
  if (r.nodeId !== signer.id) throw new WritError('SIGNATURE_INVALID', `the install report names node ${r.nodeId}, but node ${signer.id} signed it`);
  if (r.path !== INSTALL_REPORT_PATH) throw new WritError('SCHEMA_INVALID', 'the install report is bound to another path');
  const now = (opts.now ?? Date.now)();
  const skew = opts.maxSkewMs ?? 300_000;
  if (Math.abs(now - r.ts) > skew)
    throw new WritError(
      r.ts < now ? 'ENVELOPE_EXPIRED' : 'ENVELOPE_NOT_YET_VALID',
      `the install report is ${Math.round((now - r.ts) / 1000)} s off our clock (at most ${skew / 1000} s either way)`,
    );
  const assignment = await getAssignment(db, signer.id);
  const cls = assignment?.class ? await getClass(db, assignment.class) : null;
  const plan = cls?.installPlan ?? null;
  if (!plan || installPlanSha256(plan) !== r.planSha256)
    throw new WritError(
      'INSTALL_PLAN_MISMATCH',
      plan
        ? `node ${signer.id}'s class ${cls!.name} carries install plan ${installPlanSha256(plan).slice(0, 12)} now, not ${r.planSha256.slice(0, 12)}`
        : `node ${signer.id}'s class carries no install plan`,
      { expected: plan ? installPlanSha256(plan) : null, got: r.planSha256 },
    );
  if (r.class !== cls!.name)
    throw new WritError('INSTALL_PLAN_MISMATCH', `node ${signer.id}'s class is ${cls!.name}, but its install report names class ${r.class}`, {
      expected: cls!.name,
      got: r.class,
    });
  const current = (await nodes.getNode(signer.id))!;
  const last = await latestInstallResult(db, signer.id);
  // A report is signed once per send (sendInstallReport signs each try anew): one not newer than the last report
  // taken from this node is a copy of an earlier one, which must not finish (or fail) a later install.
  if (last && r.ts <= last.ts)
    throw new WritError(
      'INSTALL_REPORT_REPLAYED',
      `node ${signer.id}'s install report was signed at ${new Date(r.ts).toISOString()}, not after its last report taken (${new Date(last.ts).toISOString()})`,
      { ts: r.ts, lastTs: last.ts },
    );
  // The same successful report again (the node did not see our answer): nothing changes.
  if (r.ok && last?.ok && last.planSha256 === r.planSha256 && current.state !== 'installing') return { node: current, accepted: false };
  // Only an `installing` node runs its plan (the agent runs it when its registration answer says so); a node
  // `reprovisioning` has not fetched its install boot yet, so a report then is about an earlier install.
  if (current.state !== 'installing')
    throw new WritError('TRANSITION_NOT_ALLOWED', `node ${signer.id} is ${current.state}, not installing: its install report is not taken`, {
      state: current.state,
    });
  // The report is on record before the node moves: whoever sees it `installed` (or `failed`) can read why. (The
  // other order let a reader in between find an installed node with no report; seen in the two-disk boot test.)
  // Should the move then be refused (the node changed meanwhile), the node sends its report again and a copy of
  // a taken report changes nothing.
  await appendAudit(db, { kind: INSTALL_AUDIT_KIND, actor: `node:${signer.id}`, subject: signer.id, data: { ...r } });
  const node = await nodes.apply(signer.id, r.ok ? 'install-done' : 'install-failed', { actor: `node:${signer.id}`, reason: summary(r), byOperator: false });
  return { node, accepted: true };
}
