// Test helpers for tests that need root and Debian packages. Tests call `requireRoot()` and
// `ensurePackages()` in beforeAll and skip with a printed reason only where the machine refuses.
import { execFileSync, spawnSync } from 'node:child_process';

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** Installs Debian packages that are missing (as root, through apt-get); returns a reason string when it cannot. */
export function ensurePackages(pkgs: string[]): string | null {
  const missing = pkgs.filter(
    (p) => spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8' }).stdout?.includes('install ok installed') !== true,
  );
  if (missing.length === 0) return null;
  if (!isRoot) return `needs root to install ${missing.join(' ')}`;
  const opts = { stdio: 'pipe' as const, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, timeout: 600_000 };
  const lock = ['-o', 'DPkg::Lock::Timeout=300'];
  let r = spawnSync('apt-get', [...lock, 'install', '-y', '--no-install-recommends', ...missing], opts);
  if (r.status !== 0) {
    spawnSync('apt-get', [...lock, 'update', '-qq'], opts);
    r = spawnSync('apt-get', [...lock, 'install', '-y', '--no-install-recommends', ...missing], opts);
  }
  if (r.status !== 0) return `apt-get install ${missing.join(' ')} failed: ${String(r.stderr).slice(-500)}`;
  return null;
}

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8' });
}
