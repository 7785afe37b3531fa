// scripts/writ.d.ts is generated from the capability registry; this keeps the committed file in sync.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CAPABILITIES } from '@writ/protocol';
import { renderScriptTypes } from '../tools/gen-script-types.ts';

describe('scripts/writ.d.ts', () => {
  it('matches the capability registry (run `npm run gen:docs` after changing a capability)', async () => {
    const committed = await readFile(path.resolve(import.meta.dirname, '../scripts/writ.d.ts'), 'utf8');
    expect(committed).toBe(renderScriptTypes());
  });
  it('declares every capability', () => {
    const text = renderScriptTypes();
    for (const name of CAPABILITIES.keys()) expect(text).toContain(`Capability \`${name}\``);
  });
});
