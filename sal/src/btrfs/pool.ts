// Pool lifecycle: format an image file or configured device, attach image files through loop devices,
// mount the top-level subvolume at the pool root, unmount and detach, read usage.
import { mkdir, open, readFile, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { WritError } from '@writ/protocol';
import { checkName, confine } from '../confine.ts';
import { run } from '../exec.ts';
import { requireDir, type BtrfsConfig } from './config.ts';
import { parseBlkidExport, parseFilesystemUsage, parseMountInfo, type MountEntry, type PoolUsage } from './parse.ts';

/** Where a pool lives: an image file under the image directory, or a configured block device. */
export interface PoolSource {
  image?: string;
  device?: string;
}

interface ResolvedSource {
  kind: 'image' | 'device';
  /** Real path of the image file or device node. */
  path: string;
}

async function resolveSource(config: BtrfsConfig, src: PoolSource): Promise<ResolvedSource> {
  if ((src.image === undefined) === (src.device === undefined)) throw new WritError('SAL_INVALID_ARGUMENT', 'give exactly one of image or device');
  if (src.image !== undefined) {
    const dir = requireDir(config, 'imageDir');
    await mkdir(dir, { recursive: true });
    const abs = await confine(dir, src.image, 'image');
    for (const part of src.image.split('/').filter((p) => p !== '' && p !== '.')) checkName(part, 'image');
    return { kind: 'image', path: abs };
  }
  const device = src.device as string;
  if (device.includes('\0')) throw new WritError('PATH_ESCAPE', 'device contains a NUL byte');
  if (!(config.devices ?? []).includes(device))
    throw new WritError('PATH_ESCAPE', `device ${JSON.stringify(device)} is not one of the configured btrfs devices`);
  try {
    return { kind: 'device', path: await realpath(device) };
  } catch {
    throw new WritError('RESOURCE_NOT_FOUND', `device ${device} does not exist`);
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** Filesystem signature of a file or device, read without mounting (null when none is recognised). */
export async function probeFilesystem(target: string): Promise<{ type: string; uuid: string | null; label: string | null } | null> {
  // blkid exits 2 when it finds no signature.
  const r = await run(['blkid', '-p', '-o', 'export', target], { okExitCodes: [0, 2] });
  if (r.exitCode === 2) return null;
  const kv = parseBlkidExport(r.stdout);
  if (!kv.TYPE) return null;
  return { type: kv.TYPE, uuid: kv.UUID ?? null, label: kv.LABEL ?? null };
}

export interface FormatPoolArgs extends PoolSource {
  /** Size of a new image file (created sparse); required when the image does not exist yet. */
  sizeBytes?: number;
  label?: string;
  /** Overwrite a foreign filesystem signature or a btrfs with another label. Never reformats a matching pool. */
  force?: boolean;
}

export interface FormatPoolResult {
  target: string;
  formatted: boolean;
  uuid: string;
  label: string | null;
  sizeBytes: number;
}

/**
 * Formats a pool if it is not one already. A btrfs with the same label (or any btrfs when no label is
 * asked for) is kept as is, so a replayed job never wipes data; `force` only overrides something else.
 */
export async function formatPool(config: BtrfsConfig, args: FormatPoolArgs): Promise<FormatPoolResult> {
  const src = await resolveSource(config, args);
  if (src.kind === 'image' && !(await exists(src.path))) {
    if (args.sizeBytes === undefined) throw new WritError('SAL_INVALID_ARGUMENT', 'sizeBytes is required to create a new image file');
    await mkdir(path.dirname(src.path), { recursive: true });
    const fh = await open(src.path, 'wx', 0o600);
    try {
      await fh.truncate(args.sizeBytes);
    } finally {
      await fh.close();
    }
  }
  const found = await probeFilesystem(src.path);
  const sizeBytes = await targetSize(src);
  if (found?.type === 'btrfs' && found.uuid && (args.label === undefined || args.label === found.label)) {
    return { target: src.path, formatted: false, uuid: found.uuid, label: found.label, sizeBytes };
  }
  if (found && !args.force) {
    throw new WritError(
      'RESOURCE_CONFLICT',
      `${src.path} already holds a ${found.type} filesystem${found.label ? ` labelled ${found.label}` : ''}; pass force to overwrite it`,
      {
        type: found.type,
        label: found.label,
      },
    );
  }
  await run(['mkfs.btrfs', '-q', ...(args.label ? ['-L', args.label] : []), ...(found ? ['-f'] : []), src.path], { timeoutMs: 300_000 });
  const made = await probeFilesystem(src.path);
  if (made?.type !== 'btrfs' || !made.uuid) throw new WritError('COMMAND_FAILED', `mkfs.btrfs left no btrfs signature on ${src.path}`);
  return { target: src.path, formatted: true, uuid: made.uuid, label: made.label, sizeBytes };
}

async function targetSize(src: ResolvedSource): Promise<number> {
  if (src.kind === 'image') return (await stat(src.path)).size;
  const r = await run(['blockdev', '--getsize64', src.path]);
  return Number(r.stdout.trim());
}

interface LoopDevice {
  name: string;
  'back-file': string | null;
}

async function loopDevices(): Promise<LoopDevice[]> {
  const r = await run(['losetup', '--json', '--list', '--output', 'NAME,BACK-FILE']);
  if (r.stdout.trim() === '') return [];
  return (JSON.parse(r.stdout) as { loopdevices?: LoopDevice[] }).loopdevices ?? [];
}

/** Loop devices backed by `file` (a real path). */
export async function loopDevicesFor(file: string): Promise<string[]> {
  return (await loopDevices()).filter((l) => l['back-file'] === file).map((l) => l.name);
}

/** Attaches an image file to a loop device, reusing one already attached to it. */
export async function attachLoop(file: string): Promise<{ device: string; attached: boolean }> {
  const existing = (await loopDevicesFor(file))[0];
  if (existing) return { device: existing, attached: false };
  const r = await run(['losetup', '--find', '--show', file]);
  return { device: r.stdout.trim(), attached: true };
}

const DETACH_WAIT_MS = 5_000;

/**
 * Detaches a loop device and waits until it is gone. While anything still holds the device open (udev
 * probing after the unmount, seen under load) the kernel only marks it for auto-clear, and a mount right
 * after would reuse the half-detached device.
 */
async function detachLoop(device: string, backFile: string): Promise<void> {
  await run(['losetup', '--detach', device]);
  const deadline = Date.now() + DETACH_WAIT_MS;
  while ((await loopDevices()).some((l) => l.name === device && l['back-file'] === backFile)) {
    if (Date.now() > deadline) throw new WritError('COMMAND_TIMEOUT', `${device} is still attached to ${backFile} ${DETACH_WAIT_MS} ms after losetup --detach`);
    await sleep(50);
  }
}

export async function mounts(): Promise<MountEntry[]> {
  return parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
}

/** The mount at exactly `dir` (the last one, which is the visible one), or null. */
export async function mountAt(dir: string): Promise<MountEntry | null> {
  let real: string;
  try {
    real = await realpath(dir);
  } catch {
    return null;
  }
  return (await mounts()).filter((m) => m.mountPoint === real).pop() ?? null;
}

/** The pool root, checked to be the mounted top level of a btrfs filesystem. */
export async function requirePool(config: BtrfsConfig): Promise<string> {
  const m = await mountAt(config.mount);
  if (!m || m.fsType !== 'btrfs') throw new WritError('RESOURCE_NOT_FOUND', `no btrfs pool is mounted at ${config.mount}`);
  // Subvolume paths from btrfs-progs are relative to the top level; another subvolume mounted here would shift them.
  if (m.root !== '/') throw new WritError('CONFIG_INVALID', `${config.mount} mounts subvolume ${m.root}, not the pool's top level`);
  return realpath(config.mount);
}

export interface MountPoolResult {
  mount: string;
  device: string;
  mounted: boolean;
  loopAttached: boolean;
}

export async function mountPool(config: BtrfsConfig, args: PoolSource): Promise<MountPoolResult> {
  const src = await resolveSource(config, args);
  if (!(await exists(src.path))) throw new WritError('RESOURCE_NOT_FOUND', `${src.path} does not exist`);
  const fs = await probeFilesystem(src.path);
  if (fs?.type !== 'btrfs')
    throw new WritError('RESOURCE_CONFLICT', `${src.path} holds ${fs ? `a ${fs.type} filesystem` : 'no filesystem'}, not btrfs; format it first`);
  const current = await mountAt(config.mount);
  const loop = src.kind === 'image' ? await loopDevicesFor(src.path) : [];
  if (current) {
    const same = current.source === src.path || loop.includes(current.source);
    if (!same) throw new WritError('RESOURCE_CONFLICT', `${config.mount} already has ${current.source} mounted`, { source: current.source });
    return { mount: current.mountPoint, device: current.source, mounted: false, loopAttached: false };
  }
  let device = src.path;
  let loopAttached = false;
  if (src.kind === 'image') ({ device, attached: loopAttached } = await attachLoop(src.path));
  await mkdir(config.mount, { recursive: true });
  try {
    await run(['mount', '-t', 'btrfs', '-o', 'subvolid=5', device, config.mount]);
  } catch (e) {
    if (loopAttached) await run(['losetup', '--detach', device], { reject: false });
    throw e;
  }
  return { mount: await realpath(config.mount), device, mounted: true, loopAttached };
}

export interface UnmountPoolResult {
  mount: string;
  unmounted: boolean;
  /** The loop device detached, when the pool was an image file under the image directory. */
  detached: string | null;
}

export async function unmountPool(config: BtrfsConfig, args: { detach?: boolean } = {}): Promise<UnmountPoolResult> {
  const current = await mountAt(config.mount);
  if (!current || current.fsType !== 'btrfs') return { mount: config.mount, unmounted: false, detached: null };
  await run(['umount', current.mountPoint]);
  let detached: string | null = null;
  if (args.detach !== false && /^\/dev\/loop\d+$/.test(current.source) && config.imageDir) {
    // Only detach loop devices this SAL would have made: backed by a file under the image directory.
    const imageRoot = await realpath(config.imageDir).catch(() => null);
    const back = (await loopDevices()).find((l) => l.name === current.source)?.['back-file'];
    const stillMounted = (await mounts()).some((m) => m.source === current.source);
    if (imageRoot && back && back.startsWith(imageRoot + path.sep) && !stillMounted) {
      await detachLoop(current.source, back);
      detached = current.source;
    }
  }
  return { mount: current.mountPoint, unmounted: true, detached };
}

export async function poolUsage(config: BtrfsConfig): Promise<PoolUsage & { mount: string }> {
  const root = await requirePool(config);
  const r = await run(['btrfs', 'filesystem', 'usage', '-b', root]);
  return { mount: root, ...parseFilesystemUsage(r.stdout) };
}
