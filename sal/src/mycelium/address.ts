// Deterministic workload addresses inside the node's overlay /64.
//
// Scheme: interface id = the first 8 bytes of sha256("writ-workload\0" + name + "\0" + n) for the
// smallest n ≥ 0 whose id is neither all zeros (the subnet-router anycast address) nor the node's own
// interface id. The address is the node's /64 prefix followed by that id. The same name on the same node
// always gets the same address; a name cannot pick its address.
import { createHash } from 'node:crypto';
import net from 'node:net';
import { WritError } from '@writ/protocol';
import { checkName } from '../confine.ts';

export function ipv6ToBytes(ip: string): Buffer {
  if (net.isIPv6(ip) === false) throw new WritError('SAL_INVALID_ARGUMENT', `${JSON.stringify(ip)} is not an IPv6 address`);
  const [head = '', tail] = ip.split('::');
  const parse = (s: string) => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const left = parse(head);
  const right = tail === undefined ? [] : parse(tail);
  const groups = [...left, ...Array<number>(8 - left.length - right.length).fill(0), ...right];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

/** RFC 5952 text form: lower case, no leading zeros, the longest run of ≥2 zero groups as `::`. */
export function formatIpv6(bytes: Uint8Array): string {
  const b = Buffer.from(bytes);
  const groups = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2));
  let best = { start: -1, len: 0 };
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i >= 2 && j - i > best.len) best = { start: i, len: j - i };
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best.start < 0) return hex.join(':');
  return `${hex.slice(0, best.start).join(':')}::${hex.slice(best.start + best.len).join(':')}`;
}

export interface WorkloadAddress {
  name: string;
  address: string;
  subnet: string;
  prefixLength: 64;
}

export function workloadAddress(nodeSubnet: string, name: string, nodeIp?: string): WorkloadAddress {
  checkName(name, 'workload name');
  const [prefix, len] = nodeSubnet.split('/');
  if (len !== '64' || !prefix) throw new WritError('SAL_INVALID_ARGUMENT', `node subnet ${JSON.stringify(nodeSubnet)} is not a /64`);
  const net64 = ipv6ToBytes(prefix).subarray(0, 8);
  const nodeIid = nodeIp ? ipv6ToBytes(nodeIp).subarray(8, 16) : null;
  for (let n = 0; ; n++) {
    const iid = createHash('sha256').update(`writ-workload\0${name}\0${n}`).digest().subarray(0, 8);
    if (iid.every((x) => x === 0) || (nodeIid && iid.equals(nodeIid))) continue;
    return { name, address: formatIpv6(Buffer.concat([net64, iid])), subnet: `${formatIpv6(Buffer.concat([net64, Buffer.alloc(8)]))}/64`, prefixLength: 64 };
  }
}
