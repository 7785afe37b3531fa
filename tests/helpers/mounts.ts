// Real file systems for storage-fault tests (root only): a small tmpfs to fill, and an ext4 image on a loop
// device whose kernel error path makes it read-only under open files, as a failing disk does (a plain
// `mount -o remount,ro` is refused while PGlite holds files open for writing). unmountAll() in afterAll.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';

export interface Mount {
  dir: string;
  /** Lazy unmount (detaches even with files open), then the loop device and image if any. */
  unmount(): void;
}

const mounted: Mount[] = [];

const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

/** Whether this machine lets the test mount file systems; the reason when not (the test skips and prints it). */
export function mountSupport(): { ok: true } | { ok: false; reason: string } {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'not running as root (mounting a tmpfs or a loop device needs it)' };
  for (const tool of ['mount', 'umount', 'losetup', 'mkfs.ext4']) {
    try {
      run('sh', ['-c', `command -v ${tool}`]);
    } catch {
      return { ok: false, reason: `${tool} is not installed` };
    }
  }
  return { ok: true };
}

function track(m: Mount): Mount {
  mounted.push(m);
  return m;
}

export function mountTmpfs(dir: string, sizeMiB: number): Mount {
  mkdirSync(dir, { recursive: true });
  run('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0700`, 'tmpfs', dir]);
  return track({ dir, unmount: () => lazyUnmount(dir) });
}

/** An ext4 file system on a loop device over `image`, mounted with errors=remount-ro. */
export function mountExt4(dir: string, image: string, sizeMiB: number): Mount & { makeReadOnly(): void } {
  mkdirSync(dir, { recursive: true });
  run('truncate', ['-s', `${sizeMiB}M`, image]);
  run('mkfs.ext4', ['-q', '-F', image]);
  run('mount', ['-o', 'loop,errors=remount-ro', image, dir]);
  const device = run('findmnt', ['-n', '-o', 'SOURCE', dir]).trim();
  return Object.assign(track({ dir, unmount: () => lazyUnmount(dir) }), {
    /** Reports a file system error to ext4, which then makes itself read-only at once, open files or not. */
    makeReadOnly: () => run('sh', ['-c', `echo writ-test > /sys/fs/ext4/${path.basename(device)}/trigger_fs_error`]),
  });
}

function lazyUnmount(dir: string): void {
  try {
    run('umount', ['-l', dir]);
  } catch {
    /* not mounted (any more) */
  }
}

/** Detaches every mount these helpers made (loop devices go with their last user); for afterAll, failure or not. */
export function unmountAll(): void {
  for (const m of mounted.splice(0).reverse()) m.unmount();
}

/** Fills the file system holding `dir` to the last byte with one file; returns its path (remove it to free the space). */
export function fillDisk(dir: string): string {
  const filler = path.join(dir, 'filler');
  try {
    run('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k']);
  } catch {
    /* dd ends with ENOSPC: that is the point */
  }
  return filler;
}

export function freeDisk(filler: string): void {
  rmSync(filler, { force: true });
}
