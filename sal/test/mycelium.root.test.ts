// Mycelium inside a network namespace (double as the binary): started through `ip netns exec`, its
// loopback-only API reached from inside the namespace, invisible from the host's loopback.
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readlink, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodeOf } from '@writ/protocol';
import { myceliumAddPeer, myceliumConfig, myceliumInfo, myceliumPeers, myceliumStart, myceliumStop, type MyceliumConfig } from '../src/index.ts';
import { run } from '../src/exec.ts';
import { ensurePackages, isRoot } from './helpers/system.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const suffix = randomBytes(2).toString('hex');
const ns = `writ-myc-${suffix}`;
let tmp = '';
let skipReason: string | null = null;
let config: MyceliumConfig;
let nsCreated = false;

beforeAll(async () => {
  if (!isRoot) skipReason = 'not root: network namespaces need root';
  else skipReason = ensurePackages(['iproute2', 'curl']);
  if (skipReason) {
    console.warn(`skipping mycelium netns tests: ${skipReason}`);
    return;
  }
  const added = await run(['ip', 'netns', 'add', ns], { reject: false });
  if (added.failed) {
    skipReason = `ip netns add refused: ${added.stderr.trim()}`;
    console.warn(`skipping mycelium netns tests: ${skipReason}`);
    return;
  }
  nsCreated = true;
  await run(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  tmp = await mkdtemp(path.join(os.tmpdir(), `writ-mycns-${suffix}-`));
  const binary = path.join(tmp, 'mycelium');
  await writeFile(
    binary,
    `#!/bin/sh\nexec '${process.execPath}' --import '${path.resolve(here, '../../node_modules/tsx/dist/loader.mjs')}' '${path.join(here, 'doubles/mycelium-double.ts')}' "$@"\n`,
  );
  await chmod(binary, 0o755);
  config = myceliumConfig({
    binary,
    keyFile: path.join(tmp, 'key.bin'),
    stateDir: path.join(tmp, 'state'),
    apiAddr: '127.0.0.1:8989',
    tcpListenPort: 9651,
    peerDiscoveryPort: null,
    netns: ns,
    tunName: `myc-${suffix}`,
  });
});

afterAll(async () => {
  if (config) await myceliumStop(config).catch(() => undefined);
  if (nsCreated) await run(['ip', 'netns', 'delete', ns], { reject: false });
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('mycelium in a network namespace (double)', () => {
  it('starts inside the namespace and is managed through it', async (ctx) => {
    if (skipReason) return ctx.skip();
    const res = await myceliumStart(config);
    expect(res).toMatchObject({ started: true, keyCreated: true });
    // The daemon's network namespace is the one we named, not the host's.
    const nsInode = (await run(['stat', '-L', '-c', '%i', `/run/netns/${ns}`])).stdout.trim();
    expect(await readlink(`/proc/${res.pid}/ns/net`)).toBe(`net:[${nsInode}]`);
    expect((await myceliumInfo(config)).nodePubkey).toBe(res.info.nodePubkey);
    expect(await myceliumAddPeer(config, { endpoint: 'tcp://127.0.0.1:9' })).toMatchObject({ added: true });
    expect((await myceliumPeers(config)).map((p) => p.endpoint.socketAddr)).toEqual(['127.0.0.1:9']);
    // The same address on the host's loopback is someone else (or no one): not our daemon.
    const host = myceliumConfig({ ...config, netns: undefined, requestTimeoutMs: 1000 });
    try {
      const info = await myceliumInfo(host);
      expect(info.nodePubkey).not.toBe(res.info.nodePubkey);
    } catch (e) {
      expect(errorCodeOf(e)).toBe('MYCELIUM_UNREACHABLE');
    }
    expect(await myceliumStart(config)).toMatchObject({ started: false, pid: res.pid });
    expect(await myceliumStop(config)).toEqual({ stopped: true });
    expect(errorCodeOf(await myceliumInfo(config).catch((e: unknown) => e))).toBe('MYCELIUM_UNREACHABLE');
  });
});
