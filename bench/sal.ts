// SAL costs on real tools (root): btrfs VM-disk clones of a 1 GiB and a 20 GiB sparse base image (goal:
// the same time for both, since a clone is a snapshot that copies no data), and VM create→userspace
// through the qemu SAL against the same qemu command line spawned directly (goal: ratio ≤ 1.05).
// Rounds alternate the two sides so machine noise hits both alike; medians are reported. Last line: JSON.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import path from 'node:path';
import {
  VM_OPERATIONS,
  btrfsConfig,
  chooseAccel,
  cloneDisk,
  createSubvolume,
  deleteSubvolume,
  formatPool,
  mountPool,
  normalizeVmSpec,
  qemuCommandLine,
  resolveVmConfig,
  resolveVmSpec,
  unmountPool,
  vmPaths,
  waitForSerialMarker,
  type VmConfig,
} from '@writ/sal';
// The test guest and the loop/mount cleanup are test fixtures, not SAL API, so they are not exported by @writ/sal.
// eslint-disable-next-line no-restricted-imports
import { buildTestGuest, guestMarker } from '../sal/test/helpers/guest.ts';
// eslint-disable-next-line no-restricted-imports
import { releaseMountsAndLoops } from '../sal/test/helpers/loop.ts';
// eslint-disable-next-line no-restricted-imports
import { ensurePackages, isRoot } from '../sal/test/helpers/system.ts';

if (!isRoot) {
  console.error('bench sal needs root (loop devices, mount, btrfs, qemu with /dev/kvm)');
  process.exit(2);
}
const missing = ensurePackages(['btrfs-progs', 'qemu-system-x86', 'busybox-static', 'cpio']);
if (missing) {
  console.error(missing);
  process.exit(2);
}

const CLONES = Number(process.env.BENCH_CLONES ?? 15);
const BOOT_ROUNDS = Number(process.env.BENCH_BOOT_ROUNDS ?? 7);
const DATA_MIB = Number(process.env.BENCH_DATA_MIB ?? 256);
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const spread = (xs: number[]) => `min ${Math.min(...xs).toFixed(1)} / median ${median(xs).toFixed(1)} / max ${Math.max(...xs).toFixed(1)} ms`;
const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

const tag = randomBytes(3).toString('hex');
const root = await mkdtemp('/tmp/writ-bench-sal-');
const children = new Set<ChildProcess>();
const liveVms = new Set<{ name: string; config: VmConfig }>();
const vmOp = (capability: string) => {
  const op = VM_OPERATIONS.find((o) => o.capability === capability);
  if (!op) throw new Error(`no VM operation ${capability}`);
  return op;
};

