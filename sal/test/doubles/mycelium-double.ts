#!/usr/bin/env -S node --import tsx
// A test double for the mycelium daemon (the real binary cannot be installed here). It takes the real
// CLI flags, loads or creates the key file the way myceliumd does (32 raw bytes, created 0600 only when
// missing), and serves the published management API (/work/shared/reference/mycelium-api.yaml) on
// --api-addr with in-memory state.
//
// Overlay behaviour, simplified but observable: peers are dialled over plain TCP on loopback; two
// doubles that connect exchange one JSON hello line carrying their /64 and become "alive"; each live
// connection yields a route to the other's subnet. Per subnet the outbound connection's route (metric 10)
// is selected and any other (inbound, metric 20) is a fallback. QUIC peers stay "connecting". Overlay
// addresses hash the x25519 public key with sha256 (myceliumd uses blake3) into 400::/7.
//
// MYCELIUM_DOUBLE_REQUEST_LOG=<file> appends one JSON line per API request (method, path, content type,
// body) so tests can check what a client sent against the published schemas.
import { createHash, createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, openSync, readSync, closeSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';

interface Options {
  keyFile: string;
  peers: string[];
  tcpListenPort: number;
  quicListenPort: number;
  peerDiscoveryPort: number | null;
  apiAddr: string;
  noTun: boolean;
  tunName: string;
}

function usage(message: string): never {
  process.stderr.write(`error: ${message}\n\nUsage: mycelium [OPTIONS]\n`);
  process.exit(2);
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    keyFile: 'priv_key.bin',
    peers: [],
    tcpListenPort: 9651,
    quicListenPort: 9651,
    peerDiscoveryPort: 9650,
    apiAddr: '127.0.0.1:8989',
    noTun: false,
    tunName: 'tun0',
  };
  let disableDiscovery = false;
  const value = (i: number, flag: string): string => {
    const v = argv[i];
    if (v === undefined || v.startsWith('-')) usage(`a value is required for '${flag}'`);
    return v;
  };
  const port = (v: string, flag: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n > 65535) usage(`invalid value '${v}' for '${flag}'`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    switch (a) {
      case '-k':
      case '--key-file':
        o.keyFile = value(++i, a);
        break;
      case '--peers':
        if (argv[i + 1] === undefined || argv[i + 1]?.startsWith('-')) usage("a value is required for '--peers <STATIC_PEERS>...'");
        while (argv[i + 1] !== undefined && !argv[i + 1]?.startsWith('-')) {
          const ep = argv[++i] ?? '';
          if (!parseEndpoint(ep)) usage(`invalid value '${ep}' for '--peers <STATIC_PEERS>...'`);
          o.peers.push(ep);
        }
        break;
      case '-t':
      case '--tcp-listen-port':
        o.tcpListenPort = port(value(++i, a), a);
        break;
      case '-q':
      case '--quic-listen-port':
        o.quicListenPort = port(value(++i, a), a);
        break;
      case '--peer-discovery-port':
        o.peerDiscoveryPort = port(value(++i, a), a);
        break;
      case '--disable-peer-discovery':
        disableDiscovery = true;
        break;
      case '--api-addr':
        o.apiAddr = value(++i, a);
        if (!parseSocketAddr(o.apiAddr)) usage(`invalid value '${o.apiAddr}' for '--api-addr <API_ADDR>'`);
        break;
      case '--no-tun':
        o.noTun = true;
        break;
      case '--tun-name':
        o.tunName = value(++i, a);
        break;
      case '-d':
      case '--debug':
      case '--silent':
        break;
      default:
        usage(`unexpected argument '${a}' found`);
    }
  }
  if (disableDiscovery) o.peerDiscoveryPort = null;
  return o;
}

function parseSocketAddr(s: string): { host: string; port: number } | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3})):(\d{1,5})$/.exec(s);
  if (!m) return null;
  const host = m[1] ?? m[2] ?? '';
  const port = Number(m[3]);
  if (net.isIP(host) === 0 || port > 65535) return null;
  return { host, port };
}

function parseEndpoint(s: string): { proto: 'tcp' | 'quic'; socketAddr: string; host: string; port: number } | null {
  const m = /^(tcp|quic):\/\/(.+)$/.exec(s);
  const addr = m ? parseSocketAddr(m[2] ?? '') : null;
  if (!m || !addr) return null;
  return { proto: m[1] as 'tcp' | 'quic', socketAddr: m[2] ?? '', ...addr };
}

// ---- identity -------------------------------------------------------------------------------------

function loadOrCreateKey(file: string): Buffer {
  if (existsSync(file)) {
    const fd = openSync(file, 'r');
    const buf = Buffer.alloc(32);
    const n = readSync(fd, buf, 0, 32, 0);
    closeSync(fd);
    if (n < 32) {
      process.stderr.write(`Error: Custom { kind: UnexpectedEof, error: "failed to fill whole buffer" }\n`);
      process.exit(1);
    }
    return buf;
  }
  process.stderr.write(`WARN Node key file "${file}" not found, generating new keys\n`);
  const key = randomBytes(32);
  writeFileSync(file, key, { mode: 0o600, flag: 'wx' });
  return key;
}

