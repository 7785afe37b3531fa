// The Mycelium SAL's operations table for the runner, and its plain functions.
import { defineOperation, type SalOperation } from '../operation.ts';
import { MYCELIUM_API, myceliumJson, type MyceliumInfo, type MyceliumPeer, type MyceliumRoute } from './api.ts';
import { workloadAddress, type WorkloadAddress } from './address.ts';
import type { MyceliumConfig } from './config.ts';
import { myceliumAddPeer, myceliumRemovePeer, myceliumStart, myceliumStop } from './daemon.ts';

export { myceliumConfig, checkEndpoint, daemonBaseArgv, type MyceliumConfig, type MyceliumConfigInput } from './config.ts';
export { ensureMyceliumKey, myceliumPublicKey, type KeyStatus } from './key.ts';
export { MYCELIUM_API, myceliumRequest, type MyceliumInfo, type MyceliumPeer, type MyceliumRoute } from './api.ts';
export { myceliumStart, myceliumStop, myceliumAddPeer, myceliumRemovePeer, runningDaemon, type MyceliumStartResult } from './daemon.ts';
export { workloadAddress, formatIpv6, ipv6ToBytes, type WorkloadAddress } from './address.ts';

export function myceliumInfo(config: MyceliumConfig): Promise<MyceliumInfo> {
  return myceliumJson<MyceliumInfo>(config, 'GET', MYCELIUM_API.info.path);
}

export function myceliumPeers(config: MyceliumConfig): Promise<MyceliumPeer[]> {
  return myceliumJson<MyceliumPeer[]>(config, 'GET', MYCELIUM_API.peers.path);
}

export function myceliumRoutes(config: MyceliumConfig, args: { kind?: 'selected' | 'fallback' } = {}): Promise<MyceliumRoute[]> {
  return myceliumJson<MyceliumRoute[]>(config, 'GET', args.kind === 'fallback' ? MYCELIUM_API.fallbackRoutes.path : MYCELIUM_API.selectedRoutes.path);
}

/** A workload's address in this node's /64, read from the running daemon. */
export async function myceliumWorkloadAddress(config: MyceliumConfig, args: { name: string }): Promise<WorkloadAddress> {
  const info = await myceliumInfo(config);
  return workloadAddress(info.nodeSubnet, args.name, info.nodeIp);
}

const operation = <Args, Result>(name: string, fn: (config: MyceliumConfig, args: Args) => Promise<Result>) =>
  defineOperation<MyceliumConfig, Args, Result>(name, fn);

export const MYCELIUM_OPERATIONS: readonly SalOperation<MyceliumConfig>[] = Object.freeze([
  operation('mycelium.start', myceliumStart),
  operation('mycelium.stop', (c) => myceliumStop(c)),
  operation('mycelium.info', (c) => myceliumInfo(c)),
  operation('mycelium.peers', (c) => myceliumPeers(c)),
  operation('mycelium.peer-add', myceliumAddPeer),
  operation('mycelium.peer-remove', myceliumRemovePeer),
  operation('mycelium.routes', myceliumRoutes),
  operation('mycelium.workload-address', myceliumWorkloadAddress),
]);
