// The btrfs host-call table: each entry pairs a capability (name == operation) with its argument schema
// from @writ/protocol and a plain function of this folder.
import { defineOperation, type SalOperation } from '../operation.ts';
import type { BtrfsConfig } from './config.ts';
import { formatPool, mountPool, poolUsage, unmountPool } from './pool.ts';
import {
  cloneDisk,
  createSubvolume,
  deleteSubvolume,
  limitQgroup,
  listSubvolumes,
  receiveSubvolume,
  sendSubvolume,
  showQgroups,
  showSubvolume,
  snapshotSubvolume,
} from './subvolume.ts';

const btrfsOperation = <Args, Result>(name: string, fn: (config: BtrfsConfig, args: Args) => Promise<Result>) =>
  defineOperation<BtrfsConfig, Args, Result>(name, fn);

export const BTRFS_OPERATIONS: readonly SalOperation<BtrfsConfig>[] = Object.freeze([
  btrfsOperation('btrfs.pool.format', formatPool),
  btrfsOperation('btrfs.pool.mount', mountPool),
  btrfsOperation('btrfs.pool.unmount', unmountPool),
  btrfsOperation('btrfs.usage', (config) => poolUsage(config)),
  btrfsOperation('btrfs.subvolume.create', createSubvolume),
  btrfsOperation('btrfs.subvolume.delete', deleteSubvolume),
  btrfsOperation('btrfs.subvolume.list', listSubvolumes),
  btrfsOperation('btrfs.subvolume.show', showSubvolume),
  btrfsOperation('btrfs.snapshot', snapshotSubvolume),
  btrfsOperation('btrfs.qgroup.limit', limitQgroup),
  btrfsOperation('btrfs.qgroup.show', showQgroups),
  btrfsOperation('btrfs.send', sendSubvolume),
  btrfsOperation('btrfs.receive', receiveSubvolume),
  btrfsOperation('btrfs.disk.clone', cloneDisk),
]);
