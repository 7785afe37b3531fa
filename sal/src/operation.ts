// The shape every SAL operation exposes to the runner's host table: one capability name, one argument
// schema (from the protocol's capability registry), one async function returning JSON.
export interface SalJob {
  id: string;
  /** Attempt number from the ledger; a fencing token for effects (R3). */
  attempt: number;
  /** Nix store paths pinned in the envelope (X7). */
  pins?: { nix?: string[] };
}

export interface SalContext<Config> {
  /** This area's configuration (roots, binaries, allowed peers ...), validated when the runner starts. */
  readonly config: Config;
  /** The job on whose behalf the call runs, when called from a script. */
  readonly job?: SalJob;
  readonly signal?: AbortSignal;
}

export interface SalOperation<Config = unknown, Args = any, Result = unknown> {
  /** The capability name, e.g. `btrfs.snapshot`; must exist in @writ/protocol's CAPABILITIES. */
  readonly capability: string;
  run(args: Args, ctx: SalContext<Config>): Promise<Result>;
}

import { assertSchema, capability, compileSchema, WritError } from '@writ/protocol';

/**
 * Pairs a registered capability with a plain SAL function: the argument schema comes from the protocol's
 * registry and is checked before the function runs (SAL_INVALID_ARGUMENT), whoever calls it.
 */
export function defineOperation<Config, Args, Result>(
  name: string,
  fn: (config: Config, args: Args, ctx: SalContext<Config>) => Promise<Result>,
): SalOperation<Config, Args, Result> {
  const spec = capability(name);
  if (!spec) throw new WritError('CAPABILITY_UNKNOWN', `capability ${name} is not in the registry`);
  const validate = compileSchema<Args>(spec.args);
  return {
    capability: name,
    async run(args, ctx) {
      assertSchema(validate, args, name, 'SAL_INVALID_ARGUMENT');
      return fn(ctx.config, args, ctx);
    },
  };
}
