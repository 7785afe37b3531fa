// The iPXE path end to end, as root with QEMU and OVMF (TCG here; KVM only when a probe boot works): a
// blank machine whose disk holds only Debian's ipxe.efi (on an ESP built with mtools) and an empty state
// partition boots it; iPXE takes its DHCP lease from QEMU's user network, fetches the boot.ipxe that
// `writ image ipxe` wrote from QEMU's built-in TFTP server (the DHCP filename), and chains the coord's
// GET /boot/ipxe?mac=${net0/mac} at 10.0.2.2 (this host's loopback, where the test coord listens on
// 127.0.0.1 only). The coord answers install for the unknown MAC; iPXE fetches the kernel and initramfs over
// HTTP and the node registers, accepted by a rule. Then `writ nodes reinstall` makes the next boot an install
// again: the machine reboots into it, keeps its identity, and goes installing → installed → active while its
// answer goes back to local, which the third boot follows (iPXE hands the machine back to the firmware, which
// goes on to its next boot entry). A fourth boot, after `writ nodes rescue`, runs the image in rescue mode.
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { b64url } from '@writ/protocol';
import { runCli } from '@writ/cli';
// eslint-disable-next-line no-restricted-imports
import { ensurePackages, isRoot } from '../sal/test/helpers/system.ts';
import { until } from './helpers/processes.ts';
import { HOST_FROM_GUEST, ipxeDisk, pickAccel, startMachine, type Accel, type Machine } from './helpers/qemu.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

const PACKAGES = [
  'qemu-system-x86',
  'ovmf',
  'ipxe',
  'systemd-boot-efi',
  'linux-image-cloud-amd64',
  'busybox-static',
  'binutils',
  'fdisk',
  'dosfstools',
  'mtools',
];

let skipReason: string | null = isRoot ? null : 'needs root (apt-get for OVMF, iPXE and a kernel, QEMU)';
if (!skipReason) skipReason = ensurePackages(PACKAGES);
if (skipReason) console.warn(`skipping the iPXE boot test: ${skipReason}`);

const hex = randomBytes(3).toString('hex');
const MAC = `52:54:00:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}`;
const SERIAL = `WRIT-IPXE-${hex.toUpperCase()}`;
const savedEnv = process.env.WRIT_BOOT_IMAGE;
let s: TestStack;
let work = '';
let accel: Accel = 'tcg';
let nodeId = '';
const machines: Machine[] = [];
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
const node = async (id: string) => (await s.get(`/v1/nodes/${id}`)).body;
const boot = (name: string) => {
  const m = startMachine({
    name,
    disks: [{ file: path.join(work, 'disk.img'), serial: SERIAL, persist: true }],
    mac: MAC,
    accel,
    workDir: work,
    tftp: { dir: path.join(work, 'tftp'), bootfile: 'boot.ipxe' },
  });
  machines.push(m);
  return m;
};
const nodeWithMac = async () => {
  for (const n of (await s.get('/v1/nodes')).body.nodes as { id: string }[]) {
    const full = await node(n.id);
    if (full.inventory?.nics?.some((x: { mac: string }) => x.mac === MAC)) return full;
  }
  return undefined;
};

