#!/usr/bin/env node
// `npm test`: installs what is missing, then type-checks, lints, checks formatting and runs every vitest suite.
// Prints a closing line "tests: N passed, N failed, N skipped" that CI reads.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensureDebianPackages, ensureNodeModules, TEST_PACKAGES } from './setup.mjs';

const root = path.resolve(import.meta.dirname, '..');
ensureNodeModules();
ensureDebianPackages(TEST_PACKAGES);

function step(name, cmd, args) {
  process.stderr.write(`\n== ${name}: ${cmd} ${args.join(' ')}\n`);
  const t0 = Date.now();
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  process.stderr.write(`== ${name}: exit ${r.status} in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  return r.status ?? 1;
}

const bin = (n) => path.join(root, 'node_modules/.bin', n);
const extra = process.argv.slice(2);
let failed = 0;
if (extra.length === 0) {
  failed += step('typecheck', bin('tsc'), ['-p', 'tsconfig.json']) ? 1 : 0;
  failed += step('lint', bin('eslint'), ['.']) ? 1 : 0;
  // Formatting (.prettierrc.json; `npm run format` fixes it).
  failed += step('format', bin('prettier'), ['--check', '--log-level', 'warn', '.']) ? 1 : 0;
}
const out = mkdtempSync(path.join(os.tmpdir(), 'writ-vitest-'));
const report = path.join(out, 'report.json');
const vitest = step('tests', bin('vitest'), ['run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...extra]);
let summary = null;
try {
  const r = JSON.parse(readFileSync(report, 'utf8'));
  summary = { passed: r.numPassedTests, failed: r.numFailedTests, skipped: r.numPendingTests + (r.numTodoTests ?? 0) };
} catch {
  /* vitest died before writing its report */
}
rmSync(out, { recursive: true, force: true });
if (failed) process.stderr.write(`\n${failed} check(s) before the tests failed (see above)\n`);
if (summary) console.log(`tests: ${summary.passed} passed, ${summary.failed + failed} failed, ${summary.skipped} skipped`);
process.exit(vitest || failed ? 1 : 0);
