// Shapes shared by the VM manager and its two drivers (cloud-hypervisor, qemu).

export type VmDriverName = 'cloud-hypervisor' | 'qemu';
export type AccelMode = 'auto' | 'kvm' | 'tcg';

/** The node's VM configuration, validated once by `resolveVmConfig`. */
export interface VmConfig {
  driver: VmDriverName;
  /** Absolute; each VM gets `<stateDir>/<name>/` (API socket, serial log, pid file, spec json). */
  stateDir: string;
  /** Absolute; disk image paths in specs are relative to it (btrfs-backed images). */
  imagesRoot: string;
  /** Absolute; kernel, initramfs and firmware paths are relative to it (default: imagesRoot). */
  bootRoot?: string;
  /** cloud-hypervisor binary (default `cloud-hypervisor` on PATH). */
  cloudHypervisorBinary?: string;
  /** qemu binary (default `qemu-system-x86_64` on PATH). */
  qemuBinary?: string;
  /** qemu acceleration; `auto` probes KVM with a short timed boot and falls back to TCG (default auto). */
  accel?: AccelMode;
  /** Kernel (relative to bootRoot) for the KVM probe; default: the kernel of the VM being booted. */
  kvmProbeKernel?: string;
  /** How long the KVM probe boot may take before KVM is declared unusable (default 8000 ms). */
  kvmProbeTimeoutMs?: number;
  /** Per-request timeout for the hypervisor API (default 30000 ms). */
  apiTimeoutMs?: number;
}

export interface ResolvedVmConfig {
  readonly driver: VmDriverName;
  readonly stateDir: string;
  readonly imagesRoot: string;
  readonly bootRoot: string;
  readonly cloudHypervisorBinary: string;
  readonly qemuBinary: string;
  readonly accel: AccelMode;
  readonly kvmProbeKernel: string | null;
  readonly kvmProbeTimeoutMs: number;
  readonly apiTimeoutMs: number;
}

// vm.create's argument is defined once, next to its schema, in @writ/protocol.
export type { VmDiskSpec, VmNicSpec, VmSpec } from '@writ/protocol';

/** A spec with every default filled in, so two specs compare by value. Paths stay relative. */
export interface NormalizedVmSpec {
  name: string;
  vcpus: number;
  maxVcpus: number;
  memoryMiB: number;
  maxMemoryMiB: number;
  kernel: string | null;
  initramfs: string | null;
  cmdline: string | null;
  firmware: string | null;
  disks: { id: string; path: string; readonly: boolean }[];
  nics: { id: string; tap: string; mac: string }[];
}

/** What a driver gets: a normalized spec whose paths were confined and made absolute just now. */
export type ResolvedVmSpec = NormalizedVmSpec;

export interface VmPaths {
  dir: string;
  /** cloud-hypervisor REST socket or qemu QMP socket. */
  apiSocket: string;
  serialLog: string;
  pidFile: string;
  specFile: string;
  /** The VMM's own stdout/stderr. */
  vmmLog: string;
  snapshotsDir: string;
}

export type VmState = 'created' | 'running' | 'paused' | 'shutdown' | 'crashed';

export interface VmRuntime {
  state: VmState;
  /** The VMM process, when one is alive for this VM. */
  pid: number | null;
}

export interface VmHandle {
  readonly spec: ResolvedVmSpec;
  readonly paths: VmPaths;
  readonly config: ResolvedVmConfig;
}

/**
 * One hypervisor. The manager owns names, specs, state dirs and idempotency; a driver only moves one
 * VM between states and reports where it is. "Cold" changes (devices, size) are made by redefining the
 * VM while it is not running; "hot" ones go through the hypervisor's API.
 */
export interface Hypervisor {
  readonly driver: VmDriverName;
  state(vm: VmHandle): Promise<VmRuntime>;
  /** Starts the VMM (if needed) with the VM defined but not running. */
  define(vm: VmHandle): Promise<void>;
  /** Makes a VM that is not running match its (changed) spec. */
  redefine(vm: VmHandle): Promise<void>;
  boot(vm: VmHandle): Promise<void>;
  /** Returns whether the guest went down by itself (ACPI) before any forced stop. */
  shutdown(vm: VmHandle, opts: { graceful: boolean; timeoutMs: number }): Promise<{ graceful: boolean }>;
  reboot(vm: VmHandle): Promise<void>;
  pause(vm: VmHandle): Promise<void>;
  resume(vm: VmHandle): Promise<void>;
  hotAddDisk(vm: VmHandle, disk: ResolvedVmSpec['disks'][number]): Promise<void>;
  hotAddNic(vm: VmHandle, nic: ResolvedVmSpec['nics'][number]): Promise<void>;
  hotRemoveDevice(vm: VmHandle, id: string, kind: 'disk' | 'nic'): Promise<void>;
  hotResize(vm: VmHandle, to: { vcpus: number; memoryMiB: number }): Promise<void>;
  /** Saves device and memory state into `dir` (which exists and is empty); the VM is left as it was. */
  snapshot(vm: VmHandle, dir: string): Promise<void>;
  /** Replaces whatever runs with the state in `dir`; `vm.spec` is the spec saved with the snapshot. */
  restore(vm: VmHandle, dir: string, resume: boolean): Promise<void>;
  /** Stops the VMM process for good (the state dir is removed by the manager). */
  destroy(vm: VmHandle): Promise<void>;
}
