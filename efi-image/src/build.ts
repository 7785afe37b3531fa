// Builds the node boot image from Debian packages already on this machine, without loop mounts or root:
// an initramfs (busybox, Node and the bundled runner, the drivers it needs, /init), a UKI (systemd-boot's
// EFI stub + kernel + initramfs + os-release + command line) and a GPT disk image (an ESP with the UKI at the
// default boot path and an empty state partition). Same inputs, same bytes: sorted cpio with one mtime,
// gzip without a name or time, fixed GPT and FAT identifiers, and the PE timestamp set from SOURCE_DATE_EPOCH.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { mkdir, open, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { WritError } from '@writ/protocol';
import { bootCmdline, type BootConfig } from './boot-config.ts';
import { writeCpio, type CpioEntry } from './cpio.ts';

const run = promisify(execFile);
const HERE = path.dirname(new URL(import.meta.url).pathname);
const REPO = path.resolve(HERE, '../..');
const STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
const DEFAULT_EPOCH = 1_704_067_200; // 2024-01-01: FAT cannot hold dates before 1980
/** Disk tools an install plan needs, with the Debian package each comes from. */
const INSTALL_TOOLS: readonly (readonly [string, string])[] = [
  ['sfdisk', 'fdisk'],
  ['blkid', 'util-linux'],
  ['mkfs.btrfs', 'btrfs-progs'],
  ['btrfs', 'btrfs-progs'],
];

/** Drivers the image loads when the kernel has them as modules: virtio, common disk controllers and NICs, btrfs. */
const MODULES = [
  'virtio_pci',
  'virtio_blk',
  'virtio_net',
  'virtio_scsi',
  'virtio_rng',
  'sd_mod',
  'ahci',
  'nvme',
  'btrfs',
  'e1000',
  'e1000e',
  'igb',
  'ixgbe',
  'i40e',
  'ice',
  'bnxt_en',
  'mlx5_core',
  'r8169',
  'tg3',
];

export interface ImageOptions {
  outDir: string;
  boot: BootConfig;
  /** More kernel command line words (e.g. `console=ttyS0`). */
  extraCmdline?: string;
  /** The kernel (default: the newest /boot/vmlinuz-*). Its modules come from /lib/modules/<version>. */
  kernel?: string;
  sourceDateEpoch?: number;
  onProgress?: (step: string, detail?: object) => void;
}

export interface Artifact {
  file: string;
  bytes: number;
  sha256: string;
}

export interface ImageManifest {
  image: 'writ-node';
  sourceDateEpoch: number;
  kernel: { file: string; version: string; sha256: string };
  node: { file: string; version: string; sha256: string };
  busybox: { sha256: string };
  cmdline: string;
  modules: string[];
  artifacts: Record<string, Artifact>;
}

function fail(msg: string): never {
  throw new WritError('CONFIG_INVALID', msg);
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function tool(cmd: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  try {
    return (await run(cmd, args, { env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024 })).stdout;
  } catch (e) {
    const err = e as { code?: string; stderr?: string; message: string };
    if (err.code === 'ENOENT')
      fail(
        `${cmd} is not installed (apt-get install ${({ objcopy: 'binutils', objdump: 'binutils', sfdisk: 'fdisk', mkfs_vfat: 'dosfstools', 'mkfs.vfat': 'dosfstools', mmd: 'mtools', mcopy: 'mtools' } as Record<string, string>)[cmd] ?? cmd})`,
      );
    throw new WritError('INTERNAL', `${cmd} ${args.join(' ')} failed: ${(err.stderr ?? err.message).trim()}`);
  }
}

function newestKernel(): string {
  const ks = existsSync('/boot')
    ? readdirSync('/boot')
        .filter((f) => f.startsWith('vmlinuz-'))
        .sort()
    : [];
  if (ks.length === 0) fail('no kernel under /boot: apt-get install linux-image-cloud-amd64 (or pass --kernel FILE)');
  return path.join('/boot', ks.at(-1)!);
}

/** Modules to load in order (dependencies first), from the kernel's modules.dep. */
function moduleOrder(modDir: string): string[] {
  const deps = new Map<string, string[]>();
  const byName = new Map<string, string>();
  for (const line of readFileSync(path.join(modDir, 'modules.dep'), 'utf8').split('\n')) {
    const [mod, rest] = line.split(':');
    if (!mod) continue;
    deps.set(mod, (rest ?? '').trim().split(/\s+/).filter(Boolean));
    byName.set(
      path
        .basename(mod)
        .replace(/\.ko(\.\w+)?$/, '')
        .replace(/-/g, '_'),
      mod,
    );
  }
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (m: string) => {
    if (seen.has(m)) return;
    seen.add(m);
    for (const d of deps.get(m) ?? []) visit(d);
    order.push(m);
  };
  for (const name of MODULES) {
    const m = byName.get(name);
    if (m) visit(m);
  }
  for (const m of order) if (!/\.ko$/.test(m)) fail(`module ${m} is compressed; this builder loads plain .ko files with busybox insmod`);
  return order;
}

/** The shared libraries a dynamic executable needs, as real files (by ldd). */
async function sharedLibs(exe: string): Promise<string[]> {
  const out = await tool('ldd', [exe]);
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]!);
  }
  return libs.sort();
}

