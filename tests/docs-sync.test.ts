// Generated docs stay in sync with the code they describe (STYLE habit 9).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderErrorsDoc, renderProtocolDoc } from '../tools/gen-docs.ts';

const root = path.resolve(import.meta.dirname, '..');

describe('generated docs', () => {
  it('docs/errors.md matches the error registry (run `npm run gen:docs` after adding a code)', async () => {
    expect(await readFile(path.join(root, 'docs/errors.md'), 'utf8')).toBe(renderErrorsDoc());
  });
  it("docs/protocol.md's worked example matches the bytes the code signs", async () => {
    const current = await readFile(path.join(root, 'docs/protocol.md'), 'utf8');
    expect(current).toBe(await renderProtocolDoc(current));
  });
});
