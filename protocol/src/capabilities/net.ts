import { argsObject, type CapabilitySpec } from './types.ts';
import type { JsonSchema } from '../schema.ts';

// Interface and namespace names are only bounded here; the SAL checks them (plain name, at most 15 bytes,
// the configured prefix) so that a traversal attempt is a PATH_ESCAPE whatever path it came by (X6).
const IFNAME: JsonSchema = {
  type: 'string',
  minLength: 1,
  maxLength: 64,
  description: 'interface name (at most 15 bytes, configured prefix in the host namespace)',
};
const NETNS: JsonSchema = { type: 'string', minLength: 1, maxLength: 64, description: 'network namespace name, starting with the configured prefix' };
const CIDR: JsonSchema = { type: 'string', minLength: 3, maxLength: 64, description: 'address/prefix length, IPv4 or IPv6' };
const IP: JsonSchema = { type: 'string', minLength: 2, maxLength: 64 };
const DESTINATION: JsonSchema = { type: 'string', minLength: 3, maxLength: 64, description: '"default" or address/prefix length' };
const UP: JsonSchema = { type: 'boolean' };

export const NET_CAPABILITIES: CapabilitySpec[] = [
  {
    name: 'net.bridge.ensure',
    dangerous: false,
    summary: 'Create a bridge if missing and bring it up',
    args: argsObject({ name: IFNAME, netns: NETNS, up: UP }, ['name']),
  },
  {
    name: 'net.bridge.delete',
    dangerous: true,
    summary: 'Delete a bridge (its ports are released)',
    args: argsObject({ name: IFNAME, netns: NETNS }, ['name']),
  },
  {
    name: 'net.tap.ensure',
    dangerous: false,
    summary: 'Create a persistent tap owned by a uid if missing, attach it to a bridge and bring it up',
    args: argsObject(
      {
        name: IFNAME,
        netns: NETNS,
        owner: { type: 'integer', minimum: 0, maximum: 4_294_967_294 },
        bridge: IFNAME,
        multiQueue: { type: 'boolean' },
        vnetHdr: { type: 'boolean' },
        up: UP,
      },
      ['name'],
    ),
  },
  { name: 'net.tap.delete', dangerous: true, summary: 'Delete a tap', args: argsObject({ name: IFNAME, netns: NETNS }, ['name']) },
  {
    name: 'net.veth.ensure',
    dangerous: false,
    summary: 'Create a veth pair if missing, each end in its namespace, and bring both up',
    args: argsObject({ name: IFNAME, peer: IFNAME, netns: NETNS, peerNetns: NETNS, up: UP }, ['name', 'peer']),
  },
  { name: 'net.veth.delete', dangerous: true, summary: 'Delete a veth pair (by either end)', args: argsObject({ name: IFNAME, netns: NETNS }, ['name']) },
  { name: 'net.netns.ensure', dangerous: false, summary: 'Create a network namespace if missing (loopback up)', args: argsObject({ name: NETNS }, ['name']) },
  { name: 'net.netns.delete', dangerous: true, summary: 'Delete a network namespace', args: argsObject({ name: NETNS }, ['name']) },
  { name: 'net.netns.list', dangerous: false, readOnly: true, summary: 'List network namespaces', args: argsObject({}) },
  {
    name: 'net.netns.exec',
    dangerous: true,
    summary: 'Run an allowlisted command (argv array) inside a network namespace; returns exit code and output',
    args: argsObject(
      {
        name: NETNS,
        argv: { type: 'array', minItems: 1, maxItems: 64, items: { type: 'string', maxLength: 4096 } },
        timeoutMs: { type: 'integer', minimum: 1, maximum: 60_000 },
      },
      ['name', 'argv'],
    ),
  },
  {
    name: 'net.addr.add',
    dangerous: true,
    summary: 'Add an address to a link if missing',
    args: argsObject({ dev: IFNAME, address: CIDR, netns: NETNS }, ['dev', 'address']),
  },
  {
    name: 'net.addr.delete',
    dangerous: true,
    summary: 'Remove an address from a link',
    args: argsObject({ dev: IFNAME, address: CIDR, netns: NETNS }, ['dev', 'address']),
  },
  {
    name: 'net.route.add',
    dangerous: true,
    summary: 'Add a route through a link if missing',
    args: argsObject({ destination: DESTINATION, via: IP, dev: IFNAME, metric: { type: 'integer', minimum: 0, maximum: 4_294_967_295 }, netns: NETNS }, [
      'destination',
      'dev',
    ]),
  },
  {
    name: 'net.route.delete',
    dangerous: true,
    summary: 'Delete a route through a link',
    args: argsObject({ destination: DESTINATION, via: IP, dev: IFNAME, metric: { type: 'integer', minimum: 0, maximum: 4_294_967_295 }, netns: NETNS }, [
      'destination',
      'dev',
    ]),
  },
  {
    name: 'net.route.list',
    dangerous: false,
    readOnly: true,
    summary: 'List routes of the main table',
    args: argsObject({ netns: NETNS, family: { type: 'string', enum: ['inet', 'inet6'] } }),
  },
  {
    name: 'net.link.set',
    dangerous: true,
    summary: 'Set a link up or down, attach it to a bridge (master) or release it (null), change its MTU',
    args: argsObject(
      { name: IFNAME, netns: NETNS, up: UP, master: { anyOf: [IFNAME, { type: 'null' }] }, mtu: { type: 'integer', minimum: 68, maximum: 65535 } },
      ['name'],
    ),
  },
  {
    name: 'net.link.list',
    dangerous: false,
    readOnly: true,
    summary: 'List links with their kind, state, master and addresses',
    args: argsObject({ netns: NETNS }),
  },
];
