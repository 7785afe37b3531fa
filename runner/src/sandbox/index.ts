// The runner's sandbox: a pool of worker threads running QuickJS, and (re-exported) the host-call broker.
export { SandboxPool, type SandboxPoolOptions } from './pool.ts';
export type { SandboxJob, SandboxOutcome, SandboxLimits, HostCallJob, LogLevel, BoundaryLimits } from './types.ts';
export { DEFAULT_BOUNDARY_LIMITS } from './types.ts';
export { GUEST_GLOBALS } from './prelude.ts';
export { checkScriptCompiles, syntaxErrorPosition } from './quickjs.ts';
export { HostBroker, defaultHostTable, type HostTable, type HostFunction } from '../broker.ts';
