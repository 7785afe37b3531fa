import { execFile } from 'node:child_process';
import { mkdtemp, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '@writ/cli';

const execFileP = promisify(execFile);
const BIN = path.resolve(import.meta.dirname, '../../bin/writ.mjs');
const HELLO = path.resolve(import.meta.dirname, '../../scripts/examples/hello.js');
let dir: string;

async function cli(args: string[], now = Math.floor(Date.now() / 1000)) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(
    args,
    { out: (l) => out.push(l), err: (l) => err.push(l) },
    { env: { ...process.env, WRIT_HOME: path.join(dir, 'home') }, now: () => now },
  );
  return { code, out: out.join('\n'), err: err.join('\n') };
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-cli-'));
  expect((await cli(['keys', 'generate', '--out', path.join(dir, 'alice.key')])).code).toBe(0);
  expect((await cli(['keys', 'generate', '--out', path.join(dir, 'bob.key')])).code).toBe(0);
});

describe('writ keys / sign / verify', () => {
  it('writes the private key with mode 0600 and refuses to overwrite without --force', async () => {
    expect((await stat(path.join(dir, 'alice.key'))).mode & 0o777).toBe(0o600);
    const again = await cli(['keys', 'generate', '--out', path.join(dir, 'alice.key')]);
    expect(again.code).toBe(1);
    expect(again.err).toContain('KEY_FILE_EXISTS');
    const before = await readFile(path.join(dir, 'alice.key'), 'utf8');
    expect(await readFile(path.join(dir, 'alice.key'), 'utf8')).toBe(before);
    expect((await cli(['keys', 'generate', '--out', path.join(dir, 'alice2.key'), '--force'])).code).toBe(0);
  });

  it('signs and verifies; --json gives the checks', async () => {
    const env = path.join(dir, 'hello.env.json');
    const s = await cli(['sign', HELLO, '--key', path.join(dir, 'alice.key'), '--target', 'node=dev-1', '--caps', 'host.facts', '--out', env]);
    expect(s.code).toBe(0);
    const v = await cli(['verify', env, '--pubkey', path.join(dir, 'alice.key.pub'), '--json']);
    expect(v.code).toBe(0);
    const doc = JSON.parse(v.out);
    expect(doc.ok).toBe(true);
    expect(doc.checks.map((c: { check: string }) => c.check)).toEqual(['envelope', 'signature', 'payload', 'script', 'time', 'audience']);
    expect(doc.job.target).toEqual({ node: 'dev-1' });
  });

  it('finds a public key by its key id in the keyring ($WRIT_HOME/keys)', async () => {
    const gen = await cli(['keys', 'generate', '--json']);
    expect(gen.code).toBe(0);
    const { keyid, privateKeyFile } = JSON.parse(gen.out);
    expect(privateKeyFile).toBe(path.join(dir, 'home', 'keys', 'default.key'));
    const env = path.join(dir, 'byid.env.json');
    await cli(['sign', HELLO, '--key', privateKeyFile, '--target', 'node=dev-1', '--out', env]);
    expect((await cli(['verify', env, '--pubkey', keyid])).code).toBe(0);
    const unknown = await cli(['verify', env, '--pubkey', 'ed25519:' + 'A'.repeat(43)]);
    expect([unknown.code, unknown.err]).toEqual([1, expect.stringContaining('KEY_FILE_NOT_FOUND')]);
  });

  it('names the failure when verified with the wrong public key', async () => {
    const env = path.join(dir, 'wrong.env.json');
    await cli(['sign', HELLO, '--key', path.join(dir, 'alice.key'), '--target', 'node=dev-1', '--out', env]);
    const v = await cli(['verify', env, '--pubkey', path.join(dir, 'bob.key.pub')]);
    expect(v.code).toBe(1);
    expect(v.out).toMatch(/✗ signature UNKNOWN_KEY: not signed by ed25519:/);
  });

  it('reports an expired envelope with ENVELOPE_EXPIRED', async () => {
    const env = path.join(dir, 'old.env.json');
    const then = Math.floor(Date.now() / 1000) - 3600;
    await cli(['sign', HELLO, '--key', path.join(dir, 'alice.key'), '--target', 'node=dev-1', '--ttl', '10m', '--out', env], then);
    const v = await cli(['verify', env, '--pubkey', path.join(dir, 'alice.key.pub'), '--json']);
    expect(v.code).toBe(1);
    expect(JSON.parse(v.out).checks.at(-1).error.code).toBe('ENVELOPE_EXPIRED');
  });

  it('reports a tampered script (hash mismatch is caught by the signature first)', async () => {
    const env = path.join(dir, 'tamper.env.json');
    await cli(['sign', HELLO, '--key', path.join(dir, 'alice.key'), '--target', 'node=dev-1', '--out', env]);
    const doc = JSON.parse(await readFile(env, 'utf8'));
    const payload = JSON.parse(Buffer.from(doc.payload, 'base64').toString());
    payload.script.source += '\n// extra';
    doc.payload = Buffer.from(JSON.stringify(payload)).toString('base64');
    await writeFile(env, JSON.stringify(doc));
    const v = await cli(['verify', env, '--pubkey', path.join(dir, 'alice.key.pub')]);
    expect(v.code).toBe(1);
    expect(v.out).toContain('SIGNATURE_INVALID');
  });

  it('gives clear errors and exit codes for a missing key, an unreadable key, a bad key file and a bad --target', async () => {
    const missing = await cli(['sign', HELLO, '--key', path.join(dir, 'nope.key'), '--target', 'node=a']);
    expect([missing.code, missing.err]).toEqual([1, expect.stringContaining('KEY_FILE_NOT_FOUND')]);
    await mkdir(path.join(dir, 'adir.key'));
    const unreadable = await cli(['sign', HELLO, '--key', path.join(dir, 'adir.key'), '--target', 'node=a']);
    expect([unreadable.code, unreadable.err]).toEqual([1, expect.stringContaining('KEY_FILE_UNREADABLE')]);
    await writeFile(path.join(dir, 'garbage.key'), 'not a key');
    const bad = await cli(['sign', HELLO, '--key', path.join(dir, 'garbage.key'), '--target', 'node=a']);
    expect([bad.code, bad.err]).toEqual([1, expect.stringContaining('KEY_FILE_INVALID')]);
    const pubOnly = await cli(['sign', HELLO, '--key', path.join(dir, 'alice.key.pub'), '--target', 'node=a']);
    expect([pubOnly.code, pubOnly.err]).toEqual([1, expect.stringContaining('only a public key')]);
    for (const t of ['nod=1', 'node=UPPER', 'label=novalue', 'label==x']) {
      const r = await cli(['sign', HELLO, '--key', path.join(dir, 'alice.key'), '--target', t]);
      expect([t, r.code, r.err]).toEqual([t, 2, expect.stringContaining('USAGE')]);
    }
    const noTarget = await cli(['sign', HELLO, '--key', path.join(dir, 'alice.key')]);
    expect(noTarget.code).toBe(2);
    const unknownFlag = await cli(['sign', HELLO, '--kee', 'x']);
    expect(unknownFlag.code).toBe(2);
  });

  it('co-signs with --add-signature (two distinct signers)', async () => {
    const env = path.join(dir, 'cosign.env.json');
    await cli(['sign', HELLO, '--key', path.join(dir, 'alice.key'), '--target', 'label=rack=r1', '--out', env]);
    expect((await cli(['sign', '--add-signature', env, '--key', path.join(dir, 'bob.key'), '--out', env])).code).toBe(0);
    const doc = JSON.parse(await readFile(env, 'utf8'));
    expect(doc.signatures).toHaveLength(2);
    const v = await cli(['verify', env, '--pubkey', path.join(dir, 'alice.key.pub'), '--pubkey', path.join(dir, 'bob.key.pub'), '--json']);
    expect(JSON.parse(v.out).checks[1].detail.split(',')).toHaveLength(2);
  });

  it('runs as a real process with the documented exit codes and --help', async () => {
    const help = await execFileP('node', [BIN, 'sign', '--help']);
    expect(help.stdout).toContain('example:');
    const usage = await execFileP('node', [BIN, 'verify']).catch((e) => e);
    expect(usage.code).toBe(2);
    const fail = await execFileP('node', [BIN, 'keys', 'show', path.join(dir, 'nope.key')]).catch((e) => e);
    expect(fail.code).toBe(1);
    expect(fail.stderr).toContain('KEY_FILE_NOT_FOUND');
  }, 120_000); // three process starts: each took 12 s (tsx loading the workspace) at load 25
});
