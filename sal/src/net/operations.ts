// The net host-call table: each entry pairs a capability (name == operation) with its argument schema
// from @writ/protocol and a plain function of this folder.
import { assertSchema, capability, compileSchema, WritError } from '@writ/protocol';
import type { SalOperation } from '../operation.ts';
import type { NetConfig } from './config.ts';
import { deleteBridge, deleteTap, deleteVeth, ensureBridge, ensureTap, ensureVeth, listLinks, setLink } from './links.ts';
import { deleteNetns, ensureNetns, execInNetns, listNetns } from './netns.ts';
import { addAddress, addRoute, deleteAddress, deleteRoute, listRoutes } from './routing.ts';

function netOperation<Args, Result>(name: string, fn: (config: NetConfig, args: Args) => Promise<Result>): SalOperation<NetConfig, Args, Result> {
  const spec = capability(name);
  if (!spec) throw new WritError('CAPABILITY_UNKNOWN', `capability ${name} is not in the registry`);
  const validate = compileSchema<Args>(spec.args);
  return {
    capability: name,
    async run(args, ctx) {
      assertSchema(validate, args, name, 'SAL_INVALID_ARGUMENT');
      return fn(ctx.config, args);
    },
  };
}

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
