// Bridges, taps, veth pairs and link state. Each "ensure" looks first and only creates what is missing,
// so a replayed job leaves one link and says `created: false`.
import { readFile } from 'node:fs/promises';
import { WritError } from '@writ/protocol';
import type { NetConfig } from './config.ts';
import { checkLinkName, findLink, ip, listLinksIn, optionalNetns, requireNamespace, type Link } from './ip.ts';

function conflict(link: Link, want: string, netns: string | undefined): WritError {
  return new WritError('RESOURCE_CONFLICT', `${link.name}${netns ? ` in ${netns}` : ''} exists as ${link.kind ?? 'a plain link'}, not ${want}`, {
    kind: link.kind,
  });
}

async function ensureUp(netns: string | undefined, link: Link, up: boolean): Promise<boolean> {
  if (link.up === up) return false;
  await ip(netns, ['link', 'set', 'dev', link.name, up ? 'up' : 'down']);
  return true;
}

export interface BridgeArgs {
  name: string;
  netns?: string;
  /** Default true. */
  up?: boolean;
}

export interface EnsureLinkResult {
  name: string;
  netns: string | null;
  created: boolean;
  /** Something about an existing link was brought in line (state, master). */
  changed: boolean;
}

export async function ensureBridge(config: NetConfig, args: BridgeArgs): Promise<EnsureLinkResult> {
  const netns = optionalNetns(config, args.netns);
  const name = checkLinkName(config, args.name, netns);
  const up = args.up ?? true;
  await requireNamespace(netns);
  const have = await findLink(netns, name);
  if (have) {
    if (have.kind !== 'bridge') throw conflict(have, 'a bridge', netns);
    return { name, netns: netns ?? null, created: false, changed: await ensureUp(netns, have, up) };
  }
  await ip(netns, ['link', 'add', 'name', name, ...(up ? ['up'] : []), 'type', 'bridge']);
  return { name, netns: netns ?? null, created: true, changed: false };
}

export interface DeleteLinkResult {
  name: string;
  netns: string | null;
  deleted: boolean;
}

async function deleteKind(config: NetConfig, args: { name: string; netns?: string }, kinds: string[], what: string): Promise<DeleteLinkResult> {
  const netns = optionalNetns(config, args.netns);
  const name = checkLinkName(config, args.name, netns);
  await requireNamespace(netns);
  const have = await findLink(netns, name);
  if (!have) return { name, netns: netns ?? null, deleted: false };
  if (!kinds.includes(have.kind ?? '')) throw conflict(have, what, netns);
  await ip(netns, ['link', 'del', 'dev', name]);
  return { name, netns: netns ?? null, deleted: true };
}

export const deleteBridge = (config: NetConfig, args: { name: string; netns?: string }) => deleteKind(config, args, ['bridge'], 'a bridge');
export const deleteTap = (config: NetConfig, args: { name: string; netns?: string }) => deleteKind(config, args, ['tap'], 'a tap');
export const deleteVeth = (config: NetConfig, args: { name: string; netns?: string }) => deleteKind(config, args, ['veth'], 'a veth');

async function requireBridge(netns: string | undefined, name: string): Promise<void> {
  const br = await findLink(netns, name);
  if (!br) throw new WritError('RESOURCE_NOT_FOUND', `bridge ${name}${netns ? ` in ${netns}` : ''} does not exist`);
  if (br.kind !== 'bridge') throw conflict(br, 'a bridge', netns);
}

/** ip prints a tap's owner as a user name when /etc/passwd has one; compare as uids. */
async function ownerUid(owner: string | null): Promise<number | null> {
  if (owner === null) return null;
  if (/^\d+$/.test(owner)) return Number(owner);
  const passwd = await readFile('/etc/passwd', 'utf8').catch(() => '');
  const line = passwd.split('\n').find((l) => l.split(':')[0] === owner);
  const uid = line?.split(':')[2];
  return uid !== undefined && /^\d+$/.test(uid) ? Number(uid) : null;
}

export interface TapArgs {
  name: string;
  netns?: string;
  /** uid allowed to open the tap (a hypervisor running unprivileged). */
  owner?: number;
  /** Bridge (same namespace) to attach the tap to. */
  bridge?: string;
  multiQueue?: boolean;
  vnetHdr?: boolean;
  /** Default true. */
  up?: boolean;
}

export interface EnsureTapResult extends EnsureLinkResult {
  owner: number | null;
  bridge: string | null;
}

