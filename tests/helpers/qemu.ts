// QEMU machines for the boot tests: q35 with OVMF (a fresh copy of the variable store each), the serial
// console captured, networking only through QEMU's user network (the guest reaches the host's loopback as
// 10.0.2.2, nothing is forwarded in). KVM is used only when a short probe boot proves it works here.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
// The cpio writer is the image's own (efi-image is not a package).
import { writeCpio } from '../../efi-image/src/cpio.ts';

export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';
/** The guest sees the host's loopback at this address (QEMU user networking). */
export const HOST_FROM_GUEST = '10.0.2.2';

export type Accel = 'kvm' | 'tcg';

let probed: Promise<Accel> | undefined;

/**
 * KVM when a direct-kernel boot under it reaches userspace within 15 s, TCG otherwise (a guest hung under
 * KVM on this machine after "Booting from ROM"). Probed once per process.
 */
export function pickAccel(kernel: string): Promise<Accel> {
  probed ??= (async () => {
    if (process.env.WRIT_QEMU_ACCEL === 'tcg' || process.env.WRIT_QEMU_ACCEL === 'kvm') return process.env.WRIT_QEMU_ACCEL;
    if (!existsSync('/dev/kvm')) return 'tcg';
    const dir = mkdtempSync(path.join(os.tmpdir(), 'writ-kvm-probe-'));
    try {
      const init = Buffer.from('#!/bin/busybox sh\n/bin/busybox echo WRIT-KVM-PROBE-OK\n/bin/busybox poweroff -f\n');
      const cpio = writeCpio(
        [
          { path: 'bin', kind: 'dir', mode: 0o755 },
          { path: 'bin/busybox', kind: 'file', mode: 0o755, data: readFileSync('/bin/busybox') },
          { path: 'dev', kind: 'dir', mode: 0o755 },
          { path: 'dev/console', kind: 'chardev', mode: 0o600, major: 5, minor: 1 },
          { path: 'init', kind: 'file', mode: 0o755, data: init },
        ],
        0,
      );
      writeFileSync(path.join(dir, 'probe.img'), gzipSync(cpio));
      const r = spawnSync(
        'qemu-system-x86_64',
        [
          '-machine',
          'q35',
          '-accel',
          'kvm',
          '-cpu',
          'max',
          '-m',
          '256',
          '-nographic',
          '-no-reboot',
          '-kernel',
          kernel,
          '-initrd',
          path.join(dir, 'probe.img'),
          '-append',
          'console=ttyS0 panic=-1',
        ],
        { timeout: 15_000, encoding: 'utf8' },
      );
      return r.stdout?.includes('WRIT-KVM-PROBE-OK') ? 'kvm' : 'tcg';
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  })();
  return probed;
}

export interface MachineOptions {
  name: string;
  /** Disk images, each a virtio disk with its serial; the first is where OVMF finds the ESP. Opened as snapshots unless `persist`. */
  disks: { file: string; serial: string; persist?: boolean }[];
  mac: string;
  accel: Accel;
  memMiB?: number;
  /**
   * Virtual CPUs (default: 1 under TCG, 2 under KVM). Under TCG on this loaded 2-core host a 2-CPU guest once
   * stalled for good (RCU: CPU 0's timer wakeup never came; the kernel's hung-task warning followed and the
   * node never started); one CPU leaves no cross-CPU wakeup to lose.
   */
  cpus?: number;
  /**
   * QEMU's built-in TFTP server for the guest (user networking only): files of `dir`, and `bootfile` named in
   * the DHCP answer, as a PXE server would hand them out (the iPXE path: iPXE fetches its script from there).
   */
  tftp?: { dir: string; bootfile: string };
  workDir: string;
  /** Also append the console to this file as it comes (WRIT_QEMU_CONSOLE_DIR sets a folder for every machine). */
  consoleLog?: string;
}

export interface Machine {
  readonly proc: ChildProcess;
  /** Everything the serial console printed so far. */
  output(): string;
  /** Resolves with the first match of `re` on the console, or rejects when the machine exits or time runs out. */
  waitFor(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /** When the machine was started (ms). */
  readonly startedAt: number;
  stop(): Promise<void>;
}

export function startMachine(o: MachineOptions): Machine {
  const vars = path.join(o.workDir, `${o.name}.vars.fd`);
  copyFileSync(OVMF_VARS, vars);
  const args = [
    '-machine',
    'q35',
    '-accel',
    o.accel,
    '-m',
    String(o.memMiB ?? 1024),
    '-smp',
    String(o.cpus ?? (o.accel === 'tcg' ? 1 : 2)),
    '-nographic',
    '-no-reboot',
    '-name',
    o.name,
    '-drive',
    `if=pflash,format=raw,readonly=on,file=${OVMF_CODE}`,
    '-drive',
    `if=pflash,format=raw,file=${vars}`,
    // QEMU option values escape a comma by doubling it.
    '-netdev',
    `user,id=n0${o.tftp ? `,tftp=${o.tftp.dir.replace(/,/g, ',,')},bootfile=${o.tftp.bootfile.replace(/,/g, ',,')}` : ''}`,
    '-device',
    `virtio-net-pci,netdev=n0,mac=${o.mac}`,
    '-serial',
    'stdio',
    '-monitor',
    'none',
  ];
  // `max` under TCG too: QEMU's default qemu64 model lacks what Node's V8 expects of an x86-64 today.
  args.push('-cpu', process.env.WRIT_QEMU_CPU ?? 'max');
  o.disks.forEach((d, i) => {
    args.push(
      '-drive',
      `if=none,id=d${i},format=raw,file=${d.file}${d.persist ? '' : ',snapshot=on'}`,
      '-device',
      `virtio-blk-pci,drive=d${i},serial=${d.serial}${i === 0 ? ',bootindex=0' : ''}`,
    );
  });
  const startedAt = Date.now();
  const proc = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const waiters = new Set<() => void>();
  const log = o.consoleLog ?? (process.env.WRIT_QEMU_CONSOLE_DIR ? path.join(process.env.WRIT_QEMU_CONSOLE_DIR, `${o.name}.log`) : undefined);
  const onData = (b: Buffer) => {
    out += b.toString('utf8');
    if (log) appendFileSync(log, b);
    for (const w of [...waiters]) w();
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  let exited = false;
  proc.on('exit', () => {
    exited = true;
    for (const w of [...waiters]) w();
  });
  return {
    proc,
    startedAt,
    output: () => out,
    waitFor(re, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = out.match(re);
          if (m) return (done(), resolve(m));
          if (exited) return (done(), reject(new Error(`${o.name} exited before ${re} appeared; console tail:\n${out.slice(-3000)}`)));
        };
        const timer = setTimeout(
          () => (done(), reject(new Error(`${o.name}: ${re} did not appear within ${timeoutMs} ms; console tail:\n${out.slice(-3000)}`))),
          timeoutMs,
        );
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    async stop() {
      if (exited) return;
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(t);
    },
  };
}

/** Debian's iPXE EFI binary (package ipxe), found through dpkg as the package installed it. */
export function debianIpxeEfi(): string {
  const r = spawnSync('dpkg', ['-L', 'ipxe'], { encoding: 'utf8' });
  const f = (r.stdout ?? '').split('\n').find((l) => /\/ipxe\.efi$/.test(l) && existsSync(l));
  if (!f) throw new Error(`Debian's ipxe.efi not found (apt-get install ipxe): ${r.stderr ?? ''}`);
  return f;
}

function run(cmd: string, args: string[], input?: string): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input, env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr || r.error?.message}`);
}

/**
 * A GPT disk that boots Debian's ipxe.efi: partition 1 an ESP (FAT, built with mtools) holding it at the
 * default boot path, partition 2 an empty `writ-state` partition when `stateMiB` is given (the node formats it
 * on first boot, so a netbooted node keeps its identity across reboots). No loop device, no mount.
 */
export function ipxeDisk(file: string, o: { stateMiB?: number } = {}): void {
  const espMiB = 8;
  const esp = `${file}.esp`;
  rmSync(esp, { force: true });
  run('mkfs.vfat', ['-F', '12', '-n', 'IPXE', '-C', esp, String(espMiB * 1024)]);
  run('mmd', ['-i', esp, '::/EFI', '::/EFI/BOOT']);
  run('mcopy', ['-i', esp, debianIpxeEfi(), '::/EFI/BOOT/BOOTX64.EFI']);
  const stateMiB = o.stateMiB ?? 0;
  writeFileSync(file, '');
  spawnSync('truncate', ['-s', `${(1 + espMiB + stateMiB + 1) * 1048576}`, file]);
  const parts = [`start=2048, size=${espMiB * 2048}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system"`];
  if (stateMiB > 0) parts.push(`start=${2048 + espMiB * 2048}, size=${stateMiB * 2048}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="writ-state"`);
  run('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', file], ['label: gpt', 'unit: sectors', ...parts].join('\n'));
  run('dd', [`if=${esp}`, `of=${file}`, 'bs=1M', 'seek=1', 'conv=notrunc', 'status=none']);
  rmSync(esp, { force: true });
}
