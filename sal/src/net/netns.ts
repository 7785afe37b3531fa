// Network namespaces: ensure/delete/list, and running an allowlisted program inside one.
import { WritError } from '@writ/protocol';
import { run } from '../exec.ts';
import { DEFAULT_EXEC_ALLOW, type NetConfig } from './config.ts';
import { checkNetnsName, ip, netnsNames, requireNetns } from './ip.ts';

export async function ensureNetns(config: NetConfig, args: { name: string }): Promise<{ name: string; created: boolean }> {
  const name = checkNetnsName(config, args.name, 'name');
  if ((await netnsNames()).includes(name)) return { name, created: false };
  await ip(undefined, ['netns', 'add', name]);
  // A namespace starts with loopback down; nothing an operator expects works without it.
  await ip(name, ['link', 'set', 'dev', 'lo', 'up']);
  return { name, created: true };
}

export async function deleteNetns(config: NetConfig, args: { name: string }): Promise<{ name: string; deleted: boolean }> {
  const name = checkNetnsName(config, args.name, 'name');
  if (!(await netnsNames()).includes(name)) return { name, deleted: false };
  await ip(undefined, ['netns', 'del', name]);
  return { name, deleted: true };
}

export async function listNetns(_config: NetConfig, _args: Record<string, never> = {}): Promise<{ namespaces: string[] }> {
  return { namespaces: (await netnsNames()).sort() };
}

export interface NetnsExecArgs {
  name: string;
  /** argv[0] must be a bare program name in the config's execAllow list. */
  argv: string[];
  /** Default 10 s, at most 60 s. */
  timeoutMs?: number;
}

export interface NetnsExecResult {
  name: string;
  argv: string[];
  exitCode: number;
  ok: boolean;
  stdout: string;
  stderr: string;
}

const OUTPUT_CAP = 64 * 1024;

/** Runs the program through `ip netns exec`; a non-zero exit is a result (a failed ping is an answer), not an error. */
export async function execInNetns(config: NetConfig, args: NetnsExecArgs): Promise<NetnsExecResult> {
  const name = checkNetnsName(config, args.name, 'name');
  const [program] = args.argv;
  const allowed = config.execAllow ?? DEFAULT_EXEC_ALLOW;
  if (typeof program !== 'string' || !allowed.includes(program)) {
    throw new WritError(
      'SAL_INVALID_ARGUMENT',
      `${JSON.stringify(program)} is not a program net.netns.exec may run (allowed: ${allowed.join(', ') || 'none'})`,
    );
  }
  await requireNetns(name);
  const r = await run(['ip', 'netns', 'exec', name, ...args.argv], { timeoutMs: args.timeoutMs ?? 10_000, reject: false });
  return { name, argv: [...args.argv], exitCode: r.exitCode, ok: !r.failed, stdout: r.stdout.slice(0, OUTPUT_CAP), stderr: r.stderr.slice(0, OUTPUT_CAP) };
}
