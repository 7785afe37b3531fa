// Installs what a fresh machine lacks: npm dependencies, and (as root, through apt-get) the Debian
// packages the tests and the quickstart use. Plain JS so it runs before node_modules exists.
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');

export const TEST_PACKAGES = [
  'redis-server',
  'redis-sentinel',
  'btrfs-progs',
  'iproute2',
  'iputils-ping',
  'qemu-system-x86',
  'qemu-utils',
  'busybox-static',
  'cpio',
  'nix-bin',
  'kmod',
  'chromium',
  'ipxe',
  'ovmf',
  // The several-coords tests (tests/helpers/postgres.ts runs its server from /usr/lib/postgresql/15/bin).
  'postgresql',
];
export const QUICKSTART_PACKAGES = ['redis-server'];

function log(msg) {
  process.stderr.write(`[setup] ${msg}\n`);
}

export function ensureNodeModules() {
  if (existsSync(path.join(root, 'node_modules/.package-lock.json')) && existsSync(path.join(root, 'node_modules/tsx'))) return;
  log('installing npm dependencies (npm ci)…');
  // npm ci installs exactly the committed lockfile and never rewrites it. The lockfile must be generated from
  // scratch (rm package-lock.json && npm install --package-lock-only): one grown by incremental installs lacks
  // other platforms' optional packages, and npm ci then refuses it.
  const r = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) throw new Error('npm ci failed; run it by hand to see why (a lockfile out of step with package.json is the usual cause)');
}

const isInstalled = (p) => (spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8' }).stdout ?? '').includes('install ok installed');

/** Installs missing Debian packages when root; otherwise says exactly what to install. Returns the still-missing ones. */
export function ensureDebianPackages(pkgs) {
  if (!existsSync('/usr/bin/dpkg-query')) {
    log(`not a Debian system: make sure these are installed: ${pkgs.join(' ')}`);
    return pkgs;
  }
  const missing = pkgs.filter((p) => !isInstalled(p));
  if (missing.length === 0) return [];
  if (process.getuid?.() !== 0) {
    log(`missing Debian packages: ${missing.join(' ')}\n[setup] install them with: sudo apt-get install -y ${missing.join(' ')}`);
    return missing;
  }
  log(`installing Debian packages: ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const lock = ['-o', 'DPkg::Lock::Timeout=300'];
  let r = spawnSync('apt-get', [...lock, 'install', '-y', '--no-install-recommends', ...missing], { stdio: ['ignore', 'ignore', 'inherit'], env });
  if (r.status !== 0) {
    spawnSync('apt-get', [...lock, 'update', '-qq'], { stdio: ['ignore', 'ignore', 'inherit'], env });
    r = spawnSync('apt-get', [...lock, 'install', '-y', '--no-install-recommends', ...missing], { stdio: ['ignore', 'ignore', 'inherit'], env });
  }
  const still = pkgs.filter((p) => !isInstalled(p));
  if (still.length) log(`could not install: ${still.join(' ')} (tests that need them will say so and skip)`);
  return still;
}