export async function ensureTap(config: NetConfig, args: TapArgs): Promise<EnsureTapResult> {
  const netns = optionalNetns(config, args.netns);
  const name = checkLinkName(config, args.name, netns);
  const bridge = args.bridge === undefined ? undefined : checkLinkName(config, args.bridge, netns, 'bridge');
  const up = args.up ?? true;
  await requireNamespace(netns);
  if (bridge) await requireBridge(netns, bridge);
  let link = await findLink(netns, name);
  let created = false;
  if (link) {
    if (link.kind !== 'tap') throw conflict(link, 'a tap', netns);
    const uid = await ownerUid(link.owner);
    if (args.owner !== undefined && uid !== args.owner) {
      throw new WritError('RESOURCE_CONFLICT', `tap ${name} is owned by ${link.owner ?? 'nobody'}, not uid ${args.owner}`, { owner: link.owner });
    }
  } else {
    const flags = [...(args.multiQueue ? ['multi_queue'] : []), ...(args.vnetHdr ? ['vnet_hdr'] : [])];
    await ip(netns, ['tuntap', 'add', 'dev', name, 'mode', 'tap', ...(args.owner !== undefined ? ['user', String(args.owner)] : []), ...flags]);
    created = true;
    link = await findLink(netns, name);
    if (!link) throw new WritError('COMMAND_FAILED', `tap ${name} was not created`);
  }
  const change: string[] = [];
  if (bridge && link.master !== bridge) change.push('master', bridge);
  if (link.up !== up) change.push(up ? 'up' : 'down');
  if (change.length > 0) await ip(netns, ['link', 'set', 'dev', name, ...change]);
  return {
    name,
    netns: netns ?? null,
    created,
    changed: !created && change.length > 0,
    owner: args.owner ?? (await ownerUid(link.owner)),
    bridge: bridge ?? link.master,
  };
}

export interface VethArgs {
  name: string;
  peer: string;
  /** Namespace of `name` (host when absent). */
  netns?: string;
  /** Namespace of `peer` (default: the same as `name`). */
  peerNetns?: string;
  /** Default true, for both ends. */
  up?: boolean;
}

export interface EnsureVethResult {
  name: string;
  peer: string;
  netns: string | null;
  peerNetns: string | null;
  created: boolean;
  changed: boolean;
}

export async function ensureVeth(config: NetConfig, args: VethArgs): Promise<EnsureVethResult> {
  const netns = optionalNetns(config, args.netns);
  const peerNetns = args.peerNetns === undefined ? netns : optionalNetns(config, args.peerNetns);
  const name = checkLinkName(config, args.name, netns);
  const peer = checkLinkName(config, args.peer, peerNetns, 'peer');
  if (name === peer && netns === peerNetns) throw new WritError('SAL_INVALID_ARGUMENT', 'the two ends of a veth pair need different names');
  const up = args.up ?? true;
  await requireNamespace(netns);
  await requireNamespace(peerNetns);
  const [a, b] = await Promise.all([findLink(netns, name), findLink(peerNetns, peer)]);
  const result = { name, peer, netns: netns ?? null, peerNetns: peerNetns ?? null };
  if (a || b) {
    if (a && a.kind !== 'veth') throw conflict(a, 'a veth', netns);
    if (b && b.kind !== 'veth') throw conflict(b, 'a veth', peerNetns);
    // Pairs are created atomically, so one end alone belongs to some other pair.
    if (!a || !b) throw new WritError('RESOURCE_CONFLICT', `only one end of veth ${name}/${peer} exists`, { name: !!a, peer: !!b });
    const changedA = await ensureUp(netns, a, up);
    const changedB = await ensureUp(peerNetns, b, up);
    return { ...result, created: false, changed: changedA || changedB };
  }
  // `netns` after the peer is resolved relative to the namespace the command runs in.
  await ip(netns, ['link', 'add', 'name', name, 'type', 'veth', 'peer', 'name', peer, ...(peerNetns !== netns && peerNetns ? ['netns', peerNetns] : [])]);
  if (up) {
    await ip(netns, ['link', 'set', 'dev', name, 'up']);
    await ip(peerNetns, ['link', 'set', 'dev', peer, 'up']);
  }
  return { ...result, created: true, changed: false };
}

export interface LinkSetArgs {
  name: string;
  netns?: string;
  up?: boolean;
  /** A bridge to attach to, or null to detach. */
  master?: string | null;
  mtu?: number;
}

export async function setLink(config: NetConfig, args: LinkSetArgs): Promise<{ name: string; netns: string | null; changed: boolean; link: Link }> {
  const netns = optionalNetns(config, args.netns);
  const name = checkLinkName(config, args.name, netns);
  const master = args.master === undefined || args.master === null ? args.master : checkLinkName(config, args.master, netns, 'master');
  await requireNamespace(netns);
  const link = await findLink(netns, name);
  if (!link) throw new WritError('RESOURCE_NOT_FOUND', `link ${name}${netns ? ` in ${netns}` : ''} does not exist`);
  const change: string[] = [];
  if (master === null && link.master !== null) change.push('nomaster');
  if (typeof master === 'string' && link.master !== master) {
    await requireBridge(netns, master);
    change.push('master', master);
  }
  if (args.mtu !== undefined && link.mtu !== args.mtu) change.push('mtu', String(args.mtu));
  if (args.up !== undefined && link.up !== args.up) change.push(args.up ? 'up' : 'down');
  if (change.length > 0) await ip(netns, ['link', 'set', 'dev', name, ...change]);
  const now = change.length > 0 ? await findLink(netns, name) : link;
  return { name, netns: netns ?? null, changed: change.length > 0, link: now ?? link };
}

export async function listLinks(config: NetConfig, args: { netns?: string } = {}): Promise<{ netns: string | null; links: Link[] }> {
  const netns = optionalNetns(config, args.netns);
  await requireNamespace(netns);
  return { netns: netns ?? null, links: await listLinksIn(netns) };
}
