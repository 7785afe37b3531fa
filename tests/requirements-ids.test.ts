// Every requirement id cited in the repository (T5, X6, R3, …) is defined in docs/requirements.md, and every
// definition there names test files that exist. Ids are read where people cite them: comments and test names
// in TypeScript and JavaScript, and anywhere in Markdown. String literals elsewhere are not citations (a glob
// such as 'R6*' or a serial 'X1' in test data is not a requirement).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');
const DOC = 'docs/requirements.md';
/** Folders that are not the project's own source (installed packages, build output, runtime state). */
const SKIP_DIRS = new Set(['node_modules', '.git', '.writ', 'coverage', '.vitest-cache', 'tmp', 'build', 'result']);
const CODE = /\.(ts|mts|cts|js|mjs|cjs)$/;
/** An id, or a range of ids of one letter (`X1–X4`, `T10-T12`), standing alone. */
const ID = /\b([TAXR])(\d{1,2})(?:\s*[–-]\s*\1(\d{1,2}))?\b/g;
const TEST_CALLS = new Set(['describe', 'it', 'test', 'suite', 'bench']);

interface Citation {
  id: string;
  where: string;
}

function repoFiles(dir = root, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) {
      if (!SKIP_DIRS.has(e.name)) repoFiles(path.join(dir, e.name), out);
    } else if (e.isFile() && (CODE.test(e.name) || e.name.endsWith('.md'))) {
      out.push(path.relative(root, path.join(dir, e.name)));
    }
  }
  return out;
}

/** The ids a piece of text cites, a range standing for every id in it. */
export function idsIn(text: string): string[] {
  const ids: string[] = [];
  for (const m of text.matchAll(ID)) {
    const from = Number(m[2]);
    const to = m[3] === undefined ? from : Number(m[3]);
    for (let n = from; n <= Math.max(from, to); n++) ids.push(`${m[1]}${n}`);
  }
  return ids;
}

/** The comments and test names of a TypeScript or JavaScript file, each with its line. */
export function citableTexts(file: string, text: string): Array<{ line: number; text: string }> {
  const kind = /\.(ts|mts|cts)$/.test(file) ? ts.ScriptKind.TS : ts.ScriptKind.JS;
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, kind);
  const seen = new Set<number>();
  const out: Array<{ line: number; text: string }> = [];
  const lineOf = (pos: number): number => sf.getLineAndCharacterOfPosition(pos).line + 1;
  const comments = (ranges: ts.CommentRange[] | undefined): void => {
    for (const r of ranges ?? []) {
      if (seen.has(r.pos)) continue;
      seen.add(r.pos);
      out.push({ line: lineOf(r.pos), text: text.slice(r.pos, r.end) });
    }
  };
  const calleeName = (e: ts.Expression): string | null => {
    while (ts.isPropertyAccessExpression(e) || ts.isCallExpression(e)) e = e.expression;
    return ts.isIdentifier(e) ? e.text : null;
  };
  const visit = (node: ts.Node): void => {
    comments(ts.getLeadingCommentRanges(text, node.getFullStart()));
    comments(ts.getTrailingCommentRanges(text, node.getEnd()));
    if (ts.isCallExpression(node) && TEST_CALLS.has(calleeName(node.expression) ?? '')) {
      const title = node.arguments[0];
      if (title && (ts.isStringLiteral(title) || ts.isNoSubstitutionTemplateLiteral(title) || ts.isTemplateExpression(title))) {
        out.push({ line: lineOf(title.getStart(sf)), text: title.getText(sf) });
      }
    }
    for (const child of node.getChildren(sf)) if (!ts.isJSDoc(child)) visit(child);
  };
  visit(sf);
  return out;
}

/** Every citation in the repository, except the definitions page itself. */
function citations(): Citation[] {
  const out: Citation[] = [];
  for (const file of repoFiles()) {
    if (file === DOC) continue;
    const text = readFileSync(path.join(root, file), 'utf8');
    const texts = file.endsWith('.md') ? text.split('\n').map((t, i) => ({ line: i + 1, text: t })) : citableTexts(file, text);
    for (const t of texts) for (const id of idsIn(t.text)) out.push({ id, where: `${file}:${t.line}` });
  }
  return out;
}

