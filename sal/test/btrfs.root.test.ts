// The btrfs SAL against real btrfs-progs on a loop-mounted image file in a temp dir: pool format/mount,
// subvolumes, snapshots, quotas, send/receive, disk clones, idempotence, and X6 confinement.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCodeOf } from '@writ/protocol';
import {
  BTRFS_OPERATIONS,
  btrfsConfig,
  cloneDisk,
  createSubvolume,
  deleteSubvolume,
  formatPool,
  limitQgroup,
  listSubvolumes,
  mountPool,
  poolUsage,
  receiveSubvolume,
  sendSubvolume,
  showQgroups,
  showSubvolume,
  snapshotSubvolume,
  unmountPool,
  type BtrfsConfig,
} from '../src/index.ts';
import { loopDevicesUsable, loopsBackedBy, releaseMountsAndLoops } from './helpers/loop.ts';
import { ensurePackages, isRoot, sh } from './helpers/system.ts';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const POOL_BYTES = 512 * MiB;
const suffix = randomBytes(2).toString('hex');
let tmp = '';
let config: BtrfsConfig;
let poolImage = '';
let skipReason: string | null = null;

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (e) {
    return errorCodeOf(e) ?? `not a WritError: ${String(e)}`;
  }
  throw new Error('expected a failure');
}

const op = (name: string) => {
  const found = BTRFS_OPERATIONS.find((o) => o.capability === name);
  if (!found) throw new Error(`no operation ${name}`);
  return (args: unknown) => found.run(args, { config });
};

beforeAll(async () => {
  if (!isRoot) skipReason = 'not root: loop devices and mounts need root';
  skipReason ??= ensurePackages(['btrfs-progs', 'util-linux']);
  if (!skipReason && !loopDevicesUsable()) skipReason = 'this machine refuses loop devices';
  if (skipReason) {
    console.warn(`skipping btrfs root tests: ${skipReason}`);
    return;
  }
  tmp = await mkdtemp(path.join(os.tmpdir(), `writ-btrfs-${suffix}-`));
  config = btrfsConfig({ mount: path.join(tmp, 'pool'), imageDir: path.join(tmp, 'images'), streamDir: path.join(tmp, 'streams') });
  poolImage = path.join(tmp, 'images', 'pool.img');
  const formatted = await formatPool(config, { image: 'pool.img', sizeBytes: POOL_BYTES, label: `writ-${suffix}` });
  expect(formatted.formatted).toBe(true);
  const mounted = await mountPool(config, { image: 'pool.img' });
  expect(mounted).toMatchObject({ mounted: true, loopAttached: true });
});

afterAll(async () => {
  if (!tmp) return;
  releaseMountsAndLoops(tmp);
  await rm(tmp, { recursive: true, force: true });
});

