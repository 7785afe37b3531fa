// One versioned payload type per message kind (T1). The type is inside the signed bytes (PAE), so a
// signature made for one kind can never verify as another.
export const PAYLOAD_TYPES = Object.freeze({
  job: 'application/vnd.writ.job.v1+json',
  flow: 'application/vnd.writ.flow.v1+json',
  keySet: 'application/vnd.writ.keyset.v1+json',
  nodeRegistration: 'application/vnd.writ.node-registration.v1+json',
  heartbeat: 'application/vnd.writ.heartbeat.v1+json',
  /** A supervisor's report to the coord (it carries runner event batches). */
  result: 'application/vnd.writ.result.v1+json',
  /** A batch of a runner's events, signed by its node key (T14). */
  runnerEvents: 'application/vnd.writ.runner-events.v1+json',
  /** A supervisor announcing itself to the coord (federation), signed by its key as listed in the key set. */
  supervisorHeartbeat: 'application/vnd.writ.supervisor-heartbeat.v1+json',
  /** A host deployment (issue 12): desired system, nodes, budget and health check, signed by the admin. */
  hostDeployment: 'application/vnd.writ.host-deployment.v1+json',
  /** A flow step's result, signed by the node that ran it: what a later step accepts as its input. */
  stepResult: 'application/vnd.writ.step-result.v1+json',
  /** Enrollment (issue 11): what a node is, what the rules made of it, and what its class installs. */
  nodeInventory: 'application/vnd.writ.node-inventory.v1+json',
  nodeAssignment: 'application/vnd.writ.node-assignment.v1+json',
  installPlan: 'application/vnd.writ.install-plan.v1+json',
  /** A node's outcome of its class's install plan, signed by its node key. */
  installReport: 'application/vnd.writ.install-report.v1+json',
} as const);

export type PayloadKind = keyof typeof PAYLOAD_TYPES;
export type PayloadType = (typeof PAYLOAD_TYPES)[PayloadKind];

export function payloadKindOf(type: string): PayloadKind | undefined {
  for (const [k, v] of Object.entries(PAYLOAD_TYPES)) if (v === type) return k as PayloadKind;
  return undefined;
}
