// Package boundaries are enforced by lint, and this test proves the lint rules bite: each forbidden
// import below must be reported (and each allowed one must not).
import path from 'node:path';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');
const eslint = new ESLint({ cwd: root });

async function problems(file: string, code: string): Promise<string[]> {
  const [res] = await eslint.lintText(code, { filePath: path.join(root, file) });
  return (res?.messages ?? []).map((m) => `${m.ruleId}: ${m.message}`);
}

describe('package boundaries (lint)', () => {
  it.each([
    ['protocol/src/x.ts', "import '@writ/sal';"],
    ['protocol/src/x.ts', "import '@writ/runner';"],
    ['sal/src/x.ts', "import '@writ/runner';"],
    ['sal/src/x.ts', "import '@writ/supervisor';"],
    ['supervisor/src/x.ts', "import '@writ/runner';"],
    ['runner/src/x.ts', "import '@writ/supervisor';"],
    ['runner/src/x.ts', "import '@writ/coord';"],
    ['supervisor/src/x.ts', "import '@writ/coord';"],
    ['coord/src/x.ts', "import '@writ/runner';"],
    ['runner/src/x.ts', "import '@writ/protocol/src/errors.ts';"],
    ['runner/src/x.ts', "import '../../protocol/src/errors.ts';"],
  ])('%s may not %s', async (file, code) => {
    const p = await problems(file, code);
    expect(p.some((m) => m.startsWith('no-restricted-imports'))).toBe(true);
  });

  it.each([
    ['sal/src/x.ts', "import '@writ/protocol';"],
    ['runner/src/x.ts', "import '@writ/sal';"],
    ['coord/src/x.ts', "import '@writ/supervisor';"],
    ['cli/src/x.ts', "import '@writ/coord';"],
  ])('%s may %s', async (file, code) => {
    expect(await problems(file, code)).toEqual([]);
  });
});
