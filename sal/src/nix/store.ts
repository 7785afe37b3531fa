// Nix builds, closure copies and profiles. Installs (profile set, copy-in) take only store paths pinned
// in the envelope (X7); builds and copies run with the locked-down options from config.ts.
import { mkdir, readlink } from 'node:fs/promises';
import path from 'node:path';
import { WritError } from '@writ/protocol';
import { checkName, confine } from '../confine.ts';
import { run } from '../exec.ts';
import { allowedSubstituters, lockedDownOptions, NIX_COMMAND, nixEnv, type NixConfig } from './config.ts';

/** Refuses every path that is not pinned exactly (a pinned top-level path brings its closure with it). */
export function assertPinned(paths: readonly string[], pins: readonly string[]): void {
  const unpinned = paths.filter((p) => !pins.includes(p));
  if (unpinned.length > 0) {
    throw new WritError('NIX_PATH_NOT_PINNED', `store path ${unpinned[0]} is not pinned in the envelope`, { unpinned, pinned: [...pins] });
  }
}

/** Store paths among `paths` that the configured store does not hold. */
export async function invalidStorePaths(config: NixConfig, paths: readonly string[]): Promise<string[]> {
  const r = await run(['nix-store', '--check-validity', '--print-invalid', ...paths], { env: nixEnv(config), timeoutMs: 60_000 });
  return r.stdout.split('\n').filter(Boolean);
}

async function assertInStore(config: NixConfig, paths: readonly string[]): Promise<void> {
  const missing = await invalidStorePaths(config, paths);
  if (missing.length > 0) throw new WritError('RESOURCE_NOT_FOUND', `store path ${missing[0]} is not in the store`, { missing });
}

export interface NixBuildArgs {
  file: string;
  attr?: string;
  substituters?: string[];
}

/** Builds `file` (relative to the sources root) without creating a GC root; returns the output paths. */
export async function nixBuild(config: NixConfig, args: NixBuildArgs): Promise<{ outPaths: string[] }> {
  if (!config.sourcesRoot) throw new WritError('CONFIG_INVALID', 'nix.build needs sourcesRoot in the nix config');
  const substituters = allowedSubstituters(config, args.substituters);
  const file = await confine(config.sourcesRoot, args.file, 'nix file');
  const argv = ['nix-build', file, '--no-out-link', ...lockedDownOptions(config, substituters), '--option', 'restrict-eval', 'true', '-I', `writ-sources=${config.sourcesRoot}`];
  if (args.attr !== undefined) argv.push('-A', args.attr);
  const r = await run(argv, { env: nixEnv(config), timeoutMs: config.buildTimeoutMs, reject: false });
  if (r.failed) {
    const stderr = r.stderr.slice(-4000);
    const last = stderr.trim().split('\n').filter((l) => !l.startsWith('warning:')).slice(-1)[0] ?? '';
    throw new WritError('NIX_BUILD_FAILED', `nix-build ${args.file} failed (exit ${r.exitCode}): ${last.slice(0, 300)}`, { file: args.file, exitCode: r.exitCode, stderr });
  }
  return { outPaths: r.stdout.split('\n').filter((l) => l.startsWith('/nix/store/')) };
}

/** Copies the closures of `paths` into a binary-cache directory under the export root, signed when a key is configured. */
export async function nixCopyOut(config: NixConfig, args: { paths: string[]; to: string }): Promise<{ to: string; paths: string[]; signed: boolean }> {
  if (!config.exportRoot) throw new WritError('CONFIG_INVALID', 'nix.copy-out needs exportRoot in the nix config');
  await mkdir(config.exportRoot, { recursive: true });
  const dir = await confine(config.exportRoot, checkName(args.to, 'cache name'), 'cache directory');
  await assertInStore(config, args.paths);
  const url = `file://${dir}${config.signingKeyFile ? `?secret-key=${config.signingKeyFile}` : ''}`;
  await run(['nix', ...NIX_COMMAND, 'copy', ...lockedDownOptions(config), '--to', url, ...args.paths], { env: nixEnv(config), timeoutMs: 30 * 60_000 });
  return { to: dir, paths: [...args.paths], signed: !!config.signingKeyFile };
}

