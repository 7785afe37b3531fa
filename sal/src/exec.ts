// The one file that imports execa. Commands are argv arrays, never shell strings; a failure is one
// WritError (COMMAND_FAILED / COMMAND_TIMEOUT / TOOL_MISSING) carrying the command, exit code, signal and stderr.
import { closeSync, openSync } from 'node:fs';
import { execa } from 'execa';
import { WritError } from '@writ/protocol';

export interface RunOptions {
  /** Milliseconds before the command is killed (default 60 s). */
  timeoutMs?: number;
  input?: string | Uint8Array;
  cwd?: string;
  env?: Record<string, string>;
  /** Exit codes that count as success (default [0]). */
  okExitCodes?: number[];
  /** Do not throw on failure; return the result with `failed`. */
  reject?: boolean;
  /** Keep raw stdout bytes (for binary output). */
  binary?: boolean;
}

export interface RunResult {
  command: string[];
  exitCode: number;
  stdout: string;
  stderr: string;
  failed: boolean;
}

const MAX_STDERR_IN_ERROR = 4000;

/** Runs argv[0] with argv[1..]. Throws WritError unless `reject: false`. */
export async function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  if (argv.length === 0) throw new WritError('SAL_INVALID_ARGUMENT', 'empty command');
  for (const a of argv) {
    if (typeof a !== 'string' || a.includes('\0')) throw new WritError('SAL_INVALID_ARGUMENT', 'command arguments must be strings without NUL bytes');
  }
  const [file, ...args] = argv as [string, ...string[]];
  const ok = opts.okExitCodes ?? [0];
  const res = await execa(file, args, {
    reject: false,
    timeout: opts.timeoutMs ?? 60_000,
    input: opts.input as string | undefined,
    cwd: opts.cwd,
    env: opts.env,
    extendEnv: true,
    stripFinalNewline: false,
    encoding: opts.binary ? 'buffer' : 'utf8',
    shell: false,
  });
  const stdout = typeof res.stdout === 'string' ? res.stdout : Buffer.from(res.stdout as Uint8Array).toString('latin1');
  const stderr = typeof res.stderr === 'string' ? res.stderr : Buffer.from(res.stderr as Uint8Array).toString('utf8');
  const exitCode = typeof res.exitCode === 'number' ? res.exitCode : -1;
  const failed = res.timedOut || !!res.signal || !ok.includes(exitCode) || (res.failed && res.exitCode === undefined);
  const result: RunResult = { command: [file, ...args], exitCode, stdout, stderr, failed };
  if (!failed || opts.reject === false) return result;
  const details = { command: result.command, exitCode, signal: res.signal ?? null, timedOut: !!res.timedOut, stderr: stderr.slice(-MAX_STDERR_IN_ERROR) };
  const cause = (res as { cause?: unknown }).cause as { code?: string } | undefined;
  if (cause?.code === 'ENOENT' || (res as { code?: string }).code === 'ENOENT') {
    throw new WritError('TOOL_MISSING', `${file} is not installed (not found on PATH)`, details);
  }
  if (res.timedOut) throw new WritError('COMMAND_TIMEOUT', `${file} did not finish within ${opts.timeoutMs ?? 60_000} ms`, details);
  const firstLine = stderr.trim().split('\n').slice(-1)[0] ?? '';
  throw new WritError(
    'COMMAND_FAILED',
    `${file} ${args.slice(0, 3).join(' ')} failed (exit ${exitCode}${res.signal ? `, signal ${res.signal}` : ''})${firstLine ? `: ${firstLine.slice(0, 300)}` : ''}`,
    details,
  );
}

/** Is a command on PATH? */
export async function hasTool(name: string): Promise<boolean> {
  const r = await execa('sh', ['-c', 'command -v "$1"', 'sh', name], { reject: false });
  return r.exitCode === 0;
}

export interface DetachedOptions {
  /** File that receives the child's stdout and stderr (appended). */
  logFile: string;
}

/**
 * Starts a long-lived process (a VMM) in its own session so it outlives the caller: no timeout, no
 * kill on our exit, output to a log file. Returns its pid; an unknown binary is TOOL_MISSING.
 */
export async function spawnDetached(argv: readonly string[], opts: DetachedOptions): Promise<{ pid: number }> {
  if (argv.length === 0) throw new WritError('SAL_INVALID_ARGUMENT', 'empty command');
  for (const a of argv) {
    if (typeof a !== 'string' || a.includes('\0')) throw new WritError('SAL_INVALID_ARGUMENT', 'command arguments must be strings without NUL bytes');
  }
  const [file, ...args] = argv as [string, ...string[]];
  // A raw fd is handed to the child as is; `{file}` would be piped through this process and break
  // (SIGPIPE) when the caller exits. execa's types only spell small literal fds, hence the cast.
  const fd = openSync(opts.logFile, 'a', 0o600) as 3;
  try {
    const child = execa(file, args, {
      detached: true,
      cleanup: false,
      reject: false,
      stdin: 'ignore',
      stdout: fd,
      stderr: fd,
      extendEnv: true,
      shell: false,
    });
    // The spawn error (ENOENT) arrives as an event; wait for spawn or error before reporting a pid.
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', () => resolve());
      child.once('error', (e) => reject(e));
    }).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') throw new WritError('TOOL_MISSING', `${file} is not installed (not found)`, { command: [file, ...args] });
      throw new WritError('COMMAND_FAILED', `${file} could not be started: ${e.message}`, { command: [file, ...args] });
    });
    child.unref();
    void child.catch(() => undefined);
    if (typeof child.pid !== 'number') throw new WritError('COMMAND_FAILED', `${file} started without a pid`, { command: [file, ...args] });
    return { pid: child.pid };
  } finally {
    closeSync(fd);
  }
}
