// The capability registry: every host function a script can call, its argument schema and whether it is
// dangerous. Scripts see exactly the granted subset under `ctx.sal`; the runner's host table must match.
import { BTRFS_CAPABILITIES } from './btrfs.ts';
import { HOST_CAPABILITIES } from './host.ts';
import { MYCELIUM_CAPABILITIES } from './mycelium.ts';
import { NET_CAPABILITIES } from './net.ts';
import { NIX_CAPABILITIES } from './nix.ts';
import type { CapabilitySpec } from './types.ts';
import { VM_CAPABILITIES } from './vm.ts';

export type { CapabilitySpec } from './types.ts';
export { argsObject, NAME_SCHEMA } from './types.ts';
export { VM_DISK_SCHEMA, VM_NIC_SCHEMA, VM_SPEC_SCHEMA, type VmDiskSpec, type VmNicSpec, type VmSpec } from './vm.ts';

const ALL: CapabilitySpec[] = [
  ...HOST_CAPABILITIES,
  ...BTRFS_CAPABILITIES,
  ...NET_CAPABILITIES,
  ...VM_CAPABILITIES,
  ...MYCELIUM_CAPABILITIES,
  ...NIX_CAPABILITIES,
];

export const CAPABILITIES: ReadonlyMap<string, CapabilitySpec> = new Map(ALL.map((c) => [c.name, Object.freeze(c)]));
if (CAPABILITIES.size !== ALL.length) throw new Error('capability registry has a duplicate name');

export const CAPABILITY_NAME_PATTERN = '^[a-z][a-z0-9-]*(\\.[a-z][a-z0-9-]*)+$';

export function capability(name: string): CapabilitySpec | undefined {
  return CAPABILITIES.get(name);
}

export function isDangerous(name: string): boolean {
  return CAPABILITIES.get(name)?.dangerous ?? false;
}

/** Does calling this capability change the node (anything not marked read-only, unknown names included)? */
export function isEffect(name: string): boolean {
  return CAPABILITIES.get(name)?.readOnly !== true;
}

/** Does a grant pattern (`vm.create`, `vm.*`, `*`) cover a capability name? */
export function grantCovers(pattern: string, name: string): boolean {
  if (pattern === '*' || pattern === name) return true;
  return pattern.endsWith('.*') && name.startsWith(pattern.slice(0, -1));
}
