// Where the btrfs SAL may act: one mounted pool root (every subvolume path is confined under it), a
// directory for pool image files, one for send streams, and the block devices scripts may format or mount.
import path from 'node:path';
import { WritError } from '@writ/protocol';

export interface BtrfsConfig {
  /** The pool root: the btrfs top-level subvolume is mounted here; every subvolume path is confined under it. */
  readonly mount: string;
  /** Directory holding pool image files (`{image}` sources are confined under it). */
  readonly imageDir?: string;
  /** Directory holding send streams (`stream` paths are confined under it). */
  readonly streamDir?: string;
  /** Block devices that may be formatted or mounted, as exact paths (e.g. `/dev/disk/by-id/nvme-...`). */
  readonly devices?: readonly string[];
}

/** Checks a config once (absolute directories, absolute device paths) and freezes it. */
export function btrfsConfig(input: BtrfsConfig): Readonly<BtrfsConfig> {
  const dirs = { mount: input.mount, imageDir: input.imageDir, streamDir: input.streamDir };
  for (const [key, dir] of Object.entries(dirs)) {
    if (dir === undefined && key !== 'mount') continue;
    if (typeof dir !== 'string' || !path.isAbsolute(dir) || dir.includes('\0')) throw new WritError('CONFIG_INVALID', `btrfs ${key} must be an absolute path`);
  }
  for (const d of input.devices ?? []) {
    if (typeof d !== 'string' || !d.startsWith('/dev/') || d.includes('\0'))
      throw new WritError('CONFIG_INVALID', `btrfs device ${JSON.stringify(d)} must be a path under /dev`);
  }
  return Object.freeze({ ...input, devices: Object.freeze([...(input.devices ?? [])]) });
}

export function requireDir(config: BtrfsConfig, key: 'imageDir' | 'streamDir'): string {
  const dir = config[key];
  if (!dir) throw new WritError('SAL_INVALID_ARGUMENT', `no btrfs ${key} is configured on this node`);
  return dir;
}
