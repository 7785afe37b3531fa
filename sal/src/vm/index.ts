// VMs behind one Hypervisor interface: cloud-hypervisor (production) and qemu.
export type * from './types.ts';
export { VmManager, resolveVmConfig, normalizeVmSpec, resolveVmSpec, vmPaths, checkVmArgs, hypervisorFor, type VmInfo, type VmListEntry } from './manager.ts';
export { VM_OPERATIONS, vmManagerFor } from './operations.ts';
export { CloudHypervisorDriver, cloudHypervisorVmConfig } from './cloud-hypervisor.ts';
export { QemuDriver, qemuCommandLine, chooseAccel, probeKvm, forgetAccelProbes, type AccelChoice, type QemuCommandOptions } from './qemu.ts';
export { waitForSerialMarker, type SerialWaitResult } from './serial.ts';
export { QmpClient, withQmp } from './qmp.ts';