/** The entries of docs/requirements.md: `- **ID** — …` up to the next entry or heading. */
export function definitions(doc: string): Map<string, string> {
  const entries = new Map<string, string>();
  let current: string | null = null;
  for (const line of doc.split('\n')) {
    const m = /^- \*\*([TAXR]\d{1,2})\*\*/.exec(line);
    if (m) {
      current = m[1]!;
      entries.set(current, line);
    } else if (/^#|^- /.test(line)) {
      current = null;
    } else if (current !== null) {
      entries.set(current, `${entries.get(current)}\n${line}`);
    }
  }
  return entries;
}

/** Cited ids without a definition, each with where it is cited. */
export function undefinedIds(defined: Map<string, string>, cited: Citation[]): Record<string, string[]> {
  const missing: Record<string, string[]> = {};
  for (const c of cited) if (!defined.has(c.id)) (missing[c.id] ??= []).push(c.where);
  return missing;
}

const doc = readFileSync(path.join(root, DOC), 'utf8');
const defined = definitions(doc);
const cited = citations();

describe('requirement ids (docs/requirements.md)', () => {
  it('finds citations in comments and test names, not in other string literals', () => {
    const sample = [
      '// the replay record (T5); see X1–X4',
      "/** fenced (R3) */ const glob = 'R6*';",
      "describe.skipIf(!root)('confined (X6)', () => { it(`kills ${'a'} (R2)`, () => {}); expect('T9').toBe('T9'); });",
    ].join('\n');
    const ids = citableTexts('sample.ts', sample).flatMap((t) => idsIn(t.text));
    expect(ids.sort()).toEqual(['R2', 'R3', 'T5', 'X1', 'X2', 'X3', 'X4', 'X6']);
  });

  it('reads the repository and finds the ids it cites', () => {
    // A scan that silently read nothing would pass the check below; these citations are long-standing.
    const ids = new Set(cited.map((c) => c.id));
    for (const id of ['T1', 'T5', 'A3', 'X6', 'R1', 'R8']) expect(ids, id).toContain(id);
    // Markdown, code comments and test names are all read.
    for (const where of ['docs/', 'protocol/src/', 'tests/signed-path.redis.test.ts:'])
      expect(
        cited.some((c) => c.where.startsWith(where)),
        where,
      ).toBe(true);
  });

  it('defines every cited id', () => {
    expect(undefinedIds(defined, cited), 'cited ids with no entry in docs/requirements.md').toEqual({});
  });

  it('would report any cited id whose definition is removed', () => {
    const citedIds = [...new Set(cited.map((c) => c.id))];
    expect(citedIds.length).toBeGreaterThan(20);
    for (const id of citedIds) {
      // Drop the entry: its first line and its continuation lines, up to the next entry or heading.
      const lines = doc.split('\n');
      const start = lines.findIndex((l) => l.startsWith(`- **${id}**`));
      expect(start, `${id} has an entry`).toBeGreaterThanOrEqual(0);
      let end = start + 1;
      while (end < lines.length && !/^#|^- /.test(lines[end]!)) end++;
      const without = [...lines.slice(0, start), ...lines.slice(end)].join('\n');
      expect(Object.keys(undefinedIds(definitions(without), cited)), id).toEqual([id]);
    }
  });

  it('names, for each entry, test files that exist', () => {
    expect(defined.size).toBeGreaterThan(0);
    for (const [id, entry] of defined) {
      const files = [...entry.matchAll(/`([^`]+\.test\.ts)`/g)].map((m) => m[1]!);
      expect(files.length, `${id} names no test file`).toBeGreaterThan(0);
      for (const f of files) expect(existsSync(path.join(root, f)), `${id}: ${f}`).toBe(true);
    }
  });
});