describe.skipIf(!isRoot)('btrfs pool', () => {
  it('format is idempotent: a second format keeps the pool and its uuid', async (ctx) => {
    if (skipReason) ctx.skip();
    const before = sh('blkid', ['-p', '-o', 'value', '-s', 'UUID', poolImage]).trim();
    const again = await formatPool(config, { image: 'pool.img', sizeBytes: POOL_BYTES, label: `writ-${suffix}` });
    expect(again).toMatchObject({ formatted: false, uuid: before, label: `writ-${suffix}`, sizeBytes: POOL_BYTES });
  });

  it('format refuses to overwrite a foreign filesystem unless forced', async (ctx) => {
    if (skipReason) ctx.skip();
    const other = path.join(tmp, 'images', 'swap.img');
    const fh = await open(other, 'w');
    await fh.truncate(160 * MiB);
    await fh.close();
    sh('mkswap', [other]);
    expect(await codeOf(formatPool(config, { image: 'swap.img' }))).toBe('RESOURCE_CONFLICT');
    expect(sh('blkid', ['-p', '-o', 'value', '-s', 'TYPE', other]).trim()).toBe('swap');
    const forced = await formatPool(config, { image: 'swap.img', force: true });
    expect(forced.formatted).toBe(true);
    expect(sh('blkid', ['-p', '-o', 'value', '-s', 'TYPE', other]).trim()).toBe('btrfs');
    // A btrfs with another label is a different pool: not silently kept, not silently wiped.
    expect(await codeOf(formatPool(config, { image: 'swap.img', label: 'another' }))).toBe('RESOURCE_CONFLICT');
    await rm(other);
  });

  it('format and mount accept only configured block devices', async (ctx) => {
    if (skipReason) ctx.skip();
    expect(await codeOf(formatPool(config, { device: '/dev/loop0' }))).toBe('PATH_ESCAPE');
    expect(await codeOf(mountPool(config, { device: '/dev/loop0' }))).toBe('PATH_ESCAPE');
    expect(await codeOf(formatPool(config, { image: 'x.img', device: '/dev/loop0' }))).toBe('SAL_INVALID_ARGUMENT');
  });

  it('formats and mounts a configured block device (a loop device standing in for a disk)', async (ctx) => {
    if (skipReason) ctx.skip();
    const backing = path.join(tmp, 'disk.img');
    const fh = await open(backing, 'w');
    await fh.truncate(256 * MiB);
    await fh.close();
    const device = sh('losetup', ['--find', '--show', backing]).trim();
    const diskConfig = btrfsConfig({ mount: path.join(tmp, 'disk-pool'), devices: [device] });
    const made = await formatPool(diskConfig, { device, label: 'disk' });
    expect(made).toMatchObject({ target: device, formatted: true, label: 'disk', sizeBytes: 256 * MiB });
    expect(await formatPool(diskConfig, { device, label: 'disk' })).toMatchObject({ formatted: false, uuid: made.uuid });
    expect(await mountPool(diskConfig, { device })).toMatchObject({ mounted: true, device, loopAttached: false });
    expect(await mountPool(diskConfig, { device })).toMatchObject({ mounted: false });
    expect(await createSubvolume(diskConfig, { path: 'on-disk' })).toMatchObject({ created: true });
    // The pool root already holds another pool: mounting this device there is a conflict.
    expect(await codeOf(mountPool({ ...config, devices: [device] }, { device }))).toBe('RESOURCE_CONFLICT');
    // Not an image under imageDir: unmount leaves the device attached.
    expect(await unmountPool(diskConfig)).toMatchObject({ unmounted: true, detached: null });
    expect(loopsBackedBy(backing)).toEqual([device]);
    sh('losetup', ['--detach', device]);
  });

  it('mounting twice leaves one mount and one loop device', async (ctx) => {
    if (skipReason) ctx.skip();
    const again = await mountPool(config, { image: 'pool.img' });
    expect(again).toMatchObject({ mounted: false, loopAttached: false });
    expect(loopsBackedBy(poolImage)).toHaveLength(1);
    const mountLines = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((l) => l.split(' ')[4] === config.mount);
    expect(mountLines).toHaveLength(1);
  });

  it('usage reports the pool size and block groups in bytes', async (ctx) => {
    if (skipReason) ctx.skip();
    const usage = await poolUsage(config);
    expect(usage.deviceSizeBytes).toBe(POOL_BYTES);
    expect(usage.allocatedBytes + usage.unallocatedBytes).toBe(POOL_BYTES);
    expect(usage.data?.sizeBytes).toBeGreaterThan(0);
    expect(usage.metadata?.profile).toBeTypeOf('string');
    expect(JSON.parse(JSON.stringify(usage))).toEqual(usage);
  });
});

