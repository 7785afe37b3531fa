// The boot image's parts without a VM: the kernel command line contract, the cpio writer (read back by GNU
// cpio), the enrollment inventory from a prepared /sys tree, rule judging, and that two builds from the same
// inputs give the same bytes (when this machine has the kernel and the EFI stub).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PAYLOAD_TYPES, generateKeyPair, b64url, parseNodeInventory, type NodeInventory } from '@writ/protocol';
import { collectInventory } from '@writ/runner';
import { bootCmdline, parseBootCmdline, type BootConfig } from '../efi-image/src/boot-config.ts';
import { buildImage } from '../efi-image/src/build.ts';
import { writeCpio } from '../efi-image/src/cpio.ts';
// The rule matcher is coord's; this test judges rules without a coord.
// eslint-disable-next-line no-restricted-imports
import { globMatch, hostnameFor, judgeRule, type EnrollmentRule } from '../coord/src/enroll/rules.ts';

const dirs: string[] = [];
const tmp = async () => {
  const d = await mkdtemp(path.join(os.tmpdir(), 'writ-boot-image-'));
  dirs.push(d);
  return d;
};
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

const boot: BootConfig = {
  coordUrl: 'http://10.0.2.2:7340',
  token: 'tok_abcdefghijklmnop',
  redisUrl: 'redis://10.0.2.2:6379',
  clusterId: 'writ-dev',
  adminKeys: [b64url(generateKeyPair().publicKey)],
  adminThreshold: 1,
};

describe('kernel command line', () => {
  it('round-trips through bootCmdline and parseBootCmdline among other words', () => {
    expect(parseBootCmdline(`console=ttyS0 ${bootCmdline(boot)} quiet`)).toEqual(boot);
  });
  it('refuses what cannot be on a command line or is missing, naming the fix', () => {
    expect(() => bootCmdline({ ...boot, coordUrl: 'http://a b' })).toThrow(/cannot go on a kernel command line/);
    expect(() => bootCmdline({ ...boot, redisUrl: 'http://x' })).toThrow(/must use redis: or rediss:/);
    expect(() => bootCmdline({ ...boot, token: 'short' })).toThrow(/enrollment token/);
    expect(() => bootCmdline({ ...boot, adminKeys: [] })).toThrow(/admin public key/);
    expect(() => parseBootCmdline('console=ttyS0')).toThrow(/lacks writ.coord=/);
  });
});