async function bundleRunner(workDir: string): Promise<{ main: Buffer; worker: Buffer }> {
  const { build } = await import('esbuild');
  // CommonJS dependencies call require(); an ESM bundle gets one from createRequire.
  const banner = "import { createRequire as __writCreateRequire } from 'node:module'; const require = __writCreateRequire(import.meta.url);";
  const common = {
    bundle: true,
    platform: 'node' as const,
    format: 'esm' as const,
    target: 'node20',
    minify: true,
    legalComments: 'none' as const,
    banner: { js: banner },
    logLevel: 'warning' as const,
    absWorkingDir: REPO,
  };
  await build({ ...common, entryPoints: [path.join(HERE, 'node-main.ts')], outfile: path.join(workDir, 'node.mjs') });
  await build({ ...common, entryPoints: [path.join(REPO, 'runner/src/sandbox/worker.ts')], outfile: path.join(workDir, 'worker-entry.mjs') });
  return { main: await readFile(path.join(workDir, 'node.mjs')), worker: await readFile(path.join(workDir, 'worker-entry.mjs')) };
}

function dirsOf(entries: CpioEntry[]): CpioEntry[] {
  const have = new Set(entries.map((e) => e.path));
  const dirs: CpioEntry[] = [];
  for (const e of entries) {
    for (let d = path.posix.dirname(e.path); d !== '.' && d !== '/'; d = path.posix.dirname(d)) {
      if (have.has(d)) continue;
      have.add(d);
      dirs.push({ path: d, kind: 'dir', mode: 0o755 });
    }
  }
  return dirs;
}

export interface InitramfsResult {
  bytes: Buffer;
  kernelVersion: string;
  modules: string[];
  nodeVersion: string;
  busyboxSha256: string;
  nodeSha256: string;
}

