// Partitioning a whole disk for a pool: one GPT with one Linux data partition spanning the disk, written by
// sfdisk. Like formatPool it never destroys what it did not make unless told to: a disk that already carries
// exactly this layout (one GPT partition with this name) is kept, and anything else (another partition
// table, a filesystem on the bare disk) is refused unless `wipe` is given (an install boot's reinstall).
import { lstat, stat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { WritError } from '@writ/protocol';
import { run } from '../exec.ts';
import type { BtrfsConfig } from './config.ts';
import { parseBlkidExport } from './parse.ts';
import { probeFilesystem, requirePool } from './pool.ts';

const LINUX_DATA = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';

export interface PartitionDiskArgs {
  /** The whole disk, exactly as one of the configured btrfs devices. */
  device: string;
  /** The GPT partition name (default `writ-data`). */
  name?: string;
  /** Replace whatever the disk holds (partition table and filesystem signatures). */
  wipe?: boolean;
}

export interface PartitionDiskResult {
  device: string;
  /** The data partition's device node. */
  partition: string;
  /** False when the disk already had this layout and was kept. */
  created: boolean;
}

interface SfdiskPartition {
  node: string;
  start: number;
  size: number;
  name?: string;
  type?: string;
}

interface SfdiskTable {
  label: string;
  sectorsize?: number;
  partitions?: SfdiskPartition[];
}

async function tableOf(device: string): Promise<SfdiskTable | null> {
  const r = await run(['sfdisk', '--json', device], { reject: false });
  if (r.exitCode !== 0 || r.stdout.trim() === '') return null;
  return (JSON.parse(r.stdout) as { partitiontable?: SfdiskTable }).partitiontable ?? null;
}

const isBlock = (p: string) =>
  stat(p).then(
    (s) => s.isBlockDevice(),
    () => false,
  );

/**
 * The data partition's device node: the kernel's, once it appears. A kernel that does not scan partitions on
 * this disk (some minimal VM kernels never do, on any disk) gets a loop device over the partition's byte range
 * instead, reused when one is attached already.
 */
async function partitionNode(device: string, table: SfdiskTable, p: SfdiskPartition, timeoutMs = 5000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await isBlock(p.node)) return p.node;
    await sleep(100);
  }
  const sector = table.sectorsize ?? 512;
  const offset = p.start * sector;
  const sizelimit = p.size * sector;
  const r = await run(['losetup', '--json', '--list', '--output', 'NAME,BACK-FILE,OFFSET,SIZELIMIT']);
  const have = r.stdout.trim()
    ? ((JSON.parse(r.stdout) as { loopdevices?: { name: string; 'back-file': string | null; offset: number | string; sizelimit: number | string }[] })
        .loopdevices ?? [])
    : [];
  const same = have.find((l) => l['back-file'] === device && Number(l.offset) === offset && Number(l.sizelimit) === sizelimit);
  if (same) return same.name;
  return (await run(['losetup', '--find', '--show', '--offset', String(offset), '--sizelimit', String(sizelimit), device])).stdout.trim();
}

/** Gives `device` one GPT data partition named `name`; idempotent, and refuses a foreign layout unless `wipe`. */
export async function partitionDisk(config: BtrfsConfig, args: PartitionDiskArgs): Promise<PartitionDiskResult> {
  const device = args.device;
  const name = args.name ?? 'writ-data';
  if (typeof device !== 'string' || !(config.devices ?? []).includes(device))
    throw new WritError('PATH_ESCAPE', `device ${JSON.stringify(device)} is not one of the configured btrfs devices`);
  if (!/^[A-Za-z0-9._-]{1,36}$/.test(name)) throw new WritError('SAL_INVALID_ARGUMENT', 'a partition name is 1 to 36 of A-Z, a-z, 0-9, ., _ and -');
  const s = await stat(device).catch(() => null);
  if (!s?.isBlockDevice()) throw new WritError('RESOURCE_NOT_FOUND', `${device} is not a block device`);
  const table = await tableOf(device);
  const parts = table?.partitions ?? [];
  if (!args.wipe) {
    if (table?.label === 'gpt' && parts.length === 1 && parts[0]!.name === name)
      return { device, partition: await partitionNode(device, table, parts[0]!), created: false };
    if (table)
      throw new WritError('RESOURCE_CONFLICT', `${device} holds a ${table.label} partition table with ${parts.length} partition(s); pass wipe to replace it`, {
        label: table.label,
        partitions: parts.length,
      });
    // sfdisk reads only the table types it writes (dos, gpt, sun, sgi): a disk holding another (a Mac partition
    // map, an Atari or BSD table) looks blank to it. blkid knows them; what it names is someone else's.
    const pt = parseBlkidExport((await run(['blkid', '-p', '-o', 'export', device], { okExitCodes: [0, 2] })).stdout).PTTYPE;
    if (pt)
      throw new WritError('RESOURCE_CONFLICT', `${device} holds a ${pt} partition table; pass wipe to replace it`, {
        label: pt,
        partitions: null,
      });
    const fs = await probeFilesystem(device);
    if (fs)
      throw new WritError('RESOURCE_CONFLICT', `${device} holds a ${fs.type} filesystem${fs.label ? ` labelled ${fs.label}` : ''}; pass wipe to replace it`, {
        type: fs.type,
      });
  }
  // --wipe-partitions: a new partition where an old filesystem started must not look like that filesystem.
  await run(['sfdisk', '--quiet', '--wipe', 'always', '--wipe-partitions', 'always', device], {
    input: `label: gpt\ntype=${LINUX_DATA}, name="${name}"\n`,
    timeoutMs: 120_000,
  });
  const made = await tableOf(device);
  const p = made?.partitions ?? [];
  if (made?.label !== 'gpt' || p.length !== 1) throw new WritError('COMMAND_FAILED', `sfdisk left ${device} without one GPT partition`);
  return { device, partition: await partitionNode(device, made, p[0]!), created: true };
}

/** A top-level subvolume name of an install layout: an optional leading `@` (the usual `@root`, `@nix`), then a plain name. */
export const LAYOUT_SUBVOLUME_PATTERN = '^@?[A-Za-z0-9][A-Za-z0-9._-]{0,62}$';
const LAYOUT_SUBVOLUME_RE = new RegExp(LAYOUT_SUBVOLUME_PATTERN);

/**
 * Creates a subvolume at the top level of the mounted pool, named as install layouts name them (`@root`);
 * createSubvolume takes nested paths of plain names. Idempotent: an existing subvolume is kept, anything
 * else at that name is a conflict.
 */
export async function createLayoutSubvolume(config: BtrfsConfig, args: { name: string }): Promise<{ name: string; created: boolean }> {
  const name = args?.name;
  if (typeof name !== 'string' || !LAYOUT_SUBVOLUME_RE.test(name))
    throw new WritError('SAL_INVALID_ARGUMENT', `subvolume name ${JSON.stringify(name)} must match ${LAYOUT_SUBVOLUME_PATTERN}`);
  const root = await requirePool(config);
  const abs = path.join(root, name);
  const s = await lstat(abs).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return null;
    throw e;
  });
  // 256 is the inode number of every subvolume's root directory.
  if (s) {
    if (s.isDirectory() && s.ino === 256) return { name, created: false };
    throw new WritError('RESOURCE_CONFLICT', `${name} exists in the pool and is not a subvolume`);
  }
  await run(['btrfs', 'subvolume', 'create', abs]);
  return { name, created: true };
}
