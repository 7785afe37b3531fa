// The checks `npm test` runs before the suites reach every file they should: tsconfig.json type-checks every
// TypeScript file in the repository (tests included), and lint's type-aware rules report floating promises.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ESLint } from 'eslint';
import ts from 'typescript';
import type { serviceLogger } from '@writ/cli';
import type { Logger } from '@writ/protocol';
import { beforeAll, describe, expect, it } from 'vitest';

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
    const config = ts.getParsedCommandLineOfConfigFile(
      path.join(root, 'tsconfig.json'),
      {},
      {
        ...ts.sys,
        onUnRecoverableConfigFileDiagnostic: (d) => {
          throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
        },
      },
    );
    expect(config?.errors ?? []).toEqual([]);
    const checked = new Set(config!.fileNames.map((f) => path.relative(root, f)));
    const all = tsFiles();
    expect(all).toContain('sal/test/vm.test.ts');
    expect(all.filter((f) => !checked.has(f))).toEqual([]);
  });
});

describe('type-aware lint (eslint.config.mjs)', () => {
  const eslint = new ESLint({ cwd: root });
  async function rules(file: string, code: string): Promise<string[]> {
    const [res] = await eslint.lintText(code, { filePath: path.join(root, file) });
    return (res?.messages ?? []).map((m) => m.ruleId ?? m.message);
  }
  // The first typed lint builds the whole program tsconfig.json describes (as long as a `tsc` run).
  beforeAll(async () => {
    await rules('runner/src/lint-probe.ts', 'export {};\n');
  }, 300_000);
  const lose = 'export async function save(): Promise<void> { throw new Error("disk full"); }\n';

  it.each(['runner/src/lint-probe.ts', 'tests/lint-probe.test.ts'])('reports a promise nobody awaits or catches in %s', async (file) => {
    expect(await rules(file, `${lose}export function f(): void { save(); }\n`)).toEqual(['@typescript-eslint/no-floating-promises']);
    expect(await rules(file, `${lose}export async function f(): Promise<void> { await save(); }\n`)).toEqual([]);
    expect(await rules(file, `${lose}export function f(): void { void save().catch(() => {}); }\n`)).toEqual([]);
  });

  it('reports a promise-returning function where a callback returning void is expected', async () => {
    const code = `${lose}export function f(run: (cb: () => void) => void): void { run(async () => { await save(); }); }\n`;
    expect(await rules('coord/src/lint-probe.ts', code)).toEqual(['@typescript-eslint/no-misused-promises']);
  });
});

describe('one owner for shared helpers', () => {
  it('defines canonical JSON only in protocol/src/canonical-json.ts (the audit chain and node inventories hash with it)', () => {
    const owners = tsFiles().filter((f) => /\bfunction\s+canonicalJson\b|\bconst\s+canonicalJson\s*=/.test(readFileSync(path.join(root, f), 'utf8')));
    expect(owners).toEqual(['protocol/src/canonical-json.ts']);
  });
});

describe('one owner for the logger interface', () => {
  it("is @writ/protocol's Logger: no other file writes a logger interface of its own", () => {
    const own = tsFiles().filter((f) => /\binterface\s+\w*Logger\s*\{[^}]*\binfo\s*\(/.test(readFileSync(path.join(root, f), 'utf8')));
    expect(own).toEqual(['protocol/src/service-lifecycle.ts']);
  });

  it('fits the pino logger the CLI gives services (checked by tsc)', () => {
    const fits: ReturnType<typeof serviceLogger> extends Logger ? true : false = true;
    expect(fits).toBe(true);
  });
});