describe.skipIf(!isRoot)('btrfs subvolumes', () => {
  it('creating twice leaves one subvolume and the second call says created:false', async (ctx) => {
    if (skipReason) ctx.skip();
    expect(await createSubvolume(config, { path: 'twice' })).toEqual({ path: 'twice', created: true });
    expect(await createSubvolume(config, { path: 'twice' })).toEqual({ path: 'twice', created: false });
    const listed = (await listSubvolumes(config)).subvolumes.filter((s) => s.path === 'twice');
    expect(listed).toHaveLength(1);
    expect(listed[0]?.readOnly).toBe(false);
  });

  it('refuses to turn an existing directory into a subvolume, and needs the parent to exist', async (ctx) => {
    if (skipReason) ctx.skip();
    await mkdir(path.join(config.mount, 'plain-dir'));
    expect(await codeOf(createSubvolume(config, { path: 'plain-dir' }))).toBe('RESOURCE_CONFLICT');
    expect(await codeOf(createSubvolume(config, { path: 'no-such-parent/child' }))).toBe('RESOURCE_NOT_FOUND');
    expect(await codeOf(deleteSubvolume(config, { path: 'plain-dir' }))).toBe('RESOURCE_CONFLICT');
  });

  it('show and list agree on ids and uuids', async (ctx) => {
    if (skipReason) ctx.skip();
    await createSubvolume(config, { path: 'shown' });
    const shown = await showSubvolume(config, { path: 'shown' });
    const listed = (await listSubvolumes(config, { under: 'shown' })).subvolumes;
    expect(listed).toHaveLength(1);
    expect(shown).toMatchObject({ path: 'shown', name: 'shown', id: listed[0]?.id, uuid: listed[0]?.uuid, readOnly: false, parentUuid: null });
    expect(await codeOf(showSubvolume(config, { path: 'missing' }))).toBe('RESOURCE_NOT_FOUND');
  });

  it('delete removes nested subvolumes deepest first, then says deleted:false', async (ctx) => {
    if (skipReason) ctx.skip();
    for (const p of ['tree', 'tree/b', 'tree/b/c', 'tree/d']) await createSubvolume(config, { path: p });
    await writeFile(path.join(config.mount, 'tree/b/c/file'), 'x');
    const gone = await deleteSubvolume(config, { path: 'tree' });
    expect(gone.deleted).toBe(true);
    expect(gone.removed[0]).toBe('tree/b/c');
    expect(gone.removed.indexOf('tree/b')).toBeGreaterThan(gone.removed.indexOf('tree/b/c'));
    expect(gone.removed.at(-1)).toBe('tree');
    expect(gone.removed).toHaveLength(4);
    expect((await listSubvolumes(config, { under: 'tree' })).subvolumes).toEqual([]);
    expect(await stat(path.join(config.mount, 'tree')).catch(() => null)).toBeNull();
    expect(await deleteSubvolume(config, { path: 'tree' })).toEqual({ path: 'tree', deleted: false, removed: [] });
  });
});

describe.skipIf(!isRoot)('btrfs snapshots', () => {
  it('a read-only snapshot refuses writes; repeating it says created:false', async (ctx) => {
    if (skipReason) ctx.skip();
    await createSubvolume(config, { path: 'data' });
    await writeFile(path.join(config.mount, 'data/f'), 'one');
    const snap = await snapshotSubvolume(config, { source: 'data', dest: 'data.ro' });
    expect(snap).toMatchObject({ path: 'data.ro', created: true, readOnly: true });
    await expect(writeFile(path.join(config.mount, 'data.ro/g'), 'no')).rejects.toMatchObject({ code: 'EROFS' });
    const source = await showSubvolume(config, { path: 'data' });
    const shown = await showSubvolume(config, { path: 'data.ro' });
    expect(shown).toMatchObject({ readOnly: true, parentUuid: source.uuid, uuid: snap.uuid });
    expect(source.snapshots).toContain('data.ro');
    expect(await snapshotSubvolume(config, { source: 'data', dest: 'data.ro' })).toEqual({ ...snap, created: false });
  });

  it('a writable snapshot diverges from its source', async (ctx) => {
    if (skipReason) ctx.skip();
    const snap = await snapshotSubvolume(config, { source: 'data', dest: 'data.rw', readOnly: false });
    expect(snap).toMatchObject({ created: true, readOnly: false });
    await writeFile(path.join(config.mount, 'data.rw/f'), 'two');
    expect(await readFile(path.join(config.mount, 'data/f'), 'utf8')).toBe('one');
    expect(await readFile(path.join(config.mount, 'data.rw/f'), 'utf8')).toBe('two');
  });

  it('a dest that is another kind of subvolume or a directory is a conflict, not a nested snapshot', async (ctx) => {
    if (skipReason) ctx.skip();
    expect(await codeOf(snapshotSubvolume(config, { source: 'data', dest: 'data.ro', readOnly: false }))).toBe('RESOURCE_CONFLICT');
    expect(await codeOf(snapshotSubvolume(config, { source: 'twice', dest: 'data.ro' }))).toBe('RESOURCE_CONFLICT');
    expect(await codeOf(snapshotSubvolume(config, { source: 'data', dest: 'plain-dir' }))).toBe('RESOURCE_CONFLICT');
    expect(await readdir(path.join(config.mount, 'plain-dir'))).toEqual([]);
    expect(await codeOf(snapshotSubvolume(config, { source: 'plain-dir', dest: 'x' }))).toBe('RESOURCE_NOT_FOUND');
  });
});

