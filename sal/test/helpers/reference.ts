// The published API specs the doubles and drivers are checked against live in the shared reference folder
// beside the repository (../shared/reference). CI clones the repository with shared/ beside it; a
// developer checkout may sit elsewhere, so WRIT_SHARED_DIR and the workplace path are tried too.
import { existsSync } from 'node:fs';
import path from 'node:path';

const repoRoot = path.resolve(import.meta.dirname, '../../..');

export function referenceFile(name: string): string {
  const candidates = [
    ...(process.env.WRIT_SHARED_DIR ? [path.join(process.env.WRIT_SHARED_DIR, 'reference', name)] : []),
    path.resolve(repoRoot, '../shared/reference', name),
    path.join('/work/shared/reference', name),
  ];
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new Error(`reference spec ${name} not found; looked in ${candidates.join(', ')} (set WRIT_SHARED_DIR)`);
  return found;
}
