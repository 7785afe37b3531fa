// Writ services as real child processes (`writ coord|supervisor|runner ...`), for fault tests that signal,
// kill and restart them: each resolves once its `{"ready":true}` line is out; stderr is kept for assertions.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

export const WRIT_BIN = path.resolve(import.meta.dirname, '../../bin/writ.mjs');

export interface WritProcess {
  child: ChildProcess;
  ready: Record<string, unknown>;
  /** Everything written to stderr so far. */
  stderr(): string;
  /** Resolves with the exit code (null when killed by a signal) and how long after `since` it came. */
  exited(since?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; afterMs: number }>;
}

const all: ChildProcess[] = [];

/** Starts `writ ...args`; resolves at its ready line, rejects if it exits first (with its stderr). */
export function startWrit(args: string[], env: NodeJS.ProcessEnv): Promise<WritProcess> {
  const child = spawn(process.execPath, [WRIT_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, WRIT_LOG_LEVEL: 'warn', ...env } });
  all.push(child);
  let out = '';
  let err = '';
  child.stderr!.on('data', (d) => (err += String(d)));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((r) => child.once('exit', (code, signal) => r({ code, signal, at: Date.now() })));
  const proc = (ready: Record<string, unknown>): WritProcess => ({
    child,
    ready,
    stderr: () => err,
    exited: async (since = Date.now()) => {
      const e = await exit;
      return { code: e.code, signal: e.signal, afterMs: e.at - since };
    },
  });
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      out += String(d);
      const line = out.split('\n').find((l) => l.includes('"ready":true'));
      if (line) resolve(proc(JSON.parse(line)));
    });
    void exit.then((e) => reject(new Error(`writ ${args[0]} exited before it was ready (${e.code ?? e.signal}): ${err.slice(-2000)}`)));
  });
}

/** Runs `writ ...args` to its end (a CLI command, not a service): its exit code and output. */
export function runWrit(args: string[], env: NodeJS.ProcessEnv, onStart?: (child: ChildProcess) => void): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const t0 = Date.now();
  const child = spawn(process.execPath, [WRIT_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, WRIT_LOG_LEVEL: 'warn', ...env } });
  all.push(child);
  onStart?.(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += String(d)));
  child.stderr!.on('data', (d) => (stderr += String(d)));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr, ms: Date.now() - t0 })));
}

/** For afterAll: SIGKILLs every process these helpers started that is still running. */
export function killAllWrit(): void {
  for (const c of all) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}
