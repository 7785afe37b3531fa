import { argsObject, type CapabilitySpec } from './types.ts';

// Owned by the SAL btrfs work: argument schemas are filled in with the operations.
export const BTRFS_CAPABILITIES: CapabilitySpec[] = [
  { name: 'btrfs.snapshot', dangerous: false, summary: 'Snapshot a subvolume (read-only or writable)', args: argsObject({}) },
];
