// Builds the tiny test guest used by VM tests, end-to-end tests and benchmarks: Debian's cloud kernel
// (downloaded once with apt-get and cached) and a busybox initramfs whose /init mounts proc/sys, loads the
// virtio modules, configures eth0 from the kernel command line, prints a marker on the serial console and
// waits. The ACPI power button powers it off cleanly, so graceful shutdown can be tested.
//
// Kernel command line knobs read by /init:
//   writ.ip=10.1.2.3/24      static address for eth0 (no address when absent)
//   writ.id=TEXT             names this boot in the userspace line (the kernel echoes its command line on
//                            the console, so the line printed must not itself appear in the command line)
// Serial lines it prints: `WRIT-GUEST-UP <id>` (see guestMarker), `WRIT-GUEST-MEM: <MemTotal kB>`, `WRIT-GUEST-BLOCK: <disks>` whenever
// the set of block devices changes, `WRIT-GUEST-POWEROFF` when the power button is pressed.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, readdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { run } from '../../src/exec.ts';
import { ensurePackages } from './system.ts';

export interface TestGuest {
  /** Absolute path of the kernel (bzImage). */
  kernel: string;
  /** Absolute path of the gzip'd newc initramfs. */
  initramfs: string;
  /** Directory holding both (use it as a VM boot root). */
  dir: string;
  kernelRelease: string;
}

export const GUEST_MARKER = 'WRIT-GUEST-UP';
/** The serial line a guest booted with `writ.id=<id>` prints once userspace runs. */
export const guestMarker = (id: string): string => `${GUEST_MARKER} ${id}`;

export const DEFAULT_GUEST_CACHE = '/var/cache/writ-test';

/** Modules the guest loads, dependencies first (the .deb ships no modules.dep). */
const MODULES: Record<string, string> = {
  virtio_ring: 'drivers/virtio/virtio_ring.ko',
  virtio: 'drivers/virtio/virtio.ko',
  virtio_pci_legacy_dev: 'drivers/virtio/virtio_pci_legacy_dev.ko',
  virtio_pci_modern_dev: 'drivers/virtio/virtio_pci_modern_dev.ko',
  virtio_pci: 'drivers/virtio/virtio_pci.ko',
  failover: 'net/core/failover.ko',
  net_failover: 'drivers/net/net_failover.ko',
  virtio_net: 'drivers/net/virtio_net.ko',
  virtio_blk: 'drivers/block/virtio_blk.ko',
  virtio_rng: 'drivers/char/hw_random/virtio-rng.ko',
  button: 'drivers/acpi/button.ko',
  evdev: 'drivers/input/evdev.ko',
};

const APPLETS = ['sh', 'mount', 'insmod', 'ip', 'sleep', 'cat', 'head', 'ls', 'tr', 'poweroff', 'grep', 'awk', 'ping'];

const INIT = `#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${Object.keys(MODULES).join(' ')}; do insmod /lib/modules/$m.ko 2>/dev/null; done
ip=""
id="-"
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    writ.ip=*) ip="\${arg#writ.ip=}" ;;
    writ.id=*) id="\${arg#writ.id=}" ;;
  esac
done
ip link set lo up
if [ -n "$ip" ]; then
  i=0
  while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  ip addr add "$ip" dev eth0
  ip link set eth0 up
fi
for ev in /dev/input/event*; do
  [ -e "$ev" ] || continue
  (head -c 1 "$ev" >/dev/null && echo "WRIT-GUEST-POWEROFF" && poweroff -f) &
done
echo "WRIT-GUEST-MEM: $(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
(known=""; while true; do cur="$(ls /sys/block | grep '^vd' | tr '\\n' ' ')"; if [ "$cur" != "$known" ]; then echo "WRIT-GUEST-BLOCK: [$cur]"; known="$cur"; fi; sleep 0.5; done) &
echo "${GUEST_MARKER} $id"
while true; do sleep 3600; done
`;

