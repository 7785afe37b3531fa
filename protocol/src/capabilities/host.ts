import { argsObject, type CapabilitySpec } from './types.ts';

export const HOST_CAPABILITIES: CapabilitySpec[] = [
  {
    name: 'host.facts',
    dangerous: false,
    readOnly: true,
    summary: 'Read CPU, memory, disks, NICs, DMI, kernel and virtualization facts',
    args: argsObject({}),
  },
  {
    name: 'time.sleep',
    dangerous: false,
    readOnly: true,
    summary: 'Sleep for up to 60 s (counts against the job deadline)',
    args: argsObject({ ms: { type: 'integer', minimum: 0, maximum: 60_000 } }, ['ms']),
  },
  { name: 'time.now', dangerous: false, readOnly: true, summary: 'Read the wall clock (scripts have no clock unless granted)', args: argsObject({}) },
  {
    name: 'random.bytes',
    dangerous: false,
    readOnly: true,
    summary: 'Read up to 1024 random bytes, hex encoded (scripts have no randomness unless granted)',
    args: argsObject({ n: { type: 'integer', minimum: 1, maximum: 1024 } }, ['n']),
  },
];
