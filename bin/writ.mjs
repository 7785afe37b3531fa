#!/usr/bin/env node
// The `writ` command. Registers tsx so the TypeScript sources run without a build step.
import { register } from 'tsx/esm/api';

register();
const { runCli } = await import('../cli/src/main.ts');
const code = await runCli(process.argv.slice(2));
// Long-running commands (dev, runner, ...) keep the process alive on their own and exit from their signal handlers.
if (code !== undefined && code !== null) process.exitCode = code;
