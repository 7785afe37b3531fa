#!/usr/bin/env node
// `npm run quickstart`: installs what is missing (npm packages; redis-server through apt-get when root),
// then runs `writ dev`: coord, supervisor and a runner in one process, a signed hello.js submitted,
// its log lines streamed and its result printed.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { ensureDebianPackages, ensureNodeModules, QUICKSTART_PACKAGES } from './setup.mjs';

const root = path.resolve(import.meta.dirname, '..');
ensureNodeModules();
if (!process.env.REDIS_URL) {
  const missing = ensureDebianPackages(QUICKSTART_PACKAGES);
  if (missing.length) {
    console.error('quickstart needs redis-server (or set REDIS_URL to a Redis you run): apt-get install -y redis-server');
    process.exit(1);
  }
}
const env = { ...process.env, WRIT_HOME: process.env.WRIT_HOME ?? path.join(root, '.writ') };
const r = spawnSync(process.execPath, [path.join(root, 'bin/writ.mjs'), 'dev', ...process.argv.slice(2)], { cwd: root, stdio: 'inherit', env });
process.exit(r.status ?? 1);