function x25519PublicKey(secret: Buffer): Buffer {
  const der = Buffer.concat([Buffer.from('302e020100300506032b656e04220420', 'hex'), secret]);
  const jwk = createPublicKey(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })).export({ format: 'jwk' });
  return Buffer.from(String(jwk.x), 'base64url');
}

function formatIpv6(bytes: Buffer): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

// ---- overlay state --------------------------------------------------------------------------------

interface Peer {
  endpoint: { proto: 'tcp' | 'quic'; socketAddr: string };
  type: 'static' | 'inbound' | 'linkLocalDiscovery';
  connectionState: 'alive' | 'connecting' | 'dead';
  txBytes: number;
  rxBytes: number;
  socket?: net.Socket;
  remoteSubnet?: string;
  nextHop?: string;
  retry?: NodeJS.Timeout;
  removed?: boolean;
}

const opts = parseArgs(process.argv.slice(2));
const secret = loadOrCreateKey(opts.keyFile);
const pubkey = x25519PublicKey(secret);
const addr = createHash('sha256').update(pubkey).digest();
addr[0] = 0x04 | ((addr[0] ?? 0) & 0x01);
const nodeIp = formatIpv6(addr);
const nodeSubnet = `${formatIpv6(Buffer.concat([addr.subarray(0, 8), Buffer.alloc(8)]))}/64`;
const startTime = Math.floor(Date.now() / 1000);
const peers = new Map<string, Peer>();
const hello = `${JSON.stringify({ subnet: nodeSubnet })}\n`;

function wire(peer: Peer, socket: net.Socket, outbound: boolean): void {
  peer.socket = socket;
  let buffered = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    peer.rxBytes += Buffer.byteLength(chunk);
    buffered += chunk;
    const nl = buffered.indexOf('\n');
    if (nl < 0 || peer.remoteSubnet) return;
    try {
      const msg = JSON.parse(buffered.slice(0, nl)) as { subnet?: unknown };
      if (typeof msg.subnet === 'string') {
        peer.remoteSubnet = msg.subnet;
        peer.connectionState = 'alive';
        const local = `${socket.localAddress}:${socket.localPort}`;
        const remote = `${socket.remoteAddress}:${socket.remotePort}`;
        peer.nextHop = outbound ? `TCP ${local} <-> ${remote}` : `TCP ${remote} <-> ${local}`;
      }
    } catch {
      socket.destroy();
    }
  });
  socket.on('close', () => {
    peer.connectionState = 'dead';
    peer.remoteSubnet = undefined;
    peer.socket = undefined;
    if (peer.type === 'inbound') peers.delete(peerKey(peer.endpoint.proto, peer.endpoint.socketAddr));
    else if (!peer.removed) peer.retry = setTimeout(() => dial(peer), 300);
  });
  socket.on('error', () => undefined);
  socket.write(hello);
  peer.txBytes += Buffer.byteLength(hello);
}

function dial(peer: Peer): void {
  if (peer.removed || peer.endpoint.proto !== 'tcp') return;
  const ep = parseEndpoint(`tcp://${peer.endpoint.socketAddr}`);
  if (!ep) return;
  peer.connectionState = 'connecting';
  const socket = net.connect({ host: ep.host, port: ep.port });
  socket.once('connect', () => wire(peer, socket, true));
  socket.once('error', () => {
    if (peer.socket) return;
    peer.connectionState = 'connecting';
    if (!peer.removed) peer.retry = setTimeout(() => dial(peer), 300);
  });
}

function peerKey(proto: string, socketAddr: string): string {
  return `${proto}://${socketAddr}`;
}

function addPeer(endpoint: string, type: Peer['type']): 'added' | 'exists' | 'invalid' {
  const ep = parseEndpoint(endpoint);
  if (!ep) return 'invalid';
  const key = peerKey(ep.proto, ep.socketAddr);
  if (peers.has(key)) return 'exists';
  const peer: Peer = { endpoint: { proto: ep.proto, socketAddr: ep.socketAddr }, type, connectionState: 'connecting', txBytes: 0, rxBytes: 0 };
  peers.set(key, peer);
  dial(peer);
  return 'added';
}

function removePeer(endpoint: string): 'removed' | 'missing' | 'invalid' {
  const ep = parseEndpoint(endpoint);
  if (!ep) return 'invalid';
  const key = peerKey(ep.proto, ep.socketAddr);
  const peer = peers.get(key);
  if (!peer) return 'missing';
  peer.removed = true;
  clearTimeout(peer.retry);
  peer.socket?.destroy();
  peers.delete(key);
  return 'removed';
}

function routes(): { selected: unknown[]; fallback: unknown[] } {
  const bySubnet = new Map<string, { metric: number; route: unknown }[]>();
  for (const p of peers.values()) {
    if (p.connectionState !== 'alive' || !p.remoteSubnet) continue;
    const metric = p.type === 'static' ? 10 : 20;
    const list = bySubnet.get(p.remoteSubnet) ?? [];
    list.push({ metric, route: { subnet: p.remoteSubnet, nextHop: p.nextHop, metric, seqno: 1 } });
    bySubnet.set(p.remoteSubnet, list);
  }
  const selected: unknown[] = [];
  const fallback: unknown[] = [];
  for (const list of bySubnet.values()) {
    list.sort((a, b) => a.metric - b.metric);
    list.forEach((r, i) => (i === 0 ? selected : fallback).push(r.route));
  }
  return { selected, fallback };
}

