// The VM spec is written once as a type and once as a schema, side by side (capabilities/vm.ts): this fails
// when they list different fields or disagree on which are required.
import { describe, expect, it } from 'vitest';
import { VM_DISK_SCHEMA, VM_NIC_SCHEMA, VM_SPEC_SCHEMA, type VmDiskSpec, type VmNicSpec, type VmSpec } from '../src/index.ts';

/** The keys of T that are not optional. */
type RequiredKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? never : K }[keyof T];

// `Record<…, true>` makes tsc demand exactly these keys: all of the type's fields, then its required ones.
const SPEC = {
  all: {
    name: true,
    vcpus: true,
    maxVcpus: true,
    memoryMiB: true,
    maxMemoryMiB: true,
    kernel: true,
    initramfs: true,
    cmdline: true,
    firmware: true,
    disks: true,
    nics: true,
  } satisfies Record<keyof VmSpec, true>,
  required: { name: true, vcpus: true, memoryMiB: true } satisfies Record<RequiredKeys<VmSpec>, true>,
};
const DISK = {
  all: { id: true, path: true, readonly: true } satisfies Record<keyof VmDiskSpec, true>,
  required: { path: true } satisfies Record<RequiredKeys<VmDiskSpec>, true>,
};
const NIC = {
  all: { id: true, tap: true, mac: true } satisfies Record<keyof VmNicSpec, true>,
  required: { tap: true, mac: true } satisfies Record<RequiredKeys<VmNicSpec>, true>,
};

describe('the VM spec type and its schema', () => {
  for (const [name, fields, schema] of [
    ['spec', SPEC, VM_SPEC_SCHEMA],
    ['disk', DISK, VM_DISK_SCHEMA],
    ['nic', NIC, VM_NIC_SCHEMA],
  ] as const) {
    it(`${name}: the same fields, the same required ones`, () => {
      const s = schema as { properties: Record<string, unknown>; required?: string[]; additionalProperties?: boolean };
      expect(Object.keys(s.properties).sort()).toEqual(Object.keys(fields.all).sort());
      expect([...(s.required ?? [])].sort()).toEqual(Object.keys(fields.required).sort());
      expect(s.additionalProperties).toBe(false);
    });
  }
});