describe('cpio writer', () => {
  it('writes an archive GNU cpio lists back, sorted, with the one mtime', async () => {
    const d = await tmp();
    const archive = writeCpio(
      [
        { path: 'init', kind: 'file', mode: 0o755, data: Buffer.from('#!/bin/sh\n') },
        { path: 'bin', kind: 'dir', mode: 0o755 },
        { path: 'bin/sh', kind: 'symlink', target: 'busybox' },
        { path: 'dev/console', kind: 'chardev', mode: 0o600, major: 5, minor: 1 },
        { path: 'dev', kind: 'dir', mode: 0o755 },
      ],
      1_704_067_200,
    );
    expect(archive.length % 512).toBe(0);
    await writeFile(path.join(d, 'a.cpio'), archive);
    const r = spawnSync('cpio', ['-itv', '-F', path.join(d, 'a.cpio')], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    // The name follows the year of the one mtime (2024-01-01).
    expect(lines.map((l) => l.replace(/^.*?\s2024\s+/, ''))).toEqual(['bin', 'bin/sh -> busybox', 'dev', 'dev/console', 'init']);
    expect(lines[4]).toMatch(/^-rwxr-xr-x/);
    expect(lines[3]).toMatch(/^crw-------/);
    expect(lines.every((l) => /\s2024\s/.test(l))).toBe(true);
  });
  it('refuses the same path twice', () => {
    expect(() =>
      writeCpio(
        [
          { path: 'a', kind: 'dir', mode: 0o755 },
          { path: 'a', kind: 'dir', mode: 0o755 },
        ],
        0,
      ),
    ).toThrow(/twice/);
  });
});

describe('enrollment inventory', () => {
  it('reads NICs with driver, disks with serial and WWN, DMI, CPU and memory from /sys and /proc', async () => {
    const root = await tmp();
    const w = async (p: string, s: string) => {
      await mkdir(path.dirname(path.join(root, p)), { recursive: true });
      await writeFile(path.join(root, p), s);
    };
    await w('sys/class/dmi/id/product_serial', 'SN-42\n');
    await w('sys/class/dmi/id/product_name', 'Box 9000\n');
    await w('sys/class/dmi/id/sys_vendor', 'Acme\n');
    await w('proc/cpuinfo', 'processor\t: 0\nmodel name\t: Test CPU\n\nprocessor\t: 1\nmodel name\t: Test CPU\n');
    await w('proc/meminfo', 'MemTotal:        2048 kB\n');
    await w('sys/class/net/eth0/address', '52:54:00:AA:BB:CC\n');
    await w('sys/class/net/eth0/speed', '10000\n');
    await w('sys/class/net/eth0/carrier', '1\n');
    await mkdir(path.join(root, 'sys/class/net/eth0/device'), { recursive: true });
    await mkdir(path.join(root, 'sys/bus/virtio/drivers/virtio_net'), { recursive: true });
    await symlink(path.join(root, 'sys/bus/virtio/drivers/virtio_net'), path.join(root, 'sys/class/net/eth0/device/driver'));
    await w('sys/class/net/lo/address', '00:00:00:00:00:00\n'); // no device: not a NIC
    await w('sys/block/vda/size', '2048\n');
    await w('sys/block/vda/serial', 'DISK-1\n');
    await w('sys/block/vda/queue/rotational', '0\n');
    await w('sys/block/sda/size', '4096\n');
    await w('sys/block/sda/device/serial', 'SATA-7\n');
    await w('sys/block/sda/device/model', 'Spinner\n');
    await w('sys/block/sda/device/wwid', 'naa.5000c500a1b2c3d4\n');
    await w('sys/block/loop0/size', '8\n');
    await mkdir(path.join(root, 'dev/disk/by-id'), { recursive: true });
    await symlink('../../sda', path.join(root, 'dev/disk/by-id/ata-Spinner_SATA-7'));
    const inv = await collectInventory({ diskless: true, sysRoot: root });
    expect(parseNodeInventory(inv)).toBe(inv);
    expect(inv).toEqual({
      type: PAYLOAD_TYPES.nodeInventory,
      diskless: true,
      dmi: { vendor: 'Acme', product: 'Box 9000', serial: 'SN-42', uuid: null },
      cpu: { model: 'Test CPU', threads: 2 },
      memoryBytes: 2048 * 1024,
      nics: [{ name: 'eth0', mac: '52:54:00:aa:bb:cc', driver: 'virtio_net', speedMbps: 10000, carrier: true }],
      disks: [
        {
          name: 'sda',
          sizeBytes: 4096 * 512,
          model: 'Spinner',
          serial: 'SATA-7',
          wwn: 'naa.5000c500a1b2c3d4',
          byId: ['ata-Spinner_SATA-7'],
          rotational: false,
        },
        { name: 'vda', sizeBytes: 2048 * 512, model: null, serial: 'DISK-1', wwn: null, byId: [], rotational: false },
      ],
    });
  });
});

describe('rule judging', () => {
  const inv: NodeInventory = {
    type: PAYLOAD_TYPES.nodeInventory,
    diskless: false,
    dmi: { vendor: null, product: 'R650', serial: 'ABC123', uuid: null },
    cpu: { model: 'x', threads: 8 },
    memoryBytes: 1,
    nics: [{ name: 'eth0', mac: '52:54:00:00:00:01', driver: 'ice', speedMbps: 25000, carrier: true }],
    disks: [{ name: 'nvme0n1', sizeBytes: 960e9, model: 'PM9A3', serial: 'S1', wwn: null, byId: [], rotational: false }],
  };
  const rule = (match: EnrollmentRule['match'], tokenSha256: string | null = null): EnrollmentRule => ({
    name: 'r',
    priority: 1,
    match,
    assign: { class: null, pool: null, labels: {}, hostname: null },
    tokenSha256,
    autoAccept: tokenSha256 !== null,
    maxUses: null,
  });
  it('every criterion given must hold, and each says why', () => {
    expect(judgeRule(rule({ dmiProduct: 'R6*', nicDriver: 'ice', nicMinSpeedMbps: 10000, diskModel: 'PM9*', diskMinBytes: 500e9 }), inv, null).matched).toBe(
      true,
    );
    const v = judgeRule(rule({ dmiProduct: 'R6*', diskMaxBytes: 500e9 }), inv, null);
    expect(v.matched).toBe(false);
    expect(v.criteria.find((c) => c.criterion === 'disk')).toMatchObject({ ok: false });
    expect(judgeRule(rule({ diskless: true }), inv, null).matched).toBe(false);
  });
  it('auto-accept needs the rule token presented; requireToken makes it a criterion', () => {
    expect(judgeRule(rule({ macs: ['52:54:00:00:00:01'] }, 'a'.repeat(64)), inv, null)).toMatchObject({ matched: true, autoAccept: false });
    expect(judgeRule(rule({ macs: ['52:54:00:00:00:01'] }, 'a'.repeat(64)), inv, 'a'.repeat(64))).toMatchObject({ matched: true, autoAccept: true });
    expect(judgeRule(rule({ requireToken: true }, 'a'.repeat(64)), inv, 'b'.repeat(64)).matched).toBe(false);
  });
  it('globs and hostname patterns', () => {
    expect(globMatch('R6?0', 'R650')).toBe(true);
    expect(globMatch('R6?0', 'R6500')).toBe(false);
    expect(globMatch('a.b*', 'axb')).toBe(false);
    expect(hostnameFor('web-{serial}-{mac}', inv, 'node-1')).toBe('web-abc123-525400000001');
  });
});

const kernels = existsSync('/boot') ? readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-')) : [];
const canBuild = kernels.length > 0 && existsSync('/usr/lib/systemd/boot/efi/linuxx64.efi.stub') && existsSync('/bin/busybox');
if (!canBuild) console.warn('skipping the reproducible-build check: needs a kernel package, systemd-boot-efi and busybox-static');

describe.skipIf(!canBuild)('image build', () => {
  it('is reproducible: the same inputs give the same sha256 for the initramfs and the UKI', async () => {
    const a = await tmp();
    const b = await tmp();
    const ma = await buildImage({ outDir: a, boot, extraCmdline: 'console=ttyS0' });
    const mb = await buildImage({ outDir: b, boot, extraCmdline: 'console=ttyS0' });
    expect(mb.artifacts).toEqual(ma.artifacts);
    expect(JSON.parse(await readFile(path.join(a, 'manifest.json'), 'utf8')).artifacts.uki.sha256).toBe(ma.artifacts.uki!.sha256);
    // A different command line is a different UKI and the same initramfs.
    const c = await tmp();
    const mc = await buildImage({ outDir: c, boot: { ...boot, clusterId: 'other' }, extraCmdline: 'console=ttyS0' });
    expect(mc.artifacts.initramfs!.sha256).toBe(ma.artifacts.initramfs!.sha256);
    expect(mc.artifacts.uki!.sha256).not.toBe(ma.artifacts.uki!.sha256);
  }, 300_000);
});
