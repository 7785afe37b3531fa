// Starting and stopping the mycelium daemon through start-stop-daemon (argv, no shell), with a pid file
// and log under the state dir. Start is an ensure: a running daemon with the same settings is left alone.
import { access, constants, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { errorCodeOf, WritError } from '@writ/protocol';
import { run } from '../exec.ts';
import { MYCELIUM_API, myceliumJson, myceliumRequest, type MyceliumInfo } from './api.ts';
import { checkEndpoint, daemonBaseArgv, type MyceliumConfig } from './config.ts';
import { ensureMyceliumKey } from './key.ts';

interface DaemonRecord {
  pid: number;
  baseArgv: string[];
  netns: string | null;
  startedAt: string;
}

const files = (config: MyceliumConfig) => ({
  pid: path.join(config.stateDir, 'mycelium.pid'),
  log: path.join(config.stateDir, 'mycelium.log'),
  record: path.join(config.stateDir, 'daemon.json'),
});

async function readRecord(config: MyceliumConfig): Promise<DaemonRecord | null> {
  try {
    return JSON.parse(await readFile(files(config).record, 'utf8')) as DaemonRecord;
  } catch {
    return null;
  }
}

export type ProcessVerdict = 'ours' | 'gone' | 'unsure';

/**
 * What /proc says about `pid`, given its `stat` and `cmdline` (null when unreadable: no such process).
 * A live process with an empty command line is in the middle of an execve (start-stop-daemon exec'ing
 * the binary, a wrapper script exec'ing the daemon): the kernel has swapped in the new image but not yet
 * recorded its arguments. That says nothing either way, so it is `unsure`, not `gone`; kernel threads look
 * the same, and stay so, which the caller's retry limit settles.
 */
export function judgeProcess(stat: string | null, cmdline: string | null, keyFile: string): ProcessVerdict {
  if (stat === null || cmdline === null) return 'gone';
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  if (state === 'Z' || state === 'X') return 'gone';
  if (cmdline === '') return 'unsure';
  const argv = cmdline.split('\0');
  const i = argv.indexOf('--key-file');
  // Another program under this pid: ours exited and the pid was reused.
  return i >= 0 && argv[i + 1] === keyFile ? 'ours' : 'gone';
}

const readOrNull = (file: string): Promise<string | null> => readFile(file, 'utf8').catch(() => null);

/** How long an `unsure` pid is re-read before it counts as not ours; an execve takes far less, even under load. */
const UNSURE_SETTLE_MS = 2000;

/** Is `pid` alive and still the daemon we started (not a reused pid)? */
async function isOurDaemon(pid: number, config: MyceliumConfig): Promise<boolean> {
  const until = Date.now() + UNSURE_SETTLE_MS;
  for (;;) {
    const verdict = judgeProcess(await readOrNull(`/proc/${pid}/stat`), await readOrNull(`/proc/${pid}/cmdline`), config.keyFile);
    if (verdict !== 'unsure') return verdict === 'ours';
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The running daemon's record, or null when none of ours runs. */
export async function runningDaemon(config: MyceliumConfig): Promise<DaemonRecord | null> {
  const rec = await readRecord(config);
  return rec && (await isOurDaemon(rec.pid, config)) ? rec : null;
}

async function ipBinary(): Promise<string> {
  for (const p of ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip']) {
    try {
      await access(p, constants.X_OK);
      return p;
    } catch {
      /* try the next */
    }
  }
  throw new WritError('TOOL_MISSING', 'ip (iproute2) is not installed');
}

async function logTail(config: MyceliumConfig): Promise<string> {
  try {
    return (await readFile(files(config).log, 'utf8')).slice(-2000);
  } catch {
    return '';
  }
}

async function waitForApi(config: MyceliumConfig, pid: number): Promise<MyceliumInfo> {
  const deadline = Date.now() + config.startTimeoutMs;
  for (;;) {
    try {
      return await myceliumJson<MyceliumInfo>(config, 'GET', MYCELIUM_API.info.path);
    } catch (e) {
      if (errorCodeOf(e) !== 'MYCELIUM_UNREACHABLE') throw e;
      if (!(await isOurDaemon(pid, config))) {
        throw new WritError('COMMAND_FAILED', `mycelium exited during start-up`, { log: await logTail(config) });
      }
      if (Date.now() > deadline) {
        throw new WritError(
          'MYCELIUM_UNREACHABLE',
          `mycelium started (pid ${pid}) but its API at ${config.apiAddr} did not answer within ${config.startTimeoutMs} ms`,
          { log: await logTail(config) },
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Adds a peer; an existing one is not an error (`added: false`). */
export async function myceliumAddPeer(config: MyceliumConfig, args: { endpoint: string }): Promise<{ endpoint: string; added: boolean }> {
  const endpoint = checkEndpoint(args.endpoint);
  const res = await myceliumRequest(config, 'POST', MYCELIUM_API.addPeer.path, { endpoint }, [409]);
  return { endpoint, added: res.status !== 409 };
}

/** Removes a peer; an unknown one is not an error (`removed: false`). */
export async function myceliumRemovePeer(config: MyceliumConfig, args: { endpoint: string }): Promise<{ endpoint: string; removed: boolean }> {
  const endpoint = checkEndpoint(args.endpoint);
  const res = await myceliumRequest(config, 'DELETE', MYCELIUM_API.removePeer.path.replace('{endpoint}', encodeURIComponent(endpoint)), undefined, [404]);
  return { endpoint, removed: res.status !== 404 };
}

export interface MyceliumStartResult {
  started: boolean;
  pid: number;
  keyCreated: boolean;
  info: MyceliumInfo;
  peersAdded: string[];
}

export async function myceliumStart(config: MyceliumConfig, args: { peers?: string[] } = {}): Promise<MyceliumStartResult> {
  const peers = [...new Set([...config.peers, ...(args.peers ?? []).map(checkEndpoint)])].sort();
  const key = await ensureMyceliumKey(config);
  const baseArgv = daemonBaseArgv(config);
  const running = await runningDaemon(config);
  if (running) {
    if (JSON.stringify(running.baseArgv) !== JSON.stringify(baseArgv) || running.netns !== config.netns) {
      throw new WritError('RESOURCE_CONFLICT', `mycelium runs (pid ${running.pid}) with other settings; stop it first`, {
        running: running.baseArgv,
        wanted: baseArgv,
      });
    }
    const info = await waitForApi(config, running.pid);
    const peersAdded: string[] = [];
    for (const endpoint of peers) if ((await myceliumAddPeer(config, { endpoint })).added) peersAdded.push(endpoint);
    return { started: false, pid: running.pid, keyCreated: key.created, info, peersAdded };
  }
  const f = files(config);
  await rm(f.pid, { force: true });
  const argv = [...baseArgv, ...(peers.length > 0 ? ['--peers', ...peers] : [])];
  const full = config.netns ? [await ipBinary(), 'netns', 'exec', config.netns, ...argv] : argv;
  await run(
    ['start-stop-daemon', '--start', '--background', '--make-pidfile', '--pidfile', f.pid, '--output', f.log, '--exec', full[0] ?? '', '--', ...full.slice(1)],
    { timeoutMs: 10_000 },
  );
  const pid = Number((await readFile(f.pid, 'utf8')).trim());
  const record: DaemonRecord = { pid, baseArgv, netns: config.netns, startedAt: new Date().toISOString() };
  await writeFile(f.record, JSON.stringify(record), { mode: 0o600 });
  let info: MyceliumInfo;
  try {
    info = await waitForApi(config, pid);
  } catch (e) {
    await myceliumStop(config);
    throw e;
  }
  if (info.nodePubkey !== key.publicKey) {
    await myceliumStop(config);
    throw new WritError('MYCELIUM_KEY_INVALID', `mycelium reports public key ${info.nodePubkey}, not ${key.publicKey} from ${config.keyFile}`);
  }
  return { started: true, pid, keyCreated: key.created, info, peersAdded: peers };
}

/** Stops our daemon (TERM, then KILL after 5 s); stopping a stopped daemon is `stopped: false`. */
export async function myceliumStop(config: MyceliumConfig): Promise<{ stopped: boolean }> {
  const rec = await readRecord(config);
  const f = files(config);
  let stopped = false;
  if (rec && (await isOurDaemon(rec.pid, config))) {
    const r = await run(['start-stop-daemon', '--stop', '--pid', String(rec.pid), '--retry', 'TERM/5/KILL/2'], { okExitCodes: [0, 1], timeoutMs: 15_000 });
    stopped = r.exitCode === 0;
  }
  await rm(f.pid, { force: true });
  await rm(f.record, { force: true });
  return { stopped };
}
