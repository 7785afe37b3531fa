// Addresses and routes on links the script may manage. Each add checks first, so repeating it is a no-op.
import { isIP } from 'node:net';
import { WritError } from '@writ/protocol';
import type { NetConfig } from './config.ts';
import { checkLinkName, findLink, ip, ipJson, optionalNetns, requireNamespace } from './ip.ts';

interface Cidr {
  address: string;
  prefix: number;
  family: 4 | 6;
  text: string;
}

function parseCidr(value: unknown, what: string): Cidr {
  const m = typeof value === 'string' ? /^([0-9A-Fa-f.:]+)\/(\d{1,3})$/.exec(value) : null;
  const family = m ? isIP(m[1] as string) : 0;
  const prefix = m ? Number(m[2]) : NaN;
  if (!m || (family !== 4 && family !== 6) || prefix > (family === 4 ? 32 : 128)) {
    throw new WritError('SAL_INVALID_ARGUMENT', `${what} ${JSON.stringify(value)} must be an IPv4 or IPv6 address with a prefix length, e.g. 10.0.0.1/24`);
  }
  return { address: (m[1] as string).toLowerCase(), prefix, family, text: `${(m[1] as string).toLowerCase()}/${prefix}` };
}

function parseIp(value: unknown, what: string): { address: string; family: 4 | 6 } {
  const family = typeof value === 'string' ? isIP(value) : 0;
  if (family !== 4 && family !== 6) throw new WritError('SAL_INVALID_ARGUMENT', `${what} ${JSON.stringify(value)} is not an IP address`);
  return { address: (value as string).toLowerCase(), family };
}

async function requireDev(config: NetConfig, dev: unknown, netnsArg: unknown) {
  const netns = optionalNetns(config, netnsArg);
  const name = checkLinkName(config, dev, netns, 'dev');
  await requireNamespace(netns);
  const link = await findLink(netns, name);
  if (!link) throw new WritError('RESOURCE_NOT_FOUND', `link ${name}${netns ? ` in ${netns}` : ''} does not exist`);
  return { netns, name, link };
}

export interface AddrArgs {
  dev: string;
  /** address/prefix length */
  address: string;
  netns?: string;
}

export async function addAddress(config: NetConfig, args: AddrArgs): Promise<{ dev: string; address: string; netns: string | null; added: boolean }> {
  const cidr = parseCidr(args.address, 'address');
  const { netns, name, link } = await requireDev(config, args.dev, args.netns);
  const result = { dev: name, address: cidr.text, netns: netns ?? null };
  const same = link.addresses.find((a) => a.address.split('/')[0] === cidr.address);
  if (same) {
    if (same.address !== cidr.text) throw new WritError('RESOURCE_CONFLICT', `${name} has ${same.address}, not ${cidr.text}`);
    return { ...result, added: false };
  }
  await ip(netns, ['addr', 'add', cidr.text, 'dev', name]);
  return { ...result, added: true };
}

export async function deleteAddress(config: NetConfig, args: AddrArgs): Promise<{ dev: string; address: string; netns: string | null; deleted: boolean }> {
  const cidr = parseCidr(args.address, 'address');
  const { netns, name, link } = await requireDev(config, args.dev, args.netns);
  const result = { dev: name, address: cidr.text, netns: netns ?? null };
  if (!link.addresses.some((a) => a.address === cidr.text)) return { ...result, deleted: false };
  await ip(netns, ['addr', 'del', cidr.text, 'dev', name]);
  return { ...result, deleted: true };
}

export interface Route {
  /** `default` or address/prefix length. */
  destination: string;
  via: string | null;
  dev: string | null;
  metric: number | null;
  protocol: string | null;
  scope: string | null;
}

interface IpRouteJson {
  dst: string;
  gateway?: string;
  dev?: string;
  metric?: number;
  protocol?: string;
  scope?: string;
}

