// Subvolumes, snapshots, quota groups, send/receive and VM disk clones inside a mounted pool. Every path
// is confined under the pool root (X6) and every operation is an "ensure": repeating it changes nothing.
import { lstat, mkdir, open, realpath, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { WritError } from '@writ/protocol';
import { checkName, confine } from '../confine.ts';
import { run } from '../exec.ts';
import { requireDir, type BtrfsConfig } from './config.ts';
import {
  parseQgroupShow,
  parseReadOnlyIds,
  parseSendStreamHead,
  parseSubvolumeList,
  parseSubvolumeShow,
  type QgroupEntry,
  type SubvolumeInfo,
} from './parse.ts';
import { requirePool } from './pool.ts';

// The root directory of every btrfs subvolume has this inode number.
const SUBVOLUME_ROOT_INODE = 256;
const STREAM_TIMEOUT_MS = 3_600_000;

interface PoolPath {
  /** Pool root (real path). */
  root: string;
  /** Absolute, symlink-resolved path inside the pool. */
  abs: string;
  /** Path from the pool root, `/`-separated; '' for the root itself. */
  rel: string;
}

async function confineUnder(root: string, rel: unknown, what: string): Promise<string> {
  const abs = await confine(root, rel, what);
  for (const part of (rel as string).split('/').filter((p) => p !== '' && p !== '.')) checkName(part, what);
  return abs;
}

async function poolPath(config: BtrfsConfig, rel: unknown, what: string, allowRoot = false): Promise<PoolPath> {
  const root = await requirePool(config);
  const abs = await confineUnder(root, rel, what);
  if (abs === root && !allowRoot) throw new WritError('SAL_INVALID_ARGUMENT', `${what} must name something inside the pool, not the pool root`);
  return { root, abs, rel: path.relative(root, abs).split(path.sep).join('/') };
}

type Kind = 'missing' | 'subvolume' | 'other';

async function kindOf(abs: string): Promise<Kind> {
  try {
    const s = await lstat(abs);
    return s.isDirectory() && s.ino === SUBVOLUME_ROOT_INODE ? 'subvolume' : 'other';
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw e;
  }
}

async function requireParentDir(p: PoolPath, what: string): Promise<void> {
  const parent = path.dirname(p.abs);
  const s = await stat(parent).catch(() => null);
  if (!s?.isDirectory()) throw new WritError('RESOURCE_NOT_FOUND', `the parent of ${what} ${p.rel} does not exist in the pool`);
}

async function showAbs(abs: string, rel: string): Promise<SubvolumeInfo & { path: string }> {
  const r = await run(['btrfs', 'subvolume', 'show', abs]);
  return { ...parseSubvolumeShow(r.stdout), path: rel };
}

async function requireSubvolume(p: PoolPath, what: string): Promise<SubvolumeInfo & { path: string }> {
  if ((await kindOf(p.abs)) !== 'subvolume') throw new WritError('RESOURCE_NOT_FOUND', `${what} ${p.rel} is not a subvolume`);
  return showAbs(p.abs, p.rel);
}

export interface CreateSubvolumeResult {
  path: string;
  created: boolean;
}

export async function createSubvolume(config: BtrfsConfig, args: { path: string }): Promise<CreateSubvolumeResult> {
  const p = await poolPath(config, args.path, 'path');
  const kind = await kindOf(p.abs);
  if (kind === 'subvolume') return { path: p.rel, created: false };
  if (kind === 'other') throw new WritError('RESOURCE_CONFLICT', `${p.rel} exists and is not a subvolume`);
  await requireParentDir(p, 'path');
  await run(['btrfs', 'subvolume', 'create', p.abs]);
  return { path: p.rel, created: true };
}

export interface DeleteSubvolumeResult {
  path: string;
  deleted: boolean;
  /** Every subvolume removed, deepest first, ending with `path`. */
  removed: string[];
}

/** Deletes a subvolume after every subvolume nested in it, deepest first (btrfs refuses a non-empty parent). */
export async function deleteSubvolume(config: BtrfsConfig, args: { path: string }): Promise<DeleteSubvolumeResult> {
  const p = await poolPath(config, args.path, 'path');
  const kind = await kindOf(p.abs);
  if (kind === 'missing') return { path: p.rel, deleted: false, removed: [] };
  if (kind === 'other') throw new WritError('RESOURCE_CONFLICT', `${p.rel} exists and is not a subvolume`);
  const nested = (await listAll(p.root))
    .map((s) => s.path)
    .filter((q) => q.startsWith(p.rel + '/'))
    .sort((a, b) => b.split('/').length - a.split('/').length || b.localeCompare(a));
  const removed: string[] = [];
  for (const q of [...nested, p.rel]) {
    await run(['btrfs', 'subvolume', 'delete', path.join(p.root, q)]);
    removed.push(q);
  }
  return { path: p.rel, deleted: true, removed };
}

export interface SubvolumeEntry {
  path: string;
  id: number;
  parentId: number;
  generation: number;
  uuid: string;
  parentUuid: string | null;
  receivedUuid: string | null;
  readOnly: boolean;
}

async function listAll(root: string): Promise<SubvolumeEntry[]> {
  const [all, ro] = await Promise.all([run(['btrfs', 'subvolume', 'list', '-p', '-u', '-q', '-R', root]), run(['btrfs', 'subvolume', 'list', '-r', root])]);
  const readOnly = parseReadOnlyIds(ro.stdout);
  return parseSubvolumeList(all.stdout).map((s) => ({
    path: s.path,
    id: s.id,
    parentId: s.parentId,
    generation: s.generation,
    uuid: s.uuid,
    parentUuid: s.parentUuid,
    receivedUuid: s.receivedUuid,
    readOnly: readOnly.has(s.id),
  }));
}

export async function listSubvolumes(config: BtrfsConfig, args: { under?: string } = {}): Promise<{ subvolumes: SubvolumeEntry[] }> {
  const p = await poolPath(config, args.under ?? '.', 'under', true);
  const all = await listAll(p.root);
  return { subvolumes: p.rel === '' ? all : all.filter((s) => s.path === p.rel || s.path.startsWith(p.rel + '/')) };
}

export async function showSubvolume(config: BtrfsConfig, args: { path: string }): Promise<SubvolumeInfo & { path: string }> {
  return requireSubvolume(await poolPath(config, args.path, 'path'), 'path');
}

export interface SnapshotSubvolumeArgs {
  source: string;
  dest: string;
  /** Default true: a snapshot is a point-in-time copy unless a writable clone is asked for. */
  readOnly?: boolean;
}

export interface SnapshotSubvolumeResult {
  source: string;
  path: string;
  created: boolean;
  readOnly: boolean;
  uuid: string;
}

export async function snapshotSubvolume(config: BtrfsConfig, args: SnapshotSubvolumeArgs): Promise<SnapshotSubvolumeResult> {
  const readOnly = args.readOnly ?? true;
  const src = await poolPath(config, args.source, 'source');
  const dest = await poolPath(config, args.dest, 'dest');
  const source = await requireSubvolume(src, 'source');
  const kind = await kindOf(dest.abs);
  if (kind === 'subvolume') {
    const have = await showAbs(dest.abs, dest.rel);
    if (have.parentUuid !== source.uuid || have.readOnly !== readOnly) {
      throw new WritError('RESOURCE_CONFLICT', `${dest.rel} exists and is not a ${readOnly ? 'read-only' : 'writable'} snapshot of ${src.rel}`, {
        parentUuid: have.parentUuid,
        readOnly: have.readOnly,
      });
    }
    return { source: src.rel, path: dest.rel, created: false, readOnly, uuid: have.uuid };
  }
  // btrfs would put the snapshot *inside* an existing directory; that is never what a dest path means.
  if (kind === 'other') throw new WritError('RESOURCE_CONFLICT', `${dest.rel} exists and is not a subvolume`);
  await requireParentDir(dest, 'dest');
  await run(['btrfs', 'subvolume', 'snapshot', ...(readOnly ? ['-r'] : []), src.abs, dest.abs]);
  const made = await showAbs(dest.abs, dest.rel);
  return { source: src.rel, path: dest.rel, created: true, readOnly, uuid: made.uuid };
}

async function quotaEnabled(root: string): Promise<boolean> {
  const r = await run(['btrfs', 'qgroup', 'show', '--raw', root], { reject: false });
  if (!r.failed) return true;
  if (/not enabled/i.test(r.stderr)) return false;
  await run(['btrfs', 'qgroup', 'show', '--raw', root]);
  return true;
}

export interface QgroupLimitArgs {
  path: string;
  /** Bytes, or null to remove the limit; omitted leaves it as it is. */
  maxReferencedBytes?: number | null;
  maxExclusiveBytes?: number | null;
}

export interface QgroupLimitResult {
  path: string;
  quotaEnabled: boolean;
  qgroup: QgroupEntry | null;
}

export async function limitQgroup(config: BtrfsConfig, args: QgroupLimitArgs): Promise<QgroupLimitResult> {
  const p = await poolPath(config, args.path, 'path');
  await requireSubvolume(p, 'path');
  let enabledNow = false;
  if (!(await quotaEnabled(p.root))) {
    await run(['btrfs', 'quota', 'enable', p.root]);
    // Enabling starts a rescan; wait so usage figures are right from the first answer.
    await run(['btrfs', 'quota', 'rescan', '-w', p.root], { timeoutMs: 600_000 });
    enabledNow = true;
  }
  const size = (v: number | null) => (v === null ? 'none' : String(v));
  if (args.maxReferencedBytes !== undefined) await run(['btrfs', 'qgroup', 'limit', size(args.maxReferencedBytes), p.abs]);
  if (args.maxExclusiveBytes !== undefined) await run(['btrfs', 'qgroup', 'limit', '-e', size(args.maxExclusiveBytes), p.abs]);
  const shown = await showQgroups(config, { path: p.rel });
  return { path: p.rel, quotaEnabled: enabledNow, qgroup: shown.qgroups[0] ?? null };
}

export async function showQgroups(config: BtrfsConfig, args: { path?: string } = {}): Promise<{ enabled: boolean; qgroups: QgroupEntry[] }> {
  const p = await poolPath(config, args.path ?? '.', 'path', true);
  if (p.rel !== '') await requireSubvolume(p, 'path');
  if (!(await quotaEnabled(p.root))) return { enabled: false, qgroups: [] };
  // Quota accounting is settled at transaction commit; sync so the figures include recent writes.
  await run(['btrfs', 'filesystem', 'sync', p.root]);
  const r = await run(['btrfs', 'qgroup', 'show', '-re', '--raw', ...(p.rel !== '' ? ['-f'] : []), p.abs]);
  return { enabled: true, qgroups: parseQgroupShow(r.stdout) };
}

async function streamPath(config: BtrfsConfig, rel: unknown): Promise<string> {
  const dir = requireDir(config, 'streamDir');
  await mkdir(dir, { recursive: true });
  return confineUnder(await realpath(dir), rel, 'stream');
}

export interface SendSubvolumeArgs {
  path: string;
  stream: string;
  /** A read-only snapshot already on the receiving side, for an incremental stream. */
  parent?: string;
}

export interface SendSubvolumeResult {
  path: string;
  stream: string;
  written: boolean;
  sizeBytes: number;
}

/** Writes a send stream; the file appears only when complete, so an existing stream is a finished one. */
export async function sendSubvolume(config: BtrfsConfig, args: SendSubvolumeArgs): Promise<SendSubvolumeResult> {
  const p = await poolPath(config, args.path, 'path');
  const out = await streamPath(config, args.stream);
  const info = await requireSubvolume(p, 'path');
  if (!info.readOnly) throw new WritError('SAL_INVALID_ARGUMENT', `${p.rel} must be a read-only snapshot to be sent`);
  let parentAbs: string | undefined;
  if (args.parent !== undefined) {
    const parent = await poolPath(config, args.parent, 'parent');
    if (!(await requireSubvolume(parent, 'parent')).readOnly) throw new WritError('SAL_INVALID_ARGUMENT', `parent ${parent.rel} must be read-only`);
    parentAbs = parent.abs;
  }
  const done = await stat(out).catch(() => null);
  if (done) return { path: p.rel, stream: out, written: false, sizeBytes: done.size };
  await mkdir(path.dirname(out), { recursive: true });
  const partial = path.join(path.dirname(out), `.${path.basename(out)}.partial`);
  await rm(partial, { force: true });
  try {
    await run(['btrfs', 'send', '-q', ...(parentAbs ? ['-p', parentAbs] : []), '-f', partial, p.abs], { timeoutMs: STREAM_TIMEOUT_MS });
    await rename(partial, out);
  } catch (e) {
    await rm(partial, { force: true });
    throw e;
  }
  return { path: p.rel, stream: out, written: true, sizeBytes: (await stat(out)).size };
}

export interface ReceiveSubvolumeResult {
  stream: string;
  path: string;
  received: boolean;
  uuid: string;
  receivedUuid: string;
}

async function readStreamHead(file: string): Promise<Uint8Array> {
  const fh = await open(file, 'r').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') throw new WritError('RESOURCE_NOT_FOUND', `stream ${path.basename(file)} does not exist`);
    throw e;
  });
  try {
    const buf = Buffer.alloc(64 * 1024);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Receives a stream into `dir`; a subvolume there that already records the stream's UUID means it was received. */
export async function receiveSubvolume(config: BtrfsConfig, args: { stream: string; dir: string }): Promise<ReceiveSubvolumeResult> {
  const file = await streamPath(config, args.stream);
  const dir = await poolPath(config, args.dir, 'dir', true);
  const head = parseSendStreamHead(await readStreamHead(file));
  checkName(head.name, 'subvolume name in the stream');
  const target = path.join(dir.abs, head.name);
  const rel = path.relative(dir.root, target).split(path.sep).join('/');
  const kind = await kindOf(target);
  if (kind !== 'missing') {
    const have = kind === 'subvolume' ? await showAbs(target, rel) : null;
    if (have?.receivedUuid !== head.uuid) throw new WritError('RESOURCE_CONFLICT', `${rel} exists and was not received from this stream`);
    return { stream: file, path: rel, received: false, uuid: have.uuid, receivedUuid: head.uuid };
  }
  const d = await stat(dir.abs).catch(() => null);
  if (!d?.isDirectory()) throw new WritError('RESOURCE_NOT_FOUND', `dir ${dir.rel || '.'} does not exist in the pool`);
  // --chroot confines every path the stream names to the target directory; -e stops at the end marker.
  await run(['btrfs', 'receive', '-e', '--chroot', '-f', file, dir.abs], { timeoutMs: STREAM_TIMEOUT_MS });
  const made = await showAbs(target, rel);
  return { stream: file, path: rel, received: true, uuid: made.uuid, receivedUuid: head.uuid };
}

export interface CloneDiskArgs {
  /** Subvolume holding the base image. */
  base: string;
  /** The clone's name, deterministic per VM (e.g. from job and step); the clone is `<dir>/<name>`. */
  name: string;
  /** The disk image file inside the base subvolume. */
  file?: string;
  /** Directory of clones (created when missing). */
  dir?: string;
}

export interface CloneDiskResult {
  /** The clone subvolume, from the pool root. */
  path: string;
  /** Absolute path of the cloned disk image file, for the hypervisor. */
  diskPath: string;
  created: boolean;
  baseUuid: string;
  uuid: string;
}

export const DEFAULT_DISK_FILE = 'disk.raw';
export const DEFAULT_CLONE_DIR = 'disks';

/**
 * A VM's disk is a writable snapshot of its base image subvolume: the snapshot copies no data, so the
 * clone costs the same for a 1 GiB and a 20 GiB (even sparse) base image.
 */
export async function cloneDisk(config: BtrfsConfig, args: CloneDiskArgs): Promise<CloneDiskResult> {
  const name = checkName(args.name, 'name');
  const file = checkName(args.file ?? DEFAULT_DISK_FILE, 'file');
  const base = await poolPath(config, args.base, 'base');
  const dir = await poolPath(config, args.dir ?? DEFAULT_CLONE_DIR, 'dir');
  const baseInfo = await requireSubvolume(base, 'base');
  const baseDisk = await stat(path.join(base.abs, file)).catch(() => null);
  if (!baseDisk?.isFile()) throw new WritError('RESOURCE_NOT_FOUND', `base ${base.rel} has no disk image file ${file}`);
  const dirKind = await kindOf(dir.abs);
  if (dirKind === 'missing') await mkdir(dir.abs, { recursive: true });
  else if (!(await stat(dir.abs)).isDirectory()) throw new WritError('RESOURCE_CONFLICT', `${dir.rel} exists and is not a directory`);
  const made = await snapshotSubvolume(config, { source: base.rel, dest: `${dir.rel}/${name}`, readOnly: false });
  const clone = await poolPath(config, made.path, 'clone');
  return { path: made.path, diskPath: path.join(clone.abs, file), created: made.created, baseUuid: baseInfo.uuid, uuid: made.uuid };
}
