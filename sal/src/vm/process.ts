// VMM processes outlive the runner, so they are found again through pid files. A pid alone could be
// reused by an unrelated process; it counts as our VMM only while its command line names our socket.
import { readFile } from 'node:fs/promises';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function readPidFile(file: string): Promise<number | null> {
  try {
    const pid = Number.parseInt((await readFile(file, 'utf8')).trim(), 10);
    return Number.isSafeInteger(pid) && pid > 1 ? pid : null;
  } catch {
    return null;
  }
}

/** Is `pid` alive, not a zombie, and does its command line contain `needle`? */
export async function isOurProcess(pid: number | null, needle: string): Promise<boolean> {
  if (pid === null) return false;
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Field 3 (after the parenthesised command name) is the state; Z and X are gone in all but name.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'Z' || state === 'X') return false;
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').join(' ');
    return cmdline.includes(needle);
  } catch {
    return false;
  }
}

export async function findLivePid(pidFile: string, needle: string): Promise<number | null> {
  const pid = await readPidFile(pidFile);
  return (await isOurProcess(pid, needle)) ? pid : null;
}

/** Waits for the process to go; sends SIGKILL when it has not after `graceMs`. */
export async function ensureExited(pid: number, needle: string, graceMs: number): Promise<void> {
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!(await isOurProcess(pid, needle))) return;
    await sleep(50);
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  const killDeadline = Date.now() + 5000;
  while (Date.now() < killDeadline && (await isOurProcess(pid, needle))) await sleep(50);
}