async function kernelPackage(): Promise<string> {
  const out = (await run(['apt-cache', 'depends', 'linux-image-cloud-amd64'])).stdout;
  const pkg = /Depends:\s*(linux-image-[0-9][^\s]*-cloud-amd64)/.exec(out)?.[1];
  if (!pkg) throw new Error(`cannot find the kernel package behind linux-image-cloud-amd64 in:\n${out}`);
  return pkg;
}

/** Downloads and unpacks the Debian cloud kernel package once per cache dir. */
async function ensureKernel(cacheDir: string): Promise<{ root: string; release: string; kernel: string }> {
  const pkg = await kernelPackage();
  const root = path.join(cacheDir, pkg);
  const release = pkg.replace(/^linux-image-/, '');
  const kernel = path.join(root, 'boot', `vmlinuz-${release}`);
  if (existsSync(kernel)) return { root, release, kernel };
  await mkdir(cacheDir, { recursive: true });
  const debs = path.join(cacheDir, 'debs');
  await mkdir(debs, { recursive: true });
  if (!(await readdir(debs)).some((f) => f.startsWith(`${pkg}_`))) await run(['apt-get', 'download', pkg], { cwd: debs, timeoutMs: 300_000 });
  const deb = (await readdir(debs)).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
  if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${debs}`);
  const partial = `${root}.partial`;
  await rm(partial, { recursive: true, force: true });
  await run(['dpkg-deb', '-x', path.join(debs, deb), partial], { timeoutMs: 120_000 });
  await rename(partial, root);
  return { root, release, kernel };
}

/** Returns the kernel and initramfs, building whatever is not cached yet. */
export async function buildTestGuest(opts: { cacheDir?: string } = {}): Promise<TestGuest> {
  const cacheDir = opts.cacheDir ?? DEFAULT_GUEST_CACHE;
  const missing = ensurePackages(['busybox-static', 'cpio']);
  if (missing) throw new Error(missing);
  const { root, release, kernel } = await ensureKernel(cacheDir);
  const recipe = createHash('sha256').update(INIT).update(JSON.stringify(MODULES)).update(APPLETS.join(',')).update(release).digest('hex').slice(0, 16);
  const dir = path.join(cacheDir, `guest-${recipe}`);
  const initramfs = path.join(dir, 'initramfs.cpio.gz');
  const kernelCopy = path.join(dir, 'vmlinuz');
  if (existsSync(initramfs) && existsSync(kernelCopy)) return { kernel: kernelCopy, initramfs, dir, kernelRelease: release };

  const staging = `${dir}.staging-${process.pid}`;
  await rm(staging, { recursive: true, force: true });
  for (const d of ['bin', 'proc', 'sys', 'dev', 'lib/modules']) await mkdir(path.join(staging, d), { recursive: true });
  await copyFile('/bin/busybox', path.join(staging, 'bin/busybox'));
  for (const a of APPLETS) await symlink('busybox', path.join(staging, 'bin', a));
  for (const [name, rel] of Object.entries(MODULES))
    await copyFile(path.join(root, 'lib/modules', release, 'kernel', rel), path.join(staging, 'lib/modules', `${name}.ko`));
  await writeFile(path.join(staging, 'init'), INIT);
  await chmod(path.join(staging, 'init'), 0o755);
  const files = (await run(['find', '.', '-mindepth', '1'], { cwd: staging })).stdout;
  const cpio = await run(['cpio', '--quiet', '-o', '-H', 'newc', '--owner', '0:0'], { cwd: staging, input: files, binary: true });
  await mkdir(dir, { recursive: true });
  await writeFile(`${initramfs}.tmp`, gzipSync(Buffer.from(cpio.stdout, 'latin1')));
  await rename(`${initramfs}.tmp`, initramfs);
  await copyFile(kernel, `${kernelCopy}.tmp`);
  await rename(`${kernelCopy}.tmp`, kernelCopy);
  await rm(staging, { recursive: true, force: true });
  return { kernel: kernelCopy, initramfs, dir, kernelRelease: release };
}
