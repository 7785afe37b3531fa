// The net SAL against real iproute2 inside network namespaces this test creates (prefix unique per run):
// two namespaces ping each other across a bridge, idempotent ensures, taps, routes, and name confinement.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodeOf } from '@writ/protocol';
import {
  addAddress,
  addRoute,
  deleteAddress,
  deleteNetns,
  deleteRoute,
  ensureBridge,
  ensureNetns,
  ensureTap,
  ensureVeth,
  execInNetns,
  listLinks,
  listRoutes,
  NET_OPERATIONS,
  netConfig,
  setLink,
  type NetConfig,
} from '../src/index.ts';
import { ensurePackages, isRoot, sh } from './helpers/system.ts';

const P = `wr${randomBytes(2).toString('hex')}`;
const [o1, o2] = [...randomBytes(2)];
const net = `10.${o1}.${o2}`;
const A = `${P}a`;
const B = `${P}b`;
const C = `${P}c`;
// A host link name outside the prefix; the escape test must never create it (afterAll removes it if it did).
const OUTSIDER = `x${P}`;
let config: NetConfig;
let skipReason: string | null = null;
const hasTun = existsSync('/dev/net/tun');

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (e) {
    return errorCodeOf(e) ?? `not a WritError: ${String(e)}`;
  }
  throw new Error('expected a failure');
}

const op = (name: string) => {
  const found = NET_OPERATIONS.find((o) => o.capability === name);
  if (!found) throw new Error(`no operation ${name}`);
  return (args: unknown) => found.run(args, { config });
};

// A reachable peer gets three tries (a first packet can be lost to ARP on a loaded machine); an unreachable one gets one.
const ping = (from: string, to: string, waitS = 2, count = 1) => execInNetns(config, { name: from, argv: ['ping', `-c${count}`, `-W${waitS}`, to] });

function hostLinks(): string[] {
  return (JSON.parse(sh('ip', ['-j', 'link', 'show']) || '[]') as { ifname: string }[]).map((l) => l.ifname);
}

beforeAll(() => {
  if (!isRoot) skipReason = 'not root: namespaces and links need CAP_NET_ADMIN';
  skipReason ??= ensurePackages(['iproute2', 'iputils-ping']);
  if (skipReason) {
    console.warn(`skipping net root tests: ${skipReason}`);
    return;
  }
  config = netConfig({ prefix: P });
});

afterAll(() => {
  if (skipReason || !isRoot) return;
  for (const name of (JSON.parse(sh('ip', ['-j', 'netns', 'list']) || '[]') as { name: string }[]).map((n) => n.name)) {
    if (name.startsWith(P)) sh('ip', ['netns', 'del', name]);
  }
  for (const name of hostLinks()) if (name.startsWith(P) || name === OUTSIDER) sh('ip', ['link', 'del', 'dev', name]);
});

describe.skipIf(!isRoot)('net: two namespaces over a bridge', () => {
  it('namespaces ping each other only while both veth ends are bridge ports', async (ctx) => {
    if (skipReason) ctx.skip();
    for (const ns of [A, B, C]) expect(await ensureNetns(config, { name: ns })).toEqual({ name: ns, created: true });
    expect(await ensureBridge(config, { name: `${P}br`, netns: C })).toMatchObject({ created: true });
    for (const [ns, end] of [
      [A, 'va'],
      [B, 'vb'],
    ] as const) {
      const made = await ensureVeth(config, { name: `${P}${end}`, netns: ns, peer: `${P}${end}p`, peerNetns: C });
      expect(made).toMatchObject({ created: true, netns: ns, peerNetns: C });
    }
    await addAddress(config, { dev: `${P}va`, netns: A, address: `${net}.1/24` });
    await addAddress(config, { dev: `${P}vb`, netns: B, address: `${net}.2/24` });

    // Not yet bridged: the peers sit unconnected in C.
    expect((await ping(A, `${net}.2`, 1)).ok).toBe(false);

    for (const end of ['vap', 'vbp']) {
      expect(await setLink(config, { name: `${P}${end}`, netns: C, master: `${P}br` })).toMatchObject({ changed: true, link: { master: `${P}br` } });
    }
    const across = await op('net.netns.exec')({ name: A, argv: ['ping', '-c3', '-W2', `${net}.2`] });
    expect(across).toMatchObject({ exitCode: 0, ok: true });
    expect((across as { stdout: string }).stdout).toMatch(/ [123] received/);
    expect((await ping(B, `${net}.1`, 2, 3)).ok).toBe(true);

    // Take one port off the bridge and the path is gone again.
    await setLink(config, { name: `${P}vbp`, netns: C, master: null });
    expect((await ping(A, `${net}.2`, 1)).ok).toBe(false);
    await setLink(config, { name: `${P}vbp`, netns: C, master: `${P}br` });
    expect((await ping(A, `${net}.2`, 2, 3)).ok).toBe(true);
  });
});

