// net SAL: bridges, taps, veth pairs, network namespaces, addresses and routes over iproute2.
export { DEFAULT_EXEC_ALLOW, DEFAULT_NET_PREFIX, netConfig, type NetConfig } from './config.ts';
export { checkLinkName, checkNetnsName, type Link, type LinkAddress } from './ip.ts';
export {
  deleteBridge,
  deleteTap,
  deleteVeth,
  ensureBridge,
  ensureTap,
  ensureVeth,
  listLinks,
  setLink,
  type BridgeArgs,
  type DeleteLinkResult,
  type EnsureLinkResult,
  type EnsureTapResult,
  type EnsureVethResult,
  type LinkSetArgs,
  type TapArgs,
  type VethArgs,
} from './links.ts';
export { deleteNetns, ensureNetns, execInNetns, listNetns, type NetnsExecArgs, type NetnsExecResult } from './netns.ts';
export { addAddress, addRoute, deleteAddress, deleteRoute, listRoutes, type AddrArgs, type Route, type RouteArgs } from './routing.ts';
export { NET_OPERATIONS } from './operations.ts';
