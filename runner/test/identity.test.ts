import { mkdtemp, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { errorCodeOf } from '@writ/protocol';
import { loadNodeIdentity } from '../src/identity.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-id-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});
const codeOf = async (p: Promise<unknown>) =>
  p.then(
    () => 'OK',
    (e) => errorCodeOf(e) ?? String(e),
  );

describe('node identity', () => {
  it('creates a seed with mode 0400 on first start and loads the same key afterwards', async () => {
    const first = await loadNodeIdentity(dir, 'n1');
    expect(first.created).toBe(true);
    expect((await stat(path.join(dir, 'node.seed'))).mode & 0o777).toBe(0o400);
    const again = await loadNodeIdentity(dir, 'n1');
    expect(again.created).toBe(false);
    expect(again.key.keyid).toBe(first.key.keyid);
  });

  it('never regenerates a corrupt seed', async () => {
    const first = await loadNodeIdentity(dir, 'n1');
    await unlink(path.join(dir, 'node.seed'));
    await writeFile(path.join(dir, 'node.seed'), 'garbage', { mode: 0o400 });
    expect(await codeOf(loadNodeIdentity(dir, 'n1'))).toBe('NODE_IDENTITY_CORRUPT');
    expect(await readFile(path.join(dir, 'node.seed'), 'utf8')).toBe('garbage');
    expect(JSON.parse(await readFile(path.join(dir, 'node.json'), 'utf8')).keyid).toBe(first.key.keyid);
  });

  it('refuses to make a new identity when a known node lost its seed', async () => {
    await loadNodeIdentity(dir, 'n1');
    await unlink(path.join(dir, 'node.seed'));
    expect(await codeOf(loadNodeIdentity(dir, 'n1'))).toBe('NODE_IDENTITY_MISSING');
    await expect(stat(path.join(dir, 'node.seed'))).rejects.toThrow();
  });

  it('refuses a state dir that belongs to another node', async () => {
    await loadNodeIdentity(dir, 'n1');
    expect(await codeOf(loadNodeIdentity(dir, 'n2'))).toBe('NODE_IDENTITY_CORRUPT');
  });
});