function toRoute(r: IpRouteJson, family: 4 | 6): Route {
  // ip prints host routes without their /32 or /128.
  const destination = r.dst === 'default' || r.dst.includes('/') ? r.dst : `${r.dst}/${family === 4 ? 32 : 128}`;
  return { destination, via: r.gateway ?? null, dev: r.dev ?? null, metric: r.metric ?? null, protocol: r.protocol ?? null, scope: r.scope ?? null };
}

async function routesIn(netns: string | undefined, family: 4 | 6, exact?: string): Promise<Route[]> {
  const rows = await ipJson<IpRouteJson>(netns, [`-${family}`, 'route', 'show', 'table', 'main', ...(exact ? ['exact', exact] : [])]);
  return rows.map((r) => toRoute(r, family));
}

export interface RouteArgs {
  destination: string;
  via?: string;
  dev: string;
  metric?: number;
  netns?: string;
}

function routeSpec(args: RouteArgs): { destination: string; family: 4 | 6; via: string | null } {
  const via = args.via === undefined ? null : parseIp(args.via, 'via');
  let destination: string;
  let family: 4 | 6;
  if (args.destination === 'default') {
    destination = 'default';
    family = via?.family ?? 4;
  } else {
    const cidr = parseCidr(args.destination, 'destination');
    destination = cidr.text;
    family = cidr.family;
  }
  if (via && via.family !== family) throw new WritError('SAL_INVALID_ARGUMENT', `via ${via.address} is not the same address family as ${destination}`);
  return { destination, family, via: via?.address ?? null };
}

const sameMetric = (a: number | null, b: number | undefined) => (a ?? 0) === (b ?? 0);

export async function addRoute(config: NetConfig, args: RouteArgs): Promise<{ route: Route; netns: string | null; added: boolean }> {
  const spec = routeSpec(args);
  const { netns, name } = await requireDev(config, args.dev, args.netns);
  const want: Route = { destination: spec.destination, via: spec.via, dev: name, metric: args.metric ?? null, protocol: null, scope: null };
  const existing = (await routesIn(netns, spec.family, spec.destination)).find((r) => sameMetric(r.metric, args.metric));
  if (existing) {
    if (existing.dev !== name || existing.via !== spec.via) {
      throw new WritError('RESOURCE_CONFLICT', `a route to ${spec.destination} already goes ${existing.via ? `via ${existing.via} ` : ''}dev ${existing.dev}`, {
        route: existing,
      });
    }
    return { route: existing, netns: netns ?? null, added: false };
  }
  await ip(netns, [
    `-${spec.family}`,
    'route',
    'add',
    spec.destination,
    ...(spec.via ? ['via', spec.via] : []),
    'dev',
    name,
    ...(args.metric !== undefined ? ['metric', String(args.metric)] : []),
  ]);
  return { route: want, netns: netns ?? null, added: true };
}

export async function deleteRoute(config: NetConfig, args: RouteArgs): Promise<{ destination: string; netns: string | null; deleted: boolean }> {
  const spec = routeSpec(args);
  const { netns, name } = await requireDev(config, args.dev, args.netns);
  const match = (await routesIn(netns, spec.family, spec.destination)).find(
    (r) => r.dev === name && sameMetric(r.metric, args.metric) && (spec.via === null || r.via === spec.via),
  );
  if (!match) return { destination: spec.destination, netns: netns ?? null, deleted: false };
  await ip(netns, [
    `-${spec.family}`,
    'route',
    'del',
    spec.destination,
    ...(match.via ? ['via', match.via] : []),
    'dev',
    name,
    ...(match.metric !== null ? ['metric', String(match.metric)] : []),
  ]);
  return { destination: spec.destination, netns: netns ?? null, deleted: true };
}

export async function listRoutes(
  config: NetConfig,
  args: { netns?: string; family?: 'inet' | 'inet6' } = {},
): Promise<{ netns: string | null; routes: Route[] }> {
  const netns = optionalNetns(config, args.netns);
  await requireNamespace(netns);
  const families: (4 | 6)[] = args.family === 'inet' ? [4] : args.family === 'inet6' ? [6] : [4, 6];
  const routes = (await Promise.all(families.map((f) => routesIn(netns, f)))).flat();
  return { netns: netns ?? null, routes };
}
