#!/usr/bin/env node
// `npm run bench -- NAME`: runs bench/NAME.ts, which prints figures and, last, one JSON line.
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { register } from 'tsx/esm/api';

const dir = path.resolve(import.meta.dirname, '../bench');
const names = readdirSync(dir)
  .filter((f) => f.endsWith('.ts') && !f.startsWith('_'))
  .map((f) => f.slice(0, -3));
const name = process.argv[2];
if (!name || !names.includes(name)) {
  console.error(`usage: npm run bench -- <${names.join('|')}>`);
  process.exit(2);
}
if (!existsSync(path.join(dir, `${name}.ts`))) process.exit(2);
register();
await import(path.join(dir, `${name}.ts`));
