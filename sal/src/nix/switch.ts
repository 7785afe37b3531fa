// nix.switch: health-gated activation of a system generation.
//
// Contract for a "system" store path G (NixOS's toplevel satisfies it):
//   - G/bin/switch-to-configuration, run as `G/bin/switch-to-configuration test`, activates G now without
//     making it the boot default; or, when that is absent, G/activate (run with no arguments) does the same.
//   - activation is idempotent: running an older generation's activation again restores it.
// Order: activate G → run the health check → only then set the profile (the boot default). Any failure
// re-activates the generation the profile still points at and fails with NIX_ACTIVATION_FAILED; a rollback
// is never reported as success.
import { access, constants } from 'node:fs/promises';
import { errorCodeOf, toErrorJSON, WritError } from '@writ/protocol';
import { run } from '../exec.ts';
import type { NixConfig } from './config.ts';
import { assertPinned, currentProfilePath, invalidStorePaths, nixGenerations, nixProfileSet } from './store.ts';

export interface NixSwitchArgs {
  profile: string;
  path: string;
  healthCheck: { argv: string[]; timeoutMs?: number };
  activationTimeoutMs?: number;
}

export interface NixSwitchResult {
  changed: boolean;
  path: string;
  generation: number | null;
  previous: string | null;
  activationMs: number;
  healthMs: number;
}

async function isExecutable(p: string): Promise<boolean> {
  try {
    await access(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The argv that activates generation `gen` now, per the contract above, or null when it has neither entry point. */
export async function activationCommand(gen: string): Promise<string[] | null> {
  if (await isExecutable(`${gen}/bin/switch-to-configuration`)) return [`${gen}/bin/switch-to-configuration`, 'test'];
  if (await isExecutable(`${gen}/activate`)) return [`${gen}/activate`];
  return null;
}

/** A health check may run a program inside a pinned store path or one the operator listed; nothing else. */
function assertHealthCommandAllowed(config: NixConfig, argv0: string, pins: readonly string[]): void {
  const inPinned = pins.some((pin) => argv0.startsWith(`${pin}/`)) && !argv0.split('/').includes('..');
  if (!inPinned && !config.healthCommands.includes(argv0)) {
    throw new WritError('SAL_INVALID_ARGUMENT', `health check program ${JSON.stringify(argv0)} is neither inside a pinned store path nor in the configured healthCommands`);
  }
}

export async function nixSwitch(config: NixConfig, args: NixSwitchArgs, pins: readonly string[]): Promise<NixSwitchResult> {
  assertPinned([args.path], pins);
  const argv0 = args.healthCheck.argv[0] ?? '';
  assertHealthCommandAllowed(config, argv0, pins);
  const previous = await currentProfilePath(config, args.profile);
  if (previous === args.path) {
    // The profile is only ever set after a passed health check, so it already is the healthy default.
    return { changed: false, path: args.path, generation: (await nixGenerations(config, args)).current, previous, activationMs: 0, healthMs: 0 };
  }
  if ((await invalidStorePaths(config, [args.path])).length > 0) throw new WritError('RESOURCE_NOT_FOUND', `store path ${args.path} is not in the store`);
  const activate = await activationCommand(args.path);
  if (!activate) {
    throw new WritError('SAL_INVALID_ARGUMENT', `${args.path} is not a system generation: it has neither bin/switch-to-configuration nor activate`);
  }

  const t0 = Date.now();
  let stage: 'activation' | 'health' = 'activation';
  let activationMs = 0;
  try {
    await run(activate, { timeoutMs: args.activationTimeoutMs ?? 300_000 });
    activationMs = Date.now() - t0;
    stage = 'health';
    await run(args.healthCheck.argv, { timeoutMs: args.healthCheck.timeoutMs ?? 30_000 });
  } catch (failure) {
    if (!errorCodeOf(failure)) throw failure;
    const rollback = await reactivate(previous);
    throw new WritError(
      'NIX_ACTIVATION_FAILED',
      `${args.path} failed its ${stage === 'health' ? 'health check' : 'activation'}; ${previous ? `re-activated ${previous} (${rollback})` : 'there was no previous generation to re-activate'}`,
      { stage, path: args.path, rolledBackTo: previous, rollback, failure: toErrorJSON(failure) },
    );
  }
  const healthMs = Date.now() - t0 - activationMs;
  const set = await nixProfileSet(config, { profile: args.profile, path: args.path }, pins);
  return { changed: true, path: args.path, generation: set.generation, previous, activationMs, healthMs };
}

/** Runs the previous generation's activation again; says how that went rather than throwing over the first failure. */
async function reactivate(previous: string | null): Promise<'none' | 'reactivated' | 'no-activation' | 'failed'> {
  if (previous === null) return 'none';
  const cmd = await activationCommand(previous);
  if (!cmd) return 'no-activation';
  const r = await run(cmd, { timeoutMs: 300_000, reject: false });
  return r.failed ? 'failed' : 'reactivated';
}
