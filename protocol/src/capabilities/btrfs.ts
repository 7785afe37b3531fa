import { argsObject, type CapabilitySpec } from './types.ts';
import type { JsonSchema } from '../schema.ts';

// Paths are relative to the configured pool root (or image/stream directory). The schema only bounds
// their size: the SAL confines them (`..`, absolute paths, NUL bytes, symlink escapes -> PATH_ESCAPE, X6),
// so that a traversal attempt gets the same precise code whether or not it came through a schema.
const POOL_PATH: JsonSchema = { type: 'string', minLength: 1, maxLength: 1024, description: 'path relative to the pool root' };
const FILE_PATH: JsonSchema = { type: 'string', minLength: 1, maxLength: 1024, description: 'path relative to a configured directory' };
const PLAIN_NAME: JsonSchema = { type: 'string', minLength: 1, maxLength: 255, description: 'one path component: letters, digits, ., _, -' };
const DEVICE: JsonSchema = { type: 'string', minLength: 1, maxLength: 256, description: 'a block device listed in the btrfs config' };
const BYTES: JsonSchema = { type: 'integer', minimum: 1, maximum: 2 ** 50 };
const LIMIT: JsonSchema = { anyOf: [BYTES, { type: 'null' }] };
const POOL_SOURCE = { image: FILE_PATH, device: DEVICE };

export const BTRFS_CAPABILITIES: CapabilitySpec[] = [
  {
    name: 'btrfs.pool.format',
    dangerous: true,
    summary: 'Format an image file (created sparse) or a configured block device as btrfs; an existing btrfs with the same label is kept',
    args: argsObject({ ...POOL_SOURCE, sizeBytes: BYTES, label: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$' }, force: { type: 'boolean' } }),
  },
  {
    name: 'btrfs.pool.mount',
    dangerous: false,
    summary: 'Attach the pool (image files through a loop device) and mount it at the configured pool root',
    args: argsObject(POOL_SOURCE),
  },
  {
    name: 'btrfs.pool.unmount',
    dangerous: true,
    summary: 'Unmount the pool root and detach its loop device',
    args: argsObject({ detach: { type: 'boolean' } }),
  },
  { name: 'btrfs.usage', dangerous: false, readOnly: true, summary: 'Read the pool space usage in bytes', args: argsObject({}) },
  { name: 'btrfs.subvolume.create', dangerous: false, summary: 'Create a subvolume if missing', args: argsObject({ path: POOL_PATH }, ['path']) },
  {
    name: 'btrfs.subvolume.delete',
    dangerous: true,
    summary: 'Delete a subvolume and every subvolume nested in it, deepest first',
    args: argsObject({ path: POOL_PATH }, ['path']),
  },
  {
    name: 'btrfs.subvolume.list',
    dangerous: false,
    readOnly: true,
    summary: 'List subvolumes (optionally only those under a path)',
    args: argsObject({ under: POOL_PATH }),
  },
  {
    name: 'btrfs.subvolume.show',
    dangerous: false,
    readOnly: true,
    summary: 'Show one subvolume: ids, UUIDs, flags, snapshots',
    args: argsObject({ path: POOL_PATH }, ['path']),
  },
  {
    name: 'btrfs.snapshot',
    dangerous: false,
    summary: 'Snapshot a subvolume (read-only by default, or writable)',
    args: argsObject({ source: POOL_PATH, dest: POOL_PATH, readOnly: { type: 'boolean' } }, ['source', 'dest']),
  },
  {
    name: 'btrfs.qgroup.limit',
    dangerous: false,
    summary: "Set (or clear with null) a subvolume's referenced/exclusive size limit; enables quotas on the pool if needed",
    args: argsObject({ path: POOL_PATH, maxReferencedBytes: LIMIT, maxExclusiveBytes: LIMIT }, ['path']),
  },
  {
    name: 'btrfs.qgroup.show',
    dangerous: false,
    readOnly: true,
    summary: 'Show quota groups (usage and limits) of the pool or of one subvolume',
    args: argsObject({ path: POOL_PATH }),
  },
  {
    name: 'btrfs.send',
    dangerous: false,
    summary: 'Write a read-only subvolume as a send stream file under the stream directory (incremental with parent)',
    args: argsObject({ path: POOL_PATH, stream: FILE_PATH, parent: POOL_PATH }, ['path', 'stream']),
  },
  {
    name: 'btrfs.receive',
    dangerous: false,
    summary: 'Receive a send stream file into a directory of the pool',
    args: argsObject({ stream: FILE_PATH, dir: POOL_PATH }, ['stream', 'dir']),
  },
  {
    name: 'btrfs.disk.clone',
    dangerous: false,
    summary: "Clone a VM disk: a writable snapshot of a base image subvolume at <dir>/<name>, O(1) in the disk's size",
    args: argsObject({ base: POOL_PATH, name: PLAIN_NAME, file: PLAIN_NAME, dir: POOL_PATH }, ['base', 'name']),
  },
];
