// The per-role Redis ACL rules are built from the key names in queues.ts, and the production check names
// the user to create. (tests/redis-acl.redis.test.ts proves them on a real Redis.)
import { describe, expect, it } from 'vitest';
import { BULL_PREFIX, queueNames, redisAclRules, redisAclSetUser, redisAclUser, redisKeys, redisUserProblem, sha256Hex } from '../src/index.ts';

describe('redis ACL rules', () => {
  it('confine a runner to its own queue and heartbeat, XADD on the events and reads of the key set', () => {
    const rules = redisAclRules({ role: 'runner', node: 'n1' });
    expect(rules).toContain(`~${BULL_PREFIX}:${queueNames.node('n1')}:*`);
    expect(rules).toContain(`~${redisKeys.node('n1')}`);
    expect(rules).toContain(`%R~${redisKeys.keySet()}`);
    expect(rules).toContain(`(~${redisKeys.events()} +xadd)`);
    // Every key pattern is either the node's own or a shared key opened by a selector or read-only.
    const patterns = rules.filter((r) => /^(%R|%W)?~/.test(r));
    expect(patterns.every((p) => p.includes('n1') || p.startsWith('%R~'))).toBe(true);
    expect(rules.slice(0, 3)).toEqual(['reset', 'on', 'resetchannels']);
  });

  it('put the password in as its SHA-256, never in clear', () => {
    const cmd = redisAclSetUser({ role: 'runner', node: 'n1' }, 'correct horse battery staple');
    expect(cmd.slice(0, 6)).toEqual(['ACL', 'SETUSER', 'writ-runner-n1', 'reset', 'on', `#${sha256Hex('correct horse battery staple')}`]);
    expect(cmd.join(' ')).not.toContain('horse');
    expect(() => redisAclSetUser({ role: 'supervisor' }, 'short')).toThrow(expect.objectContaining({ code: 'USAGE' }));
  });

  it('refuse node ids that are not node ids (a glob would reach other nodes)', () => {
    expect(() => redisAclUser({ role: 'runner', node: 'n*' })).toThrow(expect.objectContaining({ code: 'USAGE' }));
    expect(() => redisAclRules({ role: 'runner', node: 'a?' })).toThrow(expect.objectContaining({ code: 'USAGE' }));
  });

  it('say which user a process must connect as', () => {
    expect(redisUserProblem({ role: 'runner', node: 'n1' }, 'writ-runner-n1')).toBeNull();
    expect(redisUserProblem({ role: 'runner', node: 'n1' }, 'default')).toMatch(/"default".*"writ-runner-n1".*writ redis acl --role runner --node n1/);
    expect(redisUserProblem({ role: 'runner', node: 'n1' }, 'writ-runner-n2')).not.toBeNull();
    expect(redisUserProblem({ role: 'supervisor' }, 'writ-supervisor')).toBeNull();
  });
});
