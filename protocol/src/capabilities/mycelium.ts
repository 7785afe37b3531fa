import { argsObject, NAME_SCHEMA, type CapabilitySpec } from './types.ts';

// Mycelium overlay: the daemon's settings (binary, key file, API address, tun name, netns) are operator
// configuration; scripts manage peers, read state and derive workload addresses.

/** A mycelium peer endpoint as its API and CLI take it: `tcp://1.2.3.4:9651` or `quic://[2001:db8::1]:9651`. */
export const MYCELIUM_ENDPOINT_SCHEMA = {
  type: 'string',
  maxLength: 64,
  pattern: '^(tcp|quic)://(\\d{1,3}(\\.\\d{1,3}){3}|\\[[0-9A-Fa-f:.]{2,45}\\]):\\d{1,5}$',
};

export const MYCELIUM_CAPABILITIES: CapabilitySpec[] = [
  {
    name: 'mycelium.start',
    dangerous: true,
    summary: 'Start the mycelium daemon (creating its key only on first start) and wait for its API',
    args: argsObject({ peers: { type: 'array', maxItems: 32, items: MYCELIUM_ENDPOINT_SCHEMA } }),
  },
  { name: 'mycelium.stop', dangerous: true, summary: 'Stop the mycelium daemon', args: argsObject({}) },
  { name: 'mycelium.info', dangerous: false, readOnly: true, summary: "Read the node's overlay subnet, address and public key", args: argsObject({}) },
  { name: 'mycelium.peers', dangerous: false, readOnly: true, summary: 'List known peers and their connection state', args: argsObject({}) },
  {
    name: 'mycelium.peer-add',
    dangerous: false,
    summary: 'Add a peer endpoint (ensure: adding a known peer is not an error)',
    args: argsObject({ endpoint: MYCELIUM_ENDPOINT_SCHEMA }, ['endpoint']),
  },
  {
    name: 'mycelium.peer-remove',
    dangerous: false,
    summary: 'Remove a peer endpoint (ensure: removing an unknown peer is not an error)',
    args: argsObject({ endpoint: MYCELIUM_ENDPOINT_SCHEMA }, ['endpoint']),
  },
  {
    name: 'mycelium.routes',
    dangerous: false,
    readOnly: true,
    summary: 'List selected (default) or fallback overlay routes',
    args: argsObject({ kind: { type: 'string', enum: ['selected', 'fallback'] } }),
  },
  {
    name: 'mycelium.workload-address',
    dangerous: false,
    readOnly: true,
    summary: "Derive a workload's stable overlay address inside the node's /64",
    args: argsObject({ name: NAME_SCHEMA }, ['name']),
  },
];