describe.skipIf(skipReason !== null)('iPXE boot path under QEMU + OVMF with Debian ipxe.efi (root)', () => {
  beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'writ-boot-ipxe-'));
    s = await startTestStack({ nodes: [], host: '127.0.0.1' });
    const ks = readdirSync('/boot')
      .filter((f) => f.startsWith('vmlinuz-'))
      .sort();
    accel = await pickAccel(path.join('/boot', ks.at(-1)!));
    console.log(`iPXE boot test: QEMU accel ${accel}`);
  }, 120_000);

  afterAll(async () => {
    for (const m of machines) await m.stop();
    if (savedEnv === undefined) delete process.env.WRIT_BOOT_IMAGE;
    else process.env.WRIT_BOOT_IMAGE = savedEnv;
    await s?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('writ image ipxe builds the kernel, initramfs and boot.ipxe; the coord serves that folder', async () => {
    const rule = await cli(
      'enroll',
      'rules',
      'add',
      'ipxe-lab',
      '--mac',
      MAC,
      '--disk-serial',
      'WRIT-IPXE-*',
      '--class',
      'worker',
      '--label',
      'boot=ipxe',
      '--token',
      '--auto-accept',
      '--max-uses',
      '1',
      '--json',
    );
    expect(rule.code, rule.err).toBe(0);
    const token = JSON.parse(rule.out).token as string;
    const img = path.join(work, 'img');
    const built = await cli(
      'image',
      'ipxe',
      '--out',
      img,
      '--coord',
      s.url.replace('127.0.0.1', HOST_FROM_GUEST),
      '--redis',
      s.redisUrl.replace('127.0.0.1', HOST_FROM_GUEST),
      // One argv word: a base64url key may begin with '-', which would read as an option.
      `--admin-key=${b64url(s.admin.publicKey)}`,
      '--cluster',
      s.clusterId,
      '--token',
      token,
      '--cmdline',
      'console=ttyS0',
      '--json',
    );
    expect(built.code, built.err || built.out).toBe(0);
    const m = JSON.parse(built.out);
    expect(Object.keys(m.artifacts).sort()).toEqual(['initramfs', 'ipxe', 'kernel', 'uki']);
    const chain = await readFile(path.join(img, 'boot.ipxe'), 'utf8');
    expect(chain).toContain(`chain ${s.url.replace('127.0.0.1', HOST_FROM_GUEST)}/boot/ipxe?mac=\${net0/mac}`);
    // QEMU's TFTP server hands out only boot.ipxe (the DHCP filename), as a PXE server would.
    await mkdir(path.join(work, 'tftp'));
    await copyFile(path.join(img, 'boot.ipxe'), path.join(work, 'tftp/boot.ipxe'));
    process.env.WRIT_BOOT_IMAGE = img;
    // A blank machine: Debian's ipxe.efi on its ESP, an empty 1 GiB state partition (sparse).
    ipxeDisk(path.join(work, 'disk.img'), { stateMiB: 1024 });
  }, 300_000);

  it('a blank machine chain-loads the coord script for its MAC, fetches kernel and initramfs over HTTP, registers and is accepted', async () => {
    const manifest = JSON.parse(await readFile(path.join(work, 'img/manifest.json'), 'utf8'));
    const m = boot('ipxe-1');
    // iPXE on the console: the TFTP script, the coord's answer for this MAC, both files fetched over HTTP.
    await m.waitFor(new RegExp(`Writ: ${MAC} boots install \\(an unknown machine`), 300_000);
    await m.waitFor(new RegExp(`initramfs\\.img : ${manifest.artifacts.initramfs.bytes} bytes`), 300_000);
    expect(m.output()).toMatch(/tftp:\/\/10\.0\.2\.2\/boot\.ipxe\.\.\. ok/);
    expect(m.output()).toMatch(new RegExp(`vmlinuz : ${manifest.artifacts.kernel.bytes} bytes`));
    // Nobody ordered this machine installed: it netboots to enrol (writ.boot=enroll), its plan may wipe nothing.
    await m.waitFor(/writ-boot: identity.*"created":true.*"mode":"enroll"/, 300_000);
    const registered = await until('the netbooted node registering', () => nodeWithMac(), 300_000);
    nodeId = registered.id;
    const active = await until(
      'the node active',
      async () => {
        const n = await node(nodeId);
        return n.state === 'active' ? n : undefined;
      },
      300_000,
    );
    expect(active.inventory.disks.map((d: { serial: string }) => d.serial)).toContain(SERIAL);
    expect(active.inventory.diskless).toBe(false);
    expect(active.labels).toMatchObject({ boot: 'ipxe' });
    expect(active.transitions.find((t: { event: string }) => t.event === 'accept')?.actor).toBe('rule:ipxe-lab');
    // Registered, the machine's MAC is known: its next boot is local.
    const answer = await fetch(`${s.url}/boot/ipxe?mac=${MAC}`);
    expect(await answer.text()).toMatch(/^choose --default local /m);
    await m.stop();
  }, 900_000);

  it('writ nodes reinstall: the next boot is an install; the node keeps its identity and goes installing → installed → active; then local', async () => {
    const r = await cli('nodes', 'reinstall', nodeId);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`next iPXE boot of ${MAC}: install`);
    const m = boot('ipxe-2');
    await m.waitFor(new RegExp(`Writ: ${MAC} boots install \\(set by operator`), 300_000);
    await until('installing once the install boot was fetched', async () => ((await node(nodeId)).state === 'installing' ? true : undefined), 120_000);
    await m.waitFor(/writ-boot: identity.*"created":false.*"mode":"install"/, 300_000);
    const back = await until(
      'active again',
      async () => {
        const n = await node(nodeId);
        return n.state === 'active' ? n : undefined;
      },
      300_000,
    );
    const events = back.transitions.map((t: { event: string }) => t.event);
    expect(events.slice(events.lastIndexOf('reprovision'))).toEqual(['reprovision', 'install-started', 'install-done', 'activate']);
    expect(back.transitions.filter((t: { event: string }) => t.event === 'register')).toHaveLength(1);
    await m.stop();
    // The third boot follows the answer that went back to local: iPXE hands the machine to the firmware.
    const m3 = boot('ipxe-3');
    await m3.waitFor(new RegExp(`Writ: ${MAC} boots local \\(set by node`), 300_000);
    // iPXE exits, boot.ipxe exits too, and OVMF goes on to its next boot entry (its shell: the disk holds no OS).
    await m3.waitFor(/Writ: booting from the local disk[\s\S]*BdsDxe: (loading|starting) Boot\d+ "EFI Internal Shell"/, 120_000);
    expect(m3.output()).not.toMatch(/vmlinuz : \d+ bytes|Writ: no boot answer/);
    await m3.stop();
    expect((await node(nodeId)).state).toBe('active');
  }, 1_200_000);

  it('writ nodes rescue: the next boot is the image in rescue mode; the node heartbeats in rescue and runs no runner; unrescue brings it back', async () => {
    const r = await cli('nodes', 'rescue', nodeId);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`next iPXE boot of ${MAC}: rescue`);
    const m = boot('ipxe-4');
    await m.waitFor(new RegExp(`Writ: ${MAC} boots rescue \\(set by operator`), 300_000);
    await m.waitFor(/writ-boot: init started at \S+ s \(boot mode rescue\)/, 300_000);
    await m.waitFor(/writ-boot: rescue mode: registered and heartbeating, running no jobs/, 300_000);
    // Heard from in rescue, and still in rescue: registering does not move it.
    const heard = await until(
      'a heartbeat from the rescue boot',
      async () => {
        const n = await node(nodeId);
        return n.lastHeartbeatAt && Date.parse(n.lastHeartbeatAt) > m.startedAt ? n : undefined;
      },
      120_000,
    );
    expect(heard.state).toBe('rescue');
    expect(m.output()).toMatch(/writ-boot: state partition \S+ mounted/);
    expect(m.output()).not.toMatch(/formatting it|writ-boot: runner started/);
    const back = await cli('nodes', 'unrescue', nodeId, '--json');
    expect(back.code, back.err).toBe(0);
    expect(JSON.parse(back.out)).toMatchObject({ state: 'active', boot: { answer: 'local', macs: [MAC] } });
    await m.stop();
  }, 900_000);
});
