// @writ/sal: plain TypeScript over real system tools, usable without the sandbox.
export { run, hasTool, type RunOptions, type RunResult } from './exec.ts';
export { checkName, confine } from './confine.ts';
export { hostFacts, listSorted, HOST_OPERATIONS, type HostFacts } from './host/facts.ts';
export type { SalContext, SalJob, SalOperation } from './operation.ts';
export * from './nix/index.ts';
export * from './mycelium/index.ts';
export * from './vm/index.ts';
export * from './btrfs/index.ts';
export * from './net/index.ts';
