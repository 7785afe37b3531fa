// The Nix SAL's operations table for the runner, and its plain functions.
import { defineOperation, type SalContext, type SalOperation } from '../operation.ts';
import type { NixConfig } from './config.ts';
import { nixBuild, nixCopyIn, nixCopyOut, nixGenerations, nixProfileRollback, nixProfileSet } from './store.ts';
import { nixSwitch } from './switch.ts';

export { nixConfig, allowedSubstituters, lockedDownOptions, type NixConfig, type NixConfigInput } from './config.ts';
export { nixBuild, nixCopyIn, nixCopyOut, nixGenerations, nixProfileRollback, nixProfileSet, assertPinned, currentProfilePath, type Generation } from './store.ts';
export { nixSwitch, activationCommand, type NixSwitchArgs, type NixSwitchResult } from './switch.ts';

function pinsOf(ctx: SalContext<NixConfig>): readonly string[] {
  return ctx.job?.pins?.nix ?? [];
}

const operation = <Args, Result>(name: string, fn: (config: NixConfig, args: Args, pins: readonly string[]) => Promise<Result>) =>
  defineOperation<NixConfig, Args, Result>(name, (config, args, ctx) => fn(config, args, pinsOf(ctx)));

export const NIX_OPERATIONS: readonly SalOperation<NixConfig>[] = Object.freeze([
  operation('nix.build', (c, a: Parameters<typeof nixBuild>[1]) => nixBuild(c, a)),
  operation('nix.copy-out', (c, a: Parameters<typeof nixCopyOut>[1]) => nixCopyOut(c, a)),
  operation('nix.copy-in', nixCopyIn),
  operation('nix.profile-set', nixProfileSet),
  operation('nix.profile-rollback', (c, a: Parameters<typeof nixProfileRollback>[1]) => nixProfileRollback(c, a)),
  operation('nix.generations', (c, a: Parameters<typeof nixGenerations>[1]) => nixGenerations(c, a)),
  operation('nix.switch', nixSwitch),
]);
