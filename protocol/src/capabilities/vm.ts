import type { JsonSchema } from '../schema.ts';
import { argsObject, NAME_SCHEMA, type CapabilitySpec } from './types.ts';

// Virtual machines through the SAL's Hypervisor interface (cloud-hypervisor in production, qemu where it
// is the tool at hand). Paths are relative to roots configured on the node, never absolute (X6).

const RELATIVE_PATH: JsonSchema = { type: 'string', minLength: 1, maxLength: 1024 };
/** Device ids name hot-pluggable devices in both hypervisors; short enough for qemu node names (31 chars) with a suffix. */
const DEVICE_ID: JsonSchema = { type: 'string', pattern: '^[a-z][a-z0-9_-]{0,23}$' };
/** A Linux interface name (IFNAMSIZ - 1 characters). */
const TAP_NAME: JsonSchema = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$' };
const MAC: JsonSchema = { type: 'string', pattern: '^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$' };
const VCPUS: JsonSchema = { type: 'integer', minimum: 1, maximum: 64 };
const MEMORY_MIB: JsonSchema = { type: 'integer', minimum: 32, maximum: 1_048_576 };
const SNAPSHOT_NAME: JsonSchema = NAME_SCHEMA;

export const VM_DISK_SCHEMA: JsonSchema = argsObject(
  {
    id: DEVICE_ID,
    /** Image file relative to the configured images root (a btrfs-backed image). */
    path: RELATIVE_PATH,
    readonly: { type: 'boolean' },
  },
  ['path'],
);

export const VM_NIC_SCHEMA: JsonSchema = argsObject(
  {
    id: DEVICE_ID,
    /** An existing tap interface; the caller attaches it to a bridge. */
    tap: TAP_NAME,
    mac: MAC,
  },
  ['tap', 'mac'],
);

/** A VM disk as a caller writes it (the SAL's VM types re-export these; the schemas above and below check them). */
export interface VmDiskSpec {
  id?: string;
  path: string;
  readonly?: boolean;
}

/** A VM NIC as a caller writes it. */
export interface VmNicSpec {
  id?: string;
  tap: string;
  mac: string;
}

/**
 * vm.create's argument, as a caller writes it (paths relative to the configured roots). Defined once, here,
 * next to VM_SPEC_SCHEMA; protocol/test/vm-spec.test.ts fails when the two list different fields.
 */
export interface VmSpec {
  name: string;
  vcpus: number;
  maxVcpus?: number;
  memoryMiB: number;
  maxMemoryMiB?: number;
  kernel?: string;
  initramfs?: string;
  cmdline?: string;
  firmware?: string;
  disks?: VmDiskSpec[];
  nics?: VmNicSpec[];
}

/** The VM spec: vm.create's argument. Either kernel (+ initramfs, cmdline) or firmware. */
export const VM_SPEC_SCHEMA: JsonSchema = argsObject(
  {
    name: NAME_SCHEMA,
    vcpus: VCPUS,
    /** Upper bound for vm.resize (defaults to vcpus). */
    maxVcpus: VCPUS,
    memoryMiB: MEMORY_MIB,
    /** Upper bound for vm.resize (defaults to memoryMiB). */
    maxMemoryMiB: MEMORY_MIB,
    /** Relative to the configured boot root. */
    kernel: RELATIVE_PATH,
    initramfs: RELATIVE_PATH,
    cmdline: { type: 'string', maxLength: 4096 },
    firmware: RELATIVE_PATH,
    disks: { type: 'array', maxItems: 16, items: VM_DISK_SCHEMA },
    nics: { type: 'array', maxItems: 8, items: VM_NIC_SCHEMA },
  },
  ['name', 'vcpus', 'memoryMiB'],
);

const BY_NAME = argsObject({ name: NAME_SCHEMA }, ['name']);

