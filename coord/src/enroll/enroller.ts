// Runs after a registration the node registry has verified: judges the node's inventory and token against
// the ledger's rules, records the assignment and the token exchange, sets the node's labels and pool, and
// accepts it when its rule auto-accepts nodes presenting that token. An unmatched node stays inspected
// (pending) with its inventory visible; a matched one without auto-accept waits for `writ nodes accept`.
// A node already assigned keeps its assignment across reboots (same key, same node id). A node registering
// after the install answer its iPXE boot got finishes that install (boot-routes.ts, settleInstallBoot).
import {
  DEFAULT_POOL,
  canonicalJson,
  isNodeInventory,
  parseEnvelope,
  parseNodeInventory,
  parseNodeRegistration,
  type NodeAssignment,
  type NodeInventory,
  type NodeRegistration,
  type InstallPlan,
  PAYLOAD_TYPES,
  fromB64,
  installPlanSha256,
} from '@writ/protocol';
import type { Db } from '../ledger/db.ts';
import type { NodeRecord, NodeRegistry } from '../nodes/registry.ts';
import { settleInstallBoot } from './boot-routes.ts';
import { applyInstallReport, latestInstallResult, type InstallResult } from './install-report.ts';
import { hostnameFor, matchRules } from './rules.ts';
import { getAssignment, getClass, listRules, putAssignment, recordBootstrap, tokenSha256 } from './store.ts';

export interface EnrollerOptions {
  db: Db;
  nodes: NodeRegistry;
  log?: { info(o: object, m?: string): void; warn(o: object, m?: string): void };
}

export class Enroller {
  constructor(private readonly opts: EnrollerOptions) {}

  /** The registration's payload; `raw` was verified by the registry already (same bytes). */
  private registrationOf(raw: string): NodeRegistration {
    const env = parseEnvelope(raw, 2 * 1024 * 1024);
    return parseNodeRegistration(fromB64(env.payload)!);
  }

  /** A node's signed install report (POST /v1/nodes/install-report). */
  async installReport(raw: string): Promise<{ state: string; accepted: boolean }> {
    const { node, accepted } = await applyInstallReport(this.opts.db, this.opts.nodes, raw);
    this.opts.log?.info({ node: node.id, state: node.state, accepted }, 'install report');
    return { state: node.state, accepted };
  }

  /** The latest install report of a node, as `GET /v1/nodes/:id` shows it. */
  installResult(nodeId: string): Promise<InstallResult | null> {
    return latestInstallResult(this.opts.db, nodeId);
  }

  /** Enrolls a node the registry has just registered; returns what the node is told. */
  async afterRegistration(node: NodeRecord, raw: string): Promise<{ node: NodeRecord; assignment: NodeAssignment | null; installPlan: InstallPlan | null }> {
    const { db, nodes } = this.opts;
    const reg = this.registrationOf(raw);
    let assignment = await getAssignment(db, node.id);
    let autoAccept: string | null = null;
    let inv: NodeInventory | null = null;
    try {
      inv = isNodeInventory(reg.inventory) ? parseNodeInventory(reg.inventory) : null;
    } catch (e) {
      // The node is registered with what it sent (visible to operators); no rule judges a malformed inventory.
      this.opts.log?.warn({ node: node.id, err: (e as Error).message }, 'inventory does not match the enrollment schema: the node stays pending');
    }
    if (!assignment && inv) {
      const presented = reg.enrollmentToken ? tokenSha256(reg.enrollmentToken) : null;
      const { rule } = matchRules(await listRules(db), inv, presented);
      if (rule) {
        let accept = rule.autoAccept && presented !== null && presented === rule.tokenSha256;
        if (
          accept &&
          !(await recordBootstrap(db, { nodeId: node.id, keyid: node.keyid, tokenSha256: presented!, rule: rule.name, maxUses: rule.maxUses, at: Date.now() }))
        ) {
          this.opts.log?.warn({ node: node.id, rule: rule.name }, 'enrollment token used up: the node waits for an operator');
          accept = false;
        }
        assignment = {
          type: PAYLOAD_TYPES.nodeAssignment,
          nodeId: node.id,
          hostname: hostnameFor(rule.assign.hostname, inv, node.id),
          class: rule.assign.class,
          pool: rule.assign.pool,
          labels: { ...rule.assign.labels },
          rule: rule.name,
        };
        await putAssignment(db, assignment, `rule:${rule.name}`);
        if (accept) autoAccept = rule.name;
        this.opts.log?.info({ node: node.id, rule: rule.name, autoAccept: accept }, 'enrollment rule matched');
      }
    }
    const cls = assignment?.class ? await getClass(db, assignment.class) : null;
    const plan = cls?.installPlan ?? null;
    // A machine back from the install boot its iPXE answer gave it: that answer goes back to local (and with
    // an install plan, the node's report of it finishes the install).
    let current = await settleInstallBoot(db, nodes, node, this.opts.log, { planRuns: plan !== null });
    if (assignment) {
      const labels = { ...node.labels, ...assignment.labels };
      const pool = assignment.pool ?? DEFAULT_POOL;
      if (canonicalJson(labels) !== canonicalJson(node.labels) || pool !== node.pool) current = await nodes.assign(node.id, { labels, pool });
    }
    if (autoAccept && current.state === 'inspected') {
      current = await nodes.apply(node.id, 'accept', {
        actor: `rule:${autoAccept}`,
        reason: `enrollment rule ${autoAccept} accepts nodes presenting its token`,
        byOperator: true,
      });
    }
    // An accepted node of a class with an install plan installs before it takes work: it is `installing` until
    // it reports the plan ran (then installed, and active on its next healthy heartbeat) or stopped (failed).
    // A node that already reported this plan installed (its agent restarted, the machine rebooted) does not.
    if (plan && cls && current.state === 'commissioned') {
      const sha = installPlanSha256(plan);
      const last = await latestInstallResult(db, node.id);
      if (!(last?.ok && last.planSha256 === sha)) {
        current = await nodes.apply(node.id, 'install', {
          actor: `class:${cls.name}`,
          reason: `class ${cls.name} carries install plan ${sha.slice(0, 12)}: the node runs it before it takes work`,
          byOperator: true,
        });
        current = await nodes.apply(node.id, 'install-started', {
          actor: `node:${node.id}`,
          reason: 'the registration answer carries the install plan',
          byOperator: false,
        });
      }
    }
    return { node: current, assignment, installPlan: plan };
  }
}