export async function buildInitramfs(workDir: string, kernel: string, progress: (s: string) => void): Promise<InitramfsResult> {
  const kernelVersion = path.basename(kernel).replace(/^vmlinuz-/, '');
  const modDir = path.join('/lib/modules', kernelVersion);
  if (!existsSync(path.join(modDir, 'modules.dep'))) fail(`no modules for kernel ${kernelVersion} under ${modDir}`);
  const busybox = '/bin/busybox';
  if (!existsSync(busybox)) fail('busybox is not installed (apt-get install busybox-static)');
  const node = realpathSync(process.execPath);
  progress('bundling the runner');
  const bundle = await bundleRunner(workDir);
  progress('collecting files');
  const entries: CpioEntry[] = [];
  const file = (p: string, data: Uint8Array, mode = 0o644) => entries.push({ path: p, kind: 'file', mode, data });
  const bb = readFileSync(busybox);
  file('bin/busybox', bb, 0o755);
  const applets = (await tool(busybox, ['--list'])).split('\n').filter((a) => a && a !== 'busybox');
  // Install plans partition the target disk and make btrfs on it (runner/src/install.ts, through the btrfs SAL):
  // util-linux's sfdisk and blkid (busybox's blkid lacks -p) and btrfs-progs, with their libraries.
  const diskTools = INSTALL_TOOLS.map(([cmd, pkg]) => {
    const p = ['/usr/sbin', '/usr/bin', '/sbin', '/bin'].map((d) => path.join(d, cmd)).find((c) => existsSync(c));
    if (!p) fail(`${cmd} is not installed (apt-get install ${pkg})`);
    return { cmd, path: realpathSync(p!) };
  });
  for (const a of applets) if (!diskTools.some((t) => t.cmd === a)) entries.push({ path: `bin/${a}`, kind: 'symlink', target: 'busybox' });
  for (const l of ['sbin', 'usr/sbin']) entries.push({ path: l, kind: 'symlink', target: l === 'sbin' ? 'bin' : '../bin' });
  const nodeBytes = readFileSync(node);
  file('usr/bin/node', nodeBytes, 0o755);
  const libs = new Set(await sharedLibs(node));
  for (const t of diskTools) {
    file(`bin/${t.cmd}`, readFileSync(t.path), 0o755);
    for (const lib of await sharedLibs(t.path)) libs.add(lib);
  }
  for (const lib of [...libs].sort()) file(lib.replace(/^\//, ''), readFileSync(realpathSync(lib)), 0o755);
  file('opt/writ/node.mjs', bundle.main);
  file('opt/writ/worker-entry.mjs', bundle.worker);
  // The sandbox resolves the QuickJS wasm through its package at run time: the package file and the wasm only.
  const qjs = path.join(REPO, 'node_modules/@jitl/quickjs-wasmfile-release-sync');
  file('opt/writ/node_modules/@jitl/quickjs-wasmfile-release-sync/package.json', readFileSync(path.join(qjs, 'package.json')));
  file('opt/writ/node_modules/@jitl/quickjs-wasmfile-release-sync/dist/emscripten-module.wasm', readFileSync(path.join(qjs, 'dist/emscripten-module.wasm')));
  const modules = moduleOrder(modDir);
  for (const m of modules) file(`lib/modules/${m}`, readFileSync(path.join(modDir, m)));
  file('etc/writ/modules', Buffer.from(modules.map((m) => `${m}\n`).join('')));
  file('init', readFileSync(path.join(HERE, 'rootfs/init')), 0o755);
  file('etc/writ/udhcpc.sh', readFileSync(path.join(HERE, 'rootfs/udhcpc.sh')), 0o755);
  file('etc/os-release', Buffer.from(osRelease()));
  file('etc/passwd', Buffer.from('root:x:0:0:root:/root:/bin/sh\n'));
  file('etc/group', Buffer.from('root:x:0:\n'));
  file('etc/hosts', Buffer.from('127.0.0.1 localhost\n'));
  entries.push({ path: 'dev/console', kind: 'chardev', mode: 0o600, major: 5, minor: 1 });
  for (const d of ['proc', 'sys', 'dev', 'run', 'tmp', 'root', 'mnt', 'var/lib/writ']) entries.push({ path: d, kind: 'dir', mode: 0o755 });
  entries.push(...dirsOf(entries));
  progress('writing the cpio archive');
  const cpio = writeCpio(entries, 0);
  progress('compressing the initramfs');
  // Level 6: level 9 saved ~2% here for twice the time.
  const bytes = gzipSync(cpio, { level: 6 });
  return { bytes, kernelVersion, modules, nodeVersion: process.version, busyboxSha256: sha256(bb), nodeSha256: sha256(nodeBytes) };
}

function osRelease(): string {
  return 'NAME="Writ node"\nID=writ-node\nPRETTY_NAME="Writ node image"\nVERSION_ID=0.1\n';
}

/** Section VMAs after the stub's last section, each aligned to 4 KiB (as ukify places them). */
async function stubEnd(): Promise<number> {
  const out = await tool('objdump', ['-h', STUB]);
  let end = 0;
  for (const m of out.matchAll(/^\s*\d+\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s/gm)) end = Math.max(end, parseInt(m[2]!, 16) + parseInt(m[1]!, 16));
  if (end === 0) fail(`cannot read the sections of ${STUB}`);
  return end;
}

/** Assembles the UKI with objcopy, then sets the PE header's timestamp so the file is reproducible. */
export async function buildUki(workDir: string, kernel: string, initrd: string, cmdline: string, epoch: number): Promise<Buffer> {
  if (!existsSync(STUB)) fail(`${STUB} is missing: apt-get install systemd-boot-efi`);
  const align = (n: number) => Math.ceil(n / 0x1000) * 0x1000;
  const osrel = path.join(workDir, 'os-release');
  const cmd = path.join(workDir, 'cmdline');
  await writeFile(osrel, osRelease());
  await writeFile(cmd, `${cmdline}\0`);
  let vma = align(await stubEnd());
  const args: string[] = [];
  for (const [name, f] of [
    ['.osrel', osrel],
    ['.cmdline', cmd],
    ['.linux', kernel],
    ['.initrd', initrd],
  ] as const) {
    args.push('--add-section', `${name}=${f}`, '--change-section-vma', `${name}=0x${vma.toString(16)}`);
    vma = align(vma + statSync(f).size);
  }
  const out = path.join(workDir, 'uki.efi');
  await tool('objcopy', [...args, STUB, out]);
  const uki = await readFile(out);
  const pe = uki.readUInt32LE(0x3c);
  if (uki.toString('latin1', pe, pe + 4) !== 'PE\0\0') fail('objcopy did not write a PE file');
  uki.writeUInt32LE(epoch >>> 0, pe + 8); // COFF TimeDateStamp
  // objcopy's checksum covered the time it wrote: compute it again over the bytes as they are now.
  const sumAt = pe + 24 + 64;
  uki.writeUInt32LE(0, sumAt);
  uki.writeUInt32LE(peChecksum(uki), sumAt);
  return uki;
}

/** The PE image checksum: 16-bit one's-complement-style sum of the file (checksum field zero) plus its length. */
function peChecksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) {
    sum += b.readUInt16LE(i);
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  if (b.length % 2) {
    sum += b[b.length - 1]!;
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  return ((sum & 0xffff) + b.length) >>> 0;
}

export async function writeArtifact(outDir: string, name: string, bytes: Uint8Array): Promise<Artifact> {
  const file = path.join(outDir, name);
  await writeFile(file, bytes);
  return { file: name, bytes: bytes.length, sha256: sha256(bytes) };
}

/** initramfs, kernel copy and UKI into outDir, with manifest.json. */
export async function buildImage(o: ImageOptions): Promise<ImageManifest> {
  const progress = (s: string, d?: object) => o.onProgress?.(s, d);
  const epoch = o.sourceDateEpoch ?? (process.env.SOURCE_DATE_EPOCH ? Number(process.env.SOURCE_DATE_EPOCH) : DEFAULT_EPOCH);
  if (!Number.isInteger(epoch) || epoch < 315_532_800) fail(`SOURCE_DATE_EPOCH ${epoch}: expected whole seconds after 1980`);
  const kernel = o.kernel ?? newestKernel();
  if (!existsSync(kernel)) fail(`kernel ${kernel} does not exist`);
  const cmdline = [bootCmdline(o.boot), o.extraCmdline ?? ''].filter(Boolean).join(' ');
  await mkdir(o.outDir, { recursive: true });
  const work = path.join(o.outDir, '.work');
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  const init = await buildInitramfs(work, kernel, progress);
  const artifacts: Record<string, Artifact> = {};
  artifacts.initramfs = await writeArtifact(o.outDir, 'initramfs.img', init.bytes);
  const kernelBytes = await readFile(kernel);
  artifacts.kernel = await writeArtifact(o.outDir, 'vmlinuz', kernelBytes);
  progress('assembling the UKI');
  const uki = await buildUki(work, kernel, path.join(o.outDir, 'initramfs.img'), cmdline, epoch);
  artifacts.uki = await writeArtifact(o.outDir, 'writ-node.efi', uki);
  await rm(work, { recursive: true, force: true });
  const manifest: ImageManifest = {
    image: 'writ-node',
    sourceDateEpoch: epoch,
    kernel: { file: kernel, version: init.kernelVersion, sha256: sha256(kernelBytes) },
    node: { file: realpathSync(process.execPath), version: init.nodeVersion, sha256: init.nodeSha256 },
    busybox: { sha256: init.busyboxSha256 },
    cmdline,
    modules: init.modules,
    artifacts,
  };
  await writeManifest(o.outDir, manifest);
  return manifest;
}

export async function writeManifest(outDir: string, m: ImageManifest): Promise<void> {
  await writeFile(path.join(outDir, 'manifest.json'), `${JSON.stringify(m, null, 2)}\n`);
}

export interface UsbOptions extends ImageOptions {
  /** ESP size (default: the UKI plus 16 MiB, rounded up to whole MiB). */
  espMiB?: number;
  /** State partition size (default 1024 MiB: the node reports itself unhealthy under 512 MiB free). */
  stateMiB?: number;
}

/**
 * The UKI on a GPT disk image: partition 1 an ESP (FAT, the UKI at EFI/BOOT/BOOTX64.EFI), partition 2 an empty
 * state partition named `writ-state` that the node formats on first boot. Written with sfdisk, mkfs.vfat and
 * mtools into plain files; no loop device, no mount.
 */
export async function buildUsb(o: UsbOptions): Promise<ImageManifest> {
  const manifest = await buildImage(o);
  const progress = (s: string, d?: object) => o.onProgress?.(s, d);
  const uki = path.join(o.outDir, 'writ-node.efi');
  const ukiMiB = Math.ceil((await stat(uki)).size / 1048576);
  const espMiB = o.espMiB ?? ukiMiB + 16;
  const stateMiB = o.stateMiB ?? 1024;
  if (espMiB < ukiMiB + 1) fail(`--esp-mib ${espMiB} is too small for the ${ukiMiB} MiB UKI`);
  if (stateMiB < 16) fail('--state-mib must be at least 16');
  const epoch = manifest.sourceDateEpoch;
  progress('formatting the ESP');
  const esp = path.join(o.outDir, '.esp.img');
  await rm(esp, { force: true });
  const env = { SOURCE_DATE_EPOCH: String(epoch), MTOOLS_SKIP_CHECK: '1', TZ: 'UTC' };
  await tool('mkfs.vfat', ['-F', '32', '-n', 'WRIT-ESP', '-i', '57524954', '--invariant', '-C', esp, String(espMiB * 1024)], env);
  await utimes(uki, epoch, epoch);
  await tool('mmd', ['-i', esp, '::/EFI', '::/EFI/BOOT'], env);
  await tool('mcopy', ['-m', '-i', esp, uki, '::/EFI/BOOT/BOOTX64.EFI'], env);
  progress('writing the partition table');
  const disk = path.join(o.outDir, 'writ-usb.img');
  await rm(disk, { force: true });
  const totalMiB = 1 + espMiB + stateMiB + 1;
  const fh = await open(disk, 'w');
  await fh.truncate(totalMiB * 1048576);
  await fh.close();
  const script = [
    'label: gpt',
    'label-id: 57524954-0000-4000-8000-000000000001',
    'unit: sectors',
    `start=2048, size=${espMiB * 2048}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=57524954-0000-4000-8000-000000000002, name="EFI system"`,
    `start=${2048 + espMiB * 2048}, size=${stateMiB * 2048}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=57524954-0000-4000-8000-000000000003, name="writ-state"`,
  ].join('\n');
  await runWithInput('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', disk], script);
  progress('copying the ESP into the disk image');
  const espBytes = await readFile(esp);
  const dh = await open(disk, 'r+');
  await dh.write(espBytes, 0, espBytes.length, 2048 * 512);
  await dh.close();
  await rm(esp, { force: true });
  // Hashed as a stream: the image is mostly the (sparse) state partition, a GiB by default.
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(disk, { highWaterMark: 4 * 1048576 })) hash.update(chunk as Buffer);
  manifest.artifacts.usb = { file: 'writ-usb.img', bytes: (await stat(disk)).size, sha256: hash.digest('hex') };
  await writeManifest(o.outDir, manifest);
  return manifest;
}

function runWithInput(cmd: string, args: string[], input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, (err, _out, stderr) => {
      if (!err) return resolve();
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return reject(new WritError('CONFIG_INVALID', `${cmd} is not installed (apt-get install fdisk)`));
      reject(new WritError('INTERNAL', `${cmd} failed: ${stderr.trim() || err.message}`));
    });
    child.stdin!.end(input);
  });
}
