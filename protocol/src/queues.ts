// Every Redis key and queue name Writ uses, in one place (as bullmq's queue-keys).
// BullMQ adds its own keys under `${BULL_PREFIX}:${queueName}:…`.
//
// Names carry Redis Cluster hash tags (the part in braces is what a cluster hashes to pick a slot), so the
// same names work on a single Redis, a Sentinel group and a Redis Cluster: Writ's own keys share the tag
// `{writ}` (the runner's heartbeat writes its node hash and the node index in one MULTI, and the supervisor
// reads many node hashes in one pipeline), and each node's queue is tagged by its own name, so BullMQ's
// scripts find all of one queue's keys in one slot while the queues spread over the cluster's primaries.
export const REDIS_PREFIX = '{writ}';
export const BULL_PREFIX = 'writ-bull';

export const queueNames = Object.freeze({
  /** One BullMQ queue per node. BullMQ queue names may not contain ':'. */
  node: (nodeId: string) => `{node.${nodeId}}`,
});

export const redisKeys = Object.freeze({
  /** Stream of what runners report (status, log lines, results, security events); read by supervisors in a consumer group. */
  events: () => `${REDIS_PREFIX}:events`,
  eventsGroup: () => 'supervisors',
  /** The grants runners check jobs against, and its version counter. */
  keySet: () => `${REDIS_PREFIX}:keyset`,
  keySetVersion: () => `${REDIS_PREFIX}:keyset:version`,
  /** Sorted set of node ids by last heartbeat (ms). */
  nodes: () => `${REDIS_PREFIX}:nodes`,
  /** Hash describing one node (labels, running jobs, version). */
  node: (nodeId: string) => `${REDIS_PREFIX}:node:${nodeId}`,
  /** Set (to the attempt) when an operator cancelled a job on this node: its runner stops the run. */
  cancel: (nodeId: string, jobId: string) => `${REDIS_PREFIX}:cancel:${nodeId}:${jobId}`,
});
