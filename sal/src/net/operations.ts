// The net host-call table: each entry pairs a capability (name == operation) with its argument schema
// from @writ/protocol and a plain function of this folder.
import { defineOperation, type SalOperation } from '../operation.ts';
import type { NetConfig } from './config.ts';
import { deleteBridge, deleteTap, deleteVeth, ensureBridge, ensureTap, ensureVeth, listLinks, setLink } from './links.ts';
import { deleteNetns, ensureNetns, execInNetns, listNetns } from './netns.ts';
import { addAddress, addRoute, deleteAddress, deleteRoute, listRoutes } from './routing.ts';

const netOperation = <Args, Result>(name: string, fn: (config: NetConfig, args: Args) => Promise<Result>) => defineOperation<NetConfig, Args, Result>(name, fn);

export const NET_OPERATIONS: readonly SalOperation<NetConfig>[] = Object.freeze([
  netOperation('net.bridge.ensure', ensureBridge),
  netOperation('net.bridge.delete', deleteBridge),
  netOperation('net.tap.ensure', ensureTap),
  netOperation('net.tap.delete', deleteTap),
  netOperation('net.veth.ensure', ensureVeth),
  netOperation('net.veth.delete', deleteVeth),
  netOperation('net.netns.ensure', ensureNetns),
  netOperation('net.netns.delete', deleteNetns),
  netOperation('net.netns.list', listNetns),
  netOperation('net.netns.exec', execInNetns),
  netOperation('net.addr.add', addAddress),
  netOperation('net.addr.delete', deleteAddress),
  netOperation('net.route.add', addRoute),
  netOperation('net.route.delete', deleteRoute),
  netOperation('net.route.list', listRoutes),
  netOperation('net.link.set', setLink),
  netOperation('net.link.list', listLinks),
]);