describe.skipIf(!isRoot)('btrfs send and receive', () => {
  it('sends a read-only snapshot to a file and receives it once', async (ctx) => {
    if (skipReason) ctx.skip();
    await createSubvolume(config, { path: 'src' });
    await writeFile(path.join(config.mount, 'src/hello'), 'hello from send');
    const snap = await snapshotSubvolume(config, { source: 'src', dest: 'src.1' });
    expect(await codeOf(sendSubvolume(config, { path: 'src', stream: 'bad.stream' }))).toBe('SAL_INVALID_ARGUMENT');
    const sent = await sendSubvolume(config, { path: 'src.1', stream: 'src.1.stream' });
    expect(sent).toMatchObject({ written: true, stream: path.join(tmp, 'streams', 'src.1.stream') });
    expect(sent.sizeBytes).toBeGreaterThan(0);
    expect(await sendSubvolume(config, { path: 'src.1', stream: 'src.1.stream' })).toMatchObject({ written: false, sizeBytes: sent.sizeBytes });
    // The SAL reads the stream header itself; check it against the tool's own reading of the stream.
    expect(sh('btrfs', ['receive', '--dump', '-f', sent.stream]).split('\n')[0]).toContain(`uuid=${snap.uuid}`);

    await mkdir(path.join(config.mount, 'recv'));
    const got = await receiveSubvolume(config, { stream: 'src.1.stream', dir: 'recv' });
    expect(got).toMatchObject({ path: 'recv/src.1', received: true, receivedUuid: snap.uuid });
    expect(await readFile(path.join(config.mount, 'recv/src.1/hello'), 'utf8')).toBe('hello from send');
    expect((await showSubvolume(config, { path: 'recv/src.1' })).receivedUuid).toBe(snap.uuid);
    expect(await receiveSubvolume(config, { stream: 'src.1.stream', dir: 'recv' })).toMatchObject({ received: false, uuid: got.uuid });
    expect(await codeOf(receiveSubvolume(config, { stream: 'missing.stream', dir: 'recv' }))).toBe('RESOURCE_NOT_FOUND');
  });

  it('sends an incremental stream against a parent the receiver has', async (ctx) => {
    if (skipReason) ctx.skip();
    await writeFile(path.join(config.mount, 'src/second'), 'changed');
    await snapshotSubvolume(config, { source: 'src', dest: 'src.2' });
    const full = await stat(path.join(tmp, 'streams', 'src.1.stream'));
    const inc = await sendSubvolume(config, { path: 'src.2', parent: 'src.1', stream: 'src.2.stream' });
    expect(inc.written).toBe(true);
    const got = await receiveSubvolume(config, { stream: 'src.2.stream', dir: 'recv' });
    expect(got.path).toBe('recv/src.2');
    expect(await readFile(path.join(config.mount, 'recv/src.2/second'), 'utf8')).toBe('changed');
    expect(await readFile(path.join(config.mount, 'recv/src.2/hello'), 'utf8')).toBe('hello from send');
    expect(full.size).toBeGreaterThan(0);
  });
});

