// The node daemon's configuration, read in one place: flags (as parsed) and env in; checked, defaulted and
// frozen out. A wrong value is refused here, before the identity is touched, with the flag or env var to fix.
import path from 'node:path';
import { LABEL_KEY_PATTERN, NODE_ID_PATTERN, WritError, type KeyRef } from '@writ/protocol';

/** What the caller hands over: flag values as parsed (unchecked strings), admin keys already read from --admin-key. */
export interface RunnerGiven {
  /** Where state dirs default to ($WRIT_HOME, resolved by the caller). */
  home: string;
  node?: string | undefined;
  labels?: readonly string[] | undefined;
  redis?: string | undefined;
  coord?: string | undefined;
  cluster?: string | undefined;
  state?: string | undefined;
  adminKeys?: readonly KeyRef[] | undefined;
  adminThreshold?: string | undefined;
  concurrency?: string | undefined;
  heartbeatMs?: string | undefined;
  lockMs?: string | undefined;
  stalledMs?: string | undefined;
  shutdownGraceMs?: number | undefined;
}

export type RunnerEnv = Readonly<Record<string, string | undefined>>;

export interface RunnerConfig {
  readonly nodeId: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly redisUrl: string;
  readonly coordUrl: string;
  readonly clusterId: string;
  readonly stateDir: string;
  readonly admins: { readonly threshold: number; readonly keys: readonly KeyRef[] };
  // Left undefined when not given: the Runner and NodeAgent own these defaults.
  readonly concurrency: number | undefined;
  readonly heartbeatMs: number | undefined;
  readonly lockDurationMs: number | undefined;
  readonly stalledIntervalMs: number | undefined;
  readonly logLevel: string;
  /** How long running jobs may take to finish once stopping starts. */
  readonly shutdownGraceMs: number;
}

export const RUNNER_DEFAULTS = Object.freeze({ clusterId: 'writ-dev', logLevel: 'info', shutdownGraceMs: 30_000 });
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const LABEL_VALUE_MAX = 63; // what registration accepts (protocol/src/node.ts)

function invalid(message: string): never {
  throw new WritError('CONFIG_INVALID', message);
}

function required(value: string | undefined, message: string): string {
  if (!value) throw new WritError('USAGE', message);
  return value;
}

function positiveWhole(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) invalid(`${flag} must be a positive whole number`);
  return n;
}

function checkUrl(value: string, source: string, schemes: readonly string[]): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return invalid(`${source} ${value}: not a URL (expected e.g. ${schemes[0]}//HOST:PORT)`);
  }
  if (!schemes.includes(url.protocol)) invalid(`${source} ${value}: expected a ${schemes.join(' or ')} URL`);
  return value;
}

function parseLabels(given: readonly string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const l of given) {
    const m = /^([^=]+)=(.*)$/.exec(l);
    if (!m) invalid(`--label ${l}: expected key=value`);
    if (!new RegExp(LABEL_KEY_PATTERN).test(m[1]!)) invalid(`--label ${l}: the key must match ${LABEL_KEY_PATTERN}`);
    if (m[2]!.length > LABEL_VALUE_MAX) invalid(`--label ${l}: the value must be at most ${LABEL_VALUE_MAX} characters`);
    labels[m[1]!] = m[2]!;
  }
  return labels;
}

export function runnerConfig(given: RunnerGiven, env: RunnerEnv): RunnerConfig {
  const nodeId = required(given.node, '--node ID is required');
  if (!new RegExp(NODE_ID_PATTERN).test(nodeId)) invalid(`--node ${nodeId}: a node id is lower-case letters, digits, '.' and '-' (at most 63, matching ${NODE_ID_PATTERN})`);
  const redisSource = given.redis !== undefined ? '--redis' : 'REDIS_URL';
  const redisUrl = checkUrl(required(given.redis ?? env.REDIS_URL, '--redis URL or REDIS_URL is required'), redisSource, ['redis:', 'rediss:']);
  const labels = parseLabels(given.labels ?? []);
  if (!given.adminKeys?.length) throw new WritError('USAGE', '--admin-key FILE is required: the admin public key(s) this node trusts to sign key sets');
  const threshold = Number(given.adminThreshold ?? '1');
  if (!Number.isInteger(threshold) || threshold < 1 || threshold > given.adminKeys.length) invalid(`--admin-threshold must be 1 to ${given.adminKeys.length}`);
  const concurrency = positiveWhole(given.concurrency, '--concurrency');
  const lockDurationMs = positiveWhole(given.lockMs, '--lock-ms');
  const stalledIntervalMs = positiveWhole(given.stalledMs, '--stalled-ms');
  const coordSource = given.coord !== undefined ? '--coord' : 'WRIT_COORD';
  const coordUrl = checkUrl(required(given.coord ?? env.WRIT_COORD, '--coord URL (or WRIT_COORD) is required: the node registers there'), coordSource, ['http:', 'https:']);
  const heartbeatMs = positiveWhole(given.heartbeatMs, '--heartbeat-ms');
  const clusterId = given.cluster ?? env.WRIT_CLUSTER ?? RUNNER_DEFAULTS.clusterId;
  if (!clusterId) invalid(`${given.cluster !== undefined ? '--cluster' : 'WRIT_CLUSTER'} must not be empty`);
  const logLevel = env.WRIT_LOG_LEVEL || RUNNER_DEFAULTS.logLevel;
  if (!LOG_LEVELS.includes(logLevel)) invalid(`WRIT_LOG_LEVEL ${logLevel}: expected one of ${LOG_LEVELS.join(', ')}`);
  const shutdownGraceMs = given.shutdownGraceMs ?? RUNNER_DEFAULTS.shutdownGraceMs;
  if (!Number.isInteger(shutdownGraceMs) || shutdownGraceMs <= 0) invalid(`shutdownGraceMs ${shutdownGraceMs}: expected a positive whole number of milliseconds`);
  return Object.freeze({
    nodeId,
    labels: Object.freeze(labels),
    redisUrl,
    coordUrl,
    clusterId,
    stateDir: given.state ?? path.join(given.home, `runner-${nodeId}`),
    admins: Object.freeze({ threshold, keys: Object.freeze(given.adminKeys.map((k) => Object.freeze({ keyid: k.keyid, publicKey: k.publicKey }))) }),
    concurrency,
    heartbeatMs,
    lockDurationMs,
    stalledIntervalMs,
    logLevel,
    shutdownGraceMs,
  });
}
