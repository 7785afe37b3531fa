// Install plans end to end under QEMU + OVMF (root; TCG here, KVM only when a probe boot works): two machines
// boot the same USB image one after the other, each with two extra data disks of the same size, attached in
// opposite orders. Two enrollment rules match their different MACs and disk serials and give them different
// classes, whose install plans name different serials: on the first machine the hinted disk is the first data
// disk, on the second the second one, so choosing by order cannot pass both. Each node runs its plan (GPT,
// btrfs, subvolumes, one signed job through its runner), reports it, and becomes installed then active. With
// the machine powered off, the host checks that exactly the hinted disk image holds the GPT and btrfs with the
// plan's subvolumes and the other is still all zeros.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, readdirSync } from 'node:fs';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAYLOAD_TYPES, b64url, installPlanSha256, type InstallPlan } from '@writ/protocol';
import { runCli } from '@writ/cli';
// eslint-disable-next-line no-restricted-imports
import { ensurePackages, isRoot } from '../sal/test/helpers/system.ts';
import { until } from './helpers/processes.ts';
import { HOST_FROM_GUEST, pickAccel, startMachine, type Accel, type Machine } from './helpers/qemu.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

const PACKAGES = [
  'qemu-system-x86',
  'ovmf',
  'systemd-boot-efi',
  'linux-image-cloud-amd64',
  'busybox-static',
  'binutils',
  'fdisk',
  'dosfstools',
  'mtools',
  'btrfs-progs',
  'util-linux',
];

let skipReason: string | null = isRoot ? null : 'needs root (apt-get for OVMF and a kernel, QEMU, loop devices)';
if (!skipReason) skipReason = ensurePackages(PACKAGES);
if (skipReason) console.warn(`skipping the install plan boot tests: ${skipReason}`);

const DATA_BYTES = 320 * 2 ** 20;
const hex = randomBytes(2).toString('hex').toUpperCase();
const TOKEN = `wet_install-test-${randomBytes(12).toString('hex')}`;

interface Box {
  cls: string;
  mac: string;
  /** Data disks in the order the machine gets them; `target` is the one its class's plan names. */
  disks: { serial: string; file: string }[];
  target: string;
  subvolumes: string[];
}

const boxes: Box[] = [
  // The hinted disk comes first on red and second on blue.
  { cls: 'red', mac: `52:54:00:7e:${hex.slice(0, 2).toLowerCase()}:01`, disks: [], target: `RED-A-${hex}`, subvolumes: ['@root', '@red'] },
  { cls: 'blue', mac: `52:54:00:7e:${hex.slice(0, 2).toLowerCase()}:02`, disks: [], target: `BLUE-A-${hex}`, subvolumes: ['@root', '@blue', 'data'] },
];

let s: TestStack;
let work = '';
let accel: Accel = 'tcg';
const machines: Machine[] = [];
const plans: Record<string, { plan: InstallPlan; jobId: string }> = {};

