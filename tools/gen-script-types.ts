// Generates scripts/writ.d.ts, the declaration file script authors type against, from the capability
// registry: `ctx.sal` gets one nested async function per capability with its argument type derived from
// the capability's JSON schema. tests/script-types.test.ts fails when the committed file is stale.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CAPABILITIES, type CapabilitySpec } from '@writ/protocol';

type Schema = Record<string, unknown>;

export function schemaToTs(s: Schema | undefined, indent = ''): string {
  if (!s || Object.keys(s).length === 0) return 'JsonValue';
  if ('const' in s) return JSON.stringify(s.const);
  if (Array.isArray(s.enum)) return s.enum.map((v) => JSON.stringify(v)).join(' | ');
  const alts = (s.oneOf ?? s.anyOf) as Schema[] | undefined;
  if (alts) return alts.map((a) => schemaToTs(a, indent)).join(' | ');
  const t = s.type;
  if (Array.isArray(t)) return t.map((x) => schemaToTs({ ...s, type: x }, indent)).join(' | ');
  switch (t) {
    case 'string':
      return 'string';
    case 'integer':
    case 'number':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'null':
      return 'null';
    case 'array':
      return `Array<${schemaToTs(s.items as Schema, indent)}>`;
    case 'object': {
      const props = (s.properties ?? {}) as Record<string, Schema>;
      const req = new Set((s.required ?? []) as string[]);
      const inner = indent + '  ';
      const lines = Object.entries(props).map(
        ([k, v]) => `${inner}${/^[A-Za-z_$][\w$]*$/.test(k) ? k : JSON.stringify(k)}${req.has(k) ? '' : '?'}: ${schemaToTs(v, inner)};`,
      );
      if (s.additionalProperties && typeof s.additionalProperties === 'object')
        lines.push(`${inner}[key: string]: ${schemaToTs(s.additionalProperties as Schema, inner)};`);
      return lines.length ? `{\n${lines.join('\n')}\n${indent}}` : 'Record<string, never>';
    }
    default:
      return 'JsonValue';
  }
}

interface Tree {
  [k: string]: Tree | CapabilitySpec;
}

function render(tree: Tree, indent: string): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(tree).sort(([a], [b]) => a.localeCompare(b))) {
    const key = /^[A-Za-z_$][\w$]*$/.test(k) ? k : JSON.stringify(k);
    if ('args' in v && 'dangerous' in v) {
      const spec = v as CapabilitySpec;
      const args = schemaToTs(spec.args as Schema, indent);
      const optional = !((spec.args as Schema).required as string[] | undefined)?.length;
      out.push(`${indent}/** ${spec.summary}${spec.dangerous ? ' (dangerous: may need several signers)' : ''}. Capability \`${spec.name}\`. */`);
      out.push(`${indent}${key}?(args${optional ? '?' : ''}: ${args}): Promise<JsonValue>;`);
    } else {
      out.push(`${indent}${key}?: {`, ...render(v as Tree, indent + '  '), `${indent}};`);
    }
  }
  return out;
}

export function renderScriptTypes(): string {
  const tree: Tree = {};
  for (const spec of CAPABILITIES.values()) {
    const parts = spec.name.split('.');
    let node = tree;
    for (const p of parts.slice(0, -1)) node = (node[p] ??= {}) as Tree;
    node[parts.at(-1)!] = spec;
  }
  return [
    '// Generated from the capability registry by `npm run gen:docs`. Do not edit.',
    '// Type your deployment scripts against it: /** @param {WritContext} ctx */ or `import type` in TS.',
    '',
    'export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };',
    '',
    "/** Host functions granted to the script. Only capabilities listed in the envelope's `caps` are present. */",
    'export interface WritSal {',
    ...render(tree, '  '),
    '}',
    '',
    'export interface WritLog {',
    '  info(message: string): void;',
    '  warn(message: string): void;',
    '  error(message: string): void;',
    '}',
    '',
    'export interface WritContext {',
    '  log: WritLog;',
    '  sal: WritSal;',
    "  /** The job this run belongs to and its attempt number (1 for the first run; a retry counts up). A flow step's job id is `<flow>.<step>` (and `.<node>` for a fan-out step). */",
    '  job: { readonly id: string; readonly attempt: number };',
    '}',
    '',
    '/** The shape of a Writ script: `export default async function (args, ctx) { ... }`. */',
    'export type WritScript = (args: JsonValue, ctx: WritContext) => Promise<JsonValue | void>;',
    '',
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await writeFile(path.resolve(import.meta.dirname, '../scripts/writ.d.ts'), renderScriptTypes());
  console.log('wrote scripts/writ.d.ts');
}