describe.skipIf(!isRoot)('net: ensure twice leaves one thing', () => {
  it('bridge, namespace, veth and address ensures say created/added:false the second time', async (ctx) => {
    if (skipReason) ctx.skip();
    expect(await ensureNetns(config, { name: C })).toEqual({ name: C, created: false });
    expect(await op('net.bridge.ensure')({ name: `${P}br`, netns: C })).toMatchObject({ created: false, changed: false });
    expect(await ensureVeth(config, { name: `${P}va`, netns: A, peer: `${P}vap`, peerNetns: C })).toMatchObject({ created: false, changed: false });
    expect(await addAddress(config, { dev: `${P}va`, netns: A, address: `${net}.1/24` })).toMatchObject({ added: false });
    const links = (await listLinks(config, { netns: C })).links;
    expect(links.filter((l) => l.name === `${P}br`)).toHaveLength(1);
    expect(links.find((l) => l.name === `${P}br`)).toMatchObject({ kind: 'bridge', up: true });
    expect(
      links
        .filter((l) => l.master === `${P}br`)
        .map((l) => l.name)
        .sort(),
    ).toEqual([`${P}vap`, `${P}vbp`]);
    const va = (await listLinks(config, { netns: A })).links.find((l) => l.name === `${P}va`);
    expect(va?.addresses.filter((a) => a.family === 'inet')).toEqual([{ family: 'inet', address: `${net}.1/24`, scope: 'global' }]);
  });

  it('an ensure that finds a different thing is a conflict, and a bridge that was brought down is brought up', async (ctx) => {
    if (skipReason) ctx.skip();
    expect(await codeOf(ensureBridge(config, { name: `${P}vap`, netns: C }))).toBe('RESOURCE_CONFLICT');
    expect(await codeOf(op('net.tap.delete')({ name: `${P}br`, netns: C }))).toBe('RESOURCE_CONFLICT');
    expect(await codeOf(ensureVeth(config, { name: `${P}va`, netns: A, peer: `${P}zz`, peerNetns: C }))).toBe('RESOURCE_CONFLICT');
    expect(await codeOf(addAddress(config, { dev: `${P}va`, netns: A, address: `${net}.1/16` }))).toBe('RESOURCE_CONFLICT');
    await setLink(config, { name: `${P}br`, netns: C, up: false });
    expect(await ensureBridge(config, { name: `${P}br`, netns: C })).toMatchObject({ created: false, changed: true });
    expect((await listLinks(config, { netns: C })).links.find((l) => l.name === `${P}br`)?.up).toBe(true);
  });

  it('routes: add twice leaves one route, a different next hop conflicts, delete twice says deleted:false', async (ctx) => {
    if (skipReason) ctx.skip();
    const route = { destination: '10.254.0.0/16', via: `${net}.2`, dev: `${P}va`, netns: A };
    expect(await addRoute(config, route)).toMatchObject({ added: true });
    expect(await op('net.route.add')(route)).toMatchObject({ added: false, route: { destination: '10.254.0.0/16', via: `${net}.2`, dev: `${P}va` } });
    expect((await listRoutes(config, { netns: A, family: 'inet' })).routes.filter((r) => r.destination === '10.254.0.0/16')).toHaveLength(1);
    expect(await codeOf(addRoute(config, { ...route, via: `${net}.3` }))).toBe('RESOURCE_CONFLICT');
    expect(await addRoute(config, { destination: 'default', via: `${net}.2`, dev: `${P}va`, netns: A })).toMatchObject({ added: true });
    expect(await addRoute(config, { destination: `${net}.77/32`, dev: `${P}va`, netns: A })).toMatchObject({ added: true });
    expect(await addRoute(config, { destination: `${net}.77/32`, dev: `${P}va`, netns: A })).toMatchObject({ added: false });
    const routes = (await listRoutes(config, { netns: A })).routes;
    expect(routes.map((r) => r.destination)).toEqual(expect.arrayContaining(['default', '10.254.0.0/16', `${net}.77/32`, `${net}.0/24`]));
    expect(await deleteRoute(config, route)).toMatchObject({ deleted: true });
    expect(await deleteRoute(config, route)).toMatchObject({ deleted: false });
    expect(await deleteRoute(config, { destination: 'default', dev: `${P}va`, netns: A })).toMatchObject({ deleted: true });
    expect((await listRoutes(config, { netns: A })).routes.map((r) => r.destination)).not.toContain('default');
  });

  it('addresses: delete twice says deleted:false, and malformed addresses are refused', async (ctx) => {
    if (skipReason) ctx.skip();
    expect(await addAddress(config, { dev: `${P}va`, netns: A, address: `${net}.9/24` })).toMatchObject({ added: true });
    expect(await deleteAddress(config, { dev: `${P}va`, netns: A, address: `${net}.9/24` })).toMatchObject({ deleted: true });
    expect(await deleteAddress(config, { dev: `${P}va`, netns: A, address: `${net}.9/24` })).toMatchObject({ deleted: false });
    for (const bad of [`${net}.1`, '10.0.0.300/24', '10.0.0.1/33', 'fe80::1/129', 'a.b.c.d/8']) {
      expect(await codeOf(op('net.addr.add')({ dev: `${P}va`, netns: A, address: bad })), bad).toBe('SAL_INVALID_ARGUMENT');
    }
    expect(await codeOf(addAddress(config, { dev: `${P}nothere`, netns: A, address: `${net}.9/24` }))).toBe('RESOURCE_NOT_FOUND');
  });
});