/** A sparse disk image of `size` with `DATA_MIB` of real data spread over its whole length, flushed. */
async function writeBaseImage(file: string, size: number): Promise<void> {
  const fh = await open(file, 'wx', 0o600);
  try {
    await fh.truncate(size);
    const chunk = randomBytes(4 * MiB);
    const chunks = Math.max(1, Math.floor(DATA_MIB / 4));
    for (let i = 0; i < chunks; i++) {
      // A different first byte per chunk so no two extents hold identical data.
      chunk[0] = i & 0xff;
      const offset = Math.floor((i * (size - 4 * MiB)) / chunks / 4096) * 4096;
      await fh.write(chunk, 0, chunk.length, offset);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function benchClones(): Promise<{ clone1g: number[]; clone20g: number[] }> {
  const config = btrfsConfig({ mount: path.join(root, 'pool'), imageDir: path.join(root, 'images') });
  await formatPool(config, { image: 'pool.img', sizeBytes: 64 * GiB, label: `wb${tag}` });
  await mountPool(config, { image: 'pool.img' });
  try {
    const bases = { '1g': 1 * GiB, '20g': 20 * GiB } as const;
    for (const [name, size] of Object.entries(bases)) {
      await createSubvolume(config, { path: `base-${name}` });
      await writeBaseImage(path.join(config.mount, `base-${name}`, 'disk.raw'), size);
    }
    // Commit everything written so far: clones should not pay for the base images' writeback.
    const fh = await open(config.mount, 'r');
    await fh.sync();
    await fh.close();
    const out = { clone1g: [] as number[], clone20g: [] as number[] };
    const cloneOnce = async (base: '1g' | '20g', i: number): Promise<number> => {
      const t0 = process.hrtime.bigint();
      const r = await cloneDisk(config, { base: `base-${base}`, name: `c${base}-${i}` });
      const elapsed = ms(t0);
      if (!r.created) throw new Error(`clone ${r.path} already existed`);
      return elapsed;
    };
    await cloneOnce('1g', -1);
    await cloneOnce('20g', -1);
    for (let i = 0; i < CLONES; i++) {
      // Alternate which base goes first so neither always follows the other's transaction.
      const order: ('1g' | '20g')[] = i % 2 ? ['20g', '1g'] : ['1g', '20g'];
      for (const b of order) (b === '1g' ? out.clone1g : out.clone20g).push(await cloneOnce(b, i));
    }
    for (const b of ['1g', '20g']) for (let i = -1; i < CLONES; i++) await deleteSubvolume(config, { path: `disks/c${b}-${i}` });
    return out;
  } finally {
    await unmountPool(config, { detach: true }).catch((e: unknown) => console.error(`unmount: ${(e as Error).message}`));
  }
}

interface BootSample {
  totalMs: number;
  createMs?: number;
  bootMs?: number;
  waitMs?: number;
}

async function benchBoots(): Promise<{ sal: BootSample[]; direct: BootSample[]; accel: string }> {
  const guest = await buildTestGuest();
  const images = path.join(root, 'vm-images');
  await mkdir(images);
  const config: VmConfig = { driver: 'qemu', stateDir: path.join(root, 'vm-state'), imagesRoot: images, bootRoot: guest.dir, accel: 'auto' };
  const resolved = resolveVmConfig(config);
  const specFor = (name: string, id: string) => ({
    name,
    vcpus: 1,
    memoryMiB: 256,
    kernel: path.basename(guest.kernel),
    initramfs: path.basename(guest.initramfs),
    cmdline: `console=ttyS0 panic=-1 writ.id=${id}`,
  });

  const viaSal = async (round: number): Promise<BootSample> => {
    const id = `${tag}s${round}`;
    const name = `bs-${id}`;
    const live = { name, config };
    liveVms.add(live);
    const t0 = process.hrtime.bigint();
    await vmOp('vm.create').run(specFor(name, id), { config });
    const createMs = ms(t0);
    await vmOp('vm.boot').run({ name }, { config });
    const bootMs = ms(t0) - createMs;
    await vmOp('vm.serial.wait').run({ name, marker: guestMarker(id), timeoutMs: 120_000 }, { config });
    const totalMs = ms(t0);
    await vmOp('vm.delete').run({ name }, { config });
    liveVms.delete(live);
    return { totalMs, createMs, bootMs, waitMs: totalMs - createMs - bootMs };
  };

  const direct = async (round: number): Promise<BootSample> => {
    const id = `${tag}d${round}`;
    const name = `bd-${id}`;
    const t0 = process.hrtime.bigint();
    // Path resolution and the accelerator choice are what the SAL computes too; the probe is cached by then.
    const paths = vmPaths(resolved, name);
    await mkdir(paths.dir, { recursive: true, mode: 0o700 });
    const spec = await resolveVmSpec(resolved, normalizeVmSpec(specFor(name, id)));
    const { accel } = await chooseAccel(resolved, spec.kernel);
    // The SAL's argv, in the foreground and running at once: -daemonize and -S only exist so the SAL can
    // hand the VM over through QMP; a direct run needs neither.
    const argv = qemuCommandLine(spec, paths, { binary: resolved.qemuBinary, accel, daemonize: false, startPaused: false });
    const child = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore' });
    children.add(child);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      // Polled every 5 ms: the baseline is how soon qemu gets there, not how often someone looks.
      await waitForSerialMarker(paths.serialLog, guestMarker(id), { fromOffset: 0, timeoutMs: 120_000, pollMs: 5 });
      return { totalMs: ms(t0) };
    } finally {
      child.kill('SIGKILL');
      await exited;
      children.delete(child);
      await rm(paths.dir, { recursive: true, force: true });
    }
  };

  // Warm-up: builds nothing new, but runs the KVM probe (cached afterwards) and fills the page cache.
  await viaSal(-1);
  await direct(-1);
  const { accel, reason } = await chooseAccel(resolved, path.join(guest.dir, path.basename(guest.kernel)));
  const sal: BootSample[] = [];
  const dir: BootSample[] = [];
  for (let r = 0; r < BOOT_ROUNDS; r++) {
    if (r % 2) {
      dir.push(await direct(r));
      sal.push(await viaSal(r));
    } else {
      sal.push(await viaSal(r));
      dir.push(await direct(r));
    }
  }
  return { sal, direct: dir, accel: `${accel} (${reason})` };
}

let result: Record<string, unknown> = { bench: 'sal' };
try {
  const clones = await benchClones();
  console.log(`btrfs cloneDisk, ${CLONES} clones each, base images with ${DATA_MIB} MiB of real data spread over them:`);
  console.log(`  1 GiB sparse base:  ${spread(clones.clone1g)}`);
  console.log(`  20 GiB sparse base: ${spread(clones.clone20g)}`);
  const boots = await benchBoots();
  const salMs = median(boots.sal.map((s) => s.totalMs));
  const directMs = median(boots.direct.map((s) => s.totalMs));
  console.log(`VM create→userspace marker, ${BOOT_ROUNDS} alternating rounds, accel ${boots.accel}:`);
  console.log(`  through the SAL (vm.create + vm.boot + vm.serial.wait): ${spread(boots.sal.map((s) => s.totalMs))}`);
  console.log(
    `    of which create (qemu -daemonize -S): median ${median(boots.sal.map((s) => s.createMs!)).toFixed(1)} ms, boot (QMP cont): ${median(boots.sal.map((s) => s.bootMs!)).toFixed(1)} ms, serial wait (100 ms poll): ${median(boots.sal.map((s) => s.waitMs!)).toFixed(1)} ms`,
  );
  console.log(`  same qemu argv spawned directly (5 ms poll):            ${spread(boots.direct.map((s) => s.totalMs))}`);
  result = {
    bench: 'sal',
    clone_ms_1g: Number(median(clones.clone1g).toFixed(2)),
    clone_ms_20g: Number(median(clones.clone20g).toFixed(2)),
    clone_20g_over_1g: Number((median(clones.clone20g) / median(clones.clone1g)).toFixed(3)),
    vm_boot_ratio: Number((salMs / directMs).toFixed(3)),
    vm_boot_ms_sal: Number(salMs.toFixed(1)),
    vm_boot_ms_direct: Number(directMs.toFixed(1)),
    clones: CLONES,
    boot_rounds: BOOT_ROUNDS,
  };
} finally {
  for (const c of children) c.kill('SIGKILL');
  for (const { name, config } of liveVms)
    await vmOp('vm.delete')
      .run({ name }, { config })
      .catch((e: unknown) => console.error(`vm.delete ${name}: ${(e as Error).message}`));
  // Backstop for a run that failed half-way: nothing stays mounted or attached under our temp dir.
  releaseMountsAndLoops(root);
  await rm(root, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
