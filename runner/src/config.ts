// The node daemon's configuration, read in one place: flags (as parsed) and env in; checked, defaulted and
// frozen out. A wrong value is refused here, before the identity is touched, with the flag or env var to fix.
import path from 'node:path';
import {
  LABEL_KEY_PATTERN,
  NODE_ID_PATTERN,
  WritError,
  checkGraceMs,
  checkLogLevel,
  checkUrl,
  configInvalid,
  checkRedisUrl,
  pinnedAdmins,
  positiveWhole,
  requiredInput,
  type ConfigEnv,
  type KeyRef,
  type LogLevel,
} from '@writ/protocol';

/** What the caller hands over: flag values as parsed (unchecked strings), admin keys already read from --admin-key. */
export interface RunnerGiven {
  /** Where state dirs default to ($WRIT_HOME, resolved by the caller). */
  home: string;
  node?: string | undefined;
  labels?: readonly string[] | undefined;
  redis?: string | undefined;
  /** `USER:PASSWORD` (read from --redis-credentials FILE by the caller): added to a Redis address learned at registration. */
  redisCredentials?: string | undefined;
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
  /** Production mode (or WRIT_PRODUCTION=1): Redis must be reached as this node's ACL user (R7). */
  production?: boolean | undefined;
}

export type RunnerEnv = ConfigEnv;

export interface RunnerConfig {
  readonly nodeId: string;
  readonly labels: Readonly<Record<string, string>>;
  /**
   * The Redis to take jobs from; null when neither --redis nor REDIS_URL was given: the node then uses the
   * address the coord announces for its pool when it registers (federation), with `redisCredentials` added.
   */
  readonly redisUrl: string | null;
  readonly redisCredentials: { username: string; password: string } | null;
  readonly coordUrl: string;
  readonly clusterId: string;
  readonly stateDir: string;
  readonly admins: { readonly threshold: number; readonly keys: readonly KeyRef[] };
  // Left undefined when not given: the Runner and NodeAgent own these defaults.
  readonly concurrency: number | undefined;
  readonly heartbeatMs: number | undefined;
  readonly lockDurationMs: number | undefined;
  readonly stalledIntervalMs: number | undefined;
  readonly logLevel: LogLevel;
  /** How long running jobs may take to finish once stopping starts. */
  readonly shutdownGraceMs: number;
  readonly production: boolean;
}

export const RUNNER_DEFAULTS = Object.freeze({ clusterId: 'writ-dev', logLevel: 'info' as LogLevel, shutdownGraceMs: 30_000 });
const LABEL_VALUE_MAX = 63; // what registration accepts (protocol/src/node.ts)

function parseLabels(given: readonly string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const l of given) {
    const m = /^([^=]+)=(.*)$/.exec(l);
    if (!m) configInvalid(`--label ${l}: expected key=value`);
    if (!new RegExp(LABEL_KEY_PATTERN).test(m[1]!)) configInvalid(`--label ${l}: the key must match ${LABEL_KEY_PATTERN}`);
    if (m[2]!.length > LABEL_VALUE_MAX) configInvalid(`--label ${l}: the value must be at most ${LABEL_VALUE_MAX} characters`);
    labels[m[1]!] = m[2]!;
  }
  return labels;
}

export function runnerConfig(given: RunnerGiven, env: RunnerEnv): RunnerConfig {
  const nodeId = requiredInput(given.node, '--node ID');
  if (!new RegExp(NODE_ID_PATTERN).test(nodeId))
    configInvalid(`--node ${nodeId}: a node id is lower-case letters, digits, '.' and '-' (at most 63, matching ${NODE_ID_PATTERN})`);
  const redisGiven = given.redis ?? env.REDIS_URL;
  const redisUrl = redisGiven === undefined || redisGiven === '' ? null : checkRedisUrl(redisGiven, given.redis !== undefined ? '--redis' : 'REDIS_URL');
  let redisCredentials: { username: string; password: string } | null = null;
  if (given.redisCredentials !== undefined) {
    const m = /^([^:\s]+):(\S+)$/.exec(given.redisCredentials.trim());
    if (!m) configInvalid('--redis-credentials: the file must hold one line USER:PASSWORD (writ redis acl --role runner --node ID prints both)');
    if (redisUrl !== null)
      configInvalid('--redis-credentials is for a Redis learned at registration; with --redis (or REDIS_URL), put USER:PASSWORD in its URL');
    redisCredentials = { username: m[1]!, password: m[2]! };
  }
  const labels = parseLabels(given.labels ?? []);
  if (!given.adminKeys?.length) throw new WritError('USAGE', '--admin-key FILE is required: the admin public key(s) this node trusts to sign key sets');
  const admins = pinnedAdmins(given.adminKeys, given.adminThreshold);
  const concurrency = positiveWhole(given.concurrency, '--concurrency');
  const lockDurationMs = positiveWhole(given.lockMs, '--lock-ms');
  const stalledIntervalMs = positiveWhole(given.stalledMs, '--stalled-ms');
  const coordSource = given.coord !== undefined ? '--coord' : 'WRIT_COORD';
  const coordUrl = checkUrl(requiredInput(given.coord ?? env.WRIT_COORD, '--coord URL (or WRIT_COORD)', 'the node registers there'), coordSource, [
    'http:',
    'https:',
  ]);
  const heartbeatMs = positiveWhole(given.heartbeatMs, '--heartbeat-ms');
  const clusterId = given.cluster ?? env.WRIT_CLUSTER ?? RUNNER_DEFAULTS.clusterId;
  if (!clusterId) configInvalid(`${given.cluster !== undefined ? '--cluster' : 'WRIT_CLUSTER'} must not be empty`);
  const logLevel = checkLogLevel(env, RUNNER_DEFAULTS.logLevel);
  const shutdownGraceMs = checkGraceMs(given.shutdownGraceMs ?? RUNNER_DEFAULTS.shutdownGraceMs);
  const productionEnv = env.WRIT_PRODUCTION ?? '';
  // As the supervisor reads it: a WRIT_PRODUCTION=true must not quietly weaken the Redis check.
  if (!['', '0', '1'].includes(productionEnv)) configInvalid(`WRIT_PRODUCTION ${productionEnv}: expected 1 (production) or 0`);
  return Object.freeze({
    nodeId,
    labels: Object.freeze(labels),
    redisUrl,
    redisCredentials,
    coordUrl,
    clusterId,
    stateDir: given.state ?? path.join(given.home, `runner-${nodeId}`),
    admins,
    concurrency,
    heartbeatMs,
    lockDurationMs,
    stalledIntervalMs,
    logLevel,
    shutdownGraceMs,
    production: given.production === true || productionEnv === '1',
  });
}