describe.skipIf(!isRoot || !hasTun)('net: taps', () => {
  it('creates a tap owned by a uid on a bridge, once; another owner is a conflict', async (ctx) => {
    if (skipReason) ctx.skip();
    const tap = `${P}t0`;
    const made = await ensureTap(config, { name: tap, netns: C, owner: 4242, bridge: `${P}br` });
    expect(made).toMatchObject({ created: true, owner: 4242, bridge: `${P}br` });
    const link = (await listLinks(config, { netns: C })).links.find((l) => l.name === tap);
    expect(link).toMatchObject({ kind: 'tap', up: true, master: `${P}br`, owner: '4242' });
    expect(await op('net.tap.ensure')({ name: tap, netns: C, owner: 4242, bridge: `${P}br` })).toMatchObject({ created: false, changed: false });
    expect(await codeOf(ensureTap(config, { name: tap, netns: C, owner: 4343 }))).toBe('RESOURCE_CONFLICT');
    expect(await codeOf(ensureTap(config, { name: `${P}t1`, netns: C, bridge: `${P}vap` }))).toBe('RESOURCE_CONFLICT');
    expect(await op('net.tap.delete')({ name: tap, netns: C })).toMatchObject({ deleted: true });
    expect(await op('net.tap.delete')({ name: tap, netns: C })).toMatchObject({ deleted: false });
  });

  it('creates a prefixed bridge and tap in the host namespace and removes them', async (ctx) => {
    if (skipReason) ctx.skip();
    expect(await ensureBridge(config, { name: `${P}hb` })).toMatchObject({ created: true, netns: null });
    expect(await ensureTap(config, { name: `${P}ht`, bridge: `${P}hb`, multiQueue: true, vnetHdr: true })).toMatchObject({ created: true, bridge: `${P}hb` });
    expect(hostLinks()).toEqual(expect.arrayContaining([`${P}hb`, `${P}ht`]));
    expect(await op('net.tap.delete')({ name: `${P}ht` })).toMatchObject({ deleted: true });
    expect(await op('net.bridge.delete')({ name: `${P}hb` })).toMatchObject({ deleted: true });
    expect(await op('net.bridge.delete')({ name: `${P}hb` })).toMatchObject({ deleted: false });
    expect(hostLinks().filter((n) => n.startsWith(`${P}h`))).toEqual([]);
  });
});

