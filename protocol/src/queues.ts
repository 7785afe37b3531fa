// Every Redis key and queue name Writ uses, in one place (as bullmq's queue-keys).
export const REDIS_PREFIX = 'writ';

export const queueNames = Object.freeze({
  /** One BullMQ queue per node. */
  node: (nodeId: string) => `node.${nodeId}`,
  /** Events the runner reports back to its supervisor (logs, status, security events). */
  events: () => 'events',
});

export const redisKeys = Object.freeze({
  /** Live log stream of a job (Redis stream). */
  jobLog: (jobId: string) => `${REDIS_PREFIX}:log:${jobId}`,
  /** Latest key set a supervisor distributes to its runners. */
  keySet: () => `${REDIS_PREFIX}:keyset`,
  /** Node heartbeat / presence. */
  nodePresence: (nodeId: string) => `${REDIS_PREFIX}:node:${nodeId}:presence`,
});
