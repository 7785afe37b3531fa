// writ redis acl: the ACL SETUSER command that creates a role's Redis user (R7), to apply on every Redis server.
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { WritError, redisAclRules, redisAclSetUser, redisAclUser, type RedisRole } from '@writ/protocol';
import { parse } from '../args.ts';
import { EXIT, printJson, type Io } from '../output.ts';
import { dispatchSubcommand, type CliContext, type Command } from './types.ts';

const ACL_HELP = `usage: writ redis acl --role supervisor|runner [--node ID] [--password-file FILE] [--json]

Prints the Redis command that creates (or resets) a role's ACL user, for redis-cli:
  supervisor        user writ-supervisor: every Writ key ({writ}:*, writ-bull:*), no admin commands
  runner --node ID  user writ-runner-ID: only node ID's queue (writ-bull:{node.ID}:*) and heartbeat hash,
                    XADD to the event stream, ZADD to the node index, and reads of the key set.
                    It cannot touch another node's queue, read the event stream or change the key set.
The password goes in as its SHA-256. Without --password-file a new random one is made and printed on stderr
(with --json: in the output), once: put it in that process's REDIS_URL. ACL users are not replicated: apply
the command on every Redis server (primary and replicas), or keep them in an aclfile. With --production,
supervisors and runners refuse to start as any other user.

  --password-file FILE  use the password in FILE (first line) instead of making one

examples:
  writ redis acl --role runner --node node-7 | redis-cli -h 10.0.0.2
  REDIS_URL=redis://writ-runner-node-7:PASSWORD@10.0.0.2:6379 writ runner --node node-7 --production ...`;

/** Quotes an argument for redis-cli when it holds a space (the selectors do). */
function cliArg(a: string): string {
  return /[\s"'\\]/.test(a) ? `"${a.replace(/["\\]/g, '\\$&')}"` : a;
}

async function acl(argv: string[], io: Io, _ctx: CliContext): Promise<number> {
  const { values } = parse(
    argv,
    { role: { type: 'string' }, node: { type: 'string' }, 'password-file': { type: 'string' } },
    { min: 0, max: 0, usage: 'writ redis acl --role supervisor|runner [--node ID]' },
  );
  if (values.help) return (io.out(ACL_HELP), EXIT.ok);
  let role: RedisRole;
  if (values.role === 'supervisor') {
    if (values.node !== undefined) throw new WritError('USAGE', '--node is for --role runner');
    role = { role: 'supervisor' };
  } else if (values.role === 'runner') {
    if (!values.node) throw new WritError('USAGE', '--role runner needs --node ID\nusage: writ redis acl --role runner --node ID');
    role = { role: 'runner', node: values.node };
  } else {
    throw new WritError(
      'USAGE',
      `--role must be supervisor or runner${values.role === undefined ? '' : `, not ${JSON.stringify(values.role)}`}\nusage: writ redis acl --role supervisor|runner [--node ID]`,
    );
  }
  let password: string;
  let generated = false;
  if (values['password-file'] !== undefined) {
    try {
      password = (await readFile(values['password-file'], 'utf8')).split(/\r?\n/)[0] ?? '';
    } catch (e) {
      throw new WritError('USAGE', `cannot read ${values['password-file']} (${(e as NodeJS.ErrnoException).code})`);
    }
  } else {
    password = randomBytes(24).toString('base64url'); // URL-safe: goes into REDIS_URL as it is
    generated = true;
  }
  const command = redisAclSetUser(role, password);
  const user = redisAclUser(role);
  if (values.json) {
    printJson(io, { ok: true, user, ...role, rules: redisAclRules(role), command, ...(generated ? { password } : {}) });
    return EXIT.ok;
  }
  io.out(command.map(cliArg).join(' '));
  if (generated)
    io.err(
      `writ: made a new password for ${user}: ${password}\n  REDIS_URL=redis://${user}:${password}@HOST:PORT (or redis+sentinel://${user}:${password}@SENTINEL:PORT,.../MASTER)`,
    );
  return EXIT.ok;
}

export const redisCommand: Command = {
  name: 'redis',
  summary: 'Redis ACL users per role (acl)',
  help: `usage: writ redis acl ...\n\n${ACL_HELP}`,
  subcommands: { acl },
  run(argv, io, ctx) {
    return dispatchSubcommand(this, argv, io, ctx);
  },
};