describe.skipIf(!isRoot)('net: names are confined (X6 and the prefix)', () => {
  it('refuses traversal, NUL bytes, foreign host links and foreign namespaces before touching anything', async (ctx) => {
    if (skipReason) ctx.skip();
    const before = hostLinks();
    const escapes: [string, unknown][] = [
      ['net.bridge.ensure', { name: '../x' }],
      ['net.bridge.ensure', { name: `${P}/x` }],
      ['net.bridge.ensure', { name: `${P}\0x` }],
      ['net.bridge.ensure', { name: '..' }],
      ['net.bridge.ensure', { name: OUTSIDER }],
      ['net.bridge.delete', { name: 'lo' }],
      ['net.link.set', { name: 'lo', up: true }],
      ['net.link.set', { name: `${P}hl`, master: 'docker0' }],
      ['net.addr.add', { dev: OUTSIDER, address: '10.1.2.3/32' }],
      ['net.route.add', { destination: 'default', via: '10.1.2.3', dev: OUTSIDER }],
      ['net.bridge.ensure', { name: `${P}x`, netns: 'default' }],
      ['net.bridge.ensure', { name: `${P}x`, netns: '../../proc/1/ns/net' }],
      ['net.netns.ensure', { name: 'outsider' }],
      ['net.netns.delete', { name: `../${P}a` }],
      ['net.netns.exec', { name: 'outsider', argv: ['ping', '-c1', '127.0.0.1'] }],
      ['net.veth.ensure', { name: `${P}v1`, peer: OUTSIDER }],
    ];
    for (const [name, args] of escapes) expect(await codeOf(op(name)(args)), `${name} ${JSON.stringify(args)}`).toBe('PATH_ESCAPE');
    expect(await codeOf(op('net.bridge.ensure')({ name: `${P}0123456789ab` }))).toBe('SAL_INVALID_ARGUMENT');
    expect(await codeOf(op('net.bridge.ensure')({ name: `${P}x`, colour: 'red' }))).toBe('UNKNOWN_FIELD');
    expect(await codeOf(op('net.bridge.ensure')({ name: 5 }))).toBe('SAL_INVALID_ARGUMENT');
    expect(hostLinks()).toEqual(before);
    // Inside the script's own namespace every link is its own, loopback included.
    expect(await op('net.link.set')({ name: 'lo', netns: A, up: true })).toMatchObject({ changed: false });
  });

  it('netns exec runs only allowlisted bare program names, in namespaces that exist', async (ctx) => {
    if (skipReason) ctx.skip();
    expect(await codeOf(op('net.netns.exec')({ name: A, argv: ['sh', '-c', 'id'] }))).toBe('SAL_INVALID_ARGUMENT');
    expect(await codeOf(op('net.netns.exec')({ name: A, argv: ['/usr/bin/ping', '-c1', '127.0.0.1'] }))).toBe('SAL_INVALID_ARGUMENT');
    expect(await codeOf(op('net.netns.exec')({ name: `${P}gone`, argv: ['ping', '-c1', '127.0.0.1'] }))).toBe('RESOURCE_NOT_FOUND');
    expect(await op('net.netns.exec')({ name: A, argv: ['ping', '-c1', '-W1', '127.0.0.1'] })).toMatchObject({ ok: true, exitCode: 0 });
  });
});

describe.skipIf(!isRoot)('net: teardown', () => {
  it('deleting the namespaces removes their links; deleting again says deleted:false', async (ctx) => {
    if (skipReason) ctx.skip();
    expect(((await op('net.netns.list')({})) as { namespaces: string[] }).namespaces).toEqual(expect.arrayContaining([A, B, C]));
    for (const ns of [A, B, C]) expect(await deleteNetns(config, { name: ns })).toEqual({ name: ns, deleted: true });
    for (const ns of [A, B, C]) expect(await op('net.netns.delete')({ name: ns })).toEqual({ name: ns, deleted: false });
    expect(((await op('net.netns.list')({})) as { namespaces: string[] }).namespaces.filter((n) => n.startsWith(P))).toEqual([]);
    expect(hostLinks().filter((n) => n.startsWith(P))).toEqual([]);
  });
});
