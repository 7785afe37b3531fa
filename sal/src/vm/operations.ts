// The VM capabilities as SAL operations for the runner's host table: each is a thin call into VmManager,
// which validates its arguments against the capability's schema.
import type { SalContext, SalOperation } from '../operation.ts';
import { VmManager } from './manager.ts';
import type { VmConfig } from './types.ts';

// One manager per config object, so per-VM serialisation and the KVM probe cache are shared between calls.
const managers = new WeakMap<VmConfig, VmManager>();

export function vmManagerFor(config: VmConfig): VmManager {
  let m = managers.get(config);
  if (!m) {
    m = new VmManager(config);
    managers.set(config, m);
  }
  return m;
}

function op(capability: string, call: (m: VmManager, args: unknown) => Promise<unknown>): SalOperation<VmConfig> {
  return { capability, run: (args: unknown, ctx: SalContext<VmConfig>) => call(vmManagerFor(ctx.config), args) };
}

export const VM_OPERATIONS: SalOperation<VmConfig>[] = [
  op('vm.create', (m, a) => m.create(a)),
  op('vm.boot', (m, a) => m.boot(a)),
  op('vm.shutdown', (m, a) => m.shutdown(a)),
  op('vm.reboot', (m, a) => m.reboot(a)),
  op('vm.pause', (m, a) => m.pause(a)),
  op('vm.resume', (m, a) => m.resume(a)),
  op('vm.info', (m, a) => m.info(a)),
  op('vm.delete', (m, a) => m.delete(a)),
  op('vm.disk.add', (m, a) => m.addDisk(a)),
  op('vm.net.add', (m, a) => m.addNic(a)),
  op('vm.device.remove', (m, a) => m.removeDevice(a)),
  op('vm.resize', (m, a) => m.resize(a)),
  op('vm.snapshot', (m, a) => m.snapshot(a)),
  op('vm.restore', (m, a) => m.restore(a)),
  op('vm.list', (m, a) => m.list(a)),
  op('vm.serial.wait', (m, a) => m.waitSerial(a)),
];
