import { type CapabilitySpec } from './types.ts';

// Owned by the SAL mycelium work.
export const MYCELIUM_CAPABILITIES: CapabilitySpec[] = [];
