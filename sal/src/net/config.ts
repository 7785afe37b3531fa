// What the net SAL may touch. Scripts manage only namespaces whose names start with `prefix`, and in the
// host namespace only links whose names start with it: they can build their own networks but never
// reconfigure eth0, docker0 or a bridge the operator made. Inside one of their own namespaces every
// link is theirs (loopback included).
import { WritError } from '@writ/protocol';

export interface NetConfig {
  /** Name prefix scripts are confined to (default `wr`). */
  readonly prefix: string;
  /** Programs `net.netns.exec` may run, as bare names looked up on PATH (default `['ping']`). */
  readonly execAllow?: readonly string[];
}

export const DEFAULT_NET_PREFIX = 'wr';
export const DEFAULT_EXEC_ALLOW: readonly string[] = Object.freeze(['ping']);

/** Checks a config once and freezes it. */
export function netConfig(input: Partial<NetConfig> = {}): Readonly<NetConfig> {
  const prefix = input.prefix ?? DEFAULT_NET_PREFIX;
  // Short enough that prefixed names still fit the kernel's 15-byte interface names.
  if (!/^[a-z][a-z0-9]{0,9}$/.test(prefix))
    throw new WritError('CONFIG_INVALID', `net prefix ${JSON.stringify(prefix)} must be 1-10 lowercase letters/digits starting with a letter`);
  const execAllow = input.execAllow ?? DEFAULT_EXEC_ALLOW;
  for (const p of execAllow) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(p)) throw new WritError('CONFIG_INVALID', `net execAllow entry ${JSON.stringify(p)} must be a bare program name`);
  }
  return Object.freeze({ prefix, execAllow: Object.freeze([...execAllow]) });
}
