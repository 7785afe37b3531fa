// The key set workflow through the CLI, as docs/operations.md tells it: roles and users in a draft,
// signed and published by the admin, a user's job in and out of scope, then a key rotation with revocation.
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '@writ/cli';
import { encodePrivateKeyFile } from '@writ/protocol';
import { startTestStack, type TestStack } from './helpers/stack.ts';

let s: TestStack;
let home: string;
const HELLO = path.resolve(import.meta.dirname, '../scripts/examples/hello.js');

beforeAll(async () => {
  s = await startTestStack({
    nodes: [
      { id: 'node-a', labels: { rack: 'r2' } },
      { id: 'node-b', labels: { rack: 'r1' } },
    ],
  });
  home = await mkdtemp(path.join(os.tmpdir(), 'writ-home-'));
  await writeFile(path.join(home, 'admin.key'), encodePrivateKeyFile(s.admin), { mode: 0o600 });
}, 60_000);
afterAll(async () => {
  await s?.close();
});

async function cli(...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(
    [...args],
    { out: (l) => out.push(l), err: (l) => err.push(l) },
    { env: { ...process.env, WRIT_HOME: home, WRIT_COORD: s.url, WRIT_TOKEN: s.token }, now: () => Math.floor(Date.now() / 1000) },
  );
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('key sets through the CLI', () => {
  it('adds a role and a user, publishes, and the user runs jobs only in scope', async () => {
    const alice = path.join(home, 'alice.key');
    expect((await cli('keys', 'generate', '--out', alice)).code).toBe(0);
    expect((await cli('roles', 'add', 'operator', '--caps', 'host.facts', '--label', 'rack=r2')).code).toBe(0);
    expect((await cli('users', 'add', 'alice', '--key', `${alice}.pub`, '--role', 'operator')).code).toBe(0);
    const unsigned = await cli('keyset', 'publish');
    expect([unsigned.code, unsigned.err]).toEqual([2, expect.stringContaining('has no admin signature yet')]);
    // Signed by a key that is not an admin: the coord refuses it.
    const notAdmin = await cli('keyset', 'publish', '--sign-with', alice);
    expect([notAdmin.code, notAdmin.err]).toEqual([1, expect.stringContaining('KEYSET_INVALID')]);
    const pub = await cli('keyset', 'publish', '--sign-with', path.join(home, 'admin.key'));
    expect([pub.code, pub.out]).toEqual([0, 'published key set version 2']);
    const inScope = await cli('submit', HELLO, '--key', alice, '--target', 'node=node-a', '--caps', 'host.facts', '--wait');
    expect(inScope.code).toBe(0);
    const out = await cli('submit', HELLO, '--key', alice, '--target', 'node=node-b', '--caps', 'host.facts', '--wait');
    expect([out.code, out.err]).toEqual([1, expect.stringContaining('TARGET_OUT_OF_SCOPE')]);
    const users = await cli('users', 'list', '--json');
    expect(JSON.parse(users.out).map((u: { name: string }) => u.name)).toEqual(['admin', 'alice']);
  });

  it('rotates a key: the new one works, the revoked one is refused', async () => {
    const alice = path.join(home, 'alice.key');
    const alice2 = path.join(home, 'alice2.key');
    await cli('keys', 'generate', '--out', alice2);
    const oldId = JSON.parse((await cli('keys', 'show', alice, '--json')).out).keyid;
    expect((await cli('users', 'add', 'alice', '--key', `${alice2}.pub`)).code).toBe(0);
    expect((await cli('users', 'revoke', oldId)).code).toBe(0);
    expect((await cli('keyset', 'publish', '--sign-with', path.join(home, 'admin.key'))).out).toBe('published key set version 3');
    const old = await cli('submit', HELLO, '--key', alice, '--target', 'node=node-a', '--caps', 'host.facts', '--wait');
    expect([old.code, old.err]).toEqual([1, expect.stringContaining('KEY_REVOKED')]);
    expect((await cli('submit', HELLO, '--key', alice2, '--target', 'node=node-a', '--caps', 'host.facts', '--wait')).code).toBe(0);
    const show = await cli('keyset', 'show');
    expect(show.out).toMatch(/key set version 3/);
    expect(show.out).toContain(`${oldId} (REVOKED)`);
  });

  it('refuses a threshold on a capability that is not dangerous', async () => {
    const r = await cli('keyset', 'threshold', 'host.facts', '2');
    expect([r.code, r.err]).toEqual([2, expect.stringContaining('not a dangerous capability')]);
  });
});
