// Mycelium SAL against the double in sal/test/doubles/mycelium-double.ts (the real binary cannot be
// installed here): key handling, the daemon lifecycle through start-stop-daemon, peers, routes between two
// peered doubles, workload addresses, and every request and response checked against the published yaml.
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import AjvModule from 'ajv';
import { parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodeOf } from '@writ/protocol';
import {
  ensureMyceliumKey,
  formatIpv6,
  ipv6ToBytes,
  MYCELIUM_API,
  MYCELIUM_OPERATIONS,
  myceliumAddPeer,
  myceliumConfig,
  myceliumInfo,
  myceliumPeers,
  myceliumRemovePeer,
  myceliumRequest,
  myceliumRoutes,
  myceliumStart,
  myceliumStop,
  workloadAddress,
  type MyceliumConfig,
  type MyceliumConfigInput,
} from '../src/index.ts';
import { judgeProcess } from '../src/mycelium/daemon.ts';
import { referenceFile } from './helpers/reference.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const SPEC_FILE = referenceFile('mycelium-api.yaml');
const suffix = randomBytes(2).toString('hex');
let tmp = '';
let binary = '';
const requestLog = () => path.join(tmp, 'requests.jsonl');
const configs: MyceliumConfig[] = [];

// The kernel may hand a just-closed ephemeral port out again: never give the same one twice in this file,
// or two listeners of one double (or of two doubles) collide and a start fails for reasons of our own.
const portsGiven = new Set<number>();
async function freePort(): Promise<number> {
  for (;;) {
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as net.AddressInfo).port;
    await new Promise((r) => srv.close(r));
    if (portsGiven.has(port)) continue;
    portsGiven.add(port);
    return port;
  }
}

async function makeConfig(name: string, extra: Partial<MyceliumConfigInput> = {}): Promise<MyceliumConfig> {
  const c = myceliumConfig({
    binary,
    keyFile: path.join(tmp, name, 'key.bin'),
    stateDir: path.join(tmp, name, 'state'),
    apiAddr: `127.0.0.1:${await freePort()}`,
    tcpListenPort: await freePort(),
    quicListenPort: await freePort(),
    peerDiscoveryPort: null,
    tunName: `myc-${suffix}`,
    startTimeoutMs: 20_000,
    ...extra,
  });
  configs.push(c);
  return c;
}

async function codeOf(p: Promise<unknown>): Promise<{ code: string | undefined; details: Record<string, unknown> | undefined }> {
  try {
    await p;
  } catch (e) {
    return { code: errorCodeOf(e), details: (e as { details?: Record<string, unknown> }).details };
  }
  throw new Error('expected a failure');
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const alive = async (pid: number) => {
  try {
    return !/\) Z /.test(await readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), `writ-myc-${suffix}-`));
  // The "binary" the SAL starts: a wrapper that execs the double (so the pid is the double's).
  binary = path.join(tmp, 'mycelium');
  await writeFile(
    binary,
    `#!/bin/sh\nMYCELIUM_DOUBLE_REQUEST_LOG='${requestLog()}' exec '${process.execPath}' --import '${path.join(repo, 'node_modules/tsx/dist/loader.mjs')}' '${path.join(here, 'doubles/mycelium-double.ts')}' "$@"\n`,
  );
  await chmod(binary, 0o755);
});

