import { argsObject, type CapabilitySpec } from './types.ts';

// Owned by the SAL nix work: argument schemas are filled in with the operations.
export const NIX_CAPABILITIES: CapabilitySpec[] = [
  { name: 'nix.switch', dangerous: true, summary: 'Switch the system to a pinned generation, health-gated', args: argsObject({}) },
];
