import { argsObject, type CapabilitySpec } from './types.ts';

// Owned by the SAL vm work: argument schemas are filled in with the operations.
export const VM_CAPABILITIES: CapabilitySpec[] = [
  { name: 'vm.create', dangerous: false, summary: 'Create a VM from a spec (idempotent by name)', args: argsObject({}) },
  { name: 'vm.delete', dangerous: true, summary: 'Delete a VM', args: argsObject({}) },
];