describe.skipIf(!isRoot)('btrfs VM disk clones', () => {
  const BASE_DATA = 96 * MiB;

  it('clones a 20 GiB sparse base image by snapshot: six clones of 96 MiB of data fit a 512 MiB pool', async (ctx) => {
    if (skipReason) ctx.skip();
    await mkdir(path.join(config.mount, 'images'));
    await createSubvolume(config, { path: 'images/base' });
    const disk = path.join(config.mount, 'images/base/disk.raw');
    const fh = await open(disk, 'w');
    const block = randomBytes(MiB);
    for (let off = 0; off < BASE_DATA; off += MiB) await fh.write(block, 0, MiB, off);
    await fh.truncate(20 * GiB);
    await fh.close();
    sh('btrfs', ['filesystem', 'sync', config.mount]);
    const before = await poolUsage(config);

    const clones = [];
    for (let i = 1; i <= 6; i++) clones.push(await cloneDisk(config, { base: 'images/base', name: `vm-${suffix}-${i}` }));
    sh('btrfs', ['filesystem', 'sync', config.mount]);
    const after = await poolUsage(config);

    // Copying would need 6 x 96 MiB, more than the whole pool: the clones share the base's extents.
    expect(6 * BASE_DATA).toBeGreaterThan(POOL_BYTES);
    expect(after.usedBytes - before.usedBytes).toBeLessThan(8 * MiB);
    const base = await showSubvolume(config, { path: 'images/base' });
    for (const [i, c] of clones.entries()) {
      expect(c).toMatchObject({ path: `disks/vm-${suffix}-${i + 1}`, created: true, baseUuid: base.uuid });
      expect(c.diskPath).toBe(path.join(config.mount, c.path, 'disk.raw'));
      expect((await stat(c.diskPath)).size).toBe(20 * GiB);
    }
    const head = async (p: string) => {
      const h = await open(p, 'r');
      const b = Buffer.alloc(MiB);
      await h.read(b, 0, MiB, 0);
      await h.close();
      return b;
    };
    expect((await head(clones[0]!.diskPath)).equals(block)).toBe(true);
  });

  it('cloning again returns the same clone; writes to a clone leave the base untouched', async (ctx) => {
    if (skipReason) ctx.skip();
    const first = await cloneDisk(config, { base: 'images/base', name: `vm-${suffix}-1` });
    expect(first.created).toBe(false);
    expect((await listSubvolumes(config, { under: 'disks' })).subvolumes.filter((s) => s.path === first.path)).toHaveLength(1);
    const h = await open(first.diskPath, 'r+');
    await h.write(Buffer.from('guest wrote this'), 0, 16, 0);
    await h.close();
    const base = await open(path.join(config.mount, 'images/base/disk.raw'), 'r');
    const b = Buffer.alloc(16);
    await base.read(b, 0, 16, 0);
    await base.close();
    expect(b.toString('latin1')).not.toBe('guest wrote this');
  });

  it('refuses a clone name taken by something else, a base without the disk file, and a path-like name', async (ctx) => {
    if (skipReason) ctx.skip();
    await createSubvolume(config, { path: 'images/other' });
    await writeFile(path.join(config.mount, 'images/other/disk.raw'), 'other');
    expect(await codeOf(cloneDisk(config, { base: 'images/other', name: `vm-${suffix}-1` }))).toBe('RESOURCE_CONFLICT');
    expect(await codeOf(cloneDisk(config, { base: 'data', name: 'x' }))).toBe('RESOURCE_NOT_FOUND');
    expect(await codeOf(cloneDisk(config, { base: 'images/base', name: '../escape' }))).toBe('PATH_ESCAPE');
    expect(await codeOf(op('btrfs.disk.clone')({ base: 'images/base', name: '..' }))).toBe('PATH_ESCAPE');
  });
});

describe.skipIf(!isRoot)('btrfs quota groups', () => {
  it('a referenced-size limit stops writes with EDQUOT; clearing it lets them through', async (ctx) => {
    // libuv has no name for EDQUOT, so the error carries only its errno.
    if (skipReason) ctx.skip();
    await createSubvolume(config, { path: 'quota' });
    const limited = await limitQgroup(config, { path: 'quota', maxReferencedBytes: 8 * MiB });
    expect(limited.quotaEnabled).toBe(true);
    expect(limited.qgroup).toMatchObject({ maxReferencedBytes: 8 * MiB, maxExclusiveBytes: null, path: 'quota' });
    await expect(writeFile(path.join(config.mount, 'quota/big'), Buffer.alloc(16 * MiB, 1))).rejects.toMatchObject({ errno: -os.constants.errno.EDQUOT });
    const shown = await showQgroups(config, { path: 'quota' });
    expect(shown.enabled).toBe(true);
    expect(shown.qgroups).toHaveLength(1);
    expect(shown.qgroups[0]?.referencedBytes).toBeLessThanOrEqual(8 * MiB + MiB);

    const cleared = await limitQgroup(config, { path: 'quota', maxReferencedBytes: null });
    expect(cleared).toMatchObject({ quotaEnabled: false, qgroup: { maxReferencedBytes: null } });
    await writeFile(path.join(config.mount, 'quota/big'), Buffer.alloc(16 * MiB, 1));
    const all = await showQgroups(config);
    expect(all.qgroups.find((q) => q.path === 'quota')?.referencedBytes).toBeGreaterThanOrEqual(16 * MiB);
  });
});

