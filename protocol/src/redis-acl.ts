// Per-role Redis ACL users (R7): who each Writ process connects to Redis as, and the rules that confine it.
// A runner's user reaches only its own node's BullMQ queue, its own heartbeat hash, XADD on the event stream,
// ZADD on the node index, and reads the published key set. Built from the key names in queues.ts, so a
// renamed key cannot leave the rules behind. Pure: `writ redis acl` prints them, services check WHOAMI.
import { WritError } from './errors.ts';
import { sha256Hex } from './encoding.ts';
import { NODE_ID_PATTERN } from './job.ts';
import { BULL_PREFIX, REDIS_PREFIX, queueNames, redisKeys } from './queues.ts';

/** The supervisor (it owns every queue and reads the event stream); the coord itself does not use Redis. */
export type RedisRole = { role: 'supervisor' } | { role: 'runner'; node: string };

const NODE_RE = new RegExp(NODE_ID_PATTERN);

function checkedNode(node: string): string {
  // Node ids carry no glob characters (*, ?, [, \), so a node's patterns cannot reach another node's keys.
  if (!NODE_RE.test(node)) throw new WritError('USAGE', `${JSON.stringify(node)} is not a node id (${NODE_ID_PATTERN})`);
  return node;
}

/** The ACL user name a role connects as. */
export function redisAclUser(r: RedisRole): string {
  return r.role === 'supervisor' ? 'writ-supervisor' : `writ-runner-${checkedNode(r.node)}`;
}

// Commands: everything but the dangerous and admin ones (FLUSHALL, KEYS, CONFIG, DEBUG, CLIENT KILL, ...),
// with INFO back (ioredis's ready check and BullMQ's version check read it), and nothing that enumerates key
// names or changes server-wide script state. Keys are what confines a role; commands only keep it from
// reaching around its keys.
const COMMANDS = ['+@all', '-@dangerous', '-@admin', '+info', '-scan', '-randomkey', '-function', '-script|flush', '-script|kill'];

/**
 * The rules after `ACL SETUSER <user>` (without the password), starting from `reset` so that applying them
 * again replaces what the user had. A selector `(...)` allows one command on one shared key: a runner may
 * XADD to the event stream but not read, trim by XDEL or delete it, and ZADD to the node index only.
 */
export function redisAclRules(r: RedisRole): string[] {
  if (r.role === 'supervisor') {
    return ['reset', 'on', 'resetchannels', `~${REDIS_PREFIX}:*`, `~${BULL_PREFIX}:*`, ...COMMANDS];
  }
  const node = checkedNode(r.node);
  return [
    'reset',
    'on',
    'resetchannels',
    `~${BULL_PREFIX}:${queueNames.node(node)}:*`,
    `~${redisKeys.node(node)}`,
    `%R~${redisKeys.cancel(node, '*')}`,
    `%R~${redisKeys.keySet()}`,
    `%R~${redisKeys.keySetVersion()}`,
    ...COMMANDS,
    `(~${redisKeys.events()} +xadd)`,
    `(~${redisKeys.nodes()} +zadd)`,
  ];
}

/** The whole `ACL SETUSER` command as arguments; the password goes in as its SHA-256 (`#hex`), never in clear. */
export function redisAclSetUser(r: RedisRole, password: string): string[] {
  if (password.length < 16) throw new WritError('USAGE', 'a Redis ACL password must be at least 16 characters');
  const [reset, on, ...rest] = redisAclRules(r);
  return ['ACL', 'SETUSER', redisAclUser(r), reset!, on!, `#${sha256Hex(password)}`, ...rest];
}

/**
 * Production mode (R7): a process must reach Redis as its role's ACL user. Returns what is wrong, or null.
 * `whoami` is what `ACL WHOAMI` answered on the process's own connection.
 */
export function redisUserProblem(r: RedisRole, whoami: string): string | null {
  const expected = redisAclUser(r);
  if (whoami === expected) return null;
  const who = r.role === 'supervisor' ? 'a supervisor' : `the runner of node ${r.node}`;
  const create = r.role === 'supervisor' ? 'writ redis acl --role supervisor' : `writ redis acl --role runner --node ${r.node}`;
  return (
    `connected to Redis as ACL user ${JSON.stringify(whoami)}; in production mode ${who} must connect as ${JSON.stringify(expected)}, ` +
    `confined to its own keys. Create the user with \`${create}\` (on every Redis server) and put it in REDIS_URL: redis://${expected}:PASSWORD@HOST:PORT`
  );
}

/** Production mode: a Redis that lets anyone in as the default user without a password confines nobody. */
export const REDIS_OPEN_DEFAULT_USER_PROBLEM =
  'Redis lets any client in as the "default" user without a password, so per-role ACL users confine nothing. ' +
  'Turn it off (ACL SETUSER default off, or requirepass) on every Redis server';
