// iproute2 as argv: one runner that scopes a command to a namespace, name checks for links and
// namespaces (X6 plus the configured prefix), and the parsed view of `ip -j -d addr show`.
import { WritError } from '@writ/protocol';
import { checkName } from '../confine.ts';
import { run, type RunResult } from '../exec.ts';
import type { NetConfig } from './config.ts';

/** IFNAMSIZ is 16 bytes including the terminating NUL. */
const IFNAME_MAX = 15;

/** A namespace name: a plain file name under /run/netns that starts with the prefix. */
export function checkNetnsName(config: NetConfig, name: unknown, what = 'netns'): string {
  const n = checkName(name, what);
  if (!n.startsWith(config.prefix))
    throw new WritError('PATH_ESCAPE', `${what} ${JSON.stringify(n)} must start with the configured prefix ${JSON.stringify(config.prefix)}`);
  return n;
}

/** A link name; in the host namespace (netns undefined) it must start with the prefix. */
export function checkLinkName(config: NetConfig, name: unknown, netns: string | undefined, what = 'name'): string {
  const n = checkName(name, what);
  if (Buffer.byteLength(n) > IFNAME_MAX) throw new WritError('SAL_INVALID_ARGUMENT', `${what} ${JSON.stringify(n)} is longer than ${IFNAME_MAX} bytes`);
  if (netns === undefined && !n.startsWith(config.prefix)) {
    throw new WritError('PATH_ESCAPE', `${what} ${JSON.stringify(n)} is a host link outside the configured prefix ${JSON.stringify(config.prefix)}`);
  }
  return n;
}

/** Checks an optional netns argument and returns it. */
export function optionalNetns(config: NetConfig, netns: unknown): string | undefined {
  return netns === undefined ? undefined : checkNetnsName(config, netns);
}

export async function ip(netns: string | undefined, args: string[], opts: { reject?: boolean } = {}): Promise<RunResult> {
  return run(['ip', ...(netns ? ['-n', netns] : []), ...args], { timeoutMs: 30_000, ...(opts.reject === false ? { reject: false } : {}) });
}

export async function ipJson<T>(netns: string | undefined, args: string[]): Promise<T[]> {
  const r = await ip(netns, ['-j', ...args]);
  const text = r.stdout.trim();
  return text === '' ? [] : (JSON.parse(text) as T[]);
}

export interface LinkAddress {
  family: 'inet' | 'inet6';
  /** address/prefix length */
  address: string;
  scope: string | null;
}

export interface Link {
  name: string;
  index: number;
  /** `bridge`, `veth`, `tap`, `tun`, `loopback`, ... or null for a plain device. */
  kind: string | null;
  up: boolean;
  operState: string;
  mtu: number;
  mac: string | null;
  master: string | null;
  /** tap/tun owner as the kernel reports it (user name or uid), when set. */
  owner: string | null;
  addresses: LinkAddress[];
}

interface IpLinkJson {
  ifindex: number;
  ifname: string;
  flags?: string[];
  mtu?: number;
  operstate?: string;
  address?: string;
  master?: string;
  link_type?: string;
  linkinfo?: { info_kind?: string; info_data?: { type?: string; user?: string | number } };
  addr_info?: { family?: string; local?: string; prefixlen?: number; scope?: string }[];
}

export function toLink(j: IpLinkJson): Link {
  const info = j.linkinfo;
  const kind = info?.info_kind === 'tun' ? (info.info_data?.type ?? 'tun') : (info?.info_kind ?? (j.link_type === 'loopback' ? 'loopback' : null));
  const user = info?.info_data?.user;
  return {
    name: j.ifname,
    index: j.ifindex,
    kind,
    up: (j.flags ?? []).includes('UP'),
    operState: j.operstate ?? 'UNKNOWN',
    mtu: j.mtu ?? 0,
    mac: j.address ?? null,
    master: j.master ?? null,
    owner: user === undefined ? null : String(user),
    addresses: (j.addr_info ?? [])
      .filter((a) => (a.family === 'inet' || a.family === 'inet6') && a.local !== undefined)
      .map((a) => ({ family: a.family as 'inet' | 'inet6', address: `${a.local}/${a.prefixlen}`, scope: a.scope ?? null })),
  };
}

export async function listLinksIn(netns: string | undefined): Promise<Link[]> {
  return (await ipJson<IpLinkJson>(netns, ['-d', 'addr', 'show'])).map(toLink);
}

/** One link, or null when it does not exist (in that namespace). */
export async function findLink(netns: string | undefined, name: string): Promise<Link | null> {
  const r = await ip(netns, ['-j', '-d', 'addr', 'show', 'dev', name], { reject: false });
  if (r.failed) {
    if (/does not exist|Cannot find device/i.test(r.stderr)) return null;
    await ip(netns, ['-j', '-d', 'addr', 'show', 'dev', name]);
  }
  const parsed = JSON.parse(r.stdout.trim() || '[]') as IpLinkJson[];
  return parsed[0] ? toLink(parsed[0]) : null;
}

export async function requireNetns(name: string): Promise<void> {
  if (!(await netnsNames()).includes(name)) throw new WritError('RESOURCE_NOT_FOUND', `network namespace ${name} does not exist`);
}

export async function netnsNames(): Promise<string[]> {
  return (await ipJson<{ name: string }>(undefined, ['netns', 'list'])).map((n) => n.name);
}

/** Checks a namespace argument exists (host namespace when undefined). */
export async function requireNamespace(netns: string | undefined): Promise<void> {
  if (netns !== undefined) await requireNetns(netns);
}