describe.skipIf(!isRoot)('btrfs X6 confinement', () => {
  it("refuses '../', absolute paths, NUL bytes and symlinks that leave the pool, with PATH_ESCAPE", async (ctx) => {
    if (skipReason) ctx.skip();
    const outside = path.join(tmp, 'outside');
    await mkdir(outside);
    await symlink(outside, path.join(config.mount, 'escape'));
    const bad = ['../outside', 'data/../../outside', '/etc', outside, 'a\0b', 'escape', 'escape/inner', 'escape/../x'];
    for (const p of bad) {
      expect(await codeOf(createSubvolume(config, { path: p })), p).toBe('PATH_ESCAPE');
      expect(await codeOf(op('btrfs.subvolume.create')({ path: p })), p).toBe('PATH_ESCAPE');
      expect(await codeOf(op('btrfs.subvolume.delete')({ path: p })), p).toBe('PATH_ESCAPE');
      expect(await codeOf(op('btrfs.snapshot')({ source: 'data', dest: p })), p).toBe('PATH_ESCAPE');
      expect(await codeOf(op('btrfs.snapshot')({ source: p, dest: 'x' })), p).toBe('PATH_ESCAPE');
      expect(await codeOf(op('btrfs.disk.clone')({ base: p, name: 'x' })), p).toBe('PATH_ESCAPE');
      expect(await codeOf(op('btrfs.receive')({ stream: 'src.1.stream', dir: p })), p).toBe('PATH_ESCAPE');
    }
    expect(await readdir(outside)).toEqual([]);
    expect(await codeOf(op('btrfs.send')({ path: 'src.1', stream: '../images/pool.img' }))).toBe('PATH_ESCAPE');
    expect(await codeOf(op('btrfs.receive')({ stream: '/etc/passwd', dir: 'recv' }))).toBe('PATH_ESCAPE');
    expect(await codeOf(op('btrfs.pool.format')({ image: '../pool/x.img', sizeBytes: MiB }))).toBe('PATH_ESCAPE');
    // A symlink that stays inside the pool is followed and accepted.
    await symlink(path.join(config.mount, 'data'), path.join(config.mount, 'inside-link'));
    expect((await showSubvolume(config, { path: 'inside-link' })).name).toBe('data');
  });

  it('checks argument schemas before acting', async (ctx) => {
    if (skipReason) ctx.skip();
    expect(await codeOf(op('btrfs.subvolume.create')({ path: 'x', extra: 1 }))).toBe('UNKNOWN_FIELD');
    expect(await codeOf(op('btrfs.subvolume.create')({ path: 7 }))).toBe('SAL_INVALID_ARGUMENT');
    expect(await codeOf(op('btrfs.subvolume.create')({}))).toBe('SAL_INVALID_ARGUMENT');
    expect(await codeOf(op('btrfs.subvolume.delete')({ path: '.' }))).toBe('SAL_INVALID_ARGUMENT');
    expect(await stat(path.join(config.mount, 'x')).catch(() => null)).toBeNull();
  });
});

describe.skipIf(!isRoot)('btrfs unmount', () => {
  it('unmounts and detaches the loop device once; the data is there after mounting again', async (ctx) => {
    if (skipReason) ctx.skip();
    const device = loopsBackedBy(poolImage)[0];
    const down = await op('btrfs.pool.unmount')({});
    expect(down).toMatchObject({ unmounted: true, detached: device });
    expect(loopsBackedBy(poolImage)).toEqual([]);
    expect(await codeOf(createSubvolume(config, { path: 'after' }))).toBe('RESOURCE_NOT_FOUND');
    expect(await op('btrfs.pool.unmount')({})).toMatchObject({ unmounted: false, detached: null });
    await mountPool(config, { image: 'pool.img' });
    expect((await listSubvolumes(config)).subvolumes.map((s) => s.path)).toContain('images/base');
  });
});