/** Copies pinned paths (with their closures) in from a configured substituter; signatures are required. */
export async function nixCopyIn(config: NixConfig, args: { paths: string[]; from: string }, pins: readonly string[]): Promise<{ copied: string[]; present: string[] }> {
  allowedSubstituters(config, [args.from]);
  assertPinned(args.paths, pins);
  const missing = await invalidStorePaths(config, args.paths);
  const present = args.paths.filter((p) => !missing.includes(p));
  if (missing.length === 0) return { copied: [], present };
  await run(['nix', ...NIX_COMMAND, 'copy', ...lockedDownOptions(config, [args.from]), '--from', args.from, ...missing], { env: nixEnv(config), timeoutMs: 30 * 60_000 });
  return { copied: missing, present };
}

export interface Generation {
  generation: number;
  path: string | null;
  createdAt: string;
  current: boolean;
}

function profilePath(config: NixConfig, profile: string): string {
  return path.join(config.profilesRoot, checkName(profile, 'profile'));
}

async function linkTarget(p: string): Promise<string | null> {
  try {
    const target = await readlink(p);
    return path.isAbsolute(target) ? target : path.join(path.dirname(p), target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

/** The store path a profile points at now, or null for a profile that does not exist yet. */
export async function currentProfilePath(config: NixConfig, profile: string): Promise<string | null> {
  const link = await linkTarget(profilePath(config, profile));
  return link === null ? null : linkTarget(link);
}

export async function nixGenerations(config: NixConfig, args: { profile: string }): Promise<{ profile: string; current: number | null; generations: Generation[] }> {
  const p = profilePath(config, args.profile);
  const r = await run(['nix-env', '--profile', p, '--list-generations', ...lockedDownOptions(config)], { env: nixEnv(config) });
  const generations: Generation[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*(\d+)\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s*(\(current\))?\s*$/.exec(line);
    if (!m) continue;
    const generation = Number(m[1]);
    generations.push({ generation, path: await linkTarget(`${p}-${generation}-link`), createdAt: m[2] ?? '', current: m[3] !== undefined });
  }
  return { profile: p, current: generations.find((g) => g.current)?.generation ?? null, generations };
}

/** Points a profile at a pinned store path; doing it twice leaves one generation (`changed: false`). */
export async function nixProfileSet(config: NixConfig, args: { profile: string; path: string }, pins: readonly string[]): Promise<{ changed: boolean; generation: number | null; path: string }> {
  assertPinned([args.path], pins);
  const p = profilePath(config, args.profile);
  if ((await currentProfilePath(config, args.profile)) === args.path) {
    return { changed: false, generation: (await nixGenerations(config, args)).current, path: args.path };
  }
  await assertInStore(config, [args.path]);
  await mkdir(config.profilesRoot, { recursive: true });
  await run(['nix-env', '--profile', p, '--set', args.path, ...lockedDownOptions(config)], { env: nixEnv(config) });
  return { changed: true, generation: (await nixGenerations(config, args)).current, path: args.path };
}

/** Moves a profile back one generation; there being none older is RESOURCE_NOT_FOUND. */
export async function nixProfileRollback(config: NixConfig, args: { profile: string }): Promise<{ from: number | null; to: number | null; path: string | null }> {
  const before = await nixGenerations(config, args);
  const older = before.generations.filter((g) => before.current !== null && g.generation < before.current);
  if (older.length === 0) throw new WritError('RESOURCE_NOT_FOUND', `profile ${args.profile} has no generation older than ${before.current ?? 'none'}`, { profile: args.profile });
  await run(['nix-env', '--profile', profilePath(config, args.profile), '--rollback', ...lockedDownOptions(config)], { env: nixEnv(config) });
  const after = await nixGenerations(config, args);
  return { from: before.current, to: after.current, path: await currentProfilePath(config, args.profile) };
}
