// Cleanup for tests that mount loop-backed images: whatever the test left mounted or attached under its
// temp dir is unmounted and detached, even when the code under test failed half-way.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/** Unmounts every mount under `dir` (deepest first) and detaches loop devices backed by files under it. */
export function releaseMountsAndLoops(dir: string): void {
  const points = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => unescape(l.split(' ')[4] ?? ''))
    .filter((p) => p === dir || p.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
  for (const p of points) {
    if (spawnSync('umount', [p]).status !== 0) spawnSync('umount', ['-l', p]);
  }
  const out = spawnSync('losetup', ['--json', '--list', '--output', 'NAME,BACK-FILE'], { encoding: 'utf8' }).stdout;
  const loops = out.trim() ? ((JSON.parse(out) as { loopdevices?: { name: string; 'back-file': string | null }[] }).loopdevices ?? []) : [];
  for (const l of loops) {
    if (l['back-file']?.startsWith(dir + '/')) spawnSync('losetup', ['--detach', l.name]);
  }
}

/** Loop devices currently backed by `file`. */
export function loopsBackedBy(file: string): string[] {
  const out = spawnSync('losetup', ['--json', '--list', '--output', 'NAME,BACK-FILE'], { encoding: 'utf8' }).stdout;
  const loops = out.trim() ? ((JSON.parse(out) as { loopdevices?: { name: string; 'back-file': string | null }[] }).loopdevices ?? []) : [];
  return loops.filter((l) => l['back-file'] === file).map((l) => l.name);
}

/** Can this machine attach a loop device at all? (Containers often cannot.) */
export function loopDevicesUsable(): boolean {
  return spawnSync('losetup', ['--find'], { encoding: 'utf8' }).status === 0;
}
