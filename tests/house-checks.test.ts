// The checks `npm test` runs before the suites reach every file they should: tsconfig.json type-checks every
// TypeScript file in the repository (tests included), and lint's type-aware rules report floating promises.
import { readdirSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');
const SKIP_DIRS = new Set(['node_modules', '.git', '.writ', 'coverage', '.vitest-cache', 'tmp']);

function tsFiles(dir = root, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) {
      if (!SKIP_DIRS.has(e.name)) tsFiles(path.join(dir, e.name), out);
    } else if (e.isFile() && /\.(ts|mts|cts)$/.test(e.name) && !e.name.endsWith('.d.ts')) {
      out.push(path.relative(root, path.join(dir, e.name)));
    }
  }
  return out;
}

describe('type-check coverage (tsconfig.json)', () => {
  it("includes every TypeScript file of the repository, each package's tests among them", () => {
    const config = ts.getParsedCommandLineOfConfigFile(path.join(root, 'tsconfig.json'), {}, {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (d) => {
        throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
      },
    });
    expect(config?.errors ?? []).toEqual([]);
    const checked = new Set(config!.fileNames.map((f) => path.relative(root, f)));
    const all = tsFiles();
    expect(all).toContain('sal/test/vm.test.ts');
    expect(all.filter((f) => !checked.has(f))).toEqual([]);
  });
});
