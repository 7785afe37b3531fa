import { argsObject, type CapabilitySpec } from './types.ts';

// Owned by the SAL net work: argument schemas are filled in with the operations.
export const NET_CAPABILITIES: CapabilitySpec[] = [
  { name: 'net.bridge.ensure', dangerous: true, summary: 'Create a bridge if missing', args: argsObject({}) },
];
