// Names and paths from scripts are confined under configured roots (X6): no `../`, no absolute paths
// where a name is expected, no NUL bytes, and no symlink that resolves outside the root.
import { realpath } from 'node:fs/promises';
import path from 'node:path';
import { WritError } from '@writ/protocol';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** A single path component: letters, digits, `.`, `_`, `-`; not `.` or `..`. */
export function checkName(name: unknown, what = 'name'): string {
  if (typeof name !== 'string') throw new WritError('SAL_INVALID_ARGUMENT', `${what} must be a string`);
  if (name.includes('\0')) throw new WritError('PATH_ESCAPE', `${what} contains a NUL byte`);
  if (name.includes('/') || name === '.' || name === '..')
    throw new WritError('PATH_ESCAPE', `${what} ${JSON.stringify(name)} must be a plain name, not a path`);
  if (!NAME.test(name)) throw new WritError('SAL_INVALID_ARGUMENT', `${what} ${JSON.stringify(name)} must match ${NAME.source}`);
  return name;
}

/**
 * Resolves `rel` (a relative path of plain components) under `root`, following symlinks, and refuses
 * anything that ends up outside `root`. The target need not exist; its nearest existing ancestor is resolved.
 */
export async function confine(root: string, rel: unknown, what = 'path'): Promise<string> {
  if (typeof rel !== 'string') throw new WritError('SAL_INVALID_ARGUMENT', `${what} must be a string`);
  if (rel.includes('\0')) throw new WritError('PATH_ESCAPE', `${what} contains a NUL byte`);
  if (path.isAbsolute(rel)) throw new WritError('PATH_ESCAPE', `${what} ${JSON.stringify(rel)} must be relative to its root`);
  const parts = rel.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.some((p) => p === '..')) throw new WritError('PATH_ESCAPE', `${what} ${JSON.stringify(rel)} contains '..'`);
  const realRoot = await realpath(root);
  const candidate = path.join(realRoot, ...parts);
  // Resolve the deepest existing ancestor so a symlink anywhere on the way is followed.
  let existing = candidate;
  const rest: string[] = [];
  for (;;) {
    try {
      existing = await realpath(existing);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      rest.unshift(path.basename(existing));
      const parent = path.dirname(existing);
      if (parent === existing) break;
      existing = parent;
    }
  }
  const resolved = path.join(existing, ...rest);
  if (resolved !== realRoot && !resolved.startsWith(realRoot + path.sep)) {
    throw new WritError('PATH_ESCAPE', `${what} ${JSON.stringify(rel)} resolves outside ${realRoot}`);
  }
  return resolved;
}