const cli = async (...argv: string[]) => {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(
    argv,
    { out: (l) => out.push(l), err: (l) => err.push(l) },
    { env: { ...process.env, WRIT_COORD: s.url, WRIT_TOKEN: s.token }, now: () => Math.floor(Date.now() / 1000) },
  );
  return { code, out: out.join('\n'), err: err.join('\n') };
};
const api = async (method: string, route: string, body?: unknown) => {
  const res = await fetch(`${s.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${s.token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: (await res.json()) as any };
};

const nodeWithMac = async (mac: string) => {
  const { nodes } = (await api('GET', '/v1/nodes')).body as { nodes: { id: string }[] };
  for (const n of nodes) {
    const full = (await api('GET', `/v1/nodes/${n.id}`)).body;
    if (full.inventory?.nics?.some((x: { mac: string }) => x.mac === mac)) return full;
  }
  return undefined;
};

async function allZero(file: string): Promise<boolean> {
  const b = await readFile(file);
  for (let i = 0; i < b.length; i += 8) if (b.readBigUInt64LE(i) !== 0n) return false;
  return true;
}

/** The GPT of a disk image file, its one partition attached read-only over its byte range, and what btrfs sees there. */
function inspectImage(file: string): { label: string; names: string[]; fsLabel: string; subvolumes: string[] } {
  const table = JSON.parse(execFileSync('sfdisk', ['--json', file], { encoding: 'utf8' })).partitiontable;
  const parts = table.partitions as { start: number; size: number; name?: string }[];
  const sector = table.sectorsize ?? 512;
  // An offset loop device: this host's kernel does not scan partitions on loop devices (losetup -P gives none).
  const dev = execFileSync(
    'losetup',
    ['--read-only', '--find', '--show', '--offset', String(parts[0]!.start * sector), '--sizelimit', String(parts[0]!.size * sector), file],
    { encoding: 'utf8' },
  ).trim();
  const mnt = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim();
  try {
    const superblock = execFileSync('btrfs', ['inspect-internal', 'dump-super', dev], { encoding: 'utf8' });
    const fsLabel = /^label\s+(\S*)/m.exec(superblock)?.[1] ?? '';
    execFileSync('mount', ['-o', 'ro', '-t', 'btrfs', dev, mnt]);
    try {
      const subvolumes = execFileSync('btrfs', ['subvolume', 'list', mnt], { encoding: 'utf8' })
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(' path ')[1]!)
        .sort();
      return { label: table.label, names: parts.map((p) => p.name ?? ''), fsLabel, subvolumes };
    } finally {
      execFileSync('umount', [mnt]);
    }
  } finally {
    execFileSync('losetup', ['-d', dev]);
    execFileSync('rmdir', [mnt]);
  }
}

describe.skipIf(skipReason !== null)('install plans under QEMU + OVMF (root)', () => {
  beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'writ-boot-install-'));
    s = await startTestStack({ nodes: [], host: '127.0.0.1' });
    accel = await pickAccel(newestKernel());
    console.log(`install boot tests: QEMU accel ${accel}`);
    for (const b of boxes) {
      const other = b.target.replace('-A-', '-B-');
      const serials = b.cls === 'red' ? [b.target, other] : [other, b.target];
      for (const serial of serials) {
        const file = path.join(work, `${serial}.img`);
        const fh = await open(file, 'wx');
        await fh.truncate(DATA_BYTES);
        await fh.close();
        b.disks.push({ serial, file });
      }
      const job = s.sign(`export default async (args, ctx) => { ctx.log.info("install job of class ${b.cls}"); return "${b.cls} installed"; }`, {
        target: { selector: { role: b.cls } },
        // Signed before the image is built and both machines boot one after the other under TCG: the default
        // 10 minutes could run out before the second machine runs it (ENVELOPE_EXPIRED, INSTALL_FAILED).
        ttlS: 3600,
      });
      const plan: InstallPlan = { type: PAYLOAD_TYPES.installPlan, class: b.cls, disk: { serial: b.target }, subvolumes: b.subvolumes, jobs: [job.envelope] };
      plans[b.cls] = { plan, jobId: job.id };
      expect((await api('POST', '/v1/enroll/classes', { name: b.cls, description: `install test ${b.cls}`, installPlan: plan })).status).toBe(201);
      const rule = await api('POST', '/v1/enroll/rules', {
        name: `install-${b.cls}`,
        match: { macs: [b.mac], diskSerial: `${b.cls.toUpperCase()}-*` },
        assign: { class: b.cls, pool: null, labels: { role: b.cls }, hostname: null },
        autoAccept: true,
        token: TOKEN,
      });
      expect(rule.status, JSON.stringify(rule.body)).toBe(201);
    }
    const built = await cli(
      'image',
      'usb',
      '--out',
      path.join(work, 'img'),
      '--coord',
      s.url.replace('127.0.0.1', HOST_FROM_GUEST),
      '--redis',
      s.redisUrl.replace('127.0.0.1', HOST_FROM_GUEST),
      // One argv word: a base64url key may begin with '-', which would read as an option.
      `--admin-key=${b64url(s.admin.publicKey)}`,
      '--cluster',
      s.clusterId,
      '--token',
      TOKEN,
      '--cmdline',
      'console=ttyS0',
      '--json',
    );
    expect(built.code, built.err || built.out).toBe(0);
  }, 600_000);

  afterAll(async () => {
    for (const m of machines) await m.stop();
    await s?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  for (const [i, b] of boxes.entries()) {
    it(`machine ${b.cls}: the plan picks disk ${i === 0 ? 'one' : 'two'} of two same-size disks by serial, runs its job, and the node is installed`, async () => {
      const usb = path.join(work, `usb-${b.cls}.img`);
      copyFileSync(path.join(work, 'img/writ-usb.img'), usb);
      const m = startMachine({
        name: `install-${b.cls}`,
        disks: [
          { file: usb, serial: `WRIT-USB-${b.cls.toUpperCase()}-${hex}`, persist: true },
          ...b.disks.map((d) => ({ file: d.file, serial: d.serial, persist: true })),
        ],
        mac: b.mac,
        accel,
        workDir: work,
      });
      machines.push(m);
      const ran = await m.waitFor(/\{[^\n]*writ-boot: install plan ran[^\n]*\}/, 600_000);
      const installed = await until(
        'the node installed',
        async () => {
          const n = await nodeWithMac(b.mac);
          return n && (n.state === 'installed' || n.state === 'active' || n.state === 'failed') ? n : undefined;
        },
        120_000,
      );
      expect(installed.state, `${installed.reason}\n${ran[0]}`).not.toBe('failed');
      const { plan, jobId } = plans[b.cls]!;
      expect(installed.install).toMatchObject({
        ok: true,
        class: b.cls,
        planSha256: installPlanSha256(plan),
        disk: { serial: b.target, name: i === 0 ? 'vdb' : 'vdc' },
        subvolumes: b.subvolumes,
        jobs: [{ id: jobId, ok: true }],
      });
      const events = installed.transitions.map((t: { event: string }) => t.event);
      expect(events).toEqual(expect.arrayContaining(['accept', 'install', 'install-started', 'install-done']));
      expect(events.indexOf('install-done')).toBeGreaterThan(events.indexOf('install-started'));
      // Installed, then active on the next healthy heartbeat.
      await until('the node active', async () => ((await api('GET', `/v1/nodes/${installed.id}`)).body.state === 'active' ? true : undefined), 120_000);
      const shown = await cli('nodes', 'show', installed.id);
      expect(shown.out).toContain(`install: ok: plan ${installPlanSha256(plan).slice(0, 12)} (class ${b.cls})`);
      // Power off; then look at the disk images from the host.
      await m.stop();
      const target = b.disks.find((d) => d.serial === b.target)!;
      const other = b.disks.find((d) => d.serial !== b.target)!;
      expect(inspectImage(target.file)).toEqual({ label: 'gpt', names: ['writ-data'], fsLabel: 'writ-data', subvolumes: [...b.subvolumes].sort() });
      expect(await allZero(other.file)).toBe(true);
    }, 900_000);
  }
});

function newestKernel(): string {
  const ks = readdirSync('/boot')
    .filter((f) => f.startsWith('vmlinuz-'))
    .sort();
  return path.join('/boot', ks.at(-1)!);
}
