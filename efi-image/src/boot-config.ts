// What a booted node is told on its kernel command line (`writ.*=` words), written by the image builder and
// read by the node's entry: one owner for both sides, so a name cannot drift between them.
import { WritError, trustKeyB64url } from '@writ/protocol';

export interface BootConfig {
  coordUrl: string;
  /** The enrollment token a rule may auto-accept on; absent when the operator accepts every node by hand. */
  token: string | null;
  redisUrl: string;
  clusterId: string;
  /** Pinned admin public keys (base64url): the first key set this node accepts must be signed by them. */
  adminKeys: string[];
  adminThreshold: number;
}

/**
 * How this boot came about: `normal` (the UKI from a disk), or what the coord's iPXE answer chose (`writ.boot=`
 * on the command line it served): `install` (an operator ordered this machine (re)installed: its install plan
 * may wipe the plan's disk), `enroll` (a machine the coord does not know: it enrols, and a plan installs only
 * to a blank disk, as on a normal boot), or `rescue` — the node registers and heartbeats but runs no jobs, and
 * its state partition is never formatted.
 */
export type BootMode = 'normal' | 'install' | 'enroll' | 'rescue';
export const BOOT_MODES: readonly BootMode[] = ['normal', 'install', 'enroll', 'rescue'];

const KEYS = {
  coordUrl: 'writ.coord',
  token: 'writ.token',
  redisUrl: 'writ.redis',
  clusterId: 'writ.cluster',
  adminKeys: 'writ.admin',
  adminThreshold: 'writ.admin_threshold',
  mode: 'writ.boot',
} as const;
// A kernel command line word cannot hold spaces or quotes safely through every boot path (UKI, iPXE).
const SAFE = /^[A-Za-z0-9._~:/?#[\]@!$&'()*+,;=%-]+$/;

function bad(msg: string): never {
  throw new WritError('CONFIG_INVALID', msg);
}

/** Checks a boot config and renders it as kernel command line words. */
export function bootCmdline(c: BootConfig): string {
  checkBootConfig(c);
  const words = [
    `${KEYS.coordUrl}=${c.coordUrl}`,
    `${KEYS.redisUrl}=${c.redisUrl}`,
    `${KEYS.clusterId}=${c.clusterId}`,
    `${KEYS.adminKeys}=${c.adminKeys.join(',')}`,
    `${KEYS.adminThreshold}=${c.adminThreshold}`,
  ];
  if (c.token) words.push(`${KEYS.token}=${c.token}`);
  return words.join(' ');
}

export function checkBootConfig(c: BootConfig): void {
  for (const [name, v] of [
    ['coord URL', c.coordUrl],
    ['Redis URL', c.redisUrl],
    ['cluster id', c.clusterId],
    ['token', c.token ?? 'x'],
  ] as const) {
    if (!SAFE.test(v)) bad(`the ${name} ${JSON.stringify(v)} cannot go on a kernel command line (no spaces, quotes or control characters)`);
  }
  for (const [name, v] of [
    ['coord', c.coordUrl],
    ['Redis', c.redisUrl],
  ] as const) {
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      bad(`the ${name} URL ${v} is not a URL`);
    }
    const ok = name === 'coord' ? ['http:', 'https:'] : ['redis:', 'rediss:'];
    if (!ok.includes(u.protocol)) bad(`the ${name} URL ${v} must use ${ok.join(' or ')}`);
  }
  if (c.token !== null && !/^[A-Za-z0-9_-]{16,128}$/.test(c.token))
    bad('an enrollment token is 16 to 128 characters of A-Z, a-z, 0-9, _ and - (writ enroll rules add prints one)');
  if (c.adminKeys.length === 0) bad('at least one admin public key is needed (--admin-key FILE): the node accepts key sets only from them');
  for (const k of c.adminKeys) if (!/^[A-Za-z0-9_-]{43}$/.test(k)) bad(`admin key ${k} is not a base64url ed25519 public key`);
  if (!Number.isInteger(c.adminThreshold) || c.adminThreshold < 1 || c.adminThreshold > c.adminKeys.length)
    bad(`the admin threshold must be 1 to ${c.adminKeys.length}`);
}

/** Reads the `writ.*` words of a kernel command line (as in /proc/cmdline). */
export function parseBootCmdline(cmdline: string): BootConfig {
  const words = new Map<string, string>();
  for (const w of cmdline.trim().split(/\s+/)) {
    const i = w.indexOf('=');
    if (i > 0 && w.startsWith('writ.')) words.set(w.slice(0, i), w.slice(i + 1));
  }
  const need = (k: string) => words.get(k) ?? bad(`the kernel command line lacks ${k}= (rebuild the image with writ image build)`);
  const c: BootConfig = {
    coordUrl: need(KEYS.coordUrl),
    token: words.get(KEYS.token) ?? null,
    redisUrl: need(KEYS.redisUrl),
    clusterId: need(KEYS.clusterId),
    adminKeys: need(KEYS.adminKeys).split(',').filter(Boolean),
    adminThreshold: Number(words.get(KEYS.adminThreshold) ?? '1'),
  };
  checkBootConfig(c);
  return c;
}

/** How this boot came about, from the `writ.boot=` word of a kernel command line (`normal` without one). */
export function bootModeOf(cmdline: string): BootMode {
  const words = cmdline
    .trim()
    .split(/\s+/)
    .filter((w) => w.startsWith(`${KEYS.mode}=`));
  const mode = (words.at(-1)?.slice(KEYS.mode.length + 1) ?? 'normal') as BootMode;
  if (!BOOT_MODES.includes(mode)) bad(`${KEYS.mode}=${mode}: expected one of ${BOOT_MODES.join(', ')}`);
  return mode;
}

/** The key refs the runner pins, from the boot config's admin keys. */
export function adminKeyRefs(c: BootConfig): { keyid: string; publicKey: string }[] {
  return c.adminKeys.map((publicKey) => ({ keyid: trustKeyB64url(publicKey).keyid, publicKey }));
}
