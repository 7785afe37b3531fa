#!/usr/bin/env node
// The `writ` command. Registers tsx so the TypeScript sources run without a build step.
import { register } from 'tsx/esm/api';

// `writ … | head` closes the pipe early: that is not an error.
for (const stream of [process.stdout, process.stderr])
  stream.on('error', (e) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    else throw e;
  });

register();
const { runCli } = await import('../cli/src/main.ts');
const code = await runCli(process.argv.slice(2));
// Long-running commands (dev, runner, ...) keep the process alive on their own and exit from their signal handlers.
if (code !== undefined && code !== null) process.exitCode = code;
