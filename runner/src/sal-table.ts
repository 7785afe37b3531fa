// The node's host table: the configuration-free host functions plus every SAL operation of each area this
// node has configured. An area left out of the configuration contributes nothing, so a script asking for
// one of its capabilities gets HOST_CALL_DENIED from the broker even when its envelope was granted it.
import type { JsonValue } from '@writ/protocol';
import {
  BTRFS_OPERATIONS,
  MYCELIUM_OPERATIONS,
  NET_OPERATIONS,
  NIX_OPERATIONS,
  VM_OPERATIONS,
  btrfsConfig,
  myceliumConfig,
  netConfig,
  nixConfig,
  resolveVmConfig,
  type BtrfsConfig,
  type MyceliumConfigInput,
  type NetConfig,
  type NixConfigInput,
  type SalJob,
  type SalOperation,
  type VmConfig,
} from '@writ/sal';
import { defaultHostTable, type HostFunction, type HostTable } from './broker.ts';
import type { HostCallJob } from './sandbox/types.ts';

/** Per-area configuration as the operator writes it; each given area is validated once, here. */
export interface SalHostConfig {
  btrfs?: BtrfsConfig;
  net?: Partial<NetConfig>;
  vm?: VmConfig;
  mycelium?: MyceliumConfigInput;
  nix?: NixConfigInput;
}

function hostFunction<Config>(op: SalOperation<Config>, config: Config): HostFunction {
  return {
    async run(args: unknown, job: HostCallJob) {
      const salJob: SalJob = { id: job.jobId, attempt: job.attempt, ...(job.pins ? { pins: job.pins } : {}) };
      return (await op.run(args, { config, job: salJob, ...(job.signal ? { signal: job.signal } : {}) })) as JsonValue;
    },
  };
}

function addArea<Config>(table: HostTable, operations: readonly SalOperation<Config>[], config: Config): void {
  for (const op of operations) {
    // Two areas claiming one capability would make which one runs depend on configuration order.
    if (table.has(op.capability)) throw new Error(`capability ${op.capability} is provided twice`);
    table.set(op.capability, hostFunction(op, config));
  }
}

/** `defaultHostTable()` plus one entry per operation of every configured SAL area. */
export function salHostTable(config: SalHostConfig = {}): HostTable {
  const table = defaultHostTable();
  // Each config object is built once: the VM manager (per-VM locks, KVM probe cache) is keyed on it.
  if (config.btrfs) addArea(table, BTRFS_OPERATIONS, btrfsConfig(config.btrfs));
  if (config.net) addArea(table, NET_OPERATIONS, netConfig(config.net));
  if (config.vm) addArea(table, VM_OPERATIONS, resolveVmConfig(config.vm) as VmConfig);
  if (config.mycelium) addArea(table, MYCELIUM_OPERATIONS, myceliumConfig(config.mycelium));
  if (config.nix) addArea(table, NIX_OPERATIONS, nixConfig(config.nix));
  return table;
}
