// Install plans, node side (issue 11), as root with real loop devices, sfdisk, mkfs.btrfs and a real runner on
// a test stack (Redis, key set): the plan's disk is chosen by serial whatever the order the disks come in, gets
// one GPT partition with btrfs and the plan's subvolumes, and the plan's signed jobs run through the runner's
// own verification, journal and sandbox. The other disk is left untouched (all zeros). A job the runner
// refuses (signed by a key outside the key set, or for another node) stops the install; a finished job is not
// run again; a disk that holds something else is not wiped unless the boot is an install boot.
import { execFileSync } from 'node:child_process';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAYLOAD_TYPES, generateKeyPair, installPlanSha256, type InstallPlan, type InventoryDisk } from '@writ/protocol';
import { installPlanDue, installedPlanRecord, runInstallPlan, type Runner } from '@writ/runner';
import { startTestStack, type TestStack } from './helpers/stack.ts';

const isRoot = process.getuid?.() === 0;
const have = (cmd: string) => {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
const ready = isRoot && ['sfdisk', 'mkfs.btrfs', 'btrfs', 'blkid', 'losetup'].every(have);
const SIZE = 320 * 2 ** 20;

let s: TestStack;
let runner: Runner;
let dir = '';
const loops: { file: string; dev: string }[] = [];

async function newLoop(name: string): Promise<{ file: string; dev: string; name: string }> {
  const file = path.join(dir, `${name}.img`);
  const fh = await open(file, 'wx');
  await fh.truncate(SIZE);
  await fh.close();
  const dev = execFileSync('losetup', ['--find', '--show', '--partscan', file], { encoding: 'utf8' }).trim();
  loops.push({ file, dev });
  return { file, dev, name: path.basename(dev) };
}

const inv = (name: string, serial: string): InventoryDisk => ({ name, sizeBytes: SIZE, model: 'loop', serial, wwn: null, byId: [], rotational: false });

/** Loop devices attached over `dev` (the SAL maps a partition that way when the kernel does not scan partitions, as this host's does not). */
function loopsOver(dev: string): string[] {
  const out = execFileSync('losetup', ['--json', '--list', '--output', 'NAME,BACK-FILE'], { encoding: 'utf8' }).trim();
  return out ? (JSON.parse(out).loopdevices as { name: string; 'back-file': string | null }[]).filter((l) => l['back-file'] === dev).map((l) => l.name) : [];
}

/** The data partition of `dev`: the kernel's node, or the loop device over its range. */
function partOf(dev: string): string {
  try {
    execFileSync('test', ['-b', `${dev}p1`]);
    return `${dev}p1`;
  } catch {
    const l = loopsOver(dev);
    expect(l).toHaveLength(1);
    return l[0]!;
  }
}

async function allZero(file: string): Promise<boolean> {
  const b = await readFile(file);
  for (let i = 0; i < b.length; i += 8) if (b.readBigUInt64LE(i) !== 0n) return false;
  return true;
}

function subvolumesOn(partition: string): string[] {
  const mnt = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim();
  execFileSync('mount', ['-o', 'ro', '-t', 'btrfs', partition, mnt]);
  try {
    return execFileSync('btrfs', ['subvolume', 'list', mnt], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map((l) => l.split(' path ')[1]!)
      .sort();
  } finally {
    execFileSync('umount', [mnt]);
    execFileSync('rmdir', [mnt]);
  }
}

beforeAll(async () => {
  if (!ready) return;
  dir = await mkdtemp(path.join(os.tmpdir(), 'writ-instnode-'));
  s = await startTestStack({ nodes: [] });
  runner = await s.startRunner('inst-node', { role: 'inst' }, { runner: { stateDir: path.join(dir, 'state') } });
}, 120_000);

afterAll(async () => {
  if (!ready) return;
  await s?.close();
  // Every loop device is detached even when one fails to (a mount a failed test left behind: unmounted first).
  const failed: string[] = [];
  const detach = (dev: string) => {
    try {
      execFileSync('umount', ['--all-targets', dev], { stdio: 'ignore' });
    } catch {
      // not mounted
    }
    try {
      execFileSync('losetup', ['-d', dev], { stdio: 'ignore' });
    } catch {
      failed.push(dev);
    }
  };
  for (const l of loops) {
    for (const over of loopsOver(l.dev)) detach(over);
    detach(l.dev);
  }
  if (dir) await rm(dir, { recursive: true, force: true });
  expect(failed, 'loop devices left attached').toEqual([]);
});

const plan = (o: Partial<InstallPlan>): InstallPlan => ({ type: PAYLOAD_TYPES.installPlan, class: 'c', disk: {}, subvolumes: [], jobs: [], ...o });

describe.skipIf(!ready)('running an install plan on the node', () => {
  it('picks the disk by serial when same-size disks come in either order, lays it out and runs the plan job through the runner', async () => {
    const a = await newLoop('a');
    const b = await newLoop('b');
    const hello = s.sign('export default async (args, ctx) => { ctx.log.info("plan job ran"); return "installed"; }', { target: { node: 'inst-node' } });
    const p = plan({ disk: { serial: 'DISK-B' }, subvolumes: ['@root', '@data'], jobs: [hello.envelope] });
    const stateDir = path.join(dir, 'state');
    const opts = { plan: p, mode: 'normal' as const, stateDir, runner, mountDir: path.join(dir, 'mnt'), bootDir: path.join(dir, 'run') };
    expect(await installPlanDue(p, opts)).toMatchObject({ due: true });
    // The kernel lists B first: the serial still names B, never "the first disk".
    const r = await runInstallPlan({ ...opts, disks: async () => [inv(b.name, 'DISK-B'), inv(a.name, 'DISK-A')] });
    expect(r.error).toBeUndefined();
    expect(r).toMatchObject({ ok: true, planSha256: installPlanSha256(p), disk: { name: b.name, serial: 'DISK-B' }, subvolumes: ['@root', '@data'] });
    expect(r.jobs).toEqual([{ id: hello.id, ok: true }]);
    const table = JSON.parse(execFileSync('sfdisk', ['--json', b.dev], { encoding: 'utf8' })).partitiontable;
    expect(table.label).toBe('gpt');
    expect(table.partitions.map((x: { name: string }) => x.name)).toEqual(['writ-data']);
    expect(execFileSync('blkid', ['-p', '-o', 'value', '-s', 'TYPE', partOf(b.dev)], { encoding: 'utf8' }).trim()).toBe('btrfs');
    expect(subvolumesOn(partOf(b.dev))).toEqual(['@data', '@root']);
    expect(await allZero(a.file)).toBe(true);
    // Recorded on the state partition: not due again on a normal boot.
    expect((await installedPlanRecord(stateDir))?.planSha256).toBe(installPlanSha256(p));
    expect(await installPlanDue(p, { ...opts, bootDir: path.join(dir, 'run-2') })).toMatchObject({ due: false });
    // The job ran once: running the plan again (another boot) keeps the disk and reports the journaled outcome.
    const again = await runInstallPlan({ ...opts, bootDir: path.join(dir, 'run-2'), disks: async () => [inv(a.name, 'DISK-A'), inv(b.name, 'DISK-B')] });
    expect(again).toMatchObject({ ok: true, disk: { name: b.name } });
    const journal = (await readFile(path.join(runner.opts.stateDir!, 'journal', `${hello.id}.jsonl`), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(journal.filter((x: { t: string }) => x.t === 'start')).toHaveLength(1);
    expect(await allZero(a.file)).toBe(true);
  });

  it('a job the runner refuses stops the install; later jobs do not run', async () => {
    const c = await newLoop('c');
    const stranger = generateKeyPair();
    const forged = s.sign('export default async () => "x"', { target: { node: 'inst-node' }, keys: [stranger] });
    const elsewhere = s.sign('export default async () => "x"', { target: { node: 'another-node' } });
    const never = s.sign('export default async () => "never"', { target: { node: 'inst-node' } });
    const base = { mode: 'normal' as const, stateDir: null, runner, mountDir: path.join(dir, 'mnt'), disks: async () => [inv(c.name, 'DISK-C')] };
    const r1 = await runInstallPlan({
      ...base,
      bootDir: path.join(dir, 'run-c1'),
      plan: plan({ disk: { serial: 'DISK-C' }, jobs: [forged.envelope, never.envelope] }),
    });
    expect(r1.ok).toBe(false);
    expect(r1.error?.code).toBe('INSTALL_FAILED');
    expect(r1.jobs).toHaveLength(1);
    expect(['UNKNOWN_KEY', 'SIGNATURE_INVALID']).toContain(r1.jobs[0]!.code);
    const r2 = await runInstallPlan({
      ...base,
      bootDir: path.join(dir, 'run-c2'),
      plan: plan({ disk: { serial: 'DISK-C' }, jobs: [elsewhere.envelope, never.envelope] }),
    });
    expect(r2.jobs).toEqual([expect.objectContaining({ id: elsewhere.id, ok: false, code: 'TARGET_MISMATCH' })]);
    expect(r2.error?.code).toBe('INSTALL_FAILED');
    // A failed job is not journaled as run for `never`.
    await expect(readFile(path.join(runner.opts.stateDir!, 'journal', `${never.id}.jsonl`))).rejects.toThrow();
  });

  it('no match, two matches, or a disk holding something else: stopped with a stable code and nothing written', async () => {
    const d = await newLoop('d');
    const e = await newLoop('e');
    const base = { mode: 'normal' as const, stateDir: null, runner, mountDir: path.join(dir, 'mnt'), bootDir: path.join(dir, 'run-d') };
    const disks = async () => [inv(d.name, 'DISK-D'), inv(e.name, 'DISK-E')];
    const none = await runInstallPlan({ ...base, disks, plan: plan({ disk: { serial: 'DISK-Z' } }) });
    expect(none.error?.code).toBe('INSTALL_DISK_NOT_FOUND');
    expect(none.error?.message).toContain('serial DISK-D');
    const two = await runInstallPlan({ ...base, disks, plan: plan({ disk: { minBytes: 1 } }) });
    expect(two.error?.code).toBe('INSTALL_DISK_AMBIGUOUS');
    expect(await allZero(d.file)).toBe(true);
    expect(await allZero(e.file)).toBe(true);
    // Someone else's partition table on E: refused on a normal boot, replaced on an install boot.
    execFileSync('sfdisk', ['--quiet', e.dev], { input: 'label: dos\n,,83\n' });
    const foreign = await runInstallPlan({ ...base, disks, plan: plan({ disk: { serial: 'DISK-E' } }) });
    expect(foreign.error?.code).toBe('INSTALL_DISK_NOT_BLANK');
    expect(foreign.error?.message).toContain('holds a dos partition table');
    expect(foreign.error?.message).toContain('writ nodes reinstall');
    expect(foreign.error?.message).not.toContain('pass wipe');
    expect(JSON.parse(execFileSync('sfdisk', ['--json', e.dev], { encoding: 'utf8' })).partitiontable.label).toBe('dos');
    // An unknown machine's netboot (writ.boot=enroll): nobody ordered a wipe, so refused as on a normal boot.
    const enrolling = await runInstallPlan({ ...base, mode: 'enroll', bootDir: path.join(dir, 'run-e0'), disks, plan: plan({ disk: { serial: 'DISK-E' } }) });
    expect(enrolling.error?.code).toBe('INSTALL_DISK_NOT_BLANK');
    expect(JSON.parse(execFileSync('sfdisk', ['--json', e.dev], { encoding: 'utf8' })).partitiontable.label).toBe('dos');
    const wiped = await runInstallPlan({
      ...base,
      mode: 'install',
      bootDir: path.join(dir, 'run-e'),
      disks,
      plan: plan({ disk: { serial: 'DISK-E' }, subvolumes: ['@x'] }),
    });
    expect(wiped.error).toBeUndefined();
    expect(JSON.parse(execFileSync('sfdisk', ['--json', e.dev], { encoding: 'utf8' })).partitiontable.label).toBe('gpt');
    expect(subvolumesOn(partOf(e.dev))).toEqual(['@x']);
    expect(await allZero(d.file)).toBe(true);
  });

  it('a partition table sfdisk cannot read (a Mac partition map) is not taken for a blank disk', async () => {
    const f = await newLoop('f');
    // An Apple partition map: the driver descriptor ("ER") in block 0, map entries ("PM") in blocks 1 and 2.
    const blocks = SIZE / 512;
    const map = Buffer.alloc(3 * 512);
    map.writeUInt16BE(0x4552, 0);
    map.writeUInt16BE(512, 2);
    map.writeUInt32BE(blocks, 4);
    const entry = (i: number, name: string, type: string, start: number, count: number) => {
      const o = i * 512;
      map.writeUInt16BE(0x504d, o);
      map.writeUInt32BE(2, o + 4);
      map.writeUInt32BE(start, o + 8);
      map.writeUInt32BE(count, o + 12);
      map.write(name, o + 16, 'latin1');
      map.write(type, o + 48, 'latin1');
      map.writeUInt32BE(count, o + 84);
    };
    entry(1, 'Apple', 'Apple_partition_map', 1, 63);
    entry(2, 'data', 'Apple_HFS', 64, blocks - 64);
    const fh = await open(f.dev, 'r+');
    await fh.write(map, 0, map.length, 0);
    await fh.sync();
    await fh.close();
    const pttype = () => execFileSync('blkid', ['-p', '-o', 'value', '-s', 'PTTYPE', f.dev], { encoding: 'utf8' }).trim();
    expect(pttype()).toBe('mac');
    const r = await runInstallPlan({
      mode: 'normal',
      stateDir: null,
      runner,
      mountDir: path.join(dir, 'mnt'),
      bootDir: path.join(dir, 'run-f'),
      disks: async () => [inv(f.name, 'DISK-F')],
      plan: plan({ disk: { serial: 'DISK-F' } }),
    });
    expect(r.error?.code).toBe('INSTALL_DISK_NOT_BLANK');
    expect(r.error?.message).toContain('mac partition table');
    expect(pttype()).toBe('mac');
  });
});
