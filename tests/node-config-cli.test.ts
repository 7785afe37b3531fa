// `writ runner --config` and `writ dev --config`: a bad node config stops the start with CONFIG_INVALID naming
// the file and the field, before anything starts (no Redis, coord or ledger is touched).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '@writ/cli';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-node-config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function cli(...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(
    args,
    { out: (l) => out.push(l), err: (l) => err.push(l) },
    { env: { ...process.env, WRIT_HOME: dir, REDIS_URL: 'redis://127.0.0.1:1' }, now: () => Math.floor(Date.now() / 1000) },
  );
  return { code, text: [...out, ...err].join('\n') };
}

describe('node config on the command line', () => {
  it('writ runner and writ dev refuse a bad config before starting anything', async () => {
    const bad = path.join(dir, 'node.json');
    await writeFile(bad, JSON.stringify({ labels: { role: 'hv' }, sal: { btrfs: { mount: 'pool' } } }));
    const r = await cli('runner', '--node', 'n1', '--coord', 'http://127.0.0.1:1', '--admin-key', 'x', '--config', bad);
    expect(r.code).toBe(1);
    expect(r.text).toMatch(new RegExp(`CONFIG_INVALID: ${bad.replace(/[.]/g, '\\.')}: sal\\.btrfs: btrfs mount must be an absolute path`));
    const d = await cli('dev', '--config', bad);
    expect(d.code).toBe(1);
    expect(d.text).toMatch(/CONFIG_INVALID: .*node\.json: sal\.btrfs/);
    const missing = await cli('dev', '--config', path.join(dir, 'nope.json'));
    expect(missing.code).toBe(1);
    expect(missing.text).toMatch(/CONFIG_INVALID: cannot read the node config .*nope\.json: ENOENT/);
  });

  it('--help documents --config on both', async () => {
    expect((await cli('runner', '--help')).text).toMatch(/--config FILE\s+the node's config file/);
    expect((await cli('dev', '--help')).text).toMatch(/--config F\s+the node's config file/);
  });
});