afterAll(async () => {
  for (const c of configs) await myceliumStop(c).catch(() => undefined);
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('mycelium config', () => {
  it('keeps the API on loopback and checks names', async () => {
    const base = { binary: '/bin/mycelium', keyFile: '/k', stateDir: '/s' };
    expect((await codeOf(Promise.resolve().then(() => myceliumConfig({ ...base, apiAddr: '0.0.0.0:8989' })))).code).toBe('CONFIG_INVALID');
    expect((await codeOf(Promise.resolve().then(() => myceliumConfig({ ...base, apiAddr: '[::]:8989' })))).code).toBe('CONFIG_INVALID');
    expect((await codeOf(Promise.resolve().then(() => myceliumConfig({ ...base, tunName: 'a-name-far-too-long' })))).code).toBe('CONFIG_INVALID');
    expect((await codeOf(Promise.resolve().then(() => myceliumConfig({ ...base, peers: ['tcp://999.1.1.1:1'] })))).code).toBe('SAL_INVALID_ARGUMENT');
    expect(myceliumConfig({ ...base, apiAddr: '[::1]:8989' }).apiAddr).toBe('[::1]:8989');
  });
});

describe('mycelium daemon identity', () => {
  const stat = (state: string, comm = 'node') => `4242 (${comm}) ${state} 1 4242 4242 0 -1 4194560 0 0 0 0`;
  const argv = (...a: string[]) => a.join('\0') + '\0';
  it('a live pid with an empty command line (caught mid-execve) is unsure, never taken for an exited daemon', () => {
    expect(judgeProcess(stat('R'), '', '/k')).toBe('unsure');
    expect(judgeProcess(stat('D'), '', '/k')).toBe('unsure');
  });
  it('our key file on the command line is ours; no process, a zombie or another program under the pid is gone', () => {
    expect(judgeProcess(stat('S'), argv('/bin/sh', '/tmp/mycelium', '--key-file', '/k', '--api-addr', '127.0.0.1:1'), '/k')).toBe('ours');
    expect(judgeProcess(stat('S', 'a) Z b'), argv('node', 'double.ts', '--key-file', '/k'), '/k')).toBe('ours');
    expect(judgeProcess(stat('Z'), argv('node', '--key-file', '/k'), '/k')).toBe('gone');
    expect(judgeProcess(stat('S'), argv('node', '--key-file', '/other'), '/k')).toBe('gone');
    expect(judgeProcess(stat('S'), argv('sleep', '10'), '/k')).toBe('gone');
    expect(judgeProcess(null, null, '/k')).toBe('gone');
    expect(judgeProcess(stat('S'), null, '/k')).toBe('gone');
  });
});

describe('mycelium key file', () => {
  it('creates a key only on first start, and says so', async () => {
    const c = await makeConfig('key-first');
    const first = await ensureMyceliumKey(c);
    expect(first.created).toBe(true);
    const st = await stat(c.keyFile);
    expect(st.size).toBe(32);
    expect(st.mode & 0o777).toBe(0o600);
    const again = await ensureMyceliumKey(c);
    expect(again).toEqual({ ...first, created: false });
  });

  it('refuses a corrupt, unreadable, swapped or lost key instead of regenerating it', async () => {
    const c = await makeConfig('key-bad');
    const { publicKey } = await ensureMyceliumKey(c);
    const original = await readFile(c.keyFile);

    await writeFile(c.keyFile, original.subarray(0, 31));
    expect((await codeOf(ensureMyceliumKey(c))).code).toBe('MYCELIUM_KEY_INVALID');
    expect((await readFile(c.keyFile)).length).toBe(31);

    await writeFile(c.keyFile, randomBytes(32));
    const swapped = await codeOf(ensureMyceliumKey(c));
    expect(swapped.code).toBe('MYCELIUM_KEY_INVALID');
    expect(swapped.details?.expected).toBe(publicKey);

    await rm(c.keyFile);
    expect((await codeOf(ensureMyceliumKey(c))).code).toBe('MYCELIUM_KEY_INVALID');
    await expect(stat(c.keyFile)).rejects.toMatchObject({ code: 'ENOENT' });

    await mkdir(c.keyFile);
    expect((await codeOf(ensureMyceliumKey(c))).code).toBe('MYCELIUM_KEY_INVALID');
    await rm(c.keyFile, { recursive: true });

    await writeFile(c.keyFile, original);
    expect(await ensureMyceliumKey(c)).toMatchObject({ created: false, publicKey });
  });

  it('does not start the daemon on a corrupt key', async () => {
    const c = await makeConfig('key-start');
    await mkdir(path.dirname(c.keyFile), { recursive: true });
    await writeFile(c.keyFile, 'not a key');
    expect((await codeOf(myceliumStart(c))).code).toBe('MYCELIUM_KEY_INVALID');
    expect((await codeOf(myceliumInfo(c))).code).toBe('MYCELIUM_UNREACHABLE');
  });
});

describe('workload addresses', () => {
  const subnet = '54f:b680:ba6e:7ced::/64';
  it('are stable, inside the /64 and distinct for distinct names', () => {
    const a = workloadAddress(subnet, 'web-1');
    expect(workloadAddress(subnet, 'web-1')).toEqual(a);
    const seen = new Set<string>();
    for (let i = 0; i < 500; i++) {
      const w = workloadAddress(subnet, `vm-${i}`);
      expect(ipv6ToBytes(w.address).subarray(0, 8).equals(ipv6ToBytes('54f:b680:ba6e:7ced::').subarray(0, 8))).toBe(true);
      expect(w.subnet).toBe(subnet);
      seen.add(w.address);
    }
    expect(seen.size).toBe(500);
    expect(workloadAddress('400:1::/64', 'web-1').address).not.toBe(a.address);
  });

  it('never hand out the node address or bad names', () => {
    const a = workloadAddress(subnet, 'web-1');
    const b = workloadAddress(subnet, 'web-1', a.address);
    expect(b.address).not.toBe(a.address);
    expect(() => workloadAddress(subnet, '../x')).toThrow(expect.objectContaining({ code: 'PATH_ESCAPE' }));
    expect(() => workloadAddress('54f:b680::/48', 'x')).toThrow(expect.objectContaining({ code: 'SAL_INVALID_ARGUMENT' }));
  });

  it('print addresses in the canonical form the WHATWG URL parser also produces', () => {
    for (let i = 0; i < 200; i++) {
      const bytes = randomBytes(16);
      if (i % 3 === 0) bytes.fill(0, 4, 10);
      const text = formatIpv6(bytes);
      expect(`[${text}]`).toBe(new URL(`http://[${text}]/`).hostname);
      expect(ipv6ToBytes(text).equals(bytes)).toBe(true);
    }
  });
});

describe('mycelium daemon (double)', () => {
  let a: MyceliumConfig;
  let b: MyceliumConfig;
  let pidA = 0;

  it('starts once, reporting the created key, and leaves a running daemon alone', async () => {
    a = await makeConfig('node-a');
    const t0 = Date.now();
    const res = await myceliumStart(a);
    console.log(`mycelium.start against the double: ${Date.now() - t0} ms`);
    expect(res).toMatchObject({ started: true, keyCreated: true, peersAdded: [] });
    pidA = res.pid;
    const identity = JSON.parse(await readFile(path.join(a.stateDir, 'identity.json'), 'utf8')) as { publicKey: string };
    expect(res.info.nodePubkey).toBe(identity.publicKey);
    expect(res.info.nodeSubnet).toMatch(/\/64$/);
    const cmdline = (await readFile(`/proc/${pidA}/cmdline`, 'utf8')).split('\0');
    for (const flag of ['--key-file', a.keyFile, '--tun-name', a.tunName, '--api-addr', a.apiAddr, '--disable-peer-discovery']) expect(cmdline).toContain(flag);

    const again = await myceliumStart(a);
    expect(again).toMatchObject({ started: false, pid: pidA, keyCreated: false });
    const other = myceliumConfig({ ...a, netns: undefined, tunName: 'other0' });
    expect((await codeOf(myceliumStart(other))).code).toBe('RESOURCE_CONFLICT');
  });

  it('adds and removes peers as ensures, and routes to a peered node (selected and fallback)', async () => {
    b = await makeConfig('node-b');
    const bInfo = (await myceliumStart(b)).info;
    const toB = `tcp://127.0.0.1:${b.tcpListenPort}`;
    const toA = `tcp://127.0.0.1:${a.tcpListenPort}`;
    expect(await myceliumAddPeer(a, { endpoint: toB })).toEqual({ endpoint: toB, added: true });
    expect(await myceliumAddPeer(a, { endpoint: toB })).toEqual({ endpoint: toB, added: false });
    const peer = await until('A to see B alive', async () =>
      (await myceliumPeers(a)).find((p) => p.endpoint.socketAddr === `127.0.0.1:${b.tcpListenPort}` && p.connectionState === 'alive'),
    );
    expect(peer).toMatchObject({ type: 'static', endpoint: { proto: 'tcp' } });
    const selected = await myceliumRoutes(a);
    expect(selected).toEqual([expect.objectContaining({ subnet: bInfo.nodeSubnet })]);
    expect(await myceliumRoutes(a, { kind: 'fallback' })).toEqual([]);

    // B dials A too: A now has a second, inbound link to B's subnet, which becomes the fallback.
    await myceliumStart(b, { peers: [toA] }).then((r) => expect(r).toMatchObject({ started: false, peersAdded: [toA] }));
    const fallback = await until('a fallback route on A', async () => {
      const r = await myceliumRoutes(a, { kind: 'fallback' });
      return r.length > 0 ? r : undefined;
    });
    expect(fallback).toEqual([expect.objectContaining({ subnet: bInfo.nodeSubnet })]);
    expect(fallback[0]?.nextHop).not.toBe((await myceliumRoutes(a))[0]?.nextHop);

    expect(await myceliumRemovePeer(a, { endpoint: toB })).toEqual({ endpoint: toB, removed: true });
    expect(await myceliumRemovePeer(a, { endpoint: toB })).toEqual({ endpoint: toB, removed: false });
    expect((await myceliumPeers(a)).map((p) => `${p.type} ${p.endpoint.socketAddr}`)).not.toContain(`static 127.0.0.1:${b.tcpListenPort}`);
  });

  it('runs the script-facing operations through their schemas', async () => {
    const op = (name: string) => MYCELIUM_OPERATIONS.find((o) => o.capability === name);
    const info = (await op('mycelium.info')?.run({}, { config: a })) as { nodeSubnet: string; nodeIp: string };
    const w = (await op('mycelium.workload-address')?.run({ name: 'vm-7' }, { config: a })) as { address: string };
    expect(w).toEqual(workloadAddress(info.nodeSubnet, 'vm-7', info.nodeIp));
    await expect(op('mycelium.peer-add')?.run({ endpoint: 'tcp://127.0.0.1:1; rm -rf /' }, { config: a })).rejects.toMatchObject({
      code: 'SAL_INVALID_ARGUMENT',
    });
    await expect(op('mycelium.routes')?.run({ kind: 'queried' }, { config: a })).rejects.toMatchObject({ code: 'SAL_INVALID_ARGUMENT' });
    expect(MYCELIUM_OPERATIONS.map((o) => o.capability).sort()).toEqual([
      'mycelium.info',
      'mycelium.peer-add',
      'mycelium.peer-remove',
      'mycelium.peers',
      'mycelium.routes',
      'mycelium.start',
      'mycelium.stop',
      'mycelium.workload-address',
    ]);
  });

  it('reports API refusals with their body, and a silent API as unreachable', async () => {
    const bad = await codeOf(myceliumRequest(a, 'POST', MYCELIUM_API.addPeer.path, { peer: 'x' }));
    expect(bad.code).toBe('MYCELIUM_API_ERROR');
    expect(bad.details).toMatchObject({ status: 422 });
    expect(String(bad.details?.body)).toContain('endpoint');
    const nobody = myceliumConfig({ ...a, netns: undefined, apiAddr: `127.0.0.1:${await freePort()}`, requestTimeoutMs: 1000 });
    expect((await codeOf(myceliumInfo(nobody))).code).toBe('MYCELIUM_UNREACHABLE');
  });

  it('gives up on a daemon whose API never answers, and leaves no process behind', async () => {
    // The API port is taken: like myceliumd, the double keeps running with its API disabled.
    const blocker = net.createServer();
    const port = await freePort();
    await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', r));
    blocker.on('connection', (s) => s.destroy());
    try {
      const c = await makeConfig('no-api', { apiAddr: `127.0.0.1:${port}`, startTimeoutMs: 2000, requestTimeoutMs: 500 });
      const { code } = await codeOf(myceliumStart(c));
      expect(code).toMatch(/^MYCELIUM_(UNREACHABLE|API_ERROR)$/);
      await expect(stat(path.join(c.stateDir, 'daemon.json'))).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      blocker.close();
    }
  });

  it('a daemon that exits during start-up is COMMAND_FAILED with its log (not a start timeout)', async () => {
    // Execs once through a wrapper, like the real binary's packaging may, then dies after a moment.
    const dying = path.join(tmp, 'mycelium-dying');
    await writeFile(dying, `#!/bin/sh\nexec /bin/sh -c 'sleep 0.3; echo "error: boom" >&2; exit 3' mycelium "$@"\n`);
    await chmod(dying, 0o755);
    const c = await makeConfig('dying', { binary: dying, startTimeoutMs: 20_000 });
    const { code, details } = await codeOf(myceliumStart(c));
    expect(code).toBe('COMMAND_FAILED');
    expect(String(details?.log)).toContain('error: boom');
  });

  it('stops the daemon once', async () => {
    expect(await myceliumStop(a)).toEqual({ stopped: true });
    expect(await alive(pidA)).toBe(false);
    expect(await myceliumStop(a)).toEqual({ stopped: false });
    expect((await codeOf(myceliumInfo(a))).code).toBe('MYCELIUM_UNREACHABLE');
    expect(await myceliumStop(b)).toEqual({ stopped: true });
  });

  it('sent only requests the published API defines, with bodies of the expected shape, and got answers that match its schemas', async () => {
    const spec = parseYaml(await readFile(SPEC_FILE, 'utf8')) as { paths: Record<string, Record<string, unknown>>; components: unknown };
    for (const { method, path: p } of Object.values(MYCELIUM_API)) expect(spec.paths[p]?.[method.toLowerCase()], `${method} ${p}`).toBeDefined();

    const log = (await readFile(requestLog(), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { method: string; path: string; contentType: string | null; body: string });
    expect(log.length).toBeGreaterThan(10);
    const templates = Object.keys(spec.paths).map((t) => ({ t, re: new RegExp(`^${t.replace(/\{[^}]+\}/g, '[^/]+')}$`) }));
    for (const req of log) {
      const match = templates.find(({ t, re }) => re.test(req.path) && spec.paths[t]?.[req.method.toLowerCase()] !== undefined);
      expect(match, `${req.method} ${req.path}`).toBeDefined();
      if (req.method === 'POST' && req.path === MYCELIUM_API.addPeer.path && !req.body.includes('"peer"')) {
        // Not in the yaml: myceliumd's AddPeer is `{ endpoint: String }` sent as JSON.
        expect(req.contentType).toBe('application/json');
        expect(Object.keys(JSON.parse(req.body) as object)).toEqual(['endpoint']);
      }
      if (req.method === 'DELETE') expect(decodeURIComponent(req.path.split('/').pop() ?? '')).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
    }

    // Whichever Ajv major the workspace root resolves (6 or 8): OpenAPI keywords and formats are ignored,
    // the structure (types, enums, required fields, bounds) is checked.
    const Ajv = (AjvModule as unknown as { default?: typeof AjvModule }).default ?? AjvModule;
    const major = Number(createRequire(import.meta.url)('ajv/package.json').version.split('.')[0]);
    const ajv = new Ajv(
      (major >= 8 ? { strict: false, validateFormats: false, logger: false } : { format: false, unknownFormats: 'ignore', logger: false }) as never,
    );
    ajv.addSchema({ $id: 'mycelium', components: spec.components }, 'mycelium');
    const check = (schema: object, value: unknown) => {
      const v = ajv.compile(schema);
      expect(v(value), JSON.stringify(v.errors)).toBe(true);
    };
    const c = await makeConfig('schema');
    const peerC = await makeConfig('schema-peer');
    await myceliumStart(c);
    await myceliumStart(peerC, { peers: [`tcp://127.0.0.1:${c.tcpListenPort}`] });
    await myceliumAddPeer(c, { endpoint: `tcp://127.0.0.1:${peerC.tcpListenPort}` });
    await until('routes on c', async () => ((await myceliumRoutes(c, { kind: 'fallback' })).length > 0 ? true : undefined));
    const info = await myceliumInfo(c);
    check({ allOf: [{ $ref: 'mycelium#/components/schemas/Info' }, { required: ['nodeSubnet', 'nodeIp', 'nodePubkey', 'nodeStartTime'] }] }, info);
    const peers = await myceliumPeers(c);
    expect(peers.length).toBe(2);
    check(
      {
        type: 'array',
        items: { allOf: [{ $ref: 'mycelium#/components/schemas/PeerStats' }, { required: ['endpoint', 'type', 'connectionState', 'txBytes', 'rxBytes'] }] },
      },
      peers,
    );
    for (const kind of ['selected', 'fallback'] as const) {
      const routes = await myceliumRoutes(c, { kind });
      expect(routes.length).toBe(1);
      check(
        { type: 'array', items: { allOf: [{ $ref: 'mycelium#/components/schemas/Route' }, { required: ['subnet', 'nextHop', 'metric', 'seqno'] }] } },
        routes,
      );
    }
    await myceliumStop(c);
    await myceliumStop(peerC);
  });
});
