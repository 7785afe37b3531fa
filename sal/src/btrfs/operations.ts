// The btrfs host-call table: each entry pairs a capability (name == operation) with its argument schema
// from @writ/protocol and a plain function of this folder.
import { assertSchema, capability, compileSchema, WritError } from '@writ/protocol';
import type { SalOperation } from '../operation.ts';
import type { BtrfsConfig } from './config.ts';
import { formatPool, mountPool, poolUsage, unmountPool } from './pool.ts';
import { cloneDisk, createSubvolume, deleteSubvolume, limitQgroup, listSubvolumes, receiveSubvolume, sendSubvolume, showQgroups, showSubvolume, snapshotSubvolume } from './subvolume.ts';

function btrfsOperation<Args, Result>(name: string, fn: (config: BtrfsConfig, args: Args) => Promise<Result>): SalOperation<BtrfsConfig, Args, Result> {
  const spec = capability(name);
  if (!spec) throw new WritError('CAPABILITY_UNKNOWN', `capability ${name} is not in the registry`);
  const validate = compileSchema<Args>(spec.args);
  return {
    capability: name,
    async run(args, ctx) {
      assertSchema(validate, args, name, 'SAL_INVALID_ARGUMENT');
      return fn(ctx.config, args);
    },
  };
}

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