export const VM_CAPABILITIES: CapabilitySpec[] = [
  {
    name: 'vm.create',
    dangerous: false,
    summary: 'Create a VM from a spec (idempotent by name; a different spec under the same name is a conflict)',
    args: VM_SPEC_SCHEMA,
  },
  { name: 'vm.boot', dangerous: false, summary: 'Boot a created or shut-down VM (no-op when running)', args: BY_NAME },
  {
    name: 'vm.shutdown',
    dangerous: false,
    summary: 'Shut a VM down: ACPI power button first (unless graceful is false), forced after timeoutMs (no-op when already down)',
    args: argsObject({ name: NAME_SCHEMA, graceful: { type: 'boolean' }, timeoutMs: { type: 'integer', minimum: 0, maximum: 300_000 } }, ['name']),
  },
  { name: 'vm.reboot', dangerous: false, summary: 'Reset a running VM', args: BY_NAME },
  { name: 'vm.pause', dangerous: false, summary: 'Pause a running VM (no-op when paused)', args: BY_NAME },
  { name: 'vm.resume', dangerous: false, summary: 'Resume a paused VM (no-op when running)', args: BY_NAME },
  { name: 'vm.info', dangerous: false, readOnly: true, summary: "Read a VM's state, spec, devices and paths", args: BY_NAME },
  { name: 'vm.delete', dangerous: true, summary: 'Stop a VM and remove its state directory (disk images are left to their owner)', args: BY_NAME },
  {
    name: 'vm.disk.add',
    dangerous: false,
    summary: 'Attach a disk image (hot-plugged when the VM runs, kept in the spec for later boots)',
    args: argsObject({ name: NAME_SCHEMA, disk: VM_DISK_SCHEMA }, ['name', 'disk']),
  },
  {
    name: 'vm.net.add',
    dangerous: false,
    summary: 'Attach a NIC on an existing tap (hot-plugged when the VM runs, kept in the spec)',
    args: argsObject({ name: NAME_SCHEMA, nic: VM_NIC_SCHEMA }, ['name', 'nic']),
  },
  {
    name: 'vm.device.remove',
    dangerous: false,
    summary: 'Detach a disk or NIC by id (no-op when absent)',
    args: argsObject({ name: NAME_SCHEMA, id: DEVICE_ID }, ['name', 'id']),
  },
  {
    name: 'vm.resize',
    dangerous: false,
    summary: 'Change vCPUs and/or memory within the maxima of the spec',
    // name plus at least one of vcpus / memoryMiB.
    args: { ...argsObject({ name: NAME_SCHEMA, vcpus: VCPUS, memoryMiB: MEMORY_MIB }, ['name']), minProperties: 2 },
  },
  {
    name: 'vm.snapshot',
    dangerous: false,
    summary: "Save a VM's running state under its state directory (idempotent by snapshot name)",
    args: argsObject({ name: NAME_SCHEMA, snapshot: SNAPSHOT_NAME }, ['name', 'snapshot']),
  },
  {
    name: 'vm.restore',
    dangerous: false,
    summary: "Replace a VM's running state with a saved snapshot, optionally resuming it",
    args: argsObject({ name: NAME_SCHEMA, snapshot: SNAPSHOT_NAME, resume: { type: 'boolean' } }, ['name', 'snapshot']),
  },
  { name: 'vm.list', dangerous: false, readOnly: true, summary: 'List VMs on this node with their states', args: argsObject({}) },
  {
    name: 'vm.serial.wait',
    dangerous: false,
    readOnly: true,
    summary: "Wait until a marker string appears on the VM's serial log since its last boot (or since the log began)",
    args: argsObject(
      {
        name: NAME_SCHEMA,
        marker: { type: 'string', minLength: 1, maxLength: 256 },
        timeoutMs: { type: 'integer', minimum: 1, maximum: 600_000 },
        fromStart: { type: 'boolean' },
      },
      ['name', 'marker', 'timeoutMs'],
    ),
  },
];
