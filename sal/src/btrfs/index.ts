// btrfs SAL: pools, subvolumes, snapshots, quotas, send/receive and VM disk clones over btrfs-progs.
export { btrfsConfig, type BtrfsConfig } from './config.ts';
export {
  attachLoop,
  formatPool,
  loopDevicesFor,
  mountPool,
  poolUsage,
  probeFilesystem,
  unmountPool,
  type FormatPoolArgs,
  type FormatPoolResult,
  type MountPoolResult,
  type PoolSource,
  type UnmountPoolResult,
} from './pool.ts';
export {
  cloneDisk,
  createSubvolume,
  DEFAULT_CLONE_DIR,
  DEFAULT_DISK_FILE,
  deleteSubvolume,
  limitQgroup,
  listSubvolumes,
  receiveSubvolume,
  sendSubvolume,
  showQgroups,
  showSubvolume,
  snapshotSubvolume,
  type CloneDiskArgs,
  type CloneDiskResult,
  type CreateSubvolumeResult,
  type DeleteSubvolumeResult,
  type QgroupLimitArgs,
  type QgroupLimitResult,
  type ReceiveSubvolumeResult,
  type SendSubvolumeArgs,
  type SendSubvolumeResult,
  type SnapshotSubvolumeArgs,
  type SnapshotSubvolumeResult,
  type SubvolumeEntry,
} from './subvolume.ts';
export type { PoolUsage, QgroupEntry, SubvolumeInfo } from './parse.ts';
export { LAYOUT_SUBVOLUME_PATTERN, createLayoutSubvolume, partitionDisk, type PartitionDiskArgs, type PartitionDiskResult } from './partition.ts';
export { BTRFS_OPERATIONS } from './operations.ts';
