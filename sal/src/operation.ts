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