// ---- API ------------------------------------------------------------------------------------------

function send(res: http.ServerResponse, status: number, body?: unknown, text = false): void {
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  const payload = text ? String(body) : JSON.stringify(body);
  res.writeHead(status, { 'content-type': text ? 'text/plain; charset=utf-8' : 'application/json' }).end(payload);
}

const api = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', 'http://double');
    const method = req.method ?? 'GET';
    if (process.env.MYCELIUM_DOUBLE_REQUEST_LOG) {
      appendFileSync(
        process.env.MYCELIUM_DOUBLE_REQUEST_LOG,
        `${JSON.stringify({ method, path: url.pathname, contentType: req.headers['content-type'] ?? null, body })}\n`,
      );
    }
    const p = url.pathname;
    if (p === '/api/v1/admin' && method === 'GET') return send(res, 200, { nodeSubnet, nodeIp, nodePubkey: pubkey.toString('hex'), nodeStartTime: startTime });
    if (p === '/api/v1/admin/peers' && method === 'GET') {
      return send(
        res,
        200,
        [...peers.values()].map((x) => ({ endpoint: x.endpoint, type: x.type, connectionState: x.connectionState, txBytes: x.txBytes, rxBytes: x.rxBytes })),
      );
    }
    if (p === '/api/v1/admin/peers' && method === 'POST') {
      // As axum's Json extractor: wrong content type 415, bad JSON 400, wrong shape 422.
      if (!/^application\/json\b/.test(String(req.headers['content-type'] ?? '')))
        return send(res, 415, 'Expected request with `Content-Type: application/json`', true);
      let parsed: unknown;
      try {
        parsed = JSON.parse(body);
      } catch {
        return send(res, 400, 'Failed to parse the request body as JSON', true);
      }
      const endpoint = (parsed as { endpoint?: unknown } | null)?.endpoint;
      if (typeof endpoint !== 'string') return send(res, 422, 'Failed to deserialize the JSON body into the target type: missing field `endpoint`', true);
      const r = addPeer(endpoint, 'static');
      if (r === 'invalid') return send(res, 400, `invalid endpoint: ${endpoint}`, true);
      if (r === 'exists') return send(res, 409, 'A peer identified by that endpoint already exists', true);
      return send(res, 204);
    }
    const del = /^\/api\/v1\/admin\/peers\/([^/]+)$/.exec(p);
    if (del && method === 'DELETE') {
      let endpoint = '';
      try {
        endpoint = decodeURIComponent(del[1] ?? '');
      } catch {
        return send(res, 400, 'invalid percent-encoding', true);
      }
      const r = removePeer(endpoint);
      if (r === 'invalid') return send(res, 400, `invalid endpoint: ${endpoint}`, true);
      if (r === 'missing') return send(res, 404, 'A peer identified by that endpoint does not exist', true);
      return send(res, 204);
    }
    if (p === '/api/v1/admin/routes/selected' && method === 'GET') return send(res, 200, routes().selected);
    if (p === '/api/v1/admin/routes/fallback' && method === 'GET') return send(res, 200, routes().fallback);
    if (p === '/api/v1/admin/routes/queried' && method === 'GET') return send(res, 200, []);
    return send(res, 404);
  });
});

const overlay = net.createServer((socket) => {
  const socketAddr = socket.remoteFamily === 'IPv6' ? `[${socket.remoteAddress}]:${socket.remotePort}` : `${socket.remoteAddress}:${socket.remotePort}`;
  const peer: Peer = { endpoint: { proto: 'tcp', socketAddr }, type: 'inbound', connectionState: 'connecting', txBytes: 0, rxBytes: 0 };
  peers.set(peerKey('tcp', socketAddr), peer);
  wire(peer, socket, false);
});

const apiAddr = parseSocketAddr(opts.apiAddr);
if (!apiAddr) usage('bad --api-addr');
overlay.on('error', (e) => process.stderr.write(`ERROR could not listen for peers on tcp ${opts.tcpListenPort}: ${e.message}\n`));
overlay.listen(opts.tcpListenPort, '127.0.0.1');
api.listen(apiAddr.port, apiAddr.host, () => {
  process.stderr.write(
    `INFO double listening: api ${opts.apiAddr}, tcp ${opts.tcpListenPort}, tun ${opts.noTun ? '(none)' : opts.tunName}, subnet ${nodeSubnet}\n`,
  );
  for (const p of opts.peers) addPeer(p, 'static');
});
api.on('error', (e) => {
  // myceliumd keeps running with its API disabled when the address is taken; so does the double.
  process.stderr.write(`ERROR Failed to bind listener for Http Api server: ${e.message}\nERROR API disabled\n`);
});
const stop = (): void => {
  for (const p of peers.values()) p.socket?.destroy();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
